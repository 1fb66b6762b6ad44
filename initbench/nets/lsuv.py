"""LSUV's data-dependent pass (Mishkin & Matas 2016, Algorithm 1).

After the base init (``initbench.config.lsuv``), each watched layer whose init is
``lsuv`` is taken in forward order: its preact variance on the calibration batch (the
run's own seeded batch 0) is measured, and its weight divided by the square root of that
variance, until ``|Var - 1| < tol`` or ``max_iter`` rescalings. The variance is the one
the probe records, ``preact_var``: over all elements of the batch tensor, unbiased, in
float64.

An rnn layer's input-to-hidden weight W_ih is rescaled, and the variance is over all its
time steps at once (the (B, T, width) preact); the hidden-to-hidden weight keeps its init
(model.recurrent_init), the scale that decides growth or decay through time. With zero
biases and h_0 = 0, a positively homogeneous activation (relu, leaky_relu, linear) makes
every step's preact linear in W_ih, so one rescaling suffices, as for a feed-forward
layer; others (tanh, elu) take a few. Dividing W_hh by the same factor instead makes the
variance vary like a power 2T of it, and the iteration W <- W / sqrt(Var) then
oscillates or collapses (a relu rnn, depth 4, width 16: layers 2-4 ended at 0.89,
4e-9 and NaN).

A layer whose variance is 0 (its input is zero: every unit below is dead) or not finite
cannot be rescaled to 1; it is left as it is and reported, never hidden. Batchnorm's
running statistics are restored afterwards: the calibration passes are not training.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from initbench.config.initializers import INITIALIZERS
from initbench.nets.instrument import Tape, WatchedLayer
from initbench.nets.models import InstrumentedModel, layer_init


@dataclass(frozen=True)
class LayerFit:
    """What LSUV did to one watched layer."""

    layer: int
    name: str
    iterations: int  # rescalings applied
    variance: float  # preact variance after them, on the calibration batch
    reached: bool  # |variance - 1| < tol
    note: str  # why it was not reached ('' if it was)


class _Stop(Exception):
    """Raised by the capture once the layers above the target begin: no need to go on."""


class _Capture(Tape):
    """A tape keeping one layer's preacts (every time step of an rnn layer)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.preacts: list[torch.Tensor] = []

    def watch(self, layer: int, t: int, preact: torch.Tensor, normed: Any, act: Any) -> None:
        if layer > self.target:
            raise _Stop
        if layer == self.target:
            self.preacts.append(preact)


def preact_variance(model: InstrumentedModel, x: torch.Tensor, layer: int) -> float:
    """Var(preact) of watched layer ``layer`` on batch ``x``: over all elements (an rnn
    layer's every time step), unbiased, float64."""
    capture = _Capture(layer)
    with contextlib.suppress(_Stop):
        model(x, capture)
    return float(torch.cat([p.detach().flatten() for p in capture.preacts]).double().var())


def lsuv_targets(model: InstrumentedModel) -> list[tuple[WatchedLayer, dict[str, Any]]]:
    """The watched layers whose weight init is data-dependent, with its parameters."""
    found = []
    for layer in model.watched_layers():
        ref = layer_init(model.config, layer.index)
        if INITIALIZERS.get(ref["name"]).data_dependent:
            found.append((layer, ref))
    return found


def _fit(model: InstrumentedModel, x: torch.Tensor, layer: WatchedLayer, ref: dict) -> LayerFit:
    tol, max_iter = float(ref["tol"]), int(ref["max_iter"])
    variance, iterations = preact_variance(model, x, layer.index), 0
    while not abs(variance - 1) < tol and iterations < max_iter:
        if not (math.isfinite(variance) and variance > 0):
            break
        layer.weight.mul_(1 / math.sqrt(variance))
        iterations += 1
        variance = preact_variance(model, x, layer.index)
    reached = abs(variance - 1) < tol
    return LayerFit(layer.index, layer.name, iterations, variance, reached, _why(variance, tol))


def _why(variance: float, tol: float) -> str:
    if abs(variance - 1) < tol:
        return ""
    if variance == 0:
        return "preact variance 0: its input is zero (every unit below dead), no scale helps"
    if not math.isfinite(variance):
        return f"preact variance {variance}: not finite, left unscaled"
    return f"preact variance {variance:.4g} after max_iter rescalings, not within tol {tol} of 1"


def apply_lsuv(model: InstrumentedModel, batch: Callable[[], torch.Tensor]) -> list[LayerFit]:
    """Rescale every lsuv layer of ``model`` in forward order on the calibration batch
    ``batch()`` (taken only where some layer's init is lsuv; the model in training mode, as
    the run measures it); batchnorm buffers are left as they were. Returns what was done
    per layer (empty if no layer's init is lsuv)."""
    targets = lsuv_targets(model)
    if not targets:
        return []
    x = batch()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.no_grad():
        fits = [_fit(model, x, layer, ref) for layer, ref in targets]
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return fits


def fits_record(fits: list[LayerFit]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(summary ``lsuv``, summary ``lsuv_note``) of an LSUV pass: per-layer records, and
    the layers that did not reach unit variance ('' if all did); None, None without LSUV."""
    if not fits:
        return None, None
    missed = [f"{f.name} (layer {f.layer}): {f.note}" for f in fits if not f.reached]
    return [asdict(f) for f in fits], "; ".join(missed)
