"""The fractions' device counts: ``dead_frac`` and ``sat_frac`` (see the catalogue), and
the per-channel moments of a residual stream (``chan_sq_mean``, ``chan_var``), which take
the same path: a sum the device takes, divided on the host.

A fraction is a count the device takes of a tensor (alive units, saturated elements),
reaching the host with the step's sums, where it becomes ``count / divisor`` (or one
minus that). :data:`COUNTS` maps each fraction reduction of the catalogue to the count
that implements it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from initbench.config.activations import ACTIVATIONS, SATURATION_FRACTION
from initbench.measure.exact import flat_rows
from initbench.nets.instrument import WatchedLayer

EXACT_FLOAT32 = 1 << 24  # integers below this add up exactly in float32


class Scratch:
    """Work buffers reused across probed steps: a large temporary freshly allocated at
    every step costs page faults (measured: as much as the kernel itself for 6 MB)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def take(self, role: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` (``like``'s dtype and device) for ``role``;
        valid until the next ``take`` of the same role."""
        numel, key = math.prod(shape), (role, like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[:numel].view(*shape)


def alive_units(stacked: torch.Tensor) -> torch.Tensor:
    """(G, B, units[, H, W]) -> (G, units) bool: > 0 somewhere in the batch (and space)."""
    return stacked.detach().amax(dim=[1, *range(3, stacked.dim())]) > 0


def saturation_bounds(low: float, high: float) -> tuple[float, float]:
    """(centre, threshold) of a saturation count: an element is saturated where its
    distance from the centre exceeds 99% of the half-range."""
    centre, half = (low + high) / 2, (high - low) / 2
    return centre, SATURATION_FRACTION * half


def saturated_count(flat: torch.Tensor, low: float, high: float, scratch: Scratch) -> torch.Tensor:
    """(G, n) -> (G,): elements beyond 99% of the half-range from the centre, counted as
    0/1 floats (comparisons into bool tensors take several times longer on a CPU); the
    sum is exact while n < 2^24 in float32, and is taken in float64 beyond."""
    centre, threshold = saturation_bounds(low, high)
    distance = scratch.take("distance", flat.shape, flat)
    if centre == 0.0:
        torch.abs(flat, out=distance)
    else:
        torch.sub(flat, centre, out=distance).abs_()
    beyond = distance.gt_(threshold)  # 1.0 where saturated (never for NaN: those rows are NaN)
    return beyond.sum(dim=1, dtype=None if flat.shape[1] < EXACT_FLOAT32 else torch.float64)


@dataclass(frozen=True)
class DeadUnits:
    """dead_frac: 1 - alive units / units, a unit alive where it is > 0 somewhere."""

    complement = True  # the fraction is 1 - count / divisor

    def count(self, stacked: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
        """(G,) alive units of (G, B, units[, H, W]) into ``out`` (float64)."""
        torch.sum(alive_units(stacked), dim=1, dtype=torch.float64, out=out)  # (G, units): small

    def divisor(self, shape: Sequence[int]) -> int:
        """Units (channels) of a (B, units[, H, W]) tensor."""
        return shape[1]


@dataclass(frozen=True)
class Saturated:
    """sat_frac: saturated elements / elements, relative to the activation's range."""

    output_range: tuple[float, float]
    complement = False

    def count(self, stacked: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
        """(G,) saturated elements of (G, ...) into ``out`` (integers: exact for any size)."""
        out.copy_(saturated_count(flat_rows(stacked), *self.output_range, scratch))

    def divisor(self, shape: Sequence[int]) -> int:
        """Elements of the tensor."""
        return math.prod(shape)


@dataclass(frozen=True)
class ChannelMoment:
    """chan_sq_mean / chan_var: each channel's (unit's) mean over the batch and positions,
    squared, or its variance there (population), summed over channels; divided by the
    channels on the host. Brock et al. 2021's signal propagation plot averages these."""

    squared_mean: bool
    complement = False

    def count(self, stacked: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
        """(G,) sum over channels of (G, B, channels[, H, W]) into ``out`` (float64)."""
        x = stacked.detach().double()  # float64: a channel mean of 1e15 squares exactly
        over = [1, *range(3, x.dim())]  # the batch and the positions
        var, mean = torch.var_mean(x, dim=over, correction=0)  # (G, channels)
        torch.sum(mean.square() if self.squared_mean else var, dim=1, out=out)

    def divisor(self, shape: Sequence[int]) -> int:
        """Channels (units) of a (B, channels[, H, W]) tensor."""
        return shape[1]


Count = DeadUnits | Saturated | ChannelMoment

# Fraction reduction of the catalogue -> the count of a layer's tensor that implements it.
COUNTS: dict[str, Callable[[WatchedLayer], Count]] = {
    "dead_frac": lambda layer: DeadUnits(),
    "sat_frac": lambda layer: Saturated(layer.output_range),
    "chan_sq_mean": lambda layer: ChannelMoment(squared_mean=True),
    "chan_var": lambda layer: ChannelMoment(squared_mean=False),
    "gate_sat_frac": lambda layer: Saturated(ACTIVATIONS.get("sigmoid").output_range),
}


def _finite_rows(flat: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(flat.amax(dim=1)) & torch.isfinite(flat.amin(dim=1))


def dead_fraction(stacked: torch.Tensor) -> torch.Tensor:
    """(G, B, units[, H, W]) -> (G,): fraction of units (channels) never > 0 over the
    batch (and spatial positions); NaN where the input has a non-finite element."""
    with torch.no_grad():
        units = stacked.shape[2]
        fraction = 1.0 - alive_units(stacked).sum(dim=1, dtype=torch.float64) / units
        return torch.where(_finite_rows(flat_rows(stacked)), fraction, torch.nan)


def saturated_fraction(stacked: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(G, ...) -> (G,): fraction of elements beyond 99% of the half-range from the centre;
    NaN where the activation has a non-finite element."""
    with torch.no_grad():
        flat = flat_rows(stacked)
        fraction = saturated_count(flat, low, high, Scratch()).double() / flat.shape[1]
        return torch.where(_finite_rows(flat), fraction, torch.nan)
