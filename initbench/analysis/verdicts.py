"""Verdicts and flags, and the thresholds they use.

A variance profile's factor and end-to-end ratio (:mod:`initbench.meanfield.decay`) give its
verdict: ``vanishing`` if ratio < 1/R or factor < 1/F, ``exploding`` if ratio > R or
factor > F (the ratio decides if the two disagree), else ``stable``. Degenerate profiles
are named, never dropped: ``collapsed`` (variance exactly 0 at every layer, or at an inner
one), ``vanishing`` with a note (exactly 0 where the signal arrives), ``exploding`` with a
note (+inf), ``non-finite`` (NaN), ``undefined`` (< 2 layers measured; not "n/a", which
pandas reads from csv as NaN). A degenerate profile has no factor: the fit is not asked.

A run's flags (FLAGS) each have one cause; see :class:`Thresholds` and :func:`run_flags`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from initbench.analysis.configs import missing, run_config
from initbench.config.activations import dead_units_pass_no_gradient as no_gradient
from initbench.config.geometry import NUM_CLASSES
from initbench.meanfield.decay import end_ratio, fit_factor

CHANCE_ACCURACY: Final = 1 / NUM_CLASSES
SAMPLING_SIGMAS: Final = 5.0  # init check: sampling standard deviations always tolerated
VERDICTS: Final = ("stable", "vanishing", "exploding", "collapsed", "non-finite", "undefined")
FLAGS: Final = ("diverged", "no-learning", "dead", "saturated", "init-mismatch")


THRESHOLD_HELP: Final[dict[str, str]] = {
    "ratio": "end-to-end change R: vanishing if the ratio is < 1/R, exploding if > R",
    "factor": "per-layer (rnn: per-time-step) factor F: vanishing if < 1/F, exploding if > F",
    "dead": "flag 'dead' when some layer's dead_frac reaches this (step 0 or last step); "
    "relu only (and leaky_relu with negative_slope 0): elu, selu and leaky_relu pass "
    "gradient below 0",
    "saturated": "flag 'saturated' when some layer's sat_frac reaches this (step 0 or last)",
    "chance_margin": f"flag 'no-learning' when test accuracy <= chance ({CHANCE_ACCURACY:g}) + "
    "this margin",
    "init_tolerance": "flag 'init-mismatch' when |w_var / formula - 1| at step 0 exceeds "
    f"this (widened to {SAMPLING_SIGMAS:g} sampling standard deviations for small weights)",
    "theory_tolerance": "flag 'theory-mismatch' only when measurement and mean-field theory "
    "differ by more than this per layer (relative), besides exceeding the seeds' spread",
}


@dataclass(frozen=True)
class Thresholds:
    """Verdict and flag thresholds; every one is an ``initbench report`` option."""

    ratio: float = 100.0  # "an end-to-end change beyond 100x either way" (issue 3)
    factor: float = 1.5  # xavier + relu halves per layer (0.5 < 1/1.5): caught at any depth
    dead: float = 0.5  # half the units of a layer dead (dead_frac)
    saturated: float = 0.5  # half the activation elements in the flat 1% of tanh/sigmoid
    chance_margin: float = 0.05  # "within a few points of chance"
    init_tolerance: float = 0.05  # relative; catches e.g. an uncorrected truncated normal (0.77x)
    theory_tolerance: float = 0.05  # per layer, relative: issue 8's "agree to within 0.05"

    def __post_init__(self) -> None:
        problems = [f"{n} must be > 1" for n in ("ratio", "factor") if not getattr(self, n) > 1]
        problems += [
            f"{n} must be in (0, 1]" for n in ("dead", "saturated") if not 0 < getattr(self, n) <= 1
        ]
        if not 0 <= self.chance_margin < 1 - CHANCE_ACCURACY:
            problems.append(f"chance_margin must be in [0, {1 - CHANCE_ACCURACY:g})")
        problems += [
            f"{n} must be > 0"
            for n in ("init_tolerance", "theory_tolerance")
            if not getattr(self, n) > 0
        ]
        if problems:
            raise ValueError("; ".join(problems))

    def describe(self) -> list[str]:
        """The thresholds as printed under every table."""
        r, f = self.ratio, self.factor
        return [
            f"vanishing: ratio < 1/{r:g} or factor < 1/{f:g} (= {1 / f:.3g}); "
            f"exploding: ratio > {r:g} or factor > {f:g}; otherwise stable",
            f"flags: dead = worst dead_frac >= {self.dead:g}; saturated = worst sat_frac >= "
            f"{self.saturated:g} (at step 0 or the last step; dead only for relu and leaky_relu "
            "with negative_slope 0, as elu, selu and leaky_relu units with input <= 0 still "
            "pass gradient); no-learning = test accuracy <= "
            f"{CHANCE_ACCURACY + self.chance_margin:.3g} (chance {CHANCE_ACCURACY:g} + "
            f"{self.chance_margin:g}); diverged = a loss or statistic went non-finite",
            f"init-mismatch: |w_var / formula - 1| > max({self.init_tolerance:g}, "
            f"{SAMPLING_SIGMAS:g} sqrt(2/(N-1))) at step 0 for some layer (N = weight elements)",
        ]


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


def _degenerate(x: np.ndarray, v: np.ndarray, ratio: float, backward: bool, unit: str):
    """The Decay of a profile with NaN, negative, infinite or zero values; else None."""
    bad = np.isnan(v) | (v < 0)
    if bad.any():
        return Decay(math.nan, math.nan, "non-finite", f"NaN variance at {_where(x[bad], unit)}")
    if np.isposinf(v).any():
        return Decay(math.nan, ratio, "exploding", f"inf at {_where(x[np.isposinf(v)], unit)}")
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
    special = _degenerate(x, v, ratio, backward, unit)
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
    accuracy = row["test_accuracy"]
    found = {
        "diverged": row["status"] == "diverged",
        "no-learning": row["status"] == "ok"
        and not math.isnan(accuracy)
        and accuracy <= CHANCE_ACCURACY + th.chance_margin,
        "dead": dead_blocks_gradient and dead >= th.dead,
        "saturated": sat >= th.saturated,
        "init-mismatch": bool(row["init_mismatch"]),
    }
    return [flag for flag in FLAGS if found[flag]]
