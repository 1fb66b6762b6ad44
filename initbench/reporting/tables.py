"""The tables of one experiment: at initialisation (step 0), theory beside it, after
training (left out for init-only configurations, ``train.steps: 0``), and with
``--per-layer`` the layer-by-layer statistics and initial weights behind each verdict.
Each is a :class:`~initbench.reporting.model.Table` of analysis's numbers with the notes
that define its columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import pandas as pd

from initbench import analysis
from initbench.analysis import Thresholds, format_value
from initbench.reporting import notes
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.model import (
    Cell,
    Column,
    Table,
    make_table,
    num_col,
    stat_col,
    text_col,
    verdict_col,
)

INIT_TITLE: Final = "At initialisation (step 0)"
THEORY_TITLE: Final = "Theory beside measurement (step 0)"


def has_theory(configs: pd.DataFrame) -> bool:
    """Whether theory predicts something for some configuration."""
    return any(_has(configs, f"theory_{q}_init") for q in analysis.THEORY_QUANTITIES)


def _has(configs: pd.DataFrame, column: str) -> bool:
    return bool(configs[f"{column}_mean"].notna().any())


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each config key by its last name ('model.depth' -> 'depth') where that is unique."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}


def _key_cols(keys: analysis.ConfigKeys) -> list[Column]:
    short = short_keys(keys.varying)
    cols = [
        Column(short[k], lambda r, k=k: Cell(format_value(r[k])), numeric=False)
        for k in keys.varying
    ]
    return [*cols, Column("seeds", lambda r: Cell(str(r["seeds"])))]


def _worst_cols(configs: pd.DataFrame, tag: str) -> list[Column]:
    """dead and sat (worst over layers at ``tag``), where some configuration has them."""
    cols = [stat_col("dead", f"dead_max_{tag}")] if _has(configs, f"dead_max_{tag}") else []
    return cols + ([stat_col("sat", f"sat_max_{tag}")] if _has(configs, f"sat_max_{tag}") else [])


def _init_columns(rep: ExperimentReport) -> list[Column]:
    cols = [
        *_key_cols(rep.keys),
        stat_col("fwd factor", "fwd_factor_init"),
        stat_col("fwd ratio", "fwd_ratio_init"),
        verdict_col("forward", "fwd_verdict_init"),
        stat_col("bwd factor", "bwd_factor_init"),
        stat_col("bwd ratio", "bwd_ratio_init"),
        verdict_col("backward", "bwd_verdict_init"),
    ]
    if (rep.configs["normed_verdict_init"] != "").any():
        cols += [stat_col("normed factor", "normed_factor_init")]
        cols += [stat_col("normed ratio", "normed_ratio_init")]
    cols += _worst_cols(rep.configs, "init")
    return [*cols, stat_col("w_var/formula", "init_worst_ratio")]


def _theory_check_cell(row: Mapping[str, Any]) -> Cell:
    text = str(row["theory_check"])
    return Cell(text, "flag" if text.startswith("theory-mismatch") else "")


def _theory_columns(rep: ExperimentReport) -> list[Column]:
    """Each measured step-0 factor and ratio with the predicted one beside it."""
    cols = [*_key_cols(rep.keys), stat_col("q1", "theory_q1")]
    for quantity, (_, header) in analysis.THEORY_QUANTITIES.items():
        cols.append(stat_col(header, f"{quantity}_init"))
        cols.append(num_col("theory", f"theory_{quantity}_init_mean"))
    return [*cols, Column("vs theory", _theory_check_cell, numeric=False)]


def _flags_cell(row: Mapping[str, Any]) -> Cell:
    return Cell(str(row["flags"]), "flag" if row["flags"] else "")


def _last_columns(rep: ExperimentReport) -> list[Column]:
    cols = [
        *_key_cols(rep.keys),
        stat_col("fwd factor", "fwd_factor_last"),
        verdict_col("forward", "fwd_verdict_last"),
        stat_col("bwd factor", "bwd_factor_last"),
        verdict_col("backward", "bwd_verdict_last"),
    ]
    if (rep.configs["normed_verdict_last"] != "").any():
        cols += [stat_col("normed factor", "normed_factor_last")]
    return [
        *cols,
        *_worst_cols(rep.configs, "last"),
        stat_col("final loss", "final_loss"),
        stat_col("test acc", "test_accuracy"),
        text_col("status", "status"),
        Column("flags", _flags_cell, numeric=False),
    ]


def summary_tables(rep: ExperimentReport, th: Thresholds) -> list[Table]:
    """The step-0 table, theory beside it (where theory predicts something) and the
    after-training table of one experiment."""
    if not rep.has_rows:
        return []
    init_notes = notes.direction_notes(rep, "init")
    init_notes += notes.run_notes(rep, [("init check", "init_note"), ("LSUV", "lsuv_note")])
    keys = len(rep.keys.varying) + 1
    tables = [make_table(INIT_TITLE, _init_columns(rep), rep.config_rows, init_notes, keys)]
    if has_theory(rep.configs):
        theory_notes = notes.theory_reasons(rep)
        theory = make_table(THEORY_TITLE, _theory_columns(rep), rep.config_rows, theory_notes, keys)
        tables.append(theory)
    else:
        init_notes += notes.theory_reasons(rep)
    trained = [r for r in rep.config_rows if not r.get("init_only")]
    untrained = notes.init_only_note(rep)
    if not trained:  # nothing was trained: the step-0 tables are all there is
        tables[0].notes.append(untrained)
        return tables
    last_notes = notes.direction_notes(rep, "last")
    last_notes += [*notes.diverged_notes(rep), *notes.failed_notes(rep)]
    last_notes += [untrained] if len(trained) < len(rep.config_rows) else []
    title = f"After training ({notes.trained_at(rep)}) and outcome"
    return [*tables, make_table(title, _last_columns(rep), trained, last_notes, keys)]


# --- per-layer tables -----------------------------------------------------------------------


def _where_cell(row: Mapping[str, Any]) -> Cell:
    return Cell(f"{row['name']} t={int(row['t'])}" if row["t"] else str(row["name"]))


def _signal_columns(signal: pd.DataFrame, trained: bool = True) -> list[Column]:
    """The layer-by-layer columns: at step 0 and, for a trained configuration, the last."""
    cols = [Column("layer", _where_cell, numeric=False), Column("n", lambda r: Cell(str(r["n"])))]
    for tag, at in (("init", "@0"), ("last", "@last"))[: 2 if trained else 1]:
        for metric in analysis.SIGNAL_METRICS:
            name = f"{metric}_{tag}"
            if f"{name}_mean" in signal.columns:
                cols.append(stat_col(f"{metric} {at}", name, "n"))
            predicted = f"theory_{name}"
            if predicted in signal.columns and signal[predicted].notna().any():
                cols.append(num_col(f"{metric} theory", predicted))
    return cols


def _mismatch_cell(row: Mapping[str, Any]) -> Cell:
    text = f"{int(row['mismatches'])}/{int(row['runs'])}"
    return Cell(text, "flag" if row["mismatches"] else "")


WEIGHT_COLUMNS: Final = (
    text_col("layer", "layer"),
    text_col("tensor", "tensor"),
    text_col("shape", "shape"),
    text_col("init", "init"),
    stat_col("w_var @0", "measured", "runs"),
    num_col("formula", "expected"),
    num_col("ratio", "ratio_mean"),
    num_col("tolerance", "tolerance"),
    Column("mismatch", _mismatch_cell),
    text_col("note", "note"),
)


def per_layer_tables(rep: ExperimentReport, th: Thresholds) -> list[Table]:
    """For each (selected) configuration: its layer-by-layer signal and initial weights."""
    tables = []
    for row in rep.config_rows:
        label, run_ids = rep.label(row), row["run_ids"].split()
        signal = rep.layer_signal(run_ids)
        layer_notes = notes.per_layer_notes(row)
        title = f"Layer by layer: {label}"
        columns = _signal_columns(signal, trained=not row.get("init_only"))
        tables.append(make_table(title, columns, signal, layer_notes, 2))
        weights = analysis.init_table(rep.init_checks(run_ids, th))
        columns = WEIGHT_COLUMNS if len(weights) else ()
        tables.append(make_table(f"Initial weights: {label}", columns, weights, [], 2))
    return tables
