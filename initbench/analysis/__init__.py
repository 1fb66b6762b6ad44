"""Verdicts from stored statistics: decay factors, vanishing / exploding, flags.

Pure functions on the tables :func:`initbench.results.store.load_experiment` returns (``runs``,
``layers``); no I/O, no printing. Every number comes from stored statistics by the
definitions below, which the README repeats word for word.

Decay of one variance profile v (``preact_var`` forward, ``grad_preact_var`` backward):

* ``factor``: 2**slope of the least-squares line through (l, log2 v_l), l = 1..L. The
  backward signal travels from layer L to layer 1, so its factor is 2**(-slope): < 1
  means the gradient shrinks on its way to the input. 1 = preserved, 0.5 = halves.
* ``ratio`` (end to end): v where the signal arrives over v where it starts:
  preact_var[L] / preact_var[1] forward, grad_preact_var[1] / grad_preact_var[L] backward.
* rnn: the same across the time steps t = 1..T of the *top* layer (forward: t = 1 -> T;
  backward = through time, t = T -> 1); the top layer is where the loss enters.
* cnn backward: v_l is grad_preact_var times the layer's map positions (H x W), the
  gradient's sum of squares over positions per channel and example. A stride-2 conv
  divides the per-element variance by about 4 (each input position feeds 9/4 outputs
  instead of 9) and keeps that sum, which is what reaches the weights (their gradient
  sums over positions): per element, any init, He's included, would read vanishing.
* verdict: ``vanishing`` if ratio < 1/R or factor < 1/F, ``exploding`` if ratio > R or
  factor > F (the ratio decides if the two disagree), else ``stable``. Degenerate
  profiles are named, never dropped: ``collapsed`` (variance exactly 0 at every layer,
  or at an inner one), ``vanishing`` with a note (exactly 0 where the signal arrives),
  ``exploding`` with a note (+inf), ``non-finite`` (NaN), ``undefined`` (< 2 layers measured;
  not "n/a", which pandas reads from csv as NaN).

Each run is analysed at step 0 (``init``) and at its last logged step (``last``: the
trained network, or the step where a diverged run went non-finite).

Theory beside measurement (step 0): each run's factors and ratios are also predicted by
:func:`initbench.theory.predict` from the run's own measured layer-1 ``preact_sq`` (q1;
rnn: per time step, as layer 1's input drive), ``theory_<quantity>_init``. Over a
configuration's n seeds, d = ln(measured / predicted) per seed; ``theory-mismatch`` where
|mean d| > max(K ln(1 + theory_tolerance), t sd(d) sqrt(1 + 1/n)), K = 1 for a factor and
L - 1 for a ratio, t the 97.5% Student-t quantile with n - 1 dof: theory lies outside the
95% prediction interval of one network (the finite-width spread the seeds show) and off
by more than the tolerance per layer. One seed: not evaluated.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench import theory
from initbench.config.catalogue import REFERENCES, ref_defaults
from initbench.config.geometry import NUM_CLASSES, cnn_positions, weight_shapes
from initbench.config.initializers import expected_moments

CHANCE_ACCURACY: Final = 1 / NUM_CLASSES
ZERO_VARIANCE: Final = 1e-12  # a measured w_var below this is the exact 0 of a constant init
SAMPLING_SIGMAS: Final = 5.0  # init check: sampling standard deviations always tolerated

TAGS: Final = {"init": "step 0", "last": "last logged step"}
DIRECTIONS: Final = {"fwd": "preact_var", "bwd": "grad_preact_var", "normed": "normed_var"}
VERDICTS: Final = ("stable", "vanishing", "exploding", "collapsed", "non-finite", "undefined")
FLAGS: Final = ("diverged", "no-learning", "dead", "saturated", "init-mismatch")
SIGNAL_METRICS: Final = ("preact_var", "normed_var", "grad_preact_var", "dead_frac", "sat_frac")

# --- thresholds -----------------------------------------------------------------------------


THRESHOLD_HELP: Final[dict[str, str]] = {
    "ratio": "end-to-end change R: vanishing if the ratio is < 1/R, exploding if > R",
    "factor": "per-layer (rnn: per-time-step) factor F: vanishing if < 1/F, exploding if > F",
    "dead": "flag 'dead' when some layer's dead_frac reaches this (step 0 or last step); "
    "relu only (and leaky_relu with negative_slope 0): elu, selu and leaky_relu pass "
    "gradient below 0",
    "saturated": "flag 'saturated' when some layer's sat_frac reaches this (step 0 or last)",
    "chance_margin": "flag 'no-learning' when test accuracy <= chance (0.1) + this margin",
    "init_tolerance": "flag 'init-mismatch' when |w_var / formula - 1| at step 0 exceeds "
    "this (widened to 5 sampling standard deviations for small weights)",
    "theory_tolerance": "flag 'theory-mismatch' only when measurement and mean-field theory "
    "differ by more than this per layer (relative), besides exceeding the seeds' spread",
}


@dataclass(frozen=True)
class Thresholds:
    """Verdict and flag thresholds; every one is an ``initbench report`` option."""

    ratio: float = 100.0  # "an end-to-end change beyond 100x either way" (issue 3)
    factor: float = 1.5  # xavier + relu halves per layer (0.5 < 1/1.5): caught at any depth
    dead: float = 0.5  # half the units of a layer never active over the batch
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


def fit_factor(positions: Sequence[float], values: Sequence[float], backward: bool) -> float:
    """2**slope (forward) or 2**-slope (backward) of the least-squares fit of log2(values)."""
    x = np.asarray(positions, dtype=float)
    y = np.log2(np.asarray(values, dtype=float))
    dx = x - x.mean()
    slope = float((dx * (y - y.mean())).sum() / (dx * dx).sum())
    with np.errstate(over="ignore"):
        return float(np.exp2(-slope if backward else slope))


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
    start, end = (v[-1], v[0]) if backward else (v[0], v[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.float64(end) / np.float64(start))
    special = _degenerate(x, v, ratio, backward, unit)
    if special is not None:
        return special
    factor = fit_factor(x, v, backward)
    return Decay(factor, ratio, classify(factor, ratio, thresholds))


class RunStats:
    """One run's long table as numpy arrays indexed by (step, metric): the lookups the
    analysis makes thousands of times, without pandas' per-filter overhead."""

    def __init__(self, run_layers: pd.DataFrame) -> None:
        self.step = run_layers["step"].to_numpy(np.int64)
        self.layer = run_layers["layer"].to_numpy(np.int64)
        self.t = run_layers["t"].to_numpy(np.int64)
        self.value = run_layers["value"].to_numpy(float)
        index: dict[tuple[int, str], list[int]] = {}
        keys = zip(self.step.tolist(), run_layers["metric"].tolist(), strict=True)
        for i, key in enumerate(keys):
            index.setdefault(key, []).append(i)
        self.index = {key: np.asarray(rows, dtype=np.int64) for key, rows in index.items()}
        self.steps = sorted(set(self.step.tolist()))

    def rows(self, step: int, metric: str) -> np.ndarray:
        """Row numbers of one metric at one step (empty if not recorded)."""
        return self.index.get((step, metric), np.zeros(0, dtype=np.int64))


