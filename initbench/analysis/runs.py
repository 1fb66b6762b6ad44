"""One run analysed: its outcome, the verdicts of its profiles at step 0 (``init``) and
at its last logged step (``last``: the trained network, or the step where a diverged run
went non-finite; blank for an init-only run, which has no trained network), its init
check, its theory and its flags; and every run of a table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis.configs import missing
from initbench.analysis.initcheck import init_check, init_summary
from initbench.analysis.profiles import (
    DIRECTIONS,
    RunStats,
    as_stats,
    backward_profile,
    gradient_positions,
    profile,
)
from initbench.analysis.theorycheck import run_theory, theory_summary
from initbench.analysis.verdicts import (
    Decay,
    dead_units_pass_no_gradient,
    decay,
    init_only,
    run_flags,
    trainability,
    with_saturation,
)
from initbench.config.thresholds import Thresholds
from initbench.meanfield.decay import summed_over_positions
from initbench.results import schema


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
    if missing(what):
        return ""
    value = record.get("diverged_at.value")
    shown = "" if missing(value) else f" = {number(value):.3g}"
    if what == "loss":
        return f"the loss{shown}"
    name, layer, t = (record.get(f"diverged_at.{k}") for k in ("name", "layer", "t"))
    where = f"layer {int(layer)}" if not missing(layer) else ""
    if not missing(t) and int(t) > 0:
        where += f", time step {int(t)}"
    if missing(name):
        return f"{what} of {where or 'an unrecorded layer'}{shown}"
    return f"{what} of {name}{f' ({where})' if where else ''}{shown}"


def _outcome(record: Mapping[str, Any]) -> dict[str, Any]:
    """The runs row's outcome: status, where it diverged, error, final loss and accuracy."""
    run_id = record.get("run_id")
    try:
        final_loss, accuracy = number(record.get("final_loss")), number(record.get("test_accuracy"))
    except ValueError as exc:
        raise ValueError(f"run {run_id}: {exc}") from None
    error, lsuv = record.get("error"), record.get("lsuv_note")
    return {
        "run_id": run_id,
        "seed": record.get("config.seed"),
        "status": record.get("status"),
        "status_text": status_text(record.get("status"), record.get("diverged_step")),
        "diverged_at": diverged_where(record),
        "error": None if error is None or pd.isna(error) else str(error),
        "lsuv_note": "" if missing(lsuv) else str(lsuv),  # layers LSUV left off unit variance
        "final_loss": final_loss,
        "test_accuracy": accuracy,
    }


def _worst(stats: RunStats, step: int, metric: str) -> float:
    """Largest value of a metric over layers (and time steps); NaN if never recorded or
    undefined at this step: a dead_frac / sat_frac is stored as NaN where its tensor is
    not finite (``initbench.results.schema.LAYER_METRICS``), and the max propagates that
    NaN. Results written before that
    change (same format version) hold a number there (a NaN compares as 'never > 0', so
    broken units counted as dead), hence the step is also undefined wherever the
    activation input (preact, normed) is non-finite."""
    rows = stats.rows(step, metric)
    inputs = [stats.value[stats.rows(step, m)] for m in ("preact_var", "normed_var")]
    if not len(rows) or not np.isfinite(np.concatenate(inputs)).all():
        return math.nan
    return float(np.max(stats.value[rows]))  # NaN if any layer's fraction is undefined


# A residual net's verdicts are of its stream (at each block's last layer), not of the
# branch layers' preact: SkipInit's branch gradient is 0 at init, Fixup's last preact too.
STREAM_DIRECTIONS: Final = {"fwd": "stream_var", "bwd": "grad_stream_var"}


def signal_at(
    run_layers: pd.DataFrame | RunStats,
    step: int,
    tag: str,
    th: Thresholds,
    map_positions: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Forward, backward (and batchnorm ``normed``) decay plus worst dead/sat fractions of
    one run at one step (a residual net's forward and backward: its stream's), as
    ``<direction>_<factor|ratio|verdict|note>_<tag>`` columns; ``map_positions``: a cnn's
    map positions per layer (:func:`gradient_positions`)."""
    stats = as_stats(run_layers)
    sat = _worst(stats, step, "sat_frac")
    out: dict[str, Any] = {}
    residual = len(stats.rows(step, "stream_var")) > 0
    for prefix, metric in DIRECTIONS.items():
        if residual and prefix in STREAM_DIRECTIONS:
            positions, values, unit = profile(stats, step, STREAM_DIRECTIONS[prefix])
            if prefix == "bwd" and map_positions:  # a residual cnn's, as backward_profile
                values = summed_over_positions(positions, values, map_positions)
        elif prefix == "bwd":
            positions, values, unit = backward_profile(stats, step, map_positions or {})
        else:
            positions, values, unit = profile(stats, step, metric)
        if prefix == "normed" and len(values) == 0:
            result = Decay(math.nan, math.nan, "", "")  # no batchnorm: nothing to say
        else:
            result = decay(positions, values, backward=prefix == "bwd", thresholds=th, unit=unit)
            result = replace(result, verdict=with_saturation(result.verdict, sat, th))
        for field in ("factor", "ratio", "verdict", "note"):
            out[f"{prefix}_{field}_{tag}"] = getattr(result, field)
    out[f"dead_max_{tag}"] = _worst(stats, step, "dead_frac")
    out[f"sat_max_{tag}"] = sat
    return out


def analyse_run(
    record: Mapping[str, Any], run_layers: pd.DataFrame | RunStats, th: Thresholds
) -> dict[str, Any]:
    """Every per-run number and verdict: outcome, decay at step 0 and at the last logged
    step, worst dead/sat fractions, the init check, the theory's prediction and the flags."""
    stats = as_stats(run_layers)
    last = stats.steps[-1] if stats.steps else None
    out = _outcome(record)
    out["last_step"] = last
    map_positions = gradient_positions(record)
    out.update(signal_at(stats, 0, "init", th, map_positions))
    trained = signal_at(stats, last if last is not None else 0, "last", th, map_positions)
    out["init_only"] = init_only(record)
    if out["init_only"]:  # no trained network: nothing to say after training
        trained = {k: "" if isinstance(v, str) else math.nan for k, v in trained.items()}
    out.update(trained)
    out.update(init_summary(init_check(record, stats, th)))
    out.update(theory_summary(run_theory(record, stats)))
    out["trainable"] = (
        ""
        if out["init_only"]
        else trainability(out["status"], out["test_accuracy"], out["final_loss"], th)
    )
    out["flags"] = ", ".join(run_flags(out, th, dead_units_pass_no_gradient(record)))
    return out


def analyse_runs(runs: pd.DataFrame, layers: pd.DataFrame, th: Thresholds) -> pd.DataFrame:
    """One row per run (see :func:`analyse_run`), in the order of ``runs``."""
    if layers.empty or "run_id" not in layers:
        layers = pd.DataFrame(columns=["run_id", *schema.LAYER_COLUMNS])
    last = layers.groupby("run_id")["step"].transform("max") if len(layers) else layers["step"]
    kept = layers[(layers["step"] == 0) | (layers["step"] == last)]
    by_run = {run_id: frame for run_id, frame in kept.groupby("run_id", sort=False)}
    empty = kept.iloc[0:0]
    rows = [analyse_run(r, by_run.get(r["run_id"], empty), th) for r in runs.to_dict("records")]
    return pd.DataFrame(rows)
