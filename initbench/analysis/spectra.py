"""Jacobian spectra summarised per run and step, beside their theory at step 0.

A run's spectra table (``initbench.results.schema.SPECTRA_COLUMNS``) holds, per step and
example, the singular values sigma of J = d act_L / d x. Pooled over the examples of a
step, the summary is of the squared singular values lambda = sigma^2 (the eigenvalues of
J J^T, N_L per example): ``mean_sq`` (tr J J^T / N_L, mean field's prod chi_l),
``var_sq`` (their variance, Pennington et al. 2017's sigma^2_{JJ^T}), ``spread`` =
var_sq / mean_sq^2 (scale-free: 0 for an isometry up to scale), and ``sv_max``,
``sv_min`` (of sigma itself). The theory (:func:`initbench.meanfield.spectrum.predict_spectrum`)
is given each example's own E[x^2] (the spectra table's input_sq) and pooled over the
examples as the measurement is.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis.configs import run_config
from initbench.meanfield import TheoryError
from initbench.meanfield.spectrum import pooled, predict_spectrum

SPECTRUM_COLUMNS: Final = {
    "examples": "examples pooled",
    "values": "singular values per example (the last watched layer's units)",
    "mean_sq": "mean squared singular value: tr(J J^T) / N_L",
    "var_sq": "variance of the squared singular values",
    "spread": "var_sq / mean_sq^2 (0: an isometry up to scale)",
    "sv_max": "largest singular value",
    "sv_min": "smallest singular value",
    "theory_mean_sq": "prod_l chi_l (mean field, step 0)",
    "theory_var_sq": "m1^2 sum_l (mu2/mu1^2 - 1 + v_W) (free probability, step 0)",
    "theory_spread": "theory_var_sq / theory_mean_sq^2",
    "theory_note": "why there is no prediction",
}


def _summary(group: pd.DataFrame) -> dict[str, Any]:
    sv = group["value"].to_numpy(np.float64)
    lam = sv * sv
    mean = float(lam.mean())
    var = float(lam.var())
    return {
        "examples": int(group["example"].nunique()),
        "values": len(sv) // max(1, int(group["example"].nunique())),
        "mean_sq": mean,
        "var_sq": var,
        "spread": var / mean**2 if mean > 0 else math.nan,
        "sv_max": float(sv.max()),
        "sv_min": float(sv.min()),
    }


def spectrum_summary(spectra: pd.DataFrame) -> pd.DataFrame:
    """One row per (run_id, step) of a spectra long table: the measured SPECTRUM_COLUMNS."""
    rows = [
        {"run_id": run_id, "step": int(step), **_summary(group)}
        for (run_id, step), group in spectra.groupby(["run_id", "step"], sort=True)
    ]
    columns = ["run_id", "step", *(c for c in SPECTRUM_COLUMNS if not c.startswith("theory"))]
    return pd.DataFrame(rows, columns=columns)


def _example_inputs(spectra: pd.DataFrame, run_id: str) -> list[float]:
    """E[x^2] of each example whose spectrum the run took at step 0."""
    rows = spectra[(spectra["run_id"] == run_id) & (spectra["step"] == 0)]
    return rows.groupby("example")["input_sq"].first().tolist()


def run_spectrum_theory(record: dict[str, Any], spectra: pd.DataFrame) -> dict[str, Any]:
    """theory_mean_sq, theory_var_sq, theory_spread and theory_note of one runs row: the
    prediction for each example at step 0, from its own E[x^2], pooled over the examples
    as the measurement pools them."""
    model = run_config(record).get("model", {})
    inputs = _example_inputs(spectra, record["run_id"])
    note = "" if inputs else "no spectrum at step 0"
    pred = None
    try:
        if inputs:
            pred = pooled([predict_spectrum(model, input_sq=q0) for q0 in inputs])
    except (TheoryError, KeyError, ValueError, TypeError) as exc:
        note = f"theory cannot use this config: {getattr(exc, 'message', None) or exc}"
    if pred is None or pred.reason:
        note = note if pred is None else str(pred.reason)
        nan = math.nan
        return dict(theory_mean_sq=nan, theory_var_sq=nan, theory_spread=nan, theory_note=note)
    return dict(
        theory_mean_sq=pred.mean,
        theory_var_sq=pred.variance,
        theory_spread=pred.spread,
        theory_note="",
    )


def spectrum_table(runs: pd.DataFrame, spectra: pd.DataFrame) -> pd.DataFrame:
    """Every run with spectra: its measured summary at each step, and at step 0 the theory
    beside it (SPECTRUM_COLUMNS); empty when no run took spectra."""
    summary = spectrum_summary(spectra)
    if summary.empty:
        return pd.DataFrame(columns=["run_id", "step", *SPECTRUM_COLUMNS])
    records = {r["run_id"]: r for r in runs.to_dict("records")}
    theory = pd.DataFrame(
        [
            {"run_id": rid, **run_spectrum_theory(records[rid], spectra)}
            for rid in summary["run_id"].unique()
            if rid in records
        ]
    )
    table = summary.merge(theory.assign(step=0), on=["run_id", "step"], how="left")
    table["theory_note"] = table["theory_note"].fillna("")
    return table
