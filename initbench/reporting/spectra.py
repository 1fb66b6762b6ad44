"""The report's Jacobian spectra: a table per experiment that took them (the spectrum at
step 0 per configuration, mean +- std over the seeds, theory beside it), a sentence on
whether its spread or its mean goes with fast training, and a figure of the spectra.

Only the stored spectra are read (``Experiment.spectra``); the numbers are
:func:`initbench.analysis.spectra.spectrum_table`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis import format_value
from initbench.analysis.spectra import spectrum_table
from initbench.meanfield.spectrum import NOTE as THEORY_NOTE
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.figure_look import (
    HEADLINE,
    Drawn,
    Look,
    new_figure,
    profile_look,
    roles,
    values_of,
)
from initbench.reporting.model import Cell, Column, Table, fmt_num, fmt_pm, make_table

TITLE: Final = "Jacobian spectrum at initialisation (d act_L / d x, singular values sigma)"
MEASURED: Final = ("mean_sq", "spread", "sv_max", "sv_min")
NOTES: Final = [
    "mean sigma^2: tr(J J^T) / N_L, the mean squared singular value of the Jacobian of the "
    "last watched layer's act against the input, pooled over the examples of step 0; "
    "theory: prod_l chi_l (mean field) for each example from its own E[x^2], pooled",
    "spread: variance of sigma^2 over mean(sigma^2)^2 (0: an isometry up to scale); theory: "
    "sum_l (mu2/mu1^2 - 1 + v_W), v_W = 1 for i.i.d. and 0 for orthogonal square weights "
    "(free probability)",
    "max sigma, min sigma: the extreme singular values (N_L > 784: the zeros of J J^T's "
    "null space count)",
    "loss: final training loss, the mean over the last logging interval",
    THEORY_NOTE,
]
SPEARMAN_MIN: Final = 4  # configurations needed before a rank correlation is stated
CRITICAL: Final = 3.0  # mean sigma^2 within this factor of 1: near criticality
# Singular values below this fraction of their example's largest are below the float32
# Jacobian's resolution (rank lost to dead relu units, or the zeros where N_L > 784):
# the figure leaves them out and says how many.
RESOLUTION: Final = 1e-6


def _per_config(rep: ExperimentReport, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Each configuration's row with the step-0 spectra of its runs over the seeds."""
    step0 = table[table["step"] == 0].set_index("run_id")
    out = []
    for row in rep.config_rows:
        ids = [r for r in row["run_ids"].split() if r in step0.index]
        if not ids:
            continue
        runs = step0.loc[ids]
        entry = {**row, "spectra_seeds": len(ids)}
        for column in (*MEASURED, "theory_mean_sq", "theory_spread"):
            values = runs[column].to_numpy(float)
            entry[f"{column}_mean"] = float(np.mean(values))
            entry[f"{column}_std"] = float(np.std(values, ddof=1)) if len(ids) > 1 else math.nan
        notes = [n for n in runs["theory_note"] if n]
        entry["theory_note"] = notes[0] if notes else ""
        out.append(entry)
    return out


def _stat(column: str) -> Any:
    def cell(row: Mapping[str, Any]) -> Cell:
        mean, std = row[f"{column}_mean"], row[f"{column}_std"]
        if math.isnan(std) or not math.isfinite(mean) or not math.isfinite(std):
            return Cell(fmt_num(mean))
        return Cell(fmt_pm(mean, std))

    return cell


def _key_columns(rep: ExperimentReport) -> list[Column]:
    """The varying keys by their last name, and the seeds with spectra."""
    cols = [
        Column(k.rsplit(".", 1)[-1], lambda r, k=k: Cell(format_value(r[k])), numeric=False)
        for k in (rep.keys.varying if rep.keys else ())
    ]
    return [*cols, Column("seeds", lambda r: Cell(str(r["spectra_seeds"])))]


def _columns(rep: ExperimentReport) -> list[Column]:
    cols = [
        Column("mean sigma^2", _stat("mean_sq")),
        Column("theory", lambda r: Cell(fmt_num(r["theory_mean_sq_mean"]))),
        Column("spread", _stat("spread")),
        Column("theory", lambda r: Cell(fmt_num(r["theory_spread_mean"]))),
        Column("max sigma", _stat("sv_max")),
        Column("min sigma", _stat("sv_min")),
        Column("loss", lambda r: Cell(fmt_num(r.get("final_loss_mean")))),
    ]
    return [*_key_columns(rep), *cols]


