"""Residual MLP and CNN (model.residual): h_{b+1} = P_b(h_b) + alpha F_b(h_b), the
pre-activation form of He et al. 2016, F_b being branch_layers watched layers
[norm? -> act -> Linear (Conv2d 3x3 'same')], P_b the identity or, in a cnn block of
stride 2, a watched 1x1 conv of stride 2 (the projection shortcut, He et al. 2016's
option B). The block layout is :func:`initbench.config.geometry.residual_plan`'s.

mlp: 784 -> stem Linear(width) -> depth blocks -> norm? -> act -> Linear(10).
cnn: stem Conv2d 3x3 (width channels) -> depth blocks, stride 2 at the blocks
cnn_strides gives -> norm? -> act -> global average pool -> Linear(10).
The stem and the readout are initialised like every weight and not watched. A branch
layer's ``normed`` is the activation's input (the norm's output, or without a norm the
branch's input itself, so that dead_frac is of what the activation sees), its ``act`` the
activation's output and its ``preact`` the affine map's output. A projection is watched
with a linear activation (act = preact). At each block's last branch layer the tape also
gets the ``stream`` h_{b+1} and the ``branch`` alpha F_b(h_b).

Branch scalings (alpha, model.residual): a number; ``1/sqrt(L)`` (L = depth, the blocks);
``skipinit`` (De & Smith 2020; ReZero, Bachlechner et al. 2020): a learnable scalar per
block, 0 at init; ``fixup`` (Zhang et al. 2019): alpha = 1, each branch's last affine map
zeroed and the others' weights scaled by L^(-1/(2m-2)), m = branch_layers (m >= 2; the
config refuses m = 1); projections keep model.init. Fixup's scalar biases and multipliers
and its zeroed readout are not built: the readout keeps model.init so that step 0 has
gradients to measure. The post-activation form (norm after the sum) is not built.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from initbench.config.activations import ACTIVATIONS
from initbench.config.geometry import IMAGE_SHAPE, NUM_CLASSES, residual_plan
from initbench.nets.base import InstrumentedModel, activation_meta, new_activation, new_norm
from initbench.nets.instrument import Tape, WatchedLayer

if TYPE_CHECKING:
    from initbench.config.spec import ModelConfig


def branch_scale(residual: float | str, blocks: int) -> float:
    """alpha at init: the number, 1/sqrt(L), 0 for skipinit, 1 for fixup."""
    if residual == "1/sqrt(L)":
        return 1 / math.sqrt(blocks)
    if residual == "skipinit":
        return 0.0
    return 1.0 if residual == "fixup" else float(residual)


def fixup_scale(blocks: int, branch_layers: int) -> float:
    """Fixup's L^(-1/(2m-2)) for the branch layers before the last (Zhang et al. 2019)."""
    return blocks ** (-1 / (2 * branch_layers - 2))


def _affine(conv: bool, width: int, kernel: int, stride: int) -> nn.Module:
    if not conv:
        return nn.Linear(width, width)
    return nn.Conv2d(width, width, kernel, stride=stride, padding=kernel // 2)


class BranchLayer(nn.Module):
    """norm? -> act -> affine: one watched layer of a pre-activation branch."""

    def __init__(self, index: int, width: int, config: ModelConfig, stride: int = 1) -> None:
        super().__init__()
        conv = config.arch == "cnn"
        self.index = index
        self.norm = new_norm(config, width, conv=conv)
        self.act = new_activation(config)
        self.affine = _affine(conv, width, 3, stride)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        normed = self.norm(x) if self.norm is not None else x
        act = self.act(normed)
        preact = self.affine(act)
        if tape is not None:
            tape.watch(self.index, 0, preact, normed, act)
        return preact


class Projection(nn.Module):
    """The watched 1x1 conv shortcut of a stride-2 cnn block (no norm, no activation)."""

    def __init__(self, index: int, width: int, stride: int) -> None:
        super().__init__()
        self.index = index
        self.affine = _affine(True, width, 1, stride)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        preact = self.affine(x)
        if tape is not None:
            tape.watch(self.index, 0, preact, None, preact)
        return preact


class ResidualBlock(nn.Module):
    """P(h) + alpha F(h); alpha a fixed float, or (skipinit) a learnable scalar from 0."""

    def __init__(self, plan: list[tuple[int, str, int, int]], width: int, config: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            BranchLayer(i, width, config, stride) for i, role, stride, _ in plan if role == "branch"
        )
        shortcut = [Projection(i, width, stride) for i, role, stride, _ in plan if role != "branch"]
        self.shortcut = shortcut[0] if shortcut else None
        self.alpha: nn.Parameter | float = branch_scale(config.residual, config.depth)  # type: ignore[arg-type]
        if config.residual == "skipinit":
            self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        f = h
        for layer in self.layers:
            f = layer(f, tape)
        branch = self.alpha * f
        stream = (h if self.shortcut is None else self.shortcut(h, tape)) + branch
        if tape is not None:
            tape.watch_block(self.layers[-1].index, stream, branch)
        return stream


class ResidualNet(InstrumentedModel):
    """A residual mlp or cnn (module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width, self.conv = config.layer_widths()[0], config.arch == "cnn"
        plan = residual_plan(config.arch, config.depth, config.branch_layers)
        per_block = [[p for p in plan if p[3] == b] for b in range(1, config.depth + 1)]
        if self.conv:
            self.stem: nn.Module = nn.Conv2d(IMAGE_SHAPE[0], width, 3, padding=1)
        else:
            self.stem = nn.Linear(math.prod(IMAGE_SHAPE), width)
        self.blocks = nn.ModuleList(ResidualBlock(p, width, config) for p in per_block)
        self.head_norm = new_norm(config, width, conv=self.conv)
        self.head_act = new_activation(config)
        self.readout = nn.Linear(width, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = self.stem(x if self.conv else x.flatten(1))  # the stream h_1: (B, width[, H, W])
        for block in self.blocks:
            h = block(h, tape)
        if self.head_norm is not None:
            h = self.head_norm(h)
        h = self.head_act(h)
        return self.readout(h.mean(dim=(2, 3)) if self.conv else h)  # (B, 10)

    def _watched(self) -> list[BranchLayer | Projection]:
        """Every watched layer, in index order (residual_plan's)."""
        found = [m for b in self.blocks for m in [*b.layers, b.shortcut] if m is not None]
        return sorted(found, key=lambda m: m.index)

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = activation_meta(self.config)
        linear = ACTIVATIONS.get("linear")
        out = []
        for m in self._watched():
            is_branch = isinstance(m, BranchLayer)
            act = (
                (name, kind, out_range)
                if is_branch
                else ("linear", linear.kind, linear.output_range)
            )
            prefix = "res" if is_branch else "proj"
            out.append(WatchedLayer(m.index, f"{prefix}{m.index}", m.affine.weight, None, *act))
        return out

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        yield "stem", self.stem
        for m in self._watched():
            yield "hidden", m.affine
        yield "readout", self.readout


def apply_fixup(model: ResidualNet) -> None:
    """Fixup after the ordinary init: each branch's last affine map (weight and bias)
    zeroed, the other branch layers' weights scaled by L^(-1/(2m-2))."""
    config = model.config
    scale = fixup_scale(config.depth, config.branch_layers)
    with torch.no_grad():
        for block in model.blocks:
            *rest, last = block.layers
            for layer in rest:
                layer.affine.weight.mul_(scale)
            last.affine.weight.zero_()
            last.affine.bias.zero_()
