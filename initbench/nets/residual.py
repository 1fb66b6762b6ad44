"""Residual MLP (model.residual): h_{b+1} = h_b + alpha F_b(h_b), the pre-activation form
of He et al. 2016, F_b being branch_layers watched layers [norm? -> act -> Linear].

784 -> stem Linear(width) -> depth blocks -> norm? -> act -> Linear(10). The stem and the
readout are initialised like every weight and not watched. Watched layer l is one branch
layer: its ``normed`` is the activation's input (the norm's output, or without a norm the
branch's input itself, so that dead_frac is of what the activation sees), its ``act`` the
activation's output and its ``preact`` the Linear's output. At each block's last layer the
tape also gets the ``stream`` h_{b+1} and the ``branch`` alpha F_b(h_b).

Branch scalings (alpha, model.residual): a number; ``1/sqrt(L)`` (L = depth, the blocks);
``skipinit`` (De & Smith 2020; ReZero, Bachlechner et al. 2020): a learnable scalar per
block, 0 at init; ``fixup`` (Zhang et al. 2019): alpha = 1, each branch's last Linear
zeroed and the others' weights scaled by L^(-1/(2m-2)), m = branch_layers (m >= 2; the
config refuses m = 1). Fixup's scalar biases and multipliers and its zeroed readout are
not built: the readout keeps model.init so that step 0 has gradients to measure. The
post-activation form (norm after the sum) is not built.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from initbench.config.geometry import IMAGE_SHAPE, NUM_CLASSES
from initbench.nets.instrument import Tape, WatchedLayer
from initbench.nets.models import InstrumentedModel, _activation_meta, _new_activation, new_norm

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


class BranchLayer(nn.Module):
    """norm? -> act -> Linear: one watched layer of a pre-activation branch."""

    def __init__(self, index: int, width: int, config: ModelConfig) -> None:
        super().__init__()
        self.index = index
        self.norm = new_norm(config, width, conv=False)
        self.act = _new_activation(config)
        self.affine = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        normed = self.norm(x) if self.norm is not None else x
        act = self.act(normed)
        preact = self.affine(act)
        if tape is not None:
            tape.watch(self.index, 0, preact, normed, act)
        return preact


class ResidualBlock(nn.Module):
    """h + alpha F(h); alpha a fixed float, or (skipinit) a learnable scalar from 0."""

    def __init__(self, first: int, width: int, config: ModelConfig) -> None:
        super().__init__()
        m = config.branch_layers
        self.layers = nn.ModuleList(BranchLayer(first + j, width, config) for j in range(m))
        alpha = branch_scale(config.residual, config.depth)  # type: ignore[arg-type]
        self.alpha: nn.Parameter | float
        if config.residual == "skipinit":
            self.alpha = nn.Parameter(torch.zeros(()))
        else:
            self.alpha = alpha

    def forward(self, h: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        f = h
        for layer in self.layers:
            f = layer(f, tape)
        branch = self.alpha * f
        stream = h + branch  # (B, width)
        if tape is not None:
            tape.watch_block(self.layers[-1].index, stream, branch)
        return stream


class ResidualMLP(InstrumentedModel):
    """784 -> Linear(width) -> depth x [h + alpha F(h)] -> norm? -> act -> Linear(10)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width, m = config.width, config.branch_layers
        self.stem = nn.Linear(math.prod(IMAGE_SHAPE), width)
        self.blocks = nn.ModuleList(
            ResidualBlock(1 + b * m, width, config) for b in range(config.depth)
        )
        self.head_norm = new_norm(config, width, conv=False)
        self.head_act = _new_activation(config)
        self.readout = nn.Linear(width, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = self.stem(x.flatten(1))  # (B, width): the stream h_1
        for block in self.blocks:
            h = block(h, tape)
        if self.head_norm is not None:
            h = self.head_norm(h)
        return self.readout(self.head_act(h))  # (B, 10)

    def branch_layers(self) -> list[BranchLayer]:
        """Every branch layer, in forward order (watched layers 1..depth x branch_layers)."""
        return [layer for block in self.blocks for layer in block.layers]

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = _activation_meta(self.config)
        return [
            WatchedLayer(x.index, f"res{x.index}", x.affine.weight, None, name, kind, out_range)
            for x in self.branch_layers()
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        yield "stem", self.stem
        for layer in self.branch_layers():
            yield "hidden", layer.affine
        yield "readout", self.readout


def apply_fixup(model: ResidualMLP) -> None:
    """Fixup after the ordinary init: each branch's last Linear (weight and bias) zeroed,
    the other branch layers' weights scaled by L^(-1/(2m-2))."""
    config = model.config
    scale = fixup_scale(config.depth, config.branch_layers)
    with torch.no_grad():
        for block in model.blocks:
            *rest, last = block.layers
            for layer in rest:
                layer.affine.weight.mul_(scale)
            last.affine.weight.zero_()
            last.affine.bias.zero_()
