"""The finite-width table: for every configuration with two seeds or more, the variance
over seeds of the step-0 log second moments with its confidence interval, Hanin &
Nica's 5·Σ 1/n_l beside the per-input one where it applies, and the Answer's sentence on
whether the law holds (:mod:`initbench.analysis.finitewidth` defines every number)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from initbench import analysis
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.figure_look import HEADLINE, THEORY_STYLE, Drawn, new_figure
from initbench.reporting.model import MISSING, Cell, Column, Table, fmt_num, make_table
from initbench.reporting.notes import SPREAD_LEVEL_TEXT as LEVEL
from initbench.reporting.tables import short_keys

SPREAD_TITLE: Final = "Finite-width spread over seeds (step 0)"
LAW: Final = "Hanin & Nica's Var ln(q_L/q_in) ≈ 5·Σ 1/n_l"
HEADERS: Final = {
    "lnq": "Var ln q_L",
    "per_input": "Var y per input",
    "lngrad": "Var ln g_1",
}


def _spread_cell(key: str) -> Column:
    def cell(row: Mapping[str, Any]) -> Cell:
        found: analysis.Spread = row[key]
        if math.isnan(found.variance):
            return Cell(MISSING)
        return Cell(f"{fmt_num(found.variance)} [{fmt_num(found.low)}, {fmt_num(found.high)}]")

    return Column(HEADERS[key], cell)


def _law_cell(row: Mapping[str, Any]) -> Cell:
    return Cell(row["holds"] or MISSING, "flag" if row["holds"] == "no" else "")


def _columns(rep: ExperimentReport, rows: list[dict[str, Any]]) -> list[Column]:
    assert rep.keys is not None
    short = short_keys(rep.keys.varying)
    cols = [
        Column(short[k], lambda r, k=k: Cell(analysis.format_value(r[k])), numeric=False)
        for k in rep.keys.varying
    ]
    cols += [Column("seeds", lambda r: Cell(str(r["seeds"]))), _spread_cell("lnq")]
    if any(not math.isnan(r["per_input"].variance) for r in rows):
        cols.append(_spread_cell("per_input"))
    if any(not math.isnan(r["hn"]) for r in rows):
        cols += [Column("5Σ1/n (H&N)", lambda r: Cell(fmt_num(r["hn"])))]
        cols += [Column("law", _law_cell, numeric=False)]
    return [*cols, _spread_cell("lngrad")]


def spread_tables(rep: ExperimentReport) -> list[Table]:
    """The finite-width table of one experiment; none without a configuration of 2 seeds."""
    rows = rep.spreads if rep.has_rows else []
    if not rows:
        return []
    reasons = list(dict.fromkeys(p for r in rows for p in r["hn_note"].split("; ") if p))
    notes = [f"H&N gives no number here: {'; '.join(reasons)}"] if reasons else []
    if all(math.isnan(r["per_input"].variance) for r in rows):
        notes.append("no per-input column: set train.per_example: true to record it")
    keys = len(rep.keys.varying) + 1 if rep.keys else 1
    return [make_table(SPREAD_TITLE, _columns(rep, rows), rows, notes, keys)]


def spread_records(rep: ExperimentReport) -> list[dict[str, Any]]:
    """The finite-width table as plain records (the json report): the varying keys,
    ``seeds``, ``<spread>_var`` / ``_low`` / ``_high`` per :data:`analysis.SPREADS` key,
    ``hn``, ``hn_note`` and ``holds``."""
    keys = list(rep.keys.varying) if rep.keys else []
    out = []
    for row in rep.spreads if rep.has_rows else []:
        record = {k: row[k] for k in keys} | {"seeds": row["seeds"]}
        for name in analysis.SPREADS:
            found: analysis.Spread = row[name]
            record |= {f"{name}_var": found.variance, f"{name}_low": found.low}
            record[f"{name}_high"] = found.high
        out.append(record | {k: row[k] for k in ("hn", "hn_note", "holds")})
    return out


def law_sentence(rep: ExperimentReport) -> str:
    """Whether Hanin & Nica's law holds, over the configurations it applies to: how many
    agree within the interval, and each that does not with its numbers; '' if none."""
    judged = [r for r in (rep.spreads if rep.has_rows else []) if r["holds"]]
    if not judged:
        return ""
    off = [r for r in judged if r["holds"] == "no"]
    said = f"{LAW} holds within the {LEVEL} interval of the per-input variance"
    said += f" at {len(judged) - len(off)} of {len(judged)} configurations"
    if off:
        shown = [
            f"{rep.short_label(r)}: {fmt_num(r['per_input'].variance)} "
            f"[{fmt_num(r['per_input'].low)}, {fmt_num(r['per_input'].high)}], "
            f"predicted {fmt_num(r['hn'])}"
            for r in off
        ]
        said += f"; not at {'; '.join(shown)}"
    return said + "."


def _errorbars(ax: Any, rows: list[dict[str, Any]], key: str, style: dict[str, Any]) -> None:
    """Each configuration's variance of ``key`` against 5Σ1/n, its interval as a bar."""
    found = [(r["hn"], r[key]) for r in rows if not math.isnan(r[key].variance)]
    if not found:
        return
    x = [hn for hn, _ in found]
    y = [s.variance for _, s in found]
    below = [s.variance - s.low for _, s in found]
    above = [s.high - s.variance for _, s in found]
    ax.errorbar(x, y, yerr=[below, above], linestyle="none", capsize=3, **style)


def spread_figure(rep: ExperimentReport) -> Drawn | None:
    """The measured spreads against Hanin & Nica's 5Σ1/n (log-log, intervals as bars, the
    prediction as the diagonal); None where the law applies to no configuration."""
    rows = [r for r in (rep.spreads if rep.has_rows else []) if not math.isnan(r["hn"])]
    if not rows:
        return None
    fig, axes = new_figure()
    ax = axes[0][0]
    _errorbars(ax, rows, "per_input", {"marker": "o", "color": "C0", "label": HEADERS["per_input"]})
    _errorbars(
        ax, rows, "lnq", {"marker": "s", "color": "C1", "mfc": "none", "label": HEADERS["lnq"]}
    )
    predicted = [r["hn"] for r in rows]
    line = np.geomspace(min(predicted) / 1.5, max(predicted) * 1.5, 2)
    ax.plot(line, line, color="0.3", **THEORY_STYLE, label="Hanin & Nica: 5Σ1/n")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("5 Σ_l 1/n_l (= 5 depth / width)")
    ax.set_ylabel("variance over seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    title = "Finite-width spread against Hanin & Nica"
    fig.suptitle(f"{rep.name}: {title}", **HEADLINE)
    caption = (
        f"Per configuration (one point each), the variance over seeds of y = ln(q_L/q_in) per "
        f"input (circles; all examples of all seeds pooled) and of the batch's ln q_L "
        f"(squares), with {LEVEL} chi-square intervals (n-1 = seeds - 1 degrees of freedom), "
        "against Hanin & Nica's prediction 5Σ1/n for one input (dashed: equality)."
    )
    return Drawn(fig, title, caption)