def _ranks(values: Sequence[float]) -> np.ndarray:
    return pd.Series(values).rank().to_numpy(float)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long series (ties: mean ranks)."""
    rx, ry = _ranks(x), _ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def spread_or_mean(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The Answer to "does the spectrum's spread, not its mean, go with fast training?":
    the rank correlations, over the configurations, of the final training loss with the
    step-0 spread and with |ln mean sigma^2| (the mean's distance from 1); None with too few
    configurations to say."""
    usable = [
        r
        for r in rows
        if r.get("final_loss_mean") is not None
        and math.isfinite(float(r["final_loss_mean"]))
        and r["mean_sq_mean"] > 0
        and math.isfinite(r["spread_mean"])
    ]
    if len(usable) < SPEARMAN_MIN:
        return None
    loss = [float(r["final_loss_mean"]) for r in usable]
    rho_spread = spearman([r["spread_mean"] for r in usable], loss)
    rho_mean = spearman([abs(math.log(r["mean_sq_mean"])) for r in usable], loss)
    verdict = _closer(rho_spread, rho_mean)
    text = (
        f"Spectrum and training: over {len(usable)} configurations the final training loss "
        f"ranks with the step-0 spread at Spearman rho = {rho_spread:.2f}, with the mean's "
        f"distance from 1 (|ln mean sigma^2|) at rho = {rho_mean:.2f}: {verdict}."
    )
    critical = [r for r in usable if abs(math.log(r["mean_sq_mean"])) <= math.log(CRITICAL)]
    if len(critical) >= SPEARMAN_MIN:
        rho = spearman(
            [r["spread_mean"] for r in critical], [r["final_loss_mean"] for r in critical]
        )
        text += (
            f" Among the {len(critical)} whose mean sigma^2 is within a factor {CRITICAL:g} of 1, "
            f"the spread ranks the loss at rho = {rho:.2f}."
        )
    return text


def _closer(rho_spread: float, rho_mean: float) -> str:
    """Which of the two goes with slow training (a positive rank correlation), if either."""
    if not rho_spread > 0 and not rho_mean > 0:
        return "neither goes with slower training"
    if rho_spread > rho_mean or math.isnan(rho_mean):
        return "the spread goes with slower training more closely than the mean"
    return "the mean goes with slower training more closely than the spread"


def spectrum_tables(rep: ExperimentReport) -> list[Table]:
    """The spectrum table of one experiment (none when no run took spectra)."""
    spectra = rep.experiment.spectra
    if not rep.has_rows or spectra.empty:
        return []
    table = spectrum_table(rep.experiment.runs, spectra)
    rows = _per_config(rep, table)
    if not rows:
        return []
    answer = spread_or_mean(rows)
    reasons = sorted({r["theory_note"] for r in rows if r["theory_note"]})
    notes = ([answer] if answer else []) + NOTES + [f"no theory: {why}" for why in reasons]
    keys = len(rep.keys.varying) + 1 if rep.keys else 0
    return [make_table(TITLE, _columns(rep), rows, notes, keys)]


MAX_PANELS: Final = 4  # panels per value of the grid's main axis, up to this many


def _panels(rep: ExperimentReport) -> tuple[str | None, list[Any], Look]:
    """The key with a panel per value (the grid's main axis, when it has at most
    MAX_PANELS values), its values, and the colour/style of the other keys."""
    main, others = roles(rep)
    if main is None or len(values_of(rep, main)) > MAX_PANELS:
        return None, [None], profile_look(rep)
    return main, values_of(rep, main), Look(rep, others[0] if others else None, others[1:])


def _resolved(spectra: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Step 0's singular values at or above RESOLUTION of their example's largest, and
    the share left out."""
    step0 = spectra[spectra["step"] == 0]
    largest = step0.groupby(["run_id", "example"])["value"].transform("max")
    kept = step0["value"] >= RESOLUTION * largest
    return step0[kept], 1 - float(kept.mean())


def spectrum_figure(rep: ExperimentReport) -> Drawn | None:
    """Density of log10 sigma at step 0, one line per configuration (its seeds and examples
    pooled), a panel per value of the grid's main axis (e.g. model.depth)."""
    spectra = rep.experiment.spectra
    if not rep.has_rows or spectra.empty:
        return None
    step0, dropped = _resolved(spectra)
    key, panels, look = _panels(rep)
    fig, axes = new_figure(1, len(panels))
    for ax, value in zip(axes[0], panels, strict=True):
        chosen = [
            (row, ids)
            for row, (_, ids) in zip(rep.config_rows, rep.config_runs(), strict=True)
            if key is None or row[key] == value
        ]
        logs = [
            np.log10(step0.loc[step0["run_id"].isin(ids), "value"].to_numpy(float))
            for _, ids in chosen
        ]
        every = np.concatenate(logs) if logs else np.zeros(0)
        if not len(every):
            continue
        bins = np.linspace(every.min(), max(every.max(), every.min() + 1e-3), 50)
        for (row, _), logged in zip(chosen, logs, strict=True):
            if len(logged):
                density, edges = np.histogram(logged, bins, density=True)
                style = {k: v for k, v in look.of(row).items() if k != "marker"}
                ax.step(edges[:-1], density, where="post", lw=1.2, **style)
        ax.set_title(
            f"{key.rsplit('.', 1)[-1]} {format_value(value)}" if key else rep.name, fontsize=9
        )
        ax.set_xlabel("log10 singular value of J")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("density (examples and seeds pooled)")
    title = "Jacobian singular values at initialisation"
    fig.suptitle(f"{rep.name}: {title}", **HEADLINE)
    look.legends(fig)
    caption = (
        "Histogram density of log10 of the input-output Jacobian's singular values at step 0 "
        f"per configuration ({look.says()}); a narrow spike is an isometry up to scale. Left "
        f"out: the {dropped:.1%} below {RESOLUTION:g} of their example's largest (float32's "
        "resolution: rank lost to dead units, or the zeros where N_L > 784)."
    )
    return Drawn(fig, title, caption)
