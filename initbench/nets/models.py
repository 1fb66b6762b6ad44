"""MLP and CNN builders whose watched layers are observable without hooks, and building
and initialising any registered model (the recurrent ones: :mod:`initbench.nets.recurrent`).

Every model's ``forward(x, tape=None)`` takes the batch as (B, 1, 28, 28) and passes
the optional :class:`~initbench.measure.probes.Tape` to each watched layer, which hands it its
``preact`` (affine output), ``normed`` (batchnorm output, if any) and ``act``. With no
tape the forward pass is the plain computation; with one, it is the same computation
plus references kept to those tensors.

Watched layers are numbered l = 1..depth in forward order; the linear readout is not
watched (it has no activation) but is initialised like the hidden layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from initbench.config.architectures import ARCHITECTURES
from initbench.config.geometry import IMAGE_SHAPE, NUM_CLASSES, cnn_strides
from initbench.config.initializers import cannot_apply, compute_fans, initialize
from initbench.nets.base import InstrumentedModel, activation_meta, new_activation
from initbench.nets.instrument import Tape, WatchedLayer
from initbench.nets.recurrent import GRU, LSTM, RNN

__all__ = ["MODEL_CLASSES", "InstrumentedModel", "build_model", "init_problems", "model_class"]

if TYPE_CHECKING:
    from initbench.config.spec import ModelConfig


class Block(nn.Module):
    """affine (Linear or Conv2d) -> optional batchnorm -> activation: one watched layer."""

    def __init__(self, index: int, affine: nn.Module, norm: nn.Module | None, act: nn.Module):
        super().__init__()
        self.index = index
        self.affine = affine
        self.norm = norm
        self.act = act

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        preact = self.affine(x)
        normed = self.norm(preact) if self.norm is not None else preact
        out = self.act(normed)
        if tape is not None:
            tape.watch(self.index, 0, preact, normed if self.norm is not None else None, out)
        return out


class MLP(InstrumentedModel):
    """784 -> depth x [Linear(width) -> BatchNorm1d? -> act] -> Linear(10)."""

    def __init__(self, config: ModelConfig, sequence: str = "rows") -> None:
        super().__init__()
        self.config = config
        fan = math.prod(IMAGE_SHAPE)
        blocks = []
        for index in range(1, config.depth + 1):
            norm = nn.BatchNorm1d(config.width) if config.batchnorm else None
            blocks.append(Block(index, nn.Linear(fan, config.width), norm, new_activation(config)))
            fan = config.width
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Linear(fan, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (B, 784)
        for block in self.blocks:
            h = block(h, tape)  # (B, width)
        return self.readout(h)  # (B, 10)

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = activation_meta(self.config)
        return [
            WatchedLayer(b.index, f"fc{b.index}", b.affine.weight, None, name, kind, out_range)
            for b in self.blocks
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for block in self.blocks:
            yield "hidden", block.affine
        yield "readout", self.readout


class CNN(InstrumentedModel):
    """depth x [Conv2d 3x3 (width ch., 'same' padding) -> BatchNorm2d? -> act],
    stride-2 convs at 1/3 and 2/3 of depth, global average pool, Linear(10)."""

    def __init__(self, config: ModelConfig, sequence: str = "rows") -> None:
        super().__init__()
        self.config = config
        channels = IMAGE_SHAPE[0]
        blocks = []
        for index, stride in enumerate(cnn_strides(config.depth), start=1):
            conv = nn.Conv2d(channels, config.width, 3, stride=stride, padding=1)
            norm = nn.BatchNorm2d(config.width) if config.batchnorm else None
            blocks.append(Block(index, conv, norm, new_activation(config)))
            channels = config.width
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Linear(channels, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x  # (B, 1, 28, 28)
        for block in self.blocks:
            h = block(h, tape)  # (B, width, H, W)
        return self.readout(h.mean(dim=(2, 3)))  # global average pool -> (B, width) -> (B, 10)

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = activation_meta(self.config)
        return [
            WatchedLayer(b.index, f"conv{b.index}", b.affine.weight, None, name, kind, out_range)
            for b in self.blocks
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for block in self.blocks:
            yield "hidden", block.affine
        yield "readout", self.readout


def _init_ref(config: ModelConfig, role: str) -> dict[str, Any]:
    ref = config.recurrent_init if role == "recurrent" else config.init
    return dict(ref or config.init)


def _blocks(tensor: torch.Tensor | None, blocks: int) -> list[torch.Tensor]:
    """A weight's or bias's stacked gate blocks (rows), each initialised alone."""
    return [] if tensor is None else list(tensor.chunk(blocks, dim=0))


def initialize_model(model: InstrumentedModel, generator: torch.Generator) -> None:
    """Apply model.init / recurrent_init / bias_init to every affine map, in forward order;
    to each gate block alone in a gated cell (the bias's fans are its weight block's).

    Batchnorm keeps torch's gamma = 1, beta = 0.
    """
    config = model.config
    for role, module in model.affine_layers():
        ref = _init_ref(config, role)
        name = ref.pop("name")
        blocks = model.gate_blocks if role != "readout" else 1
        weights = _blocks(module.weight, blocks)
        for weight in weights:
            initialize(weight, name, ref, generator)
        for weight, bias in zip(weights, _blocks(module.bias, blocks), strict=False):
            params = dict(config.bias_init)
            fans = compute_fans(tuple(weight.shape))
            initialize(bias, params.pop("name"), params, generator, fans=fans)
    model.initialized()


def build_model(
    config: ModelConfig, generator: torch.Generator, sequence: str = "rows"
) -> InstrumentedModel:
    """Build the network of ``config`` reading the images as ``sequence`` (recurrent
    models: :data:`initbench.config.geometry.SEQUENCES`) and initialise it from
    ``generator``."""
    model = model_class(config.arch)(config, sequence)
    initialize_model(model, generator)
    return model


def init_problems(config: ModelConfig, sequence: str = "rows") -> list[tuple[str, str]]:
    """(key, reason) for every initializer in ``config`` that cannot apply to its tensor
    (a gate block's, in a gated cell)."""
    with torch.device("meta"):
        model = model_class(config.arch)(config, sequence)
    problems = []
    for role, module in model.affine_layers():
        key = "model.recurrent_init" if role == "recurrent" else "model.init"
        ref = _init_ref(config, role)
        blocks = model.gate_blocks if role != "readout" else 1
        shape = tuple(module.weight.chunk(blocks, dim=0)[0].shape)
        reason = cannot_apply(ref.pop("name"), ref, shape, bias=False)
        if reason:
            problems.append((key, reason))
        bias = dict(config.bias_init)
        if module.bias is not None:
            reason = cannot_apply(bias.pop("name"), bias, (shape[0],), bias=True)
            if reason:
                problems.append(("model.bias_init", reason))
    return list(dict.fromkeys(problems))


# model.arch -> the class that builds it; the names and descriptions are
# config.architectures' (a test checks that both list the same architectures).
MODEL_CLASSES: dict[str, type[InstrumentedModel]] = {
    "mlp": MLP,
    "cnn": CNN,
    "rnn": RNN,
    "lstm": LSTM,
    "gru": GRU,
}


def model_class(arch: str) -> type[InstrumentedModel]:
    """The model class of a registered architecture (UnknownNameError lists the names)."""
    ARCHITECTURES.get(arch)
    return MODEL_CLASSES[arch]
