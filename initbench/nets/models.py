"""MLP, CNN and RNN builders whose watched layers are observable without hooks.

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

from initbench.config.activations import ACTIVATIONS, build_activation
from initbench.config.architectures import ARCHITECTURES
from initbench.config.geometry import IMAGE_SHAPE, NUM_CLASSES, cnn_strides
from initbench.config.initializers import INITIALIZERS, cannot_apply, compute_fans, initialize
from initbench.nets.instrument import Tape, WatchedLayer

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


class InstrumentedModel(nn.Module):
    """Base of the three models: watched layers, readout, initialisation."""

    readout: nn.Linear

    def watched_layers(self) -> list[WatchedLayer]:
        """The watched layers in forward order (l = 1..depth)."""
        raise NotImplementedError

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """(role, module) of every affine map to initialise, in a fixed order."""
        raise NotImplementedError

    def time_steps(self) -> int:
        """Time steps per watched layer (0 for feed-forward models)."""
        return 0

    def readout_layer(self) -> WatchedLayer:
        """The readout as a weight-only entry after the watched layers (index depth + 1,
        name ``readout``): the probe records its weight's and gradient's statistics."""
        entry = ACTIVATIONS.get("linear")
        index = len(self.watched_layers()) + 1
        weight = self.readout.weight
        return WatchedLayer(index, READOUT, weight, None, "linear", entry.kind, entry.output_range)


def _activation_meta(config: ModelConfig) -> tuple[str, str, tuple[float, float]]:
    act = config.activation or {"name": "relu"}
    entry = ACTIVATIONS.get(act["name"])
    return act["name"], entry.kind, entry.output_range


def _new_activation(config: ModelConfig) -> nn.Module:
    act = dict(config.activation or {"name": "relu"})
    return build_activation(act.pop("name"), act)


def new_norm(config: ModelConfig, units: int, conv: bool) -> nn.Module | None:
    """The normalisation model.norm (or batchnorm) asks for, of ``units`` features
    (channels): BatchNorm over the batch (and positions) per unit, or LayerNorm over each
    example's units (channels and positions: GroupNorm with one group), or None."""
    norm = config.normalization
    if norm == "batch":
        return nn.BatchNorm2d(units) if conv else nn.BatchNorm1d(units)
    if norm == "layer":
        return nn.GroupNorm(1, units) if conv else nn.LayerNorm(units)
    return None


