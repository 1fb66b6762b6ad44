"""What every instrumented model shares: the base class (watched layers, affine maps to
initialise, time steps, the readout's entry), the activation and the normalisation of a
model section."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from torch import nn

from initbench.config.activations import ACTIVATIONS, build_activation
from initbench.nets.instrument import WatchedLayer

if TYPE_CHECKING:
    from initbench.config.runconfig import ModelConfig


READOUT = "readout"  # the readout's name in the long table


class InstrumentedModel(nn.Module):
    """Base of the models: watched layers, readout, initialisation.

    ``gate_blocks``: how many stacked blocks (rows) each affine weight and bias holds; an
    initializer is applied to each block alone (a gated cell's gates: 4 for an LSTM, 3
    for a GRU; 1 elsewhere)."""

    readout: nn.Linear
    gate_blocks: int = 1

    def watched_layers(self) -> list[WatchedLayer]:
        """The watched layers in forward order (l = 1..depth)."""
        raise NotImplementedError

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """(role, module) of every affine map to initialise, in a fixed order."""
        raise NotImplementedError

    def time_steps(self) -> int:
        """Time steps per watched layer (0 for feed-forward models)."""
        return 0

    def initialized(self) -> None:
        """What follows the initializers (the LSTM's forget bias); nothing by default."""

    def readout_layer(self) -> WatchedLayer:
        """The readout as a weight-only entry after the watched layers (index depth + 1,
        name ``readout``): the probe records its weight's and gradient's statistics."""
        entry = ACTIVATIONS.get("linear")
        index = len(self.watched_layers()) + 1
        weight = self.readout.weight
        return WatchedLayer(index, READOUT, weight, None, "linear", entry.kind, entry.output_range)


def activation_meta(config: ModelConfig) -> tuple[str, str, tuple[float, float]]:
    """(name, kind, output range) of the model's activation (relu when none is given)."""
    act = config.activation or {"name": "relu"}
    entry = ACTIVATIONS.get(act["name"])
    return act["name"], entry.kind, entry.output_range


def new_activation(config: ModelConfig) -> nn.Module:
    """A fresh module of the model's activation."""
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
