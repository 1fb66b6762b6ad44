"""Verdicts and flags, and the thresholds they use.

A variance profile's factor and end-to-end ratio (:mod:`initbench.meanfield.decay`) give its
verdict: ``vanishing`` if ratio < 1/R or factor < 1/F, ``exploding`` if ratio > R or
factor > F (the ratio decides if the two disagree), else ``stable``; a ``stable`` profile
whose units are saturated (worst sat_frac >= the threshold) is ``saturated``
(:func:`with_saturation`). Degenerate profiles are named, never dropped: ``collapsed``
(variance exactly 0 at every layer, or at an inner one), ``vanishing`` with a note (exactly
0 where the signal arrives), ``exploding`` with a note where the signal overflowed (+inf,
or NaN after growing past the factor threshold: its factor is fitted on the finite layers
before), ``non-finite`` (NaN otherwise), ``undefined`` (< 2 layers measured; not "n/a",
which pandas reads from csv as NaN).

Trainability (:func:`trainability`) is defined once here: ``yes``, ``partly`` or ``no``
from the test accuracy against chance and the final training loss against its starting
value ln(C); undefined ('') for an init-only run (:func:`init_only`), which never
trained. A run's flags (FLAGS) each have one cause; see :class:`Thresholds` and
:func:`run_flags`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from initbench.analysis.configs import missing, run_config
from initbench.config.activations import dead_units_pass_no_gradient as no_gradient
from initbench.config.thresholds import (
    CHANCE_ACCURACY,
    START_LOSS,
    Thresholds,
)
from initbench.meanfield.decay import end_ratio, fit_factor

VERDICTS: Final = (
    "stable",
    "vanishing",
    "exploding",
    "saturated",
    "collapsed",
    "non-finite",
    "undefined",
)
TRAINABLE: Final = ("yes", "partly", "no")  # trainability(); "" where it is not known
FLAGS: Final = ("diverged", "no-learning", "dead", "saturated", "init-mismatch")


def init_only(record: Mapping[str, Any]) -> bool:
    """Whether a runs row is an init-only run (``train.steps: 0``): it measured step 0 and
    never updated, so its trainability is undefined (never 'no'), it has no test pass and
    no trained network; its final loss and accuracy are those of batch 0 at init."""
    steps = record.get("config.train.steps", record.get("steps_planned"))
    return not missing(steps) and int(steps) == 0


def trainability(status: Any, accuracy: float, final_loss: float, th: Thresholds) -> str:
    """``yes``, ``partly`` or ``no`` (TRAINABLE; see :meth:`Thresholds.describe_trainable`);
    '' when not known (a failed run, or an ok run without accuracy or loss)."""
    if status == "diverged":
        return "no"
    if status != "ok" or math.isnan(accuracy) or math.isnan(final_loss):
        return ""
    loss_fell = final_loss <= START_LOSS - th.loss_margin
    if accuracy < CHANCE_ACCURACY + th.chance_margin or not loss_fell:
        return "no"
    return "yes" if accuracy >= th.trained_accuracy else "partly"


# --- decay of one profile -------------------------------------------------------------------


@dataclass(frozen=True)
class Decay:
    """How one variance profile changes along the direction its signal travels."""

    factor: float  # per layer (per time step); NaN where the fit is undefined
    ratio: float  # end of travel over start of travel
    verdict: str  # one of VERDICTS
    note: str = ""  # why a degenerate profile got its verdict


def classify(factor: float, ratio: float, thresholds: Thresholds) -> str:
    """``vanishing`` / ``exploding`` / ``stable`` from a factor and an end-to-end ratio."""
    low = ratio < 1 / thresholds.ratio or factor < 1 / thresholds.factor
    high = ratio > thresholds.ratio or factor > thresholds.factor
    if low and high:  # one criterion each way: the end-to-end ratio is what arrives
        return "vanishing" if ratio < 1 else "exploding"
    return "vanishing" if low else "exploding" if high else "stable"


def _where(positions: np.ndarray, unit: str) -> str:
    items = [str(int(p)) for p in positions]
    shown = ", ".join(items) if len(items) <= 4 else f"{items[0]}..{items[-1]} ({len(items)})"
    return f"{unit} {shown}"


def _overflow(
    x: np.ndarray, v: np.ndarray, backward: bool, thresholds: Thresholds, unit: str
) -> Decay | None:
    """An exploding Decay where the signal overflowed on its way: +inf, or NaN after the
    finite layers before it grew by more than the factor threshold (float32's inf - inf);
    the factor is fitted on those finite layers. None otherwise."""
    travel = np.arange(len(v))[::-1] if backward else np.arange(len(v))
    bad = [i for i in travel if not np.isfinite(v[i])]
    if not bad:
        return None
    first = bad[0]
    before = [i for i in travel[: list(travel).index(first)] if v[i] > 0]
    factor = fit_factor(x[before], v[before], backward=backward) if len(before) > 1 else math.nan
    grew = not math.isnan(factor) and factor > thresholds.factor
    if not (np.isposinf(v[first]) or grew):
        return None
    kind = "inf" if np.isposinf(v[first]) else "NaN"
    note = f"{kind} at {_where(x[sorted(bad)], unit)} (overflowed at {unit} {int(x[first])})"
    if len(before) > 1:
        note += f"; factor fitted on the finite {_where(x[sorted(before)], unit)}"
    return Decay(factor, math.inf, "exploding", note)


def _degenerate(
    x: np.ndarray, v: np.ndarray, ratio: float, backward: bool, thresholds: Thresholds, unit: str
) -> Decay | None:
    """The Decay of a profile with NaN, negative, infinite or zero values; else None."""
    overflow = None if (v < 0).any() else _overflow(x, v, backward, thresholds, unit)
    if overflow is not None:
        return overflow
    bad = np.isnan(v) | (v < 0)
    if bad.any():
        return Decay(math.nan, math.nan, "non-finite", f"NaN variance at {_where(x[bad], unit)}")
    zero = v == 0
    if zero.all():
        return Decay(math.nan, math.nan, "collapsed", f"variance exactly 0 at every {unit}")
    if zero.any():
        arrives_zero = zero[0] if backward else zero[-1]
        note = f"variance exactly 0 at {_where(x[zero], unit)}; factor undefined (log 0)"
        return Decay(math.nan, ratio, "vanishing" if arrives_zero else "collapsed", note)
    return None


def decay(
    positions: Sequence[float],
    values: Sequence[float],
    *,
    backward: bool,
    thresholds: Thresholds,
    unit: str = "layer",
) -> Decay:
    """Factor, end-to-end ratio and verdict of a variance profile (positions in any order)."""
    x = np.asarray(positions, dtype=float)
    v = np.asarray(values, dtype=float)
    if len(np.unique(x)) != len(x):
        raise ValueError(f"duplicate {unit} in a variance profile: {sorted(x.tolist())}")
    order = np.argsort(x)
    x, v = x[order], v[order]
    if len(v) < 2:
        note = f"only one {unit} measured: no decay" if len(v) else "no statistics at this step"
        return Decay(math.nan, math.nan, "undefined", note)
    ratio = end_ratio(v, backward=backward)
    special = _degenerate(x, v, ratio, backward, thresholds, unit)
    if special is not None:
        return special
    factor = fit_factor(x, v, backward=backward)
    return Decay(factor, ratio, classify(factor, ratio, thresholds))


def _known_max(*values: float) -> float:
    """Largest of the values that are not NaN (NaN = not recorded); NaN if none is."""
    known = [v for v in values if not math.isnan(v)]
    return max(known) if known else math.nan


def dead_units_pass_no_gradient(record: Mapping[str, Any]) -> bool:
    """Whether a runs row's activation makes a unit with input <= 0 over the whole batch
    truly dead (no gradient): relu, leaky_relu with negative_slope 0. elu, selu and
    leaky_relu with a slope still pass gradient there, so ``dead`` is not flagged for them.
    A row without a known activation keeps the flag (dead_frac is only recorded for
    rectifiers)."""
    activation = run_config(record).get("model", {}).get("activation")
    if not isinstance(activation, Mapping) or missing(activation.get("name")):
        return True
    try:
        return no_gradient(activation)
    except (KeyError, ValueError):  # an activation or parameter this version does not know
        return True


def run_flags(
    row: Mapping[str, Any], th: Thresholds, dead_blocks_gradient: bool = True
) -> list[str]:
    """The flags of one analysed run (a row of :func:`analyse_runs`), in FLAGS order.
    ``dead`` is raised only when ``dead_blocks_gradient`` (see
    :func:`dead_units_pass_no_gradient`); ``dead_max_*`` is reported either way."""
    dead = _known_max(row["dead_max_init"], row["dead_max_last"])
    sat = _known_max(row["sat_max_init"], row["sat_max_last"])
    found = {
        "diverged": row["status"] == "diverged",
        "no-learning": row["status"] == "ok"
        and trainability("ok", row["test_accuracy"], row["final_loss"], th) == "no",
        "dead": dead_blocks_gradient and dead >= th.dead,
        "saturated": sat >= th.saturated,
        "init-mismatch": bool(row["init_mismatch"]),
    }
    return [flag for flag in FLAGS if found[flag]]


def with_saturation(verdict: str, sat_max: float, th: Thresholds) -> str:
    """``saturated`` in place of ``stable`` where some layer's sat_frac reaches the
    threshold: a variance kept by units pinned at their asymptote is not a healthy signal
    (tanh with uniform [0, 1] weights keeps a factor near 1 with every unit saturated)."""
    return "saturated" if verdict == "stable" and sat_max >= th.saturated else verdict
