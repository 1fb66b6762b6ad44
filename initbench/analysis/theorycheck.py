"""Theory beside measurement, at step 0.

Each run's factors and ratios are also predicted by :func:`initbench.meanfield.predict` from
the run's own measured layer-1 ``preact_sq`` (q1; rnn: per time step, as layer 1's input
drive), as ``theory_<quantity>_init``. Over a configuration's n seeds, d = ln(measured /
predicted) per seed; ``theory-mismatch`` where |mean d| > max(K ln(1 + theory_tolerance),
t sd(d) sqrt(1 + 1/n)), K = 1 for a factor and L - 1 for a ratio, t the 97.5% Student-t
quantile with n - 1 dof: theory lies outside the 95% prediction interval of one network
(the finite-width spread the seeds show) and off by more than the tolerance per layer.
One seed: not evaluated.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis.configs import run_config
from initbench.analysis.profiles import RunStats, as_stats
from initbench.analysis.stats import nan_mean, student_t_quantile
from initbench.config.geometry import sequence_of
from initbench.config.thresholds import Thresholds
from initbench.meanfield import Prediction, TheoryError, predict, rnn_input_drive
from initbench.meanfield.decay import LAYER, profile_rows

# quantity -> (key of Prediction.summary(), label in tables); all at step 0
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
    """The mean-field prediction (:func:`initbench.meanfield.predict`) of one run at step 0,
    from the run's own layer 1: q1 = its measured ``preact_sq`` at step 0 (rnn: at every
    time step, turned into layer 1's input drive by :func:`initbench.meanfield.rnn_input_drive`)."""

    prediction: Prediction | None
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
def _prediction(model_json: str, q1: tuple[float, ...] | None) -> Prediction:
    """theory.predict for a model section (as JSON, to be hashable) and layer 1's measured
    preact_sq (rnn: per time step); None: only the config is needed (for its reason)."""
    model = json.loads(model_json)
    if q1 is None:
        return predict(model)
    if model.get("arch") == "rnn":
        return predict(model, q1=rnn_input_drive(model, q1))
    return predict(model, q1=q1[0])


def _q1_problem(sq: np.ndarray) -> str:
    if not len(sq):
        return "layer 1's preact_sq was not recorded at step 0, so there is no q1"
    shown = ", ".join(f"{v:.3g}" for v in sq[:3]) + (" ..." if len(sq) > 3 else "")
    return f"layer 1's preact_sq at step 0 is not finite and > 0 ({shown}): no q1"


def run_theory(record: Mapping[str, Any], run_layers: pd.DataFrame | RunStats) -> RunTheory:
    """The prediction for one run (its runs row and long table), or why there is none: the
    config's reason first (non-zero-mean init ...), then a missing or unusable q1."""
    sq = _layer1_sq(as_stats(run_layers))
    usable = bool(len(sq)) and bool(np.isfinite(sq).all() and (sq > 0).all())
    config = run_config(record)
    model = config.get("model", {})
    if (sequence := sequence_of(config.get("data", {}))) != "rows":
        model = {**model, "sequence": sequence}  # the steps the Elman map runs over
    try:
        key = json.dumps(model, sort_keys=True, default=str)
        pred = _prediction(key, tuple(sq.tolist()) if usable else None)
    except (TheoryError, KeyError, ValueError, TypeError) as exc:
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
    _, positions, _ = profile_rows(rt.prediction.columns["layer"], rt.prediction.columns["t"])
    out["theory_positions"] = len(positions)
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
    if rt.prediction is None or rt.prediction.model.get("residual") is not None:
        return pd.DataFrame(columns=columns)  # a residual net's prediction is of its stream
    c = rt.prediction.columns
    layer, t = c["layer"].astype(np.int64), c["t"].astype(np.int64)
    anchor = _gradient_anchor(as_stats(run_layers), layer, t)
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
    table = grouped[values].agg(nan_mean)
    table["theory_n"] = grouped.size()
    return table.reset_index()


def theory_profile(mean: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(positions, values, unit) of a :func:`theory_mean` column ``theory_<metric>_init``
    the way :func:`~initbench.analysis.profiles.profile` reads a measurement."""
    column = f"theory_{metric}_init"
    if mean.empty or column not in mean:
        return np.zeros(0), np.zeros(0), LAYER
    t, layer = mean["t"].to_numpy(np.int64), mean["layer"].to_numpy(np.int64)
    mask, positions, unit = profile_rows(layer, t)
    return positions, mean[column].to_numpy(float)[mask], unit


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
