"""How the decay of a variance profile is read, for a prediction and a measurement alike
(``initbench.analysis`` builds its verdicts on these; they live here, the lower layer, so
that both use the same code).

* The profile runs over the layers l = 1..L (rows with t = 0) or, for an rnn, over the
  time steps t = 1..T of its *top* layer, where the loss enters.
* Backward, a cnn's v_l is grad_preact_var times layer l's map positions (H x W): the
  gradient's sum of squares over positions per channel and example. A stride-2 conv
  divides the per-element variance by about 4 (each input position feeds 9/4 outputs
  instead of 9) and keeps that sum, which is what reaches the weights (their gradient
  sums over positions): per element, any init, He's included, would read vanishing.
* ``factor``: 2**slope of the least-squares line through (position, log2 v), forward;
  the backward signal travels from the last position to the first, so its factor is
  2**(-slope): < 1 means the gradient shrinks on its way to the input. 1 = preserved,
  0.5 = halves per layer (per time step).
* ``ratio`` (end to end): v where the signal arrives over v where it starts, last/first
  forward, first/last backward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

TIME_STEP, LAYER = "time step", "layer"  # the unit a profile runs over


def profile_rows(layer: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(mask, positions, unit) of the rows a profile runs over, given each row's layer
    and time step: an rnn's top layer across its time steps (rows with t > 0), else the
    layers (rows with t = 0)."""
    layer, t = np.asarray(layer), np.asarray(t)
    timed = t > 0
    if timed.any():
        top = timed & (layer == layer[timed].max())
        return top, t[top], TIME_STEP
    return t == 0, layer[t == 0], LAYER


def summed_over_positions(
    layers: np.ndarray, grad_var: np.ndarray, positions: Mapping[int, int]
) -> np.ndarray:
    """A backward profile's v_l: ``grad_preact_var`` of each layer times its map positions
    (``initbench.config.geometry.map_positions``; NaN for a layer missing there), or as it
    is where ``positions`` is empty (mlp, rnn)."""
    if not positions:
        return grad_var
    scale = [positions.get(int(layer), math.nan) for layer in layers]
    return grad_var * np.array(scale, dtype=float)


def fit_factor(
    positions: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    backward: bool = False,
) -> float:
    """2**slope (backward: 2**-slope) of the least-squares line through (position,
    log2 value). Points whose log is not finite (a variance that underflowed to 0,
    overflowed to inf, or is NaN) are left out: the fit runs over the finite part of the
    profile. NaN with fewer than two such points."""
    x = np.asarray(positions, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log2(np.asarray(values, dtype=float))
    keep = np.isfinite(y)
    if keep.sum() < 2:
        return math.nan
    x, y = x[keep], y[keep]
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    with np.errstate(over="ignore"):
        return float(np.exp2(-slope if backward else slope))


def end_ratio(values: Sequence[float] | np.ndarray, *, backward: bool = False) -> float:
    """v where the signal arrives over v where it starts (positions ascending): last/first
    forward, first/last backward; inf or NaN where the start is 0."""
    v = np.asarray(values, dtype=np.float64)
    start, end = (v[-1], v[0]) if backward else (v[0], v[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(end / start)
