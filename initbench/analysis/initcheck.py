"""The init check: each watched weight's measured variance at step 0 (``w_var``,
``w_rec_var``) against its initializer's formula (``initbench.config.initializers``),
within a tolerance widened to the sampling noise of small weights."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis.configs import run_config
from initbench.analysis.profiles import RunStats, as_stats
from initbench.analysis.stats import nan_mean, nan_std
from initbench.config.geometry import NUM_CLASSES, gate_blocks, model_weight_shapes, sequence_of
from initbench.config.initializers import INITIALIZERS, expected_moments
from initbench.config.runconfig import input_init, layer_widths
from initbench.config.thresholds import SAMPLING_SIGMAS, Thresholds
from initbench.meanfield.model import recurrent_init

ZERO_VARIANCE: Final = 1e-12  # a measured w_var below this is the exact 0 of a constant init


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
    if ref.get("name") in INITIALIZERS and INITIALIZERS.get(ref.get("name")).data_dependent:
        return {**row, "note": f"{ref.get('name')} is data-dependent: no formula to check"}
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
        sequence = sequence_of(run_config(record).get("data", {}))
        shapes = model_weight_shapes(model, sequence)
    except (KeyError, ValueError, TypeError):
        return pd.DataFrame(columns=["layer", "tensor", "measured", "ratio", "mismatch", "note"])
    stats = as_stats(run_layers)
    measured = {}
    for metric in ("w_var", "w_rec_var"):
        rows = stats.rows(0, metric)
        rows = rows[stats.t[rows] == 0]
        for layer, value in zip(
            stats.layer[rows].tolist(), stats.value[rows].tolist(), strict=True
        ):
            measured[(layer, metric)] = value
    # the readout's weight is measured as the layer after the last watched one (models.py)
    readout = max((layer for layer, _, _ in shapes), default=0) + 1
    readout_shape = (NUM_CLASSES, layer_widths(model)[-1]) if shapes else None
    if model.get("residual") == "fixup":  # Fixup rescales and zeroes what model.init drew
        shapes = []
    rows = []
    blocks = gate_blocks(model["arch"])
    for layer, tensor, stacked in shapes:
        shape = (stacked[0] // blocks, *stacked[1:])  # each gate block drawn alone
        value = measured.get((layer, f"{tensor}_var"))
        rows.append(
            check_weight(layer, tensor, shape, _weight_ref(model, layer, tensor), value, th)
        )
    value = measured.get((readout, "w_var"))
    ref = model.get("readout_init")
    # checked where its own init is set (unset, the report stays as it was); None: results
    # from before the readout was measured
    if value is not None and ref and readout_shape:
        rows.append(check_weight(readout, "readout", readout_shape, ref, value, th))
    return pd.DataFrame(rows)


def _weight_ref(model: Mapping[str, Any], layer: int, tensor: str) -> Any:
    """The reference that initialised a watched weight: recurrent_init, else
    :func:`~initbench.config.runconfig.input_init`'s."""
    if tensor == "w_rec":
        return recurrent_init(model) or {}
    return input_init(model, layer)[1] or {}


def init_summary(check: pd.DataFrame) -> dict[str, Any]:
    """Run-level view of :func:`init_check`: the ratio furthest from 1 and any mismatch."""
    if not len(check):
        return {
            "init_worst_ratio": math.nan,
            "init_worst_at": "",
            "init_mismatch": False,
            "init_note": "init not checked: architecture, depth or width unknown, or fixup "
            "(it rescales the init)",
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
        measured_mean=("measured", nan_mean),
        measured_std=("measured", nan_std),
        ratio_mean=("ratio", nan_mean),
        mismatches=("mismatch", "sum"),
        runs=("mismatch", "size"),
        note=("note", lambda s: "; ".join(dict.fromkeys(n for n in s if n))),
    )
    return table.reset_index()