class MLP(InstrumentedModel):
    """784 -> depth x [Linear(width) -> norm? -> act] -> Linear(10); model.widths gives
    each layer its own width."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        fan = math.prod(IMAGE_SHAPE)
        blocks = []
        for index, width in enumerate(config.layer_widths(), start=1):
            norm = new_norm(config, width, conv=False)
            blocks.append(Block(index, nn.Linear(fan, width), norm, _new_activation(config)))
            fan = width
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Linear(fan, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (B, 784)
        for block in self.blocks:
            h = block(h, tape)  # (B, width of the layer)
        return self.readout(h)  # (B, 10)

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = _activation_meta(self.config)
        return [
            WatchedLayer(b.index, f"fc{b.index}", b.affine.weight, None, name, kind, out_range)
            for b in self.blocks
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for block in self.blocks:
            yield "hidden", block.affine
        yield "readout", self.readout


class CNN(InstrumentedModel):
    """depth x [Conv2d 3x3 (width ch., 'same' padding) -> norm? -> act],
    stride-2 convs at 1/3 and 2/3 of depth, global average pool, Linear(10); model.widths
    gives each conv its own channels."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = IMAGE_SHAPE[0]
        blocks = []
        layers = zip(cnn_strides(config.depth), config.layer_widths(), strict=True)
        for index, (stride, width) in enumerate(layers, start=1):
            conv = nn.Conv2d(channels, width, 3, stride=stride, padding=1)
            norm = new_norm(config, width, conv=True)
            blocks.append(Block(index, conv, norm, _new_activation(config)))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Linear(channels, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x  # (B, 1, 28, 28)
        for block in self.blocks:
            h = block(h, tape)  # (B, width, H, W)
        return self.readout(h.mean(dim=(2, 3)))  # global average pool -> (B, width) -> (B, 10)

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = _activation_meta(self.config)
        return [
            WatchedLayer(b.index, f"conv{b.index}", b.affine.weight, None, name, kind, out_range)
            for b in self.blocks
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for block in self.blocks:
            yield "hidden", block.affine
        yield "readout", self.readout


class ElmanLayer(nn.Module):
    """h_t = act(norm?(W_ih x_t + b + W_hh h_{t-1})), h_0 = 0; every step's preact is
    watchable. The norm (LayerNorm, or none) normalises the recurrent pre-activation of
    each example and step (Ba et al. 2016)."""

    def __init__(
        self, index: int, input_size: int, hidden: int, act: nn.Module, norm: nn.Module | None
    ) -> None:
        super().__init__()
        self.index = index
        self.w_ih = nn.Linear(input_size, hidden)
        self.w_hh = nn.Linear(hidden, hidden, bias=False)
        self.act = act
        self.norm = norm

    def forward(self, xs: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        batch, steps, _ = xs.shape  # (B, T, input_size)
        projected = self.w_ih(xs)  # (B, T, hidden): the input part of every step at once
        h = projected.new_zeros(batch, self.w_hh.out_features)
        outputs = []
        for t in range(steps):
            preact = projected[:, t] + self.w_hh(h)  # (B, hidden)
            normed = self.norm(preact) if self.norm is not None else None
            h = self.act(preact if normed is None else normed)
            if tape is not None:
                tape.watch(self.index, t + 1, preact, normed, h)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, hidden)


class RNN(InstrumentedModel):
    """Vanilla (Elman) RNN reading an image row by row (28 steps of 28 pixels),
    depth stacked layers of width units, readout from the top layer's last state."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        size = IMAGE_SHAPE[0] * IMAGE_SHAPE[2]
        layers = []
        for index in range(1, config.depth + 1):
            norm = new_norm(config, config.width, conv=False)
            layers.append(ElmanLayer(index, size, config.width, _new_activation(config), norm))
            size = config.width
        self.layers = nn.ModuleList(layers)
        self.readout = nn.Linear(size, NUM_CLASSES)

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], IMAGE_SHAPE[1], -1)  # (B, 28 rows, 28 pixels)
        for layer in self.layers:
            h = layer(h, tape)  # (B, 28, width)
        return self.readout(h[:, -1])  # last state -> (B, 10)

    def time_steps(self) -> int:
        return IMAGE_SHAPE[1]

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = _activation_meta(self.config)
        return [
            WatchedLayer(
                r.index, f"rnn{r.index}", r.w_ih.weight, r.w_hh.weight, name, kind, out_range
            )
            for r in self.layers
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for layer in self.layers:
            yield "hidden", layer.w_ih
            yield "recurrent", layer.w_hh
        yield "readout", self.readout


READOUT = "readout"  # the readout's name in the long table
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


def initialize_model(model: InstrumentedModel, generator: torch.Generator) -> None:
    """Apply model.init / recurrent_init / bias_init to every affine map, in forward order.

    Batchnorm and layernorm keep torch's gamma = 1, beta = 0.
    """
    config = model.config
    for role, module in _roles(model):
        ref = _init_ref(config, role)
        initialize(module.weight, ref.pop("name"), ref, generator)
        if module.bias is not None:
            bias = dict(config.bias_init)
            fans = compute_fans(tuple(module.weight.shape))
            initialize(module.bias, bias.pop("name"), bias, generator, fans=fans)


def build_model(config: ModelConfig, generator: torch.Generator) -> InstrumentedModel:
    """Build the network of ``config`` and initialise it from ``generator``."""
    model = _new_model(config)
    initialize_model(model, generator)
    if config.residual == "fixup":
        from initbench.nets.residual import apply_fixup

        apply_fixup(model)  # type: ignore[arg-type]
    return model


def _new_model(config: ModelConfig) -> InstrumentedModel:
    """The model class of ``config`` (residual blocks: nets.residual's), built."""
    if config.residual is not None:
        from initbench.nets.residual import ResidualNet  # it imports this module

        return ResidualNet(config)
    return model_class(config.arch)(config)


def init_problems(config: ModelConfig) -> list[tuple[str, str]]:
    """(key, reason) for every initializer in ``config`` that cannot apply to its tensor."""
    with torch.device("meta"):
        model = _new_model(config)
    problems = _lsuv_problems(config)
    for role, module in _roles(model):
        key = f"model.{_init_key(config, role)}"
        ref = _init_ref(config, role)
        reason = cannot_apply(ref.pop("name"), ref, tuple(module.weight.shape), bias=False)
        if reason and role == "readout" and config.readout_init is None:
            reason += " (the readout is initialised by model.init unless model.readout_init is set)"
        if reason:
            problems.append((key, reason))
        bias = dict(config.bias_init)
        if module.bias is not None:
            reason = cannot_apply(bias.pop("name"), bias, tuple(module.bias.shape), bias=True)
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
    if config.arch == "rnn" and data_dependent == ["recurrent_init"]:
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
MODEL_CLASSES: dict[str, type[InstrumentedModel]] = {"mlp": MLP, "cnn": CNN, "rnn": RNN}


def model_class(arch: str) -> type[InstrumentedModel]:
    """The model class of a registered architecture (UnknownNameError lists the names)."""
    ARCHITECTURES.get(arch)
    return MODEL_CLASSES[arch]