def _as_stats(run_layers: pd.DataFrame | RunStats) -> RunStats:
    return run_layers if isinstance(run_layers, RunStats) else RunStats(run_layers)


def profile(
    run_layers: pd.DataFrame | RunStats, step: int, metric: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """(positions, values, unit) of one run's metric at one step: over layers l (rows with
    t = 0), or for an rnn over the time steps t of its top layer."""
    stats = _as_stats(run_layers)
    rows = stats.rows(step, metric)
    t, layer, value = stats.t[rows], stats.layer[rows], stats.value[rows]
    timed = t > 0
    if timed.any():
        top = timed & (layer == layer[timed].max())
        return t[top], value[top], "time step"
    return layer[t == 0], value[t == 0], "layer"


# --- one run --------------------------------------------------------------------------------


def number(value: Any) -> float:
    """A summary value as a float: None -> NaN; the strings 'nan', 'inf', '-inf' the
    results format stores for non-finite floats -> those floats."""
    if value is None:
        return math.nan
    if isinstance(value, str) and value.strip().lower() not in ("nan", "inf", "-inf"):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def status_text(status: Any, diverged_step: Any) -> str:
    """'ok', 'diverged at step N' or 'failed' (or the stored status as is)."""
    if status == "diverged" and diverged_step is not None and not pd.isna(diverged_step):
        return f"diverged at step {int(diverged_step)}"
    return str(status)


def diverged_where(record: Mapping[str, Any]) -> str:
    """Where a diverged run first went non-finite, from the runs table's ``diverged_at.*``
    columns: 'preact_var of fc3 (layer 3) = inf', 'the loss = nan'; '' if not recorded."""
    what = record.get("diverged_at.what")
    if _missing(what):
        return ""
    value = record.get("diverged_at.value")
    shown = "" if _missing(value) else f" = {number(value):.3g}"
    if what == "loss":
        return f"the loss{shown}"
    name, layer, t = (record.get(f"diverged_at.{k}") for k in ("name", "layer", "t"))
    where = f"layer {int(layer)}" if not _missing(layer) else ""
    if not _missing(t) and int(t) > 0:
        where += f", time step {int(t)}"
    if _missing(name):
        return f"{what} of {where or 'an unrecorded layer'}{shown}"
    return f"{what} of {name}{f' ({where})' if where else ''}{shown}"


def _outcome(record: Mapping[str, Any]) -> dict[str, Any]:
    run_id = record.get("run_id")
    try:
        final_loss, accuracy = number(record.get("final_loss")), number(record.get("test_accuracy"))
    except ValueError as exc:
        raise ValueError(f"run {run_id}: {exc}") from None
    error = record.get("error")
    return {
        "run_id": run_id,
        "seed": record.get("config.seed"),
        "status": record.get("status"),
        "status_text": status_text(record.get("status"), record.get("diverged_step")),
        "diverged_at": diverged_where(record),
        "error": None if error is None or pd.isna(error) else str(error),
        "final_loss": final_loss,
        "test_accuracy": accuracy,
    }


def _worst(stats: RunStats, step: int, metric: str) -> float:
    """Largest value of a metric over layers (and time steps); NaN if never recorded or
    undefined at this step. probes.py stores dead_frac / sat_frac as NaN for a tensor with
    a non-finite element, and the max propagates that NaN. Results written before that
    change (same format version) hold a number there (a NaN compares as 'never > 0', so
    broken units counted as dead), hence the step is also undefined wherever the
    activation input (preact, normed) is non-finite."""
    rows = stats.rows(step, metric)
    inputs = [stats.value[stats.rows(step, m)] for m in ("preact_var", "normed_var")]
    if not len(rows) or not np.isfinite(np.concatenate(inputs)).all():
        return math.nan
    return float(np.max(stats.value[rows]))  # NaN if any layer's fraction is undefined


def gradient_positions(record: Mapping[str, Any]) -> dict[int, int]:
    """Layer -> map positions that a cnn run's backward profile multiplies
    ``grad_preact_var`` by (see the module docstring); empty for other architectures."""
    model = run_config(record).get("model", {})
    if model.get("arch") != "cnn":
        return {}
    return {layer: n for layer, n in enumerate(cnn_positions(int(model["depth"])), start=1)}


def backward_profile(
    run_layers: pd.DataFrame | RunStats, step: int, map_positions: Mapping[int, int]
) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`profile` of ``grad_preact_var``, times each layer's map positions where
    ``map_positions`` (:func:`gradient_positions`) has them: the backward decay's v_l."""
    layers, values, unit = profile(run_layers, step, "grad_preact_var")
    if map_positions and unit == "layer":
        scale = [map_positions.get(int(layer), math.nan) for layer in layers]
        values = values * np.array(scale, dtype=float)
    return layers, values, unit


def signal_at(
    run_layers: pd.DataFrame | RunStats,
    step: int,
    tag: str,
    th: Thresholds,
    map_positions: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Forward, backward (and batchnorm ``normed``) decay plus worst dead/sat fractions of
    one run at one step, as ``<direction>_<factor|ratio|verdict|note>_<tag>`` columns;
    ``map_positions``: a cnn's map positions per layer (:func:`gradient_positions`)."""
    stats = _as_stats(run_layers)
    out: dict[str, Any] = {}
    for prefix, metric in DIRECTIONS.items():
        if prefix == "bwd":
            positions, values, unit = backward_profile(stats, step, map_positions or {})
        else:
            positions, values, unit = profile(stats, step, metric)
        if prefix == "normed" and len(values) == 0:
            result = Decay(math.nan, math.nan, "", "")  # no batchnorm: nothing to say
        else:
            result = decay(positions, values, backward=prefix == "bwd", thresholds=th, unit=unit)
        for field in ("factor", "ratio", "verdict", "note"):
            out[f"{prefix}_{field}_{tag}"] = getattr(result, field)
    out[f"dead_max_{tag}"] = _worst(stats, step, "dead_frac")
    out[f"sat_max_{tag}"] = _worst(stats, step, "sat_frac")
    return out


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
    from initbench.config.activations import dead_units_pass_no_gradient as no_gradient

    activation = run_config(record).get("model", {}).get("activation")
    if not isinstance(activation, Mapping) or _missing(activation.get("name")):
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


# --- initial weights against the initializer's formula -----------------------------------------


def run_config(record: Mapping[str, Any]) -> dict[str, Any]:
    """The nested run config rebuilt from a runs row's ``config.*`` columns (cells that
    pandas filled with NaN because other runs have the key are left out)."""
    nested: dict[str, Any] = {}
    for key, value in record.items():
        if not key.startswith("config.") or _missing(value):
            continue
        *parents, leaf = key.removeprefix("config.").split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value.item() if isinstance(value, np.generic) else value
    return nested


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_weight(
    layer: int,
    tensor: str,
    shape: tuple[int, ...],
    ref: Mapping[str, Any],
    measured: float | None,
    th: Thresholds,
) -> dict[str, Any]:
    """Measured ``w_var`` of one weight at step 0 (None: not recorded) against its
    initializer's formula."""
    row = {
        "layer": layer,
        "tensor": tensor,
        "shape": "x".join(map(str, shape)),
        "init": ref.get("name"),
        "measured": math.nan if measured is None else measured,
        "expected": math.nan,
        "ratio": math.nan,
        "tolerance": math.nan,
        "mismatch": False,
        "note": "",
    }
    params = {k: v for k, v in ref.items() if k != "name"}
    try:
        expected = expected_moments(str(ref.get("name")), params, shape)[1]
    except (KeyError, ValueError) as exc:  # unknown name, invalid params
        return {**row, "note": f"no formula for {ref.get('name')!r}: {exc}"}
    n = math.prod(shape)
    tolerance = max(th.init_tolerance, SAMPLING_SIGMAS * math.sqrt(2 / max(n - 1, 1)))
    row.update(expected=expected, tolerance=tolerance)
    if measured is None:  # e.g. a run that failed before its first measurement
        return {**row, "note": f"{tensor}_var not recorded at step 0: not checked"}
    if math.isnan(measured):
        return {**row, "mismatch": True, "note": f"{tensor}_var is NaN at step 0"}
    if expected == 0:
        return {**row, "mismatch": not abs(measured) <= ZERO_VARIANCE}
    ratio = measured / expected
    return {**row, "ratio": ratio, "mismatch": not abs(ratio - 1) <= tolerance}


def init_check(
    record: Mapping[str, Any], run_layers: pd.DataFrame | RunStats, th: Thresholds
) -> pd.DataFrame:
    """One row per watched weight: measured w_var (w_rec_var) at step 0, the formula's
    variance, their ratio, the tolerance and whether they mismatch."""
    model = run_config(record).get("model", {})
    try:
        shapes = weight_shapes(model["arch"], int(model["depth"]), int(model["width"]))
    except (KeyError, ValueError, TypeError):
        return pd.DataFrame(columns=["layer", "tensor", "measured", "ratio", "mismatch", "note"])
    stats = _as_stats(run_layers)
    measured = {}
    for metric in ("w_var", "w_rec_var"):
        rows = stats.rows(0, metric)
        rows = rows[stats.t[rows] == 0]
        for layer, value in zip(
            stats.layer[rows].tolist(), stats.value[rows].tolist(), strict=True
        ):
            measured[(layer, metric)] = value
    rows = []
    for layer, tensor, shape in shapes:
        ref = model.get("init") or {}
        if tensor == "w_rec":
            ref = model.get("recurrent_init") or ref  # None in a config means "same as init"
        value = measured.get((layer, f"{tensor}_var"))
        rows.append(check_weight(layer, tensor, shape, ref, value, th))
    return pd.DataFrame(rows)


def _init_summary(check: pd.DataFrame) -> dict[str, Any]:
    """Run-level view of :func:`init_check`: the ratio furthest from 1 and any mismatch."""
    if not len(check):
        return {
            "init_worst_ratio": math.nan,
            "init_worst_at": "",
            "init_mismatch": False,
            "init_note": "init not checked: architecture, depth or width unknown",
        }
    ratios = check["ratio"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.abs(np.log(ratios))
    worst, where = math.nan, ""
    if np.isfinite(distance).any():
        far = check.iloc[int(np.nanargmax(np.where(np.isfinite(distance), distance, np.nan)))]
        worst, where = float(far["ratio"]), f"{far['tensor']} layer {int(far['layer'])}"
    return {
        "init_worst_ratio": worst,
        "init_worst_at": where,
        "init_mismatch": bool(check["mismatch"].any()),
        "init_note": "; ".join(dict.fromkeys(n for n in check["note"] if n)),
    }


# --- theory beside measurement ----------------------------------------------------------------

# quantity -> (key of theory.Prediction.summary(), label in tables); all at step 0
THEORY_QUANTITIES: Final = {
    "fwd_factor": ("forward_decay", "fwd factor"),
    "fwd_ratio": ("forward_last_first", "fwd ratio"),
    "bwd_factor": ("backward_decay", "bwd factor"),
    "bwd_ratio": ("backward_first_last", "bwd ratio"),
}
THEORY_LEVEL: Final = 0.95  # two-sided level of the prediction interval of one network
RNN_DRIVE_NOTE: Final = (
    "rnn depth 1: layer 1's measured preact_sq at each time step sets the input drive, so "
    "its forward profile is the measurement itself: no forward prediction"
)


@dataclass(frozen=True)
class RunTheory:
    """The mean-field prediction (:func:`initbench.theory.predict`) of one run at step 0,
    from the run's own layer 1: q1 = its measured ``preact_sq`` at step 0 (rnn: at every
    time step, turned into layer 1's input drive by :func:`theory.rnn_input_drive`)."""

    prediction: theory.Prediction | None
    q1: float  # layer 1's measured preact_sq at step 0 (rnn: at t = 1); NaN if not recorded
    reason: str = ""  # why there is no prediction (with ``forward`` False: no forward one)
    forward: bool = True  # whether the forward profile is a prediction (not for rnn depth 1)


def _layer1_sq(stats: RunStats) -> np.ndarray:
    """Layer 1's preact_sq at step 0: one value (mlp, cnn) or one per time step (rnn)."""
    rows = stats.rows(0, "preact_sq")
    rows = rows[stats.layer[rows] == 1]
    timed = stats.t[rows] > 0
    rows = rows[timed] if timed.any() else rows
    return stats.value[rows[np.argsort(stats.t[rows], kind="stable")]]


@functools.lru_cache(maxsize=1024)
def _prediction(model_json: str, q1: tuple[float, ...] | None) -> theory.Prediction:
    """theory.predict for a model section (as JSON, to be hashable) and layer 1's measured
    preact_sq (rnn: per time step); None: only the config is needed (for its reason)."""
    model = json.loads(model_json)
    if q1 is None:
        return theory.predict(model)
    if model.get("arch") == "rnn":
        return theory.predict(model, q1=theory.rnn_input_drive(model, q1))
    return theory.predict(model, q1=q1[0])


def _q1_problem(sq: np.ndarray) -> str:
    if not len(sq):
        return "layer 1's preact_sq was not recorded at step 0, so there is no q1"
    shown = ", ".join(f"{v:.3g}" for v in sq[:3]) + (" ..." if len(sq) > 3 else "")
    return f"layer 1's preact_sq at step 0 is not finite and > 0 ({shown}): no q1"


def run_theory(record: Mapping[str, Any], run_layers: pd.DataFrame | RunStats) -> RunTheory:
    """The prediction for one run (its runs row and long table), or why there is none: the
    config's reason first (non-zero-mean init ...), then a missing or unusable q1."""
    sq = _layer1_sq(_as_stats(run_layers))
    usable = bool(len(sq)) and bool(np.isfinite(sq).all() and (sq > 0).all())
    model = run_config(record).get("model", {})
    try:
        key = json.dumps(model, sort_keys=True, default=str)
        pred = _prediction(key, tuple(sq.tolist()) if usable else None)
    except (theory.TheoryError, KeyError, ValueError, TypeError) as exc:
        why = getattr(exc, "message", None) or str(exc)
        return RunTheory(None, math.nan, f"theory cannot use this config: {why}")
    q1 = float(sq[0]) if len(sq) else math.nan
    if not pred.ok:
        return RunTheory(None, q1, str(pred.reason))
    if not usable:
        return RunTheory(None, q1, _q1_problem(sq))
    if pred.model["arch"] == "rnn" and int(pred.model["depth"]) == 1:
        return RunTheory(pred, q1, RNN_DRIVE_NOTE, forward=False)
    return RunTheory(pred, q1)


def theory_summary(rt: RunTheory) -> dict[str, Any]:
    """One run's predicted ``theory_<quantity>_init`` (THEORY_QUANTITIES, defined as the
    measured ones), ``theory_q1``, ``theory_positions`` (layers, or the top layer's time
    steps, the decay runs over) and ``theory_note_init`` (why a prediction is missing)."""
    out: dict[str, Any] = {f"theory_{q}_init": math.nan for q in THEORY_QUANTITIES}
    out.update(theory_q1=rt.q1, theory_positions=math.nan, theory_note_init=rt.reason)
    if rt.prediction is None:
        return out
    summary = rt.prediction.summary()
    for quantity, (key, _) in THEORY_QUANTITIES.items():
        if rt.forward or quantity.startswith("bwd"):
            out[f"theory_{quantity}_init"] = float(summary[key])
    layer = rt.prediction.columns["layer"]
    top = layer == layer.max() if rt.prediction.model["arch"] == "rnn" else np.ones(len(layer))
    out["theory_positions"] = int(np.count_nonzero(top))
    return out


def _gradient_anchor(stats: RunStats, layer: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Measured grad_preact_var at step 0 where each row's gradient enters: layer L (mlp,
    cnn) or the row's layer at its last time step (rnn); NaN where not recorded."""
    rows = stats.rows(0, "grad_preact_var")
    keys = zip(stats.layer[rows].tolist(), stats.t[rows].tolist(), strict=True)
    measured = dict(zip(keys, stats.value[rows].tolist(), strict=True))
    if (t > 0).any():
        ends = {lay: (lay, int(t[layer == lay].max())) for lay in set(layer.tolist())}
    else:
        ends = {lay: (int(layer.max()), 0) for lay in set(layer.tolist())}
    return np.array([measured.get(ends[lay], math.nan) for lay in layer.tolist()], dtype=float)


def theory_layers(rt: RunTheory, run_layers: pd.DataFrame | RunStats) -> pd.DataFrame:
    """One run's predicted step-0 profiles, rows (layer, t) as in its long table:
    ``theory_preact_var_init`` = q from the run's q1, and ``theory_grad_preact_var_init`` =
    the predicted bwd_ratio times the measured grad_preact_var where the gradient enters
    (layer L; rnn: each layer's last time step): theory predicts how the gradient changes,
    not the readout's scale. No rows without a prediction."""
    columns = ["layer", "t", "theory_preact_var_init", "theory_grad_preact_var_init"]
    if rt.prediction is None:
        return pd.DataFrame(columns=columns)
    c = rt.prediction.columns
    layer, t = c["layer"].astype(np.int64), c["t"].astype(np.int64)
    anchor = _gradient_anchor(_as_stats(run_layers), layer, t)
    return pd.DataFrame(
        {
            "layer": layer,
            "t": t,
            "theory_preact_var_init": c["q"] if rt.forward else np.full(len(layer), math.nan),
            "theory_grad_preact_var_init": c["bwd_ratio"] * anchor,
        }
    )


def theory_mean(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean over runs (seeds) of :func:`theory_layers` per (layer, t), NaN propagating;
    ``theory_n``: the runs with a prediction (runs without one have no rows)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["layer", "t", "theory_n"])
    both = pd.concat(frames, ignore_index=True)
    grouped = both.groupby(["layer", "t"], sort=True)
    values = [c for c in both.columns if c.startswith("theory_")]
    table = grouped[values].agg(_nan_mean)
    table["theory_n"] = grouped.size()
    return table.reset_index()


def theory_profile(mean: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(positions, values, unit) of a :func:`theory_mean` column ``theory_<metric>_init``
    the way :func:`profile` reads a measurement: over layers, or an rnn's top layer's t."""
    column = f"theory_{metric}_init"
    if mean.empty or column not in mean:
        return np.zeros(0), np.zeros(0), "layer"
    t, layer = mean["t"].to_numpy(np.int64), mean["layer"].to_numpy(np.int64)
    values = mean[column].to_numpy(float)
    if (t > 0).any():
        top = (t > 0) & (layer == layer[t > 0].max())
        return t[top], values[top], "time step"
    return layer[t == 0], values[t == 0], "layer"


def _t_central(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with an integer dof >= 1, exactly (Abramowitz & Stegun
    26.7.3 odd dof, 26.7.4 even dof)."""
    theta = math.atan(t / math.sqrt(dof))
    c2, total, term = math.cos(theta) ** 2, 1.0, 1.0
    if dof % 2 == 0:
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if dof == 1:
        return 2 * theta / math.pi
    for k in range(1, (dof - 1) // 2):
        term *= c2 * 2 * k / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def student_t_quantile(p: float, dof: int) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with dof >= 1 degrees of freedom, by
    bisection on the exact distribution: 12.706 at p = 0.975 and dof 1, 4.303 at dof 2."""
    if not 0.5 < p < 1 or dof < 1:
        raise ValueError(f"need 0.5 < p < 1 and dof >= 1, got p={p}, dof={dof}")
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _t_central(hi, dof) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-13 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, dof) < target else (lo, mid)
    return (lo + hi) / 2


def theory_allowed(logs: np.ndarray, layers: float, th: Thresholds) -> float:
    """The largest |mean ln(measured / theory)| that still agrees, for n >= 2 seeds:
    max(layers * ln(1 + theory_tolerance), t * sd * sqrt(1 + 1/n)), t the 97.5% quantile
    of Student's t with n - 1 dof and sd the seeds' sample std (n - 1) of the logs: the
    half-width of the 95% prediction interval of one more network of this configuration."""
    n = len(logs)
    quantile = student_t_quantile((1 + THEORY_LEVEL) / 2, n - 1)
    spread = quantile * float(np.std(logs, ddof=1)) * math.sqrt(1 + 1 / n)
    return max(layers * math.log1p(th.theory_tolerance), spread)


def _theory_quantity(
    measured: np.ndarray, predicted: np.ndarray, layers: float, th: Thresholds
) -> tuple[str, float, float]:
    """(state, mean ln(measured / theory), allowed) of one quantity over the seeds; state
    'consistent', 'theory-mismatch', 'undefined' (a log not finite) or 'not evaluated' (1 seed)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(measured / predicted)
    if not len(logs) or not np.isfinite(logs).all():
        return "undefined", math.nan, math.nan
    mean = float(np.mean(logs))
    if len(logs) < 2:
        return "not evaluated", mean, math.nan
    allowed = theory_allowed(logs, layers, th)
    return ("theory-mismatch" if abs(mean) > allowed else "consistent"), mean, allowed


def _check_text(states: Mapping[str, str]) -> str:
    """The 'vs theory' cell from the states of the four quantities."""
    names = {q: label for q, (_, label) in THEORY_QUANTITIES.items()}
    bad = [names[q] for q, s in states.items() if s == "theory-mismatch"]
    undefined = [names[q] for q, s in states.items() if s == "undefined"]
    if bad:
        return "theory-mismatch: " + ", ".join(bad)
    if "not evaluated" in states.values():
        return "not evaluated (1 seed)"
    if len(undefined) == len(states):
        return "undefined"
    return "consistent" + (f"; undefined: {', '.join(undefined)}" if undefined else "")


def theory_check(group: pd.DataFrame, th: Thresholds) -> dict[str, Any]:
    """Measured against predicted over one configuration's seeds: ``theory_check`` (text),
    ``theory_mismatch`` (quantities), ``theory_logdev_<q>`` (mean ln(measured / theory))
    and ``theory_allowed_<q>`` (see :func:`theory_allowed`), ``theory_note``."""
    notes = dict.fromkeys(n for n in group["theory_note_init"] if n)
    out: dict[str, Any] = {"theory_note": "; ".join(notes)}
    predicted = group[[f"theory_{q}_init" for q in THEORY_QUANTITIES]].to_numpy(float)
    states = {}
    for quantity in THEORY_QUANTITIES:
        layers = 1.0 if quantity.endswith("factor") else float(group["theory_positions"].max() - 1)
        state, dev, allowed = _theory_quantity(
            group[f"{quantity}_init"].to_numpy(float),
            group[f"theory_{quantity}_init"].to_numpy(float),
            layers,
            th,
        )
        states[quantity] = state
        out[f"theory_logdev_{quantity}"], out[f"theory_allowed_{quantity}"] = dev, allowed
    found = np.isfinite(predicted).any()
    out["theory_check"] = _check_text(states) if found else "no prediction"
    out["theory_mismatch"] = ", ".join(q for q, s in states.items() if s == "theory-mismatch")
    return out


# --- all runs -------------------------------------------------------------------------------


def analyse_run(
    record: Mapping[str, Any], run_layers: pd.DataFrame | RunStats, th: Thresholds
) -> dict[str, Any]:
    """Every per-run number and verdict: outcome, decay at step 0 and at the last logged
    step, worst dead/sat fractions, the init check, the theory's prediction and the flags."""
    stats = _as_stats(run_layers)
    last = stats.steps[-1] if stats.steps else None
    out = _outcome(record)
    out["last_step"] = last
    map_positions = gradient_positions(record)
    out.update(signal_at(stats, 0, "init", th, map_positions))
    out.update(signal_at(stats, last if last is not None else 0, "last", th, map_positions))
    out.update(_init_summary(init_check(record, stats, th)))
    out.update(theory_summary(run_theory(record, stats)))
    out["flags"] = ", ".join(run_flags(out, th, dead_units_pass_no_gradient(record)))
    return out


def analyse_runs(runs: pd.DataFrame, layers: pd.DataFrame, th: Thresholds) -> pd.DataFrame:
    """One row per run (see :func:`analyse_run`), in the order of ``runs``."""
    if layers.empty or "run_id" not in layers:
        layers = pd.DataFrame(columns=["run_id", "step", "layer", "t", "name", "metric", "value"])
    last = layers.groupby("run_id")["step"].transform("max") if len(layers) else layers["step"]
    kept = layers[(layers["step"] == 0) | (layers["step"] == last)]
    by_run = {run_id: frame for run_id, frame in kept.groupby("run_id", sort=False)}
    empty = kept.iloc[0:0]
    rows = [analyse_run(r, by_run.get(r["run_id"], empty), th) for r in runs.to_dict("records")]
    return pd.DataFrame(rows)


# --- configurations -------------------------------------------------------------------------


def ref_label(kind: str, name: Any, params: Mapping[str, Any]) -> str:
    """'name' plus the parameters that differ from the registry's defaults:
    ``normal(std=0.1)``; every parameter where the defaults are unknown."""
    if _missing(name):
        return "none"
    defaults = ref_defaults(kind, str(name)) or {}
    shown = [
        f"{k}={format_value(v)}"
        for k, v in params.items()
        if not _missing(v) and (k not in defaults or defaults[k] != v)
    ]
    return f"{name}({', '.join(shown)})" if shown else str(name)


def format_value(value: Any) -> str:
    """A config value as written in labels: 0.01, 30, relu, true."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def config_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """One column per config key (without ``config.``; seeds excluded), index run_id:
    scalars as they are, named references as :func:`ref_label` strings."""
    columns = [c for c in runs.columns if c.startswith("config.") and c != "config.seed"]
    refs = sorted({c.removesuffix(".name") for c in columns if c.endswith(".name")}, key=len)
    out: dict[str, list[Any]] = {}
    records = runs.to_dict("records")
    for ref in refs:
        kind = ref.rsplit(".", 1)[-1]
        params = [c for c in columns if c.startswith(f"{ref}.") and c != f"{ref}.name"]
        out[ref.removeprefix("config.")] = [
            ref_label(kind, r[f"{ref}.name"], {p.removeprefix(f"{ref}."): r[p] for p in params})
            for r in records
        ]
    for column in columns:
        owned = any(column == ref or column.startswith(f"{ref}.") for ref in refs)
        if not owned:
            out[column.removeprefix("config.")] = [_scalar(r[column]) for r in records]
    return pd.DataFrame(out, index=pd.Index(runs["run_id"], name="run_id"))


def _scalar(value: Any) -> Any:
    if _missing(value):
        return "none"
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class ConfigKeys:
    """How the runs of one experiment group into configurations."""

    varying: tuple[str, ...]  # keys whose value differs between runs, outer -> inner
    constant: dict[str, Any]  # key -> the value every run shares
    labels: pd.DataFrame  # index run_id; one column per varying key
    ranks: dict[str, dict[Any, tuple]]  # key -> value -> sort key


def _natural(value: Any) -> tuple:
    if isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_):
        return (0, float(value), "")
    return (1, 0.0, format_value(value))


def _spec_value_label(key: str, value: Any) -> Any:
    """Label of a grid value as the spec wrote it, comparable with :func:`config_labels`."""
    kind = key.rsplit(".", 1)[-1]
    if kind in REFERENCES and isinstance(value, str):
        return ref_label(kind, value, {})
    if kind in REFERENCES and isinstance(value, Mapping):
        return ref_label(kind, value.get("name"), {k: v for k, v in value.items() if k != "name"})
    return value


def _order_keys(varying: list[str], grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """Table order: the grid's keys after its first, in spec order, then other varying
    keys, then the spec's first grid key innermost so its values sit side by side."""
    owners = [next((k for k in varying if g == k or g.startswith(f"{k}.")), None) for g in grid]
    in_grid = list(dict.fromkeys(o for o in owners if o is not None))
    if not in_grid:
        preferred = [k for k in ("model.init", "model.activation") if k in varying]
        in_grid = preferred[:1]
    first = in_grid[:1]
    middle = in_grid[1:] + sorted(k for k in varying if k not in in_grid)
    return middle + first


def describe_configs(
    runs: pd.DataFrame, grid: Mapping[str, Sequence[Any]] | None = None
) -> ConfigKeys:
    """Varying and constant keys of an experiment, each run's labels and the sort ranks
    (values in the order the spec's grid lists them, else numbers ascending / by name)."""
    grid = grid or {}
    labels = config_labels(runs)
    distinct = {k: list(dict.fromkeys(labels[k].tolist())) for k in labels.columns}
    varying = [k for k, values in distinct.items() if len(values) > 1]
    constant = {k: distinct[k][0] for k in sorted(distinct) if len(distinct[k]) == 1}
    ranks = {}
    for key in varying:
        spec = [_spec_value_label(key, v) for v in grid.get(key, [])]
        ranks[key] = {
            v: (spec.index(v) if v in spec else len(spec), *_natural(v)) for v in distinct[key]
        }
    order = _order_keys(varying, grid)
    return ConfigKeys(tuple(order), constant, labels[order], ranks)


# --- aggregation over seeds -------------------------------------------------------------------


def numeric_columns() -> list[str]:
    """Per-run numeric columns that configurations aggregate as mean and std."""
    cols = [f"{d}_{k}_{tag}" for tag in TAGS for d in DIRECTIONS for k in ("factor", "ratio")]
    cols += [f"{m}_max_{tag}" for tag in TAGS for m in ("dead", "sat")]
    cols += [f"theory_{q}_init" for q in THEORY_QUANTITIES] + ["theory_q1"]
    return [*cols, "init_worst_ratio", "final_loss", "test_accuracy"]


def verdict_columns() -> list[str]:
    """Per-run verdict columns that configurations combine."""
    return [f"{d}_verdict_{tag}" for tag in TAGS for d in DIRECTIONS]


def combine(values: Iterable[str]) -> str:
    """One word if every seed agrees, else 'mixed: vanishing 2, stable 1'."""
    counts = pd.Series(list(values), dtype=object).value_counts(sort=True)
    if len(counts) == 1:
        return str(counts.index[0])
    return "mixed: " + ", ".join(f"{v or 'none'} {n}" for v, n in counts.items())


def combine_flags(flag_lists: Iterable[str], n: int) -> str:
    """Flags of a configuration: 'dead' when every seed has it, 'diverged 1/3' otherwise."""
    counts = {flag: 0 for flag in FLAGS}
    for flags in flag_lists:
        for flag in filter(None, (f.strip() for f in flags.split(","))):
            counts[flag] += 1
    return ", ".join(f if c == n else f"{f} {c}/{n}" for f, c in counts.items() if c)


def combine_status(texts: Iterable[str]) -> str:
    """'ok' when every seed shares one status, else '2 ok, 1 diverged at step 17'."""
    counts = pd.Series(list(texts), dtype=object).value_counts(sort=True)
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{n} {text}" for text, n in counts.items())


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (n-1) over seeds; NaN propagates; std is NaN for one seed."""
    with np.errstate(invalid="ignore", over="ignore"):
        mean = float(np.mean(values)) if len(values) else math.nan
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return mean, std


def _nan_mean(values: pd.Series) -> float:
    """Mean that propagates NaN (pandas' reductions skip it by default)."""
    return _mean_std(values.to_numpy(float))[0]


def _nan_std(values: pd.Series) -> float:
    """Sample std (n-1) that propagates NaN; NaN for a single value."""
    return _mean_std(values.to_numpy(float))[1]


def _config_row(group: pd.DataFrame, th: Thresholds) -> dict[str, Any]:
    row: dict[str, Any] = {"seeds": len(group)}
    row["seed_list"] = " ".join(str(s) for s in sorted(group["seed"].dropna().tolist()))
    row["run_ids"] = " ".join(sorted(group["run_id"]))
    for status in ("ok", "diverged", "failed"):
        row[f"n_{status}"] = int((group["status"] == status).sum())
    row["status"] = combine_status(group["status_text"])
    row["flags"] = combine_flags(group["flags"], len(group))
    for column in verdict_columns():
        row[column] = combine(group[column])
    for column in numeric_columns():
        row[f"{column}_mean"], row[f"{column}_std"] = _mean_std(group[column].to_numpy(float))
    row.update(theory_check(group, th))
    return row


def aggregate(
    analysed: pd.DataFrame, keys: ConfigKeys, th: Thresholds | None = None
) -> pd.DataFrame:
    """One row per configuration (varying keys first), seeds aggregated: numbers as
    ``<col>_mean`` / ``<col>_std``, verdicts combined, flags counted, measurement checked
    against theory (:func:`theory_check`); sorted by ranks."""
    th = th or Thresholds()
    joined = analysed.join(keys.labels, on="run_id")
    varying = list(keys.varying)
    rows = []
    groups = joined.groupby(varying, sort=False, dropna=False) if varying else [((), joined)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(varying, values, strict=True)), **_config_row(group, th)})
    table = pd.DataFrame(rows)
    if varying and len(table):
        order = sorted(
            range(len(table)),
            key=lambda i: [keys.ranks[k][table.iloc[i][k]] for k in varying],
        )
        table = table.iloc[order].reset_index(drop=True)
    return table


# --- layer by layer -----------------------------------------------------------------------------


def per_layer(layers: pd.DataFrame, last_steps: Mapping[str, int]) -> pd.DataFrame:
    """Layer-by-layer SIGNAL_METRICS of some runs (one configuration's seeds) at step 0
    (``init``) and at each run's last logged step (``last``): columns
    ``<metric>_<tag>_mean`` / ``_std`` over the runs and ``n`` (runs with a value); rows
    are layers (t = 0) or, for an rnn, (layer, t) for t = 1..T."""
    rows = layers[layers["metric"].isin(SIGNAL_METRICS) & layers["run_id"].isin(last_steps)]
    init = rows[rows["step"] == 0].assign(tag="init")
    last = rows[rows["step"] == rows["run_id"].map(last_steps)].assign(tag="last")
    both = pd.concat([init, last], ignore_index=True)
    if both.empty:
        return pd.DataFrame(columns=["layer", "t", "name", "n"])
    grouped = both.groupby(["layer", "t", "name", "metric", "tag"])["value"]
    stats = grouped.agg(mean=_nan_mean, std=_nan_std)  # groupby's skipna needs pandas 3
    wide = stats.unstack(["metric", "tag"])
    wide.columns = [f"{metric}_{tag}_{stat}" for stat, metric, tag in wide.columns]
    counts = both[(both["tag"] == "init")].groupby(["layer", "t", "name"])["run_id"].nunique()
    wide["n"] = counts.reindex(wide.index).fillna(0).astype(int)
    ordered = sorted(wide.columns[:-1], key=_per_layer_order)
    return wide[["n", *ordered]].reset_index()


def _per_layer_order(column: str) -> tuple[int, int, str]:
    tag = 0 if "_init_" in column else 1
    metric = next(i for i, m in enumerate(SIGNAL_METRICS) if column.startswith(m))
    return tag, metric, column


def init_table(checks: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """:func:`init_check` of several runs (seeds) combined per weight: measured w_var
    mean/std, the formula, the mean ratio and how many runs mismatch."""
    frames = [c for c in checks if len(c)]
    if not frames:
        return pd.DataFrame(columns=["layer", "tensor", "shape", "init", "expected"])
    both = pd.concat(frames, ignore_index=True)
    keys = ["layer", "tensor", "shape", "init", "expected", "tolerance"]
    grouped = both.groupby(keys, dropna=False, sort=True)
    table = grouped.agg(
        measured_mean=("measured", _nan_mean),
        measured_std=("measured", _nan_std),
        ratio_mean=("ratio", _nan_mean),
        mismatches=("mismatch", "sum"),
        runs=("mismatch", "size"),
        note=("note", lambda s: "; ".join(dict.fromkeys(n for n in s if n))),
    )
    return table.reset_index()


def band(layers: pd.DataFrame, run_ids: Sequence[str], metric: str, step: int = 0):
    """(positions, mean, min, max, unit) over runs of one metric's profile at a step, for
    plots: layers l, or an rnn's time steps t of the top layer. NaN propagates."""
    rows = layers[
        (layers["step"] == step) & (layers["metric"] == metric) & layers["run_id"].isin(run_ids)
    ]
    series, unit = [], "layer"
    for run_id in run_ids:
        positions, values, unit = profile(rows[rows["run_id"] == run_id], step, metric)
        series.append(pd.Series(values, index=positions))
    if all(s.empty for s in series):
        return pd.DataFrame(columns=["position", "mean", "lo", "hi"]), unit
    table = pd.concat(series, axis=1)
    frame = pd.DataFrame(
        {
            "mean": table.mean(axis=1, skipna=False),
            "lo": table.min(axis=1, skipna=False),
            "hi": table.max(axis=1, skipna=False),
        }
    )
    return frame.rename_axis("position").reset_index(), unit


def step_matrix(layers: pd.DataFrame, run_ids: Sequence[str], metric: str) -> pd.DataFrame:
    """Mean over runs of a metric, positions (layers; rnn: top layer's time steps) x
    logged steps; a cell is NaN if any run lacks it or has NaN there."""
    rows = layers[layers["run_id"].isin(run_ids) & (layers["metric"] == metric)]
    timed = rows[rows["t"] > 0]
    if len(timed):
        rows = timed[timed["layer"] == timed["layer"].max()].assign(position=timed["t"])
    else:
        rows = rows[rows["t"] == 0].assign(position=rows["layer"])
    if rows.empty:
        return pd.DataFrame()
    grouped = rows.groupby(["position", "step"])["value"]
    full = grouped.size() == len(run_ids)
    means = grouped.agg(_nan_mean).where(full)
    return means.unstack("step")
