"""MLP and CNN builders whose watched layers are observable without hooks, and building
and initialising any registered model (the recurrent ones: :mod:`initbench.nets.recurrent`).

Every model's ``forward(x, tape=None)`` takes the batch as (B, 1, 28, 28) and passes
the optional :class:`~initbench.measure.probes.Tape` to each watched layer, which hands it its
``preact`` (affine output), ``normed`` (batchnorm or layernorm output, if any) and ``act``. With no
tape the forward pass is the plain computation; with one, it is the same computation
plus references kept to those tensors.

Watched layers are numbered l = 1..depth in forward order; the linear readout is not
watched (it has no activation), but its weight is measured as layer depth + 1
(:meth:`InstrumentedModel.readout_layer`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from initbench.config.architectures import ARCHITECTURES, is_recurrent
from initbench.config.geometry import IMAGE_SHAPE, NUM_CLASSES, cnn_strides
from initbench.config.initializers import INITIALIZERS, cannot_apply, compute_fans, initialize
from initbench.nets.base import (
    InstrumentedModel,
    activation_meta,
    new_activation,
    new_norm,
)
from initbench.nets.instrument import Tape, WatchedLayer
from initbench.nets.recurrent import GRU, LSTM, RNN
from initbench.nets.residual import ResidualNet, apply_fixup

__all__ = ["MODEL_CLASSES", "InstrumentedModel", "build_model", "init_problems", "model_class"]

if TYPE_CHECKING:
    from initbench.config.spec import ModelConfig


class Block(nn.Module):
    """affine (Linear or Conv2d) -> optional norm -> activation: one watched layer."""

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


class BlockStack(InstrumentedModel):
    """A stack of :class:`Block` s (``blocks``) and a linear readout: the mlp's and the
    cnn's watched layers are named ``<prefix><l>``."""

    prefix = ""
    blocks: nn.ModuleList

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = activation_meta(self.config)
        return [
            WatchedLayer(
                b.index, f"{self.prefix}{b.index}", b.affine.weight, None, name, kind, out_range
            )
            for b in self.blocks
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for block in self.blocks:
            yield "hidden", block.affine
        yield "readout", self.readout


class MLP(BlockStack):
    """784 -> depth x [Linear(width) -> norm? -> act] -> Linear(10); model.widths gives
    each layer its own width."""

    prefix = "fc"

    def __init__(self, config: ModelConfig, sequence: str = "rows") -> None:
        super().__init__()
        self.config = config
        fan = math.prod(IMAGE_SHAPE)
        blocks = []
        for index, width in enumerate(config.layer_widths(), start=1):
            norm = new_norm(config, width, conv=False)
            blocks.append(Block(index, nn.Linear(fan, width), norm, new_activation(config)))
            fan = width
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Linear(fan, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (B, 784)
        for block in self.blocks:
            h = block(h, tape)  # (B, width of the layer)
        return self.readout(h)  # (B, 10)


class CNN(BlockStack):
    """depth x [Conv2d 3x3 (width ch., 'same' padding) -> norm? -> act],
    stride-2 convs at 1/3 and 2/3 of depth, global average pool, Linear(10); model.widths
    gives each conv its own channels."""

    prefix = "conv"

    def __init__(self, config: ModelConfig, sequence: str = "rows") -> None:
        super().__init__()
        self.config = config
        channels = IMAGE_SHAPE[0]
        blocks = []
        layers = zip(cnn_strides(config.depth), config.layer_widths(), strict=True)
        for index, (stride, width) in enumerate(layers, start=1):
            conv = nn.Conv2d(channels, width, 3, stride=stride, padding=1)
            norm = new_norm(config, width, conv=True)
            blocks.append(Block(index, conv, norm, new_activation(config)))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Linear(channels, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x  # (B, 1, 28, 28)
        for block in self.blocks:
            h = block(h, tape)  # (B, width, H, W)
        return self.readout(h.mean(dim=(2, 3)))  # global average pool -> (B, width) -> (B, 10)


# an affine map's role -> the model key that initialises its weight (None there: init)
ROLE_KEYS = {
    "first": "first_init",
    "hidden": "init",
    "recurrent": "recurrent_init",
    "readout": "readout_init",
}


def _roles(model: InstrumentedModel) -> Iterator[tuple[str, nn.Module]]:
    """``affine_layers`` with the first hidden layer's role ``first``."""
    first = True
    for role, module in model.affine_layers():
        if role == "hidden" and first:
            role, first = "first", False
        yield role, module


def _init_key(config: ModelConfig, role: str) -> str:
    """The model key whose reference initialises a weight of this role (as set)."""
    key = ROLE_KEYS.get(role, "init")
    return key if getattr(config, key, None) is not None else "init"


def _init_ref(config: ModelConfig, role: str) -> dict[str, Any]:
    return dict(getattr(config, _init_key(config, role)))


def layer_init(config: ModelConfig, index: int) -> dict[str, Any]:
    """The resolved reference that initialises watched layer ``index``'s weight."""
    return _init_ref(config, "first" if index == 1 else "hidden")


def _blocks(tensor: torch.Tensor | None, blocks: int) -> list[torch.Tensor]:
    """A weight's or bias's stacked gate blocks (rows), each initialised alone."""
    return [] if tensor is None else list(tensor.chunk(blocks, dim=0))


def initialize_model(model: InstrumentedModel, generator: torch.Generator) -> None:
    """Apply model.init / recurrent_init / bias_init to every affine map, in forward order;
    to each gate block alone in a gated cell (the bias's fans are its weight block's).

    Batchnorm and layernorm keep torch's gamma = 1, beta = 0.
    """
    config = model.config
    for role, module in _roles(model):
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
    model = _new_model(config, sequence)
    initialize_model(model, generator)
    if config.residual == "fixup":
        apply_fixup(model)  # type: ignore[arg-type]
    return model


def _new_model(config: ModelConfig, sequence: str = "rows") -> InstrumentedModel:
    """The model class of ``config`` (residual blocks: nets.residual's), built."""
    if config.residual is not None:
        return ResidualNet(config)
    return model_class(config.arch)(config, sequence)


def init_problems(config: ModelConfig, sequence: str = "rows") -> list[tuple[str, str]]:
    """(key, reason) for every initializer in ``config`` that cannot apply to its tensor
    (a gate block's, in a gated cell)."""
    with torch.device("meta"):
        model = _new_model(config, sequence)
    problems = _lsuv_problems(config)
    for role, module in _roles(model):
        key = f"model.{_init_key(config, role)}"
        ref = _init_ref(config, role)
        blocks = model.gate_blocks if role != "readout" else 1
        shape = tuple(module.weight.chunk(blocks, dim=0)[0].shape)
        reason = cannot_apply(ref.pop("name"), ref, shape, bias=False)
        if reason and role == "readout" and config.readout_init is None:
            reason += " (the readout is initialised by model.init unless model.readout_init is set)"
        if reason:
            problems.append((key, reason))
        bias = dict(config.bias_init)
        if module.bias is not None:
            reason = cannot_apply(bias.pop("name"), bias, (shape[0],), bias=True)
            if reason:
                problems.append(("model.bias_init", reason))
    return list(dict.fromkeys(problems))


def _lsuv_problems(config: ModelConfig) -> list[tuple[str, str]]:
    """LSUV rescales a watched layer's (input) weight, so it is named by that weight's key
    (init, first_init); as recurrent_init alone it would only draw its base init."""
    data_dependent = [
        key
        for key in ("init", "first_init", "recurrent_init")
        if getattr(config, key) and INITIALIZERS.get(getattr(config, key)["name"]).data_dependent
    ]
    if data_dependent and ARCHITECTURES.get(config.arch).gates:
        reason = (
            f"lsuv with arch {config.arch}: LSUV scales a layer's weight until its preact has "
            "variance 1, and a gated cell's watched output is its hidden state, bounded by 1 "
            "in size (o tanh(c) or a mix of tanh and the last state): not built for it"
        )
        return [(f"model.{data_dependent[0]}", reason)]
    if is_recurrent(config.arch) and data_dependent == ["recurrent_init"]:
        reason = (
            f"{config.recurrent_init['name']} as recurrent_init alone: LSUV rescales a layer's "
            "input-to-hidden weight on data and leaves the recurrent one as drawn; set it as "
            "model.init and give recurrent_init a data-free init"
        )
        return [("model.recurrent_init", reason)]
    if data_dependent and config.residual == "fixup":
        reason = (
            "lsuv with residual fixup: Fixup zeroes each branch's last layer, which LSUV "
            "would then rescale towards unit variance; choose one of them"
        )
        return [(f"model.{data_dependent[0]}", reason)]
    return []


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
