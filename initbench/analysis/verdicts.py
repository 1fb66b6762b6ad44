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
value ln(C). A run's flags (FLAGS) each have one cause; see :class:`Thresholds` and
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
from initbench.config.geometry import NUM_CLASSES
from initbench.meanfield.decay import end_ratio, fit_factor

CHANCE_ACCURACY: Final = 1 / NUM_CLASSES
SAMPLING_SIGMAS: Final = 5.0  # init check: sampling standard deviations always tolerated
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
START_LOSS: Final = math.log(NUM_CLASSES)  # cross-entropy of a uniform guess: ln(C)
FLAGS: Final = ("diverged", "no-learning", "dead", "saturated", "init-mismatch")


THRESHOLD_HELP: Final[dict[str, str]] = {
    "ratio": "end-to-end change R: vanishing if the ratio is < 1/R, exploding if > R",
    "factor": "per-layer (rnn: per-time-step) factor F: vanishing if < 1/F, exploding if > F",
    "dead": "flag 'dead' when some layer's dead_frac reaches this (step 0 or last step); "
    "relu only (and leaky_relu with negative_slope 0): elu, selu and leaky_relu pass "
    "gradient below 0",
    "saturated": "flag 'saturated' when some layer's sat_frac reaches this (step 0 or last)",
    "chance_margin": f"trainable 'no' (flag 'no-learning') when test accuracy < chance "
    f"({CHANCE_ACCURACY:g}) + this margin",
    "loss_margin": f"trainable 'no' (flag 'no-learning') when the final training loss > ln(C) "
    f"({START_LOSS:.3f}, its value at a uniform guess) - this margin (nats)",
    "trained_fraction": "trainable 'yes' when test accuracy >= chance + this fraction of "
    "the way from chance to 1 (and the loss fell below ln(C) - loss_margin)",
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
    loss_margin: float = 0.1  # nats: xavier at depth 30 keeps 2.294..2.302 (ln 10 = 2.303)
    trained_fraction: float = 0.5  # 10 classes: test accuracy >= 0.55
    init_tolerance: float = 0.05  # relative; catches e.g. an uncorrected truncated normal (0.77x)
    theory_tolerance: float = 0.05  # per layer, relative: issue 8's "agree to within 0.05"

    def __post_init__(self) -> None:
        problems = [f"{n} must be > 1" for n in ("ratio", "factor") if not getattr(self, n) > 1]
        problems += [
            f"{n} must be in (0, 1]" for n in ("dead", "saturated") if not 0 < getattr(self, n) <= 1
        ]
        if not 0 <= self.chance_margin < 1 - CHANCE_ACCURACY:
            problems.append(f"chance_margin must be in [0, {1 - CHANCE_ACCURACY:g})")
        if not 0 <= self.loss_margin < START_LOSS:
            problems.append(f"loss_margin must be in [0, {START_LOSS:.3f})")
        if not 0 < self.trained_fraction <= 1:
            problems.append("trained_fraction must be in (0, 1]")
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
            f"exploding: ratio > {r:g} or factor > {f:g} (also where the signal overflowed to "
            "inf or NaN after growing: factor fitted on the layers before); otherwise stable, "
            f"or saturated when some layer's sat_frac >= {self.saturated:g}",
            self.describe_trainable(),
            f"flags: dead = worst dead_frac >= {self.dead:g}; saturated = worst sat_frac >= "
            f"{self.saturated:g} (at step 0 or the last step; dead only for relu and leaky_relu "
            "with negative_slope 0, as elu, selu and leaky_relu units with input <= 0 still "
            "pass gradient); no-learning = trainable 'no' on a run that finished (ok); "
            "diverged = a loss or statistic went non-finite",
            f"init-mismatch: |w_var / formula - 1| > max({self.init_tolerance:g}, "
            f"{SAMPLING_SIGMAS:g} sqrt(2/(N-1))) at step 0 for some layer (N = weight elements)",
        ]

    @property
    def trained_accuracy(self) -> float:
        """The test accuracy from which a run counts as trained (trainable 'yes')."""
        return CHANCE_ACCURACY + self.trained_fraction * (1 - CHANCE_ACCURACY)

    def describe_trainable(self) -> str:
        """Trainability's definition with these thresholds."""
        floor, loss = CHANCE_ACCURACY + self.chance_margin, START_LOSS - self.loss_margin
        return (
            f"trainable: yes = test accuracy >= {self.trained_accuracy:.3g} (chance "
            f"{CHANCE_ACCURACY:g} + {self.trained_fraction:g} of the way to 1) and final "
            f"training loss <= {loss:.3g} (ln {NUM_CLASSES} = {START_LOSS:.3f}, the loss of a "
            f"uniform guess, - {self.loss_margin:g}); no = test accuracy < {floor:.3g} (chance "
            f"+ {self.chance_margin:g}) or final loss > {loss:.3g} (it never left its start), "
            "or diverged; partly = between; unknown (blank) for a failed run"
        )


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
