"""``initbench report``: verdict tables (terminal, markdown, csv, json, html, latex) and plots.

Reads only stored results (:mod:`initbench.results.store`); every number comes from
:mod:`initbench.analysis`, whose definitions are printed under the tables. One section per
experiment: a header (constant config keys, run counts, incomplete and unreadable runs,
known effects), a table at initialisation (step 0), a table after training with the
outcome and flags, and with ``per_layer`` the layer-by-layer statistics behind each
verdict. Plots are matplotlib figures (Agg, PNG) built from the same tables.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import numpy as np
import pandas as pd

import initbench
from initbench import analysis
from initbench.analysis import Thresholds, format_value
from initbench.config.activations import ACTIVATIONS, SATURATION_FRACTION
from initbench.results import schema, store

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS: Final = ("terminal", "markdown", "csv", "json", "html", "latex")
REPORT_VERSION: Final = 1  # of the json/csv report layout
FIG_SIZE: Final = (10.0, 5.0)  # inches; at FIG_DPI every PNG is 1000 x 500 pixels
FIG_DPI: Final = 100
PIPE_WIDTH: Final = 200  # terminal format written to a file or pipe: wide enough for every column
MISSING: Final = "—"  # NaN cell: not measured, or undefined (the verdict and notes say why)
VERDICT_STYLES: Final = {
    "stable": "green",
    "vanishing": "bold blue",
    "exploding": "bold red",
    "collapsed": "bold magenta",
    "non-finite": "bold red",
    "undefined": "dim",
    "mixed": "yellow",
    "flag": "bold yellow",
}
HTML_COLOURS: Final = {
    "stable": "#2e7d32",
    "vanishing": "#1565c0",
    "exploding": "#c62828",
    "collapsed": "#8e24aa",
    "non-finite": "#c62828",
    "undefined": "#888888",
    "mixed": "#b26a00",
    "flag": "#b26a00",
}


class ReportError(ValueError):
    """A report option that cannot be honoured (format, --select)."""


# --- loading --------------------------------------------------------------------------------


@dataclass
class Loaded:
    """One experiment folder as read, including what could not be read."""

    path: Path
    runs: pd.DataFrame
    layers: pd.DataFrame
    curves: pd.DataFrame
    incomplete: list[str]
    unreadable: dict[str, str]
    grid: dict[str, list[Any]]
    overrides: list[str] = field(default_factory=list)  # --set texts stored with spec.yaml


def _spec_grid(exp_dir: Path, overrides: Sequence[str] = ()) -> dict[str, list[Any]]:
    """The grid of the stored spec.yaml with its stored ``--set`` overrides applied (its
    key and value order sorts the tables)."""
    import yaml

    from initbench.config.spec import SpecError, apply_overrides

    try:
        data = yaml.safe_load((exp_dir / schema.SPEC_FILE).read_text(encoding="utf-8"))
        data = apply_overrides(data, overrides) if isinstance(data, dict) else data
    except (OSError, UnicodeDecodeError, yaml.YAMLError, SpecError):
        return {}
    grid = data.get("grid") if isinstance(data, dict) else None
    if not isinstance(grid, dict):
        return {}
    return {str(k): list(v) for k, v in grid.items() if isinstance(v, list)}


def load(exp_dir: Path) -> Loaded:
    """Read one experiment folder; a corrupt run is named with its reason, never raised."""
    experiment = store.load_experiment(exp_dir, skip_unreadable=True)
    overrides = store.read_overrides(exp_dir)
    return Loaded(
        exp_dir,
        experiment.runs,
        experiment.layers,
        experiment.curves,
        list(experiment.incomplete),
        experiment.unreadable,
        _spec_grid(exp_dir, overrides),
        overrides,
    )


# --- analysis of one experiment -------------------------------------------------------------


@dataclass
class ExperimentReport:
    """Everything a report shows about one experiment (after ``--select``)."""

    name: str
    path: Path
    loaded: Loaded
    keys: analysis.ConfigKeys | None
    runs: pd.DataFrame  # analysis.analyse_runs rows of the selected runs
    configs: pd.DataFrame  # analysis.aggregate rows of the selected configurations
    notes: list[str] = field(default_factory=list)

    @cached_property
    def config_rows(self) -> list[dict[str, Any]]:
        """The configurations as dicts, in table order (computed once: to_dict is slow)."""
        return self.configs.to_dict("records")

    @cached_property
    def run_rows(self) -> list[dict[str, Any]]:
        """The analysed runs as dicts."""
        return self.runs.to_dict("records")

    @cached_property
    def theory(self) -> dict[str, pd.DataFrame]:
        """run id -> :func:`analysis.theory_layers` of each selected run (no rows where theory
        makes no prediction), from the run's step-0 statistics."""
        layers = self.loaded.layers
        if self.runs.empty or layers.empty:
            return {}
        step0 = layers[(layers["step"] == 0) & layers["run_id"].isin(self.runs["run_id"])]
        stats = {r: analysis.RunStats(f) for r, f in step0.groupby("run_id", sort=False)}
        empty = analysis.RunStats(step0.iloc[0:0])
        runs, out = self.loaded.runs, {}
        for record in runs[runs["run_id"].isin(self.runs["run_id"])].to_dict("records"):
            run_stats = stats.get(record["run_id"], empty)
            predicted = analysis.run_theory(record, run_stats)
            out[record["run_id"]] = analysis.theory_layers(predicted, run_stats)
        return out

    def theory_mean(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """:func:`analysis.theory_mean` over some of the selected runs (a configuration)."""
        return analysis.theory_mean([self.theory[r] for r in run_ids if r in self.theory])

    def config_runs(self) -> list[tuple[str, list[str]]]:
        """(legend label, run ids) of every configuration, in table order."""
        varying = self.keys.varying if self.keys else ()
        out = []
        for row in self.config_rows:
            label = ", ".join(format_value(row[k]) for k in varying) or "all runs"
            out.append((label, row["run_ids"].split()))
        return out


def parse_select(items: Sequence[str]) -> dict[str, set[str]]:
    """``["model.depth=30", "model.init=he_normal"]`` -> {key: {values}}; one key given
    twice matches either value, different keys must all match."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ReportError(f"--select {item!r}: expected KEY=VALUE, e.g. model.depth=30")
        wanted.setdefault(key.strip(), set()).add(value.strip())
    return wanted


def _matches(value: Any, wanted: set[str]) -> bool:
    text = format_value(value)
    for candidate in wanted:
        try:
            if float(candidate) == float(text):
                return True
        except ValueError:
            if candidate == text:
                return True
    return False


def _select(configs: pd.DataFrame, keys: analysis.ConfigKeys, wanted: dict[str, set[str]]):
    """Configurations matching every --select key; None if a key is not in this experiment."""
    mask = pd.Series(True, index=configs.index)
    for key, values in wanted.items():
        if key in keys.varying:
            mask &= configs[key].map(lambda v, values=values: _matches(v, values))
        elif key in keys.constant:
            mask &= _matches(keys.constant[key], values)
        else:
            return None
    return configs[mask].reset_index(drop=True)


def known_effects(keys: analysis.ConfigKeys) -> list[str]:
    """Real effects (not bugs) worth stating next to this experiment's numbers."""
    values = {k: {format_value(v)} for k, v in keys.constant.items()}
    values.update({k: {format_value(v) for v in keys.labels[k]} for k in keys.varying})
    notes = []
    if "cnn" in values.get("model.arch", set()):
        notes.append(
            "cnn: 'same' zero padding shrinks the variance by about ((3n-2)/3n)^2 per layer "
            "on an n x n map (0.95 at 28x28, 0.82 at 7x7): a real effect, not a bug"
        )
        notes.append(
            "cnn: bwd factor and ratio are of grad_preact_var times the layer's map "
            "positions, the gradient's sum of squares over positions: a stride-2 conv (at "
            "1/3 and 2/3 of the depth) divides the per-element variance by about 4, since "
            "each input position feeds 9/4 outputs instead of 9, and keeps that sum, which "
            "is what reaches the weights"
        )
    if "rnn" in values.get("model.arch", set()):
        notes.append(
            "rnn: factors and ratios are across the time steps t = 1..28 of the top layer "
            "(backward = through time, from t = 28 back to t = 1); --per-layer shows all"
        )
    if any(v.startswith("adam") for v in values.get("train.optimizer", set())):
        notes.append(
            "adam: per-parameter step sizes hide much of the scale difference between "
            "inits that SGD exposes (after training)"
        )
    if "true" in values.get("model.batchnorm", set()):
        notes.append(
            "batchnorm: verdicts use preact (before batchnorm); the 'normed' columns are "
            "after it, where batchnorm keeps the variance near 1"
        )
    if any(v.startswith("selu") for v in values.get("model.activation", set())):
        notes.append("selu self-normalises with lecun_normal, not with torch's gain 3/4")
    if _bounded(values.get("model.activation", set())):
        notes.append(
            f"sat: a unit counts as saturated only within {1 - SATURATION_FRACTION:.0%} of "
            "its activation's asymptote; a layer driven towards one without reaching it "
            "(Glorot & Bengio's sigmoid top layer near 0.03) shows in act_mean "
            "(layers.parquet), not in sat"
        )
    return notes


def _bounded(activations: set[str]) -> bool:
    """Whether one of these activation labels names a bounded activation (tanh, sigmoid)."""
    names = {label.split("(", 1)[0] for label in activations}
    return any(name in ACTIVATIONS and ACTIVATIONS.get(name).kind == "bounded" for name in names)


def build_report(
    loaded: Loaded, keys: analysis.ConfigKeys | None, th: Thresholds, wanted: dict[str, set[str]]
) -> ExperimentReport:
    """Analyse, aggregate and (with --select) filter one loaded experiment."""
    path = loaded.path
    report = ExperimentReport(path.name, path, loaded, None, pd.DataFrame(), pd.DataFrame())
    if keys is None:
        report.notes.append("no complete runs to report")
        return report
    try:
        runs = analysis.analyse_runs(loaded.runs, loaded.layers, th)
    except ValueError as exc:
        report.notes.append(f"cannot analyse these results: {exc}")
        return report
    configs = analysis.aggregate(runs, keys, th)
    selected = _select(configs, keys, wanted) if wanted else configs
    if selected is None:
        report.notes.append(f"--select: no key {', '.join(sorted(wanted))} in this experiment")
        selected = configs.iloc[0:0]
    elif wanted and selected.empty:
        report.notes.append("--select matches no configuration of this experiment")
    chosen = {r for ids in selected["run_ids"] for r in ids.split()}
    report.keys, report.configs = keys, selected.reset_index(drop=True)
    report.runs = runs[runs["run_id"].isin(chosen)].reset_index(drop=True)
    report.notes += known_effects(keys)
    return report


def _check_select(wanted: dict[str, set[str]], all_keys: list[analysis.ConfigKeys | None]) -> None:
    known = {k for keys in all_keys if keys for k in (*keys.varying, *keys.constant)}
    missing = sorted(set(wanted) - known)
    if missing:
        raise ReportError(
            f"--select: no experiment has key(s) {', '.join(missing)}; "
            f"keys: {', '.join(sorted(known)) or 'none'}"
        )


def build_reports(
    results_dir: Path, th: Thresholds, select: Sequence[str] = ()
) -> list[ExperimentReport]:
    """One report per experiment folder under ``results_dir`` (raises store.ResultsError
    when there is none, ReportError when no experiment has a --select key)."""
    wanted = parse_select(select)
    loaded = [load(path) for path in store.find_experiments(Path(results_dir))]
    all_keys = [
        analysis.describe_configs(exp.runs, exp.grid) if not exp.runs.empty else None
        for exp in loaded
    ]
    _check_select(wanted, all_keys)
    return [build_report(e, k, th, wanted) for e, k in zip(loaded, all_keys, strict=True)]


# --- table model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One table cell: its text and a style name (a verdict, 'mixed', 'flag' or '')."""

    text: str
    style: str = ""


@dataclass
class Table:
    """A format-neutral table: every renderer draws the same cells and notes."""

    title: str
    columns: list[str]
    numeric: list[bool]
    rows: list[list[Cell]]
    notes: list[str]


@dataclass
class Section:
    """One experiment in a rendered report."""

    heading: str
    lines: list[str]
    tables: list[Table]


def fmt_num(value: Any) -> str:
    """A number with 3 significant digits; NaN/None as MISSING, infinities as 'inf'."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


def fmt_stat(row: Mapping[str, Any], column: str, n_key: str = "seeds") -> str:
    """``mean ± std`` over seeds; the mean alone for one seed (its std is undefined)."""
    mean, std, n = row[f"{column}_mean"], row[f"{column}_std"], int(row[n_key])
    if n <= 1 or fmt_num(mean) in (MISSING, "inf", "-inf") or fmt_num(std) == MISSING:
        return fmt_num(mean)
    return f"{fmt_num(mean)} ± {fmt_num(std)}"


def verdict_cell(text: Any) -> Cell:
    """A verdict with its colour ('mixed: ...' in the mixed colour, '' as MISSING)."""
    text = str(text) if text and not pd.isna(text) else ""
    if not text:
        return Cell(MISSING)
    return Cell(text, "mixed" if text.startswith("mixed") else text)


@dataclass(frozen=True)
class Column:
    """A table column: header, cell of one configuration row, right-aligned or not."""

    header: str
    cell: Callable[[Mapping[str, Any]], Cell]
    numeric: bool = True


def _stat_col(header: str, column: str) -> Column:
    return Column(header, lambda r: Cell(fmt_stat(r, column)))


def _verdict_col(header: str, column: str) -> Column:
    return Column(header, lambda r: verdict_cell(r[column]), numeric=False)


def _key_cols(keys: analysis.ConfigKeys) -> list[Column]:
    cols = [Column(k, lambda r, k=k: Cell(format_value(r[k])), numeric=False) for k in keys.varying]
    return [*cols, Column("seeds", lambda r: Cell(str(r["seeds"])))]


def _has(configs: pd.DataFrame, column: str) -> bool:
    return bool(configs[f"{column}_mean"].notna().any())


def has_theory(configs: pd.DataFrame) -> bool:
    """Whether theory predicts something for some configuration."""
    return any(_has(configs, f"theory_{q}_init") for q in analysis.THEORY_QUANTITIES)


def _init_columns(rep: ExperimentReport) -> list[Column]:
    c = rep.configs
    cols = [
        *_key_cols(rep.keys),
        _stat_col("fwd factor", "fwd_factor_init"),
        _stat_col("fwd ratio", "fwd_ratio_init"),
        _verdict_col("forward", "fwd_verdict_init"),
        _stat_col("bwd factor", "bwd_factor_init"),
        _stat_col("bwd ratio", "bwd_ratio_init"),
        _verdict_col("backward", "bwd_verdict_init"),
    ]
    if (c["normed_verdict_init"] != "").any():
        cols += [_stat_col("normed factor", "normed_factor_init")]
        cols += [_stat_col("normed ratio", "normed_ratio_init")]
    cols += [_stat_col("dead", "dead_max_init")] if _has(c, "dead_max_init") else []
    cols += [_stat_col("sat", "sat_max_init")] if _has(c, "sat_max_init") else []
    return [*cols, _stat_col("w_var/formula", "init_worst_ratio")]


def _theory_check_cell(row: Mapping[str, Any]) -> Cell:
    text = str(row["theory_check"])
    return Cell(text, "flag" if text.startswith("theory-mismatch") else "")


def _theory_columns(rep: ExperimentReport) -> list[Column]:
    """Each measured step-0 factor and ratio with the predicted one beside it."""
    cols = [*_key_cols(rep.keys), _stat_col("q1", "theory_q1")]
    for quantity, (_, header) in analysis.THEORY_QUANTITIES.items():
        predicted = f"theory_{quantity}_init_mean"
        cols.append(_stat_col(header, f"{quantity}_init"))
        cols.append(Column("theory", lambda r, c=predicted: Cell(fmt_num(r[c]))))
    return [*cols, Column("vs theory", _theory_check_cell, numeric=False)]


def _last_columns(rep: ExperimentReport) -> list[Column]:
    c = rep.configs
    cols = [
        *_key_cols(rep.keys),
        _stat_col("fwd factor", "fwd_factor_last"),
        _verdict_col("forward", "fwd_verdict_last"),
        _stat_col("bwd factor", "bwd_factor_last"),
        _verdict_col("backward", "bwd_verdict_last"),
    ]
    if (c["normed_verdict_last"] != "").any():
        cols += [_stat_col("normed factor", "normed_factor_last")]
    cols += [_stat_col("dead", "dead_max_last")] if _has(c, "dead_max_last") else []
    cols += [_stat_col("sat", "sat_max_last")] if _has(c, "sat_max_last") else []
    return [
        *cols,
        _stat_col("final loss", "final_loss"),
        _stat_col("test acc", "test_accuracy"),
        Column("status", lambda r: Cell(str(r["status"])), numeric=False),
        Column("flags", lambda r: Cell(str(r["flags"]), "flag" if r["flags"] else ""), False),
    ]


def _table(
    title: str, columns: list[Column], rows: pd.DataFrame | list[dict[str, Any]], notes: list[str]
) -> Table:
    records = rows if isinstance(rows, list) else rows.to_dict("records")
    body = [[col.cell(r) for col in columns] for r in records]
    return Table(title, [c.header for c in columns], [c.numeric for c in columns], body, notes)


# --- notes under the tables -----------------------------------------------------------------

DIRECTIONS: Final = (("fwd", "forward"), ("bwd", "backward"), ("normed", "normed"))

CELL_NOTE: Final = (
    f"cells: mean ± standard deviation over the seeds (n-1 denominator); one seed: the "
    f"value alone; {MISSING}: not measured or undefined (see the verdict and notes)"
)
INIT_NOTES: Final = [
    "fwd factor: 2^slope of the least-squares fit of log2(preact_var) against layer "
    "l = 1..L (rnn: time step t of the top layer); 1 = preserved, 0.5 = halves per layer",
    "fwd ratio: preact_var[L] / preact_var[1] (end-to-end change)",
    "bwd factor, bwd ratio: the same for grad_preact_var read from layer L back to layer 1 "
    "(2^-slope; grad_preact_var[1] / grad_preact_var[L]): < 1 = the gradient shrinks on its "
    "way to the input; cnn: of grad_preact_var times the layer's map positions",
    "normed: the forward factor and ratio of the batchnorm output (normed_var)",
    "dead, sat: worst dead_frac / sat_frac over layers (dead_frac: units whose input is <= 0 "
    "for the whole batch, measured for every rectifier; the dead flag: relu only, see flags)",
    "w_var/formula: measured weight variance at step 0 over the initializer formula's, "
    "for the weight furthest from 1",
]


THEORY_TITLE: Final = "Theory beside measurement (step 0)"
THEORY_TABLE_NOTES: Final = [
    "q1: layer 1's measured preact_sq at step 0 (rnn: at time step 1), where the prediction starts",
    "fwd factor, fwd ratio, bwd factor, bwd ratio: measured, as in the step-0 table; beside "
    "each, theory: the predicted value",
]


def _config_label(row: Mapping[str, Any], keys: analysis.ConfigKeys) -> str:
    return ", ".join(f"{k}={format_value(row[k])}" for k in keys.varying) or "all runs"


def _run_notes(rep: ExperimentReport, columns: Sequence[tuple[str, str]]) -> list[str]:
    """Distinct per-run notes ('variance exactly 0 ...') with configuration and count."""
    labels = {}
    for row in rep.config_rows:
        for run_id in row["run_ids"].split():
            labels[run_id] = (_config_label(row, rep.keys), row["seeds"])
    counts: dict[tuple[str, str, str], int] = {}
    for run in rep.run_rows:
        for what, column in columns:
            if run[column]:
                key = (labels[run["run_id"]][0], what, str(run[column]))
                counts[key] = counts.get(key, 0) + 1
    seeds = {label: n for label, n in labels.values()}
    return [
        f"{lab}: {what}: {note} ({n}/{seeds[lab]} seeds)" for (lab, what, note), n in counts.items()
    ]


def theory_notes(th: Thresholds, seeds: Sequence[int] = ()) -> list[str]:
    """The definitions of the theory columns and of the 'vs theory' check; ``seeds``: the
    seed counts of the configurations, whose t quantiles are then printed too."""
    tol = f"{th.theory_tolerance:g}"
    level = analysis.THEORY_LEVEL
    quantiles = [
        f"n = {n}: t = {analysis.student_t_quantile((1 + level) / 2, n - 1):.4g}"
        for n in sorted({int(n) for n in seeds if n >= 2})
    ]
    return [
        "theory: the mean-field prediction at step 0 (initbench theory: infinite width, "
        "i.i.d. zero-mean weights and biases) for each seed, its q1 = that seed's measured "
        "layer-1 preact_sq at step 0 (rnn: at every time step, as layer 1's input drive), "
        "then the mean over the seeds; factor and ratio defined as the measured ones",
        "vs theory: per seed d = ln(measured / theory) of the fwd and bwd factor and ratio; "
        f"theory-mismatch where |mean d| > max(K ln(1 + {tol}), t sd(d) sqrt(1 + 1/n)) for one "
        "of them: K = 1 for a factor, L - 1 for a ratio (L layers; rnn: time steps), sd = "
        "sample std over the n seeds (n - 1), t = the "
        f"{(1 + level) / 2:.1%} quantile of Student's t with n - 1 degrees of freedom"
        + (f" ({'; '.join(quantiles)})" if quantiles else "")
        + f": theory lies outside the {level:.0%} prediction interval of one network of this "
        "configuration (the finite-width spread, estimated from the seeds) and is off by more "
        f"than {tol} per layer; otherwise consistent (few seeds give a wide interval: csv and "
        "json list mean d and the bound as theory_logdev_* and theory_allowed_*). One seed: "
        "not evaluated (no spread). undefined: a d is not finite (a measured 0, inf or NaN, "
        "or a seed without a prediction)",
    ]


def _theory_reasons(rep: ExperimentReport) -> list[str]:
    """Why theory predicts nothing (or less) for some configurations: each reason once."""
    by_reason: dict[str, list[str]] = {}
    for row in rep.config_rows:
        if row.get("theory_note"):
            by_reason.setdefault(row["theory_note"], []).append(_config_label(row, rep.keys))
    everywhere = len(rep.config_rows)
    return [
        f"theory, {'every configuration' if len(labels) == everywhere else '; '.join(labels)}: "
        f"{reason}"
        for reason, labels in by_reason.items()
    ]


def _diverged_notes(rep: ExperimentReport) -> list[str]:
    """Where each diverged run first went non-finite (summary.json: diverged_at)."""
    labels = {
        r: _config_label(row, rep.keys) for row in rep.config_rows for r in row["run_ids"].split()
    }
    return [
        f"{labels.get(r['run_id'], 'run')}: run {r['run_id']} (seed {r['seed']}) "
        f"{r['status_text']}: {r['diverged_at'] or 'where is not recorded'}"
        for r in rep.run_rows
        if r["status"] == "diverged"
    ]


def _failed_notes(rep: ExperimentReport) -> list[str]:
    failed = rep.runs[rep.runs["status"] == "failed"]
    return [
        f"failed run {r['run_id']} (seed {r['seed']}): {r['error']}" for _, r in failed.iterrows()
    ]


def _trained_at(rep: ExperimentReport) -> str:
    steps = set(rep.loaded.runs.get("steps_planned", pd.Series(dtype=object)).dropna())
    return f"step {int(next(iter(steps)))}" if len(steps) == 1 else "the last logged step"


def _trained_notes(rep: ExperimentReport) -> list[str]:
    return [
        f"measured at {_trained_at(rep)} (the trained network); a diverged run at the step "
        "it went non-finite, where dead and sat are undefined; factors as in the step-0 table",
        "final loss: mean training loss over the last logging interval; test acc: accuracy "
        "on the test split (ok runs only); status and flags: per seed when they differ",
    ]


def summary_tables(rep: ExperimentReport, th: Thresholds) -> list[Table]:
    """The step-0 table and the after-training table of one experiment."""
    if rep.keys is None or rep.configs.empty:
        return []
    notes = {
        tag: _run_notes(rep, [(name, f"{prefix}_note_{tag}") for prefix, name in DIRECTIONS])
        for tag in analysis.TAGS
    }
    init_notes = [*INIT_NOTES, CELL_NOTE, *th.describe(), *notes["init"]]
    init_notes += _run_notes(rep, [("init check", "init_note")])
    last_notes = [*_trained_notes(rep), CELL_NOTE, *th.describe(), *notes["last"]]
    last_notes += _diverged_notes(rep)
    title = f"After training ({_trained_at(rep)}) and outcome"
    tables = [_table("At initialisation (step 0)", _init_columns(rep), rep.config_rows, init_notes)]
    if has_theory(rep.configs):
        seeds = rep.configs["seeds"].tolist()
        theory_notes_ = [*THEORY_TABLE_NOTES, CELL_NOTE, *theory_notes(th, seeds)]
        theory_notes_ += _theory_reasons(rep)
        tables.append(_table(THEORY_TITLE, _theory_columns(rep), rep.config_rows, theory_notes_))
    else:
        init_notes += _theory_reasons(rep)
    last_notes += _failed_notes(rep)
    return [*tables, _table(title, _last_columns(rep), rep.config_rows, last_notes)]


# --- per-layer tables -----------------------------------------------------------------------


def _per_layer_frames(rep: ExperimentReport, run_ids: list[str], th: Thresholds):
    """(signal, init checks) of one configuration's runs, for the per-layer tables."""
    last = rep.runs.set_index("run_id")["last_step"]
    last_steps = {r: int(last[r]) for r in run_ids if r in last.index and not pd.isna(last[r])}
    signal = analysis.per_layer(rep.loaded.layers, last_steps)
    theory = rep.theory_mean(run_ids)
    if len(theory) and len(signal):
        signal = signal.merge(theory, on=["layer", "t"], how="left")
    records = rep.loaded.runs.set_index("run_id", drop=False)
    layers = rep.loaded.layers
    checks = [
        analysis.init_check(records.loc[r].to_dict(), layers[layers["run_id"] == r], th)
        for r in run_ids
    ]
    return signal, checks


def _signal_columns(signal: pd.DataFrame) -> list[Column]:
    def where(r: Mapping[str, Any]) -> Cell:
        return Cell(f"{r['name']} t={int(r['t'])}" if r["t"] else str(r["name"]))

    cols = [Column("layer", where, numeric=False), Column("n", lambda r: Cell(str(r["n"])))]
    for tag, at in (("init", "@0"), ("last", "@last")):
        for metric in analysis.SIGNAL_METRICS:
            name = f"{metric}_{tag}"
            if f"{name}_mean" in signal.columns:
                cols.append(Column(f"{metric} {at}", lambda r, c=name: Cell(fmt_stat(r, c, "n"))))
            predicted = f"theory_{name}"
            if predicted in signal.columns and signal[predicted].notna().any():
                cols.append(Column(f"{metric} theory", lambda r, c=predicted: Cell(fmt_num(r[c]))))
    return cols


def _weight_columns() -> list[Column]:
    return [
        Column("layer", lambda r: Cell(str(r["layer"])), numeric=False),
        Column("tensor", lambda r: Cell(str(r["tensor"])), numeric=False),
        Column("shape", lambda r: Cell(str(r["shape"])), numeric=False),
        Column("init", lambda r: Cell(str(r["init"])), numeric=False),
        Column("w_var @0", lambda r: Cell(fmt_stat(r, "measured", "runs"))),
        Column("formula", lambda r: Cell(fmt_num(r["expected"]))),
        Column("ratio", lambda r: Cell(fmt_num(r["ratio_mean"]))),
        Column("tolerance", lambda r: Cell(fmt_num(r["tolerance"]))),
        Column("mismatch", lambda r: _mismatch_cell(r)),
        Column("note", lambda r: Cell(str(r["note"])), numeric=False),
    ]


def _mismatch_cell(row: Mapping[str, Any]) -> Cell:
    text = f"{int(row['mismatches'])}/{int(row['runs'])}"
    return Cell(text, "flag" if row["mismatches"] else "")


PER_LAYER_THEORY_NOTE: Final = (
    "preact_var theory, grad_preact_var theory: the mean-field prediction at step 0, mean "
    "over the seeds with one. preact_var: q from the seed's measured layer-1 preact_sq (so "
    "layer 1, and an rnn's layer 1 at every time step, is that measurement); "
    "grad_preact_var: the predicted change from where the gradient enters, times the "
    "seed's measured grad_preact_var there (layer L; rnn: each layer's last time step): "
    "theory predicts the profile, not the readout's scale"
)


def _per_layer_notes(row: Mapping[str, Any], signal: pd.DataFrame) -> list[str]:
    """What the layer-by-layer table's columns are, and why theory is missing if it is."""
    notes = [
        "mean ± std over the seeds (n = runs with the value); @0 = step 0, @last = each "
        "run's last logged step (a diverged run: the step it went non-finite)",
        "rows: watched layers l in forward order; rnn: each layer at each time step t",
    ]
    predicted = [c for c in signal.columns if c.startswith("theory_") and c != "theory_n"]
    if predicted and signal[predicted].notna().to_numpy().any():
        notes.append(PER_LAYER_THEORY_NOTE)
    if row.get("theory_note"):
        notes.append(f"theory: {row['theory_note']}")
    return notes


def per_layer_tables(rep: ExperimentReport, th: Thresholds) -> list[Table]:
    """For each (selected) configuration: its layer-by-layer signal and initial weights."""
    tables = []
    for row in rep.config_rows:
        label, run_ids = _config_label(row, rep.keys), row["run_ids"].split()
        signal, checks = _per_layer_frames(rep, run_ids, th)
        title = f"Layer by layer: {label}"
        notes = [*_per_layer_notes(row, signal), *th.describe()]
        tables.append(_table(title, _signal_columns(signal), signal, notes))
        weights = analysis.init_table(checks)
        columns = _weight_columns() if len(weights) else []
        wnotes = [
            "w_var @0: measured at step 0 (w_rec: the rnn's hidden-to-hidden weight); "
            "formula: the initializer's variance for this shape; mismatch: runs flagged"
        ]
        tables.append(
            _table(f"Initial weights: {label}", columns, weights, [*wnotes, *th.describe()])
        )
    return tables


# --- sections -------------------------------------------------------------------------------


def header_lines(rep: ExperimentReport) -> list[str]:
    """What a reader needs before the tables: where, what is constant, what was counted."""
    loaded = rep.loaded
    lines = [f"results: {rep.path}"]
    if loaded.overrides:
        given = " ".join(f"--set {o}" for o in loaded.overrides)
        lines.append(f"spec: {schema.SPEC_FILE} with {given} ({schema.OVERRIDES_FILE})")
    if rep.keys is not None:
        constant = ", ".join(
            f"{k}={format_value(v)}" for k, v in rep.keys.constant.items() if v != "none"
        )
        lines.append(f"constant: {constant}")
        if rep.keys.varying:
            lines.append(f"rows: {', '.join(rep.keys.varying)} (the last one side by side)")
    status = loaded.runs.get("status", pd.Series(dtype=object))
    counts = ", ".join(f"{int((status == s).sum())} {s}" for s in schema.STATUSES)
    lines.append(f"runs: {len(loaded.runs)} complete ({counts})")
    if len(rep.runs) != len(loaded.runs) and rep.keys is not None:
        n = len(rep.configs)
        lines.append(f"selected: {len(rep.runs)} runs in {n} configuration{'s' * (n != 1)}")
    if loaded.incomplete:
        names = ", ".join(loaded.incomplete)
        lines.append(
            f"incomplete: {len(loaded.incomplete)} (no summary.json, not reported): {names}"
        )
    if loaded.unreadable:
        lines.append(f"unreadable: {len(loaded.unreadable)} (not reported):")
        lines += [f"  {run_id}: {why}" for run_id, why in loaded.unreadable.items()]
    return [*lines, *(f"note: {n}" for n in rep.notes)]


FINDINGS_NOTES: Final = [
    "each line gathers the configurations of the tables below that share a verdict, flag "
    "or check; nothing here is measured anew",
    "a flag with a count (1/2) holds for that many of the configuration's seeds",
]


def _grouped(rows: Sequence[Mapping[str, Any]], keys: analysis.ConfigKeys, column: str):
    """Distinct non-empty values of ``column`` in first-seen order, each with the labels
    of the configurations that have it."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            continue
        groups.setdefault(str(value), []).append(_short_label(row, keys))
    return groups.items()


def _short_label(row: Mapping[str, Any], keys: analysis.ConfigKeys) -> str:
    """'depth=30 init=xavier_normal': the varying keys by their last name, leaving out
    keys that do not apply to this configuration ('none', e.g. an mlp's recurrent_init)."""
    values = [(k.rsplit(".", 1)[-1], format_value(row[k])) for k in keys.varying]
    parts = [f"{name}={value}" for name, value in values if value != "none"]
    return " ".join(parts) or "all runs"


def _flag_findings(rows: Sequence[Mapping[str, Any]], keys: analysis.ConfigKeys):
    """(flag, labels) for every flag some configuration has, with its seed count."""
    for flag in analysis.FLAGS:
        labels = []
        for row in rows:
            for item in filter(None, (f.strip() for f in str(row["flags"]).split(","))):
                if item == flag or item.startswith(f"{flag} "):
                    count = item[len(flag) :].strip()
                    labels.append(_short_label(row, keys) + (f" ({count})" if count else ""))
        if labels:
            yield f"flagged {flag}", labels


def _best_accuracy(rep: ExperimentReport) -> list[tuple[str, list[str]]]:
    """The configuration with the highest mean test accuracy, with its value."""
    scored = [r for r in rep.config_rows if not pd.isna(r.get("test_accuracy_mean"))]
    if not scored:
        return []
    best = max(scored, key=lambda r: r["test_accuracy_mean"])
    value = fmt_stat(best, "test_accuracy")
    return [(f"highest test accuracy: {value}", [_short_label(best, rep.keys)])]


def findings_table(rep: ExperimentReport) -> Table | None:
    """The experiment's answer in a few lines: which configurations vanish, explode or
    stay stable at step 0 and after training, which are flagged, which trained best, and
    how the step-0 measurements compare with theory - all read off the tables below."""
    if rep.keys is None or rep.configs.empty:
        return None
    rows, keys = rep.config_rows, rep.keys
    lines: list[tuple[str, list[str]]] = []
    for tag, when in (("init", "at step 0"), ("last", f"at {_trained_at(rep)}")):
        for prefix, name in DIRECTIONS:
            for verdict, labels in _grouped(rows, keys, f"{prefix}_verdict_{tag}"):
                lines.append((f"{name} {verdict} {when}", labels))
    lines += list(_flag_findings(rows, keys))
    lines += _best_accuracy(rep)
    if has_theory(rep.configs):
        lines += [(f"vs theory: {c}", labels) for c, labels in _grouped(rows, keys, "theory_check")]
    total = len(rows)
    body = [
        [Cell(finding), Cell(f"all {total}" if len(labels) == total > 1 else "; ".join(labels))]
        for finding, labels in lines
    ]
    return Table("Findings", ["finding", "configurations"], [False, False], body, FINDINGS_NOTES)


def sections(reports: Sequence[ExperimentReport], th: Thresholds, per_layer: bool) -> list[Section]:
    """The format-neutral document: one section per experiment."""
    out = []
    for rep in reports:
        findings = findings_table(rep)
        tables = ([findings] if findings else []) + summary_tables(rep, th)
        if per_layer and rep.keys is not None:
            tables += per_layer_tables(rep, th)
        out.append(Section(rep.name, header_lines(rep), tables))
    return out


# --- text renderers ---------------------------------------------------------------------------


def _rich_table(table: Table) -> Any:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    rich_table = RichTable(
        title=table.title,
        title_justify="left",
        title_style="bold",
        caption="\n".join(table.notes),
        caption_justify="left",
        caption_style="dim",
        box=box.SIMPLE_HEAD,
    )
    for index, (header, numeric) in enumerate(zip(table.columns, table.numeric, strict=True)):
        # wrap between words only: a number is never cut, folded or ellipsed
        words = [header, *(row[index].text for row in table.rows)]
        widest = max(len(word) for text in words for word in text.split() or [""])
        justify = "right" if numeric else "left"
        rich_table.add_column(header, justify=justify, min_width=widest, overflow="fold")
    for row in table.rows:
        rich_table.add_row(*(Text(c.text, style=VERDICT_STYLES.get(c.style, "")) for c in row))
    return rich_table


def print_terminal(document: Sequence[Section], console: Any) -> None:
    """Draw the report with rich: verdicts coloured, notes under each table; a table wider
    than the console is drawn at its own width (the terminal wraps it) rather than cut."""
    from rich.measure import Measurement
    from rich.text import Text

    for section in document:
        console.rule(Text(section.heading, style="bold"))
        for line in section.lines:
            console.print(Text(line))
        for table in section.tables:
            rich_table = _rich_table(table)
            unbounded = console.options.update(max_width=10**6)
            needed = Measurement.get(console, unbounded, rich_table).minimum
            console.print()
            console.print(rich_table, width=max(console.width, needed), crop=False)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(document: Sequence[Section]) -> str:
    """GitHub-flavoured markdown: a heading per experiment, pipe tables, notes as lists."""
    out = [f"# initbench report (initbench {initbench.__version__})", ""]
    for section in document:
        out += [f"## {section.heading}", ""]
        out += [f"- {_md_escape(line.strip())}" for line in section.lines] + [""]
        for table in section.tables:
            out += [f"### {table.title}", ""]
            out.append("| " + " | ".join(_md_escape(c) for c in table.columns) + " |")
            out.append("|" + "|".join("---:" if n else ":---" for n in table.numeric) + "|")
            out += ["| " + " | ".join(_md_escape(c.text) for c in row) + " |" for row in table.rows]
            out += [""] + [f"- {_md_escape(note)}" for note in table.notes] + [""]
    return "\n".join(out)


_LATEX_SPECIAL: Final = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",  # the default OT1 font encoding prints < > | as other glyphs
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "—": "---",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular (and the few non-ASCII signs the report uses)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_table(table: Table) -> list[str]:
    spec = "".join("r" if n else "l" for n in table.numeric)
    out = [r"\begin{table}[htbp]", r"\centering", r"\scriptsize"]
    out += [rf"\caption{{{latex_escape(table.title)}}}", rf"\begin{{tabular}}{{{spec}}}"]
    out += [r"\toprule", " & ".join(latex_escape(c) for c in table.columns) + r" \\"]
    out.append(r"\midrule")
    out += [" & ".join(latex_escape(c.text) for c in row) + r" \\" for row in table.rows]
    out += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip"]
    out += [r"\parbox{\linewidth}{\tiny"]
    out += [latex_escape(note) + r"\\" for note in table.notes] + ["}", r"\end{table}", ""]
    return out


def render_latex(document: Sequence[Section]) -> str:
    """LaTeX fragments (booktabs tables) to \\input into a paper; needs \\usepackage{booktabs}."""
    out = [
        f"% initbench report (initbench {initbench.__version__}); needs \\usepackage{{booktabs}}"
    ]
    for section in document:
        out += ["", rf"\subsection*{{{latex_escape(section.heading)}}}", r"\begin{itemize}"]
        out += [rf"\item {latex_escape(line.strip())}" for line in section.lines]
        out += [r"\end{itemize}", ""]
        for table in section.tables:
            out += _latex_table(table)
    return "\n".join(out) + "\n"


_HTML_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:110em}"
    "table{border-collapse:collapse;margin:1em 0 .3em}"
    "caption{text-align:left;font-weight:bold;padding:.3em 0}"
    "th,td{border-bottom:1px solid #ddd;padding:.2em .6em;font-size:.9em}"
    "td.num,th.num{text-align:right}ul.notes{font-size:.8em;color:#555}"
    "figure{margin:1em 0}img{max-width:100%}"
    + "".join(
        f".v-{k.replace('/', '')}{{color:{v};font-weight:bold}}" for k, v in HTML_COLOURS.items()
    )
)


def _html_table(table: Table) -> list[str]:
    esc = html.escape
    out = ["<table>", f"<caption>{esc(table.title)}</caption>", "<thead><tr>"]
    for header, numeric in zip(table.columns, table.numeric, strict=True):
        out.append(f'<th class="{"num" if numeric else "txt"}">{esc(header)}</th>')
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for cell, numeric in zip(row, table.numeric, strict=True):
            classes = " ".join(filter(None, ["num" if numeric else "", _css(cell.style)]))
            cells.append(f'<td class="{classes}">{esc(cell.text)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody></table>", '<ul class="notes">']
    return out + [f"<li>{esc(note)}</li>" for note in table.notes] + ["</ul>"]


def _css(style: str) -> str:
    return f"v-{style.replace('/', '')}" if style else ""


def render_html(document: Sequence[Section], figures: Mapping[str, Mapping[str, bytes]]) -> str:
    """One self-contained HTML file: tables with coloured verdicts, PNGs inlined (base64)."""
    esc = html.escape
    title = f"initbench report (initbench {initbench.__version__})"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">']
    out += [f"<title>{esc(title)}</title>", f"<style>{_HTML_STYLE}</style></head><body>"]
    out.append(f"<h1>{esc(title)}</h1>")
    for section in document:
        out += [f"<h2>{esc(section.heading)}</h2>", "<ul>"]
        out += [f"<li>{esc(line.strip())}</li>" for line in section.lines] + ["</ul>"]
        for table in section.tables:
            out += _html_table(table)
        for name, png in figures.get(section.heading, {}).items():
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">')
            out.append(f"<figcaption>{esc(name)}</figcaption></figure>")
    return "\n".join([*out, "</body></html>"]) + "\n"


# --- machine-readable formats -----------------------------------------------------------------


def config_frame(rep: ExperimentReport) -> pd.DataFrame:
    """One row per configuration: experiment, every config key (varying and constant),
    then the aggregated columns of analysis.aggregate."""
    if rep.keys is None or rep.configs.empty:
        return pd.DataFrame()
    frame = rep.configs.copy()
    for key, value in rep.keys.constant.items():
        frame[key] = format_value(value) if isinstance(value, bool) else value
    keys = [*rep.keys.varying, *rep.keys.constant]
    rest = [c for c in frame.columns if c not in keys]
    frame = frame[keys + rest]
    frame.insert(0, "experiment", rep.name)
    return frame


def per_layer_frame(rep: ExperimentReport, th: Thresholds) -> pd.DataFrame:
    """analysis.per_layer of every configuration, stacked, with its keys and run ids."""
    frames = []
    for row in config_frame(rep).to_dict("records"):
        signal, _ = _per_layer_frames(rep, row["run_ids"].split(), th)
        keys = {k: row[k] for k in ("experiment", *rep.keys.varying)}
        frames.append(signal.assign(**keys, run_ids=row["run_ids"]))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    front = ["experiment", *rep.keys.varying, "run_ids"]
    return frame[front + [c for c in frame.columns if c not in front]]


def render_csv(reports: Sequence[ExperimentReport], th: Thresholds, per_layer: bool) -> str:
    """One row per configuration (all experiments; keys as columns), or with ``per_layer``
    one row per configuration and layer (and rnn time step). Non-finite as nan / inf."""
    build = (lambda r: per_layer_frame(r, th)) if per_layer else config_frame
    frames = [f for f in (build(r) for r in reports) if not f.empty]
    if not frames:
        return ""
    return pd.concat(frames, ignore_index=True).to_csv(index=False, na_rep="nan")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _json_experiment(rep: ExperimentReport, th: Thresholds, per_layer: bool) -> dict[str, Any]:
    loaded = rep.loaded
    status = loaded.runs.get("status", pd.Series(dtype=object))
    out: dict[str, Any] = {
        "name": rep.name,
        "path": str(rep.path),
        "varying": list(rep.keys.varying) if rep.keys else [],
        "constant": dict(rep.keys.constant) if rep.keys else {},
        "counts": {
            "complete": len(loaded.runs),
            **{s: int((status == s).sum()) for s in schema.STATUSES},
        },
        "incomplete": loaded.incomplete,
        "unreadable": loaded.unreadable,
        "notes": rep.notes,
        "configurations": _records(config_frame(rep)),
        "runs": _records(rep.runs),
    }
    if per_layer and rep.keys is not None:
        out["per_layer"] = _records(per_layer_frame(rep, th))
    return out


def render_json(reports: Sequence[ExperimentReport], th: Thresholds, per_layer: bool) -> str:
    """Everything the tables show, per configuration and per run, with the thresholds and
    definitions; non-finite numbers as the strings 'nan', 'inf', '-inf' (as in results)."""
    from dataclasses import asdict

    document = {
        "report_version": REPORT_VERSION,
        "initbench": initbench.__version__,
        "thresholds": asdict(th),
        "definitions": [*INIT_NOTES, CELL_NOTE, *th.describe(), *theory_notes(th)],
        "experiments": [_json_experiment(r, th, per_layer) for r in reports],
    }
    return store.to_json(document) + "\n"


# --- figures --------------------------------------------------------------------------------


BAND_NOTE: Final = "line: mean over the seeds; band: their min..max"
THEORY_STYLE: Final = {"linestyle": "--", "linewidth": 1.2}  # the mean-field prediction
THEORY_LABEL: Final = "dashed: mean-field theory"
MARKERS: Final = (".", "x", "+", "^")  # measured lines beyond 10 colours (dashes = theory)


def _new_figure(ncols: int = 1) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE, dpi=FIG_DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _style(index: int) -> dict[str, Any]:
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    return {"color": colours[index % 10], "linestyle": ("-", "--", ":", "-.")[index // 10 % 4]}


def _legend(fig: Figure, axes: list[Any], rep: ExperimentReport) -> None:
    """One legend right of the data, entries in table order, titled with the varying keys."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if not entries:
        return
    order = {label: i for i, (label, _) in enumerate(rep.config_runs())}
    pairs = sorted(
        ((h, label) for label, h in entries.items()), key=lambda p: order.get(p[1], len(order))
    )
    title = ", ".join(rep.keys.varying) if rep.keys and rep.keys.varying else None
    fig.legend(*zip(*pairs, strict=True), loc="outside right center", title=title, fontsize="small")


def _profile_panel(ax: Any, rep: ExperimentReport, metric: str, unit: str) -> list[str]:
    """Mean over seeds (line) and min..max (band) of one metric at step 0 per configuration;
    returns the configurations with values a log axis cannot draw (<= 0 or non-finite)."""
    from matplotlib.ticker import MaxNLocator

    undrawn, theory = [], False
    configs = list(enumerate(rep.config_runs()))
    for index, (label, run_ids) in reversed(configs):  # deep first: shallow lines on top
        frame, got = analysis.band(rep.loaded.layers, run_ids, metric)
        if frame.empty or got != unit:
            continue
        colour = _style(index)["color"]
        x = frame["position"].to_numpy(float)
        marker = MARKERS[index // 10 % len(MARKERS)]
        ax.plot(x, frame["mean"], marker=marker, label=label, color=colour, linestyle="-")
        ax.fill_between(x, frame["lo"], frame["hi"], color=colour, alpha=0.2, lw=0)
        theory = _theory_line(ax, rep, run_ids, metric, unit, colour) or theory
        values = frame[["mean", "lo", "hi"]].to_numpy(float)
        if not (np.isfinite(values) & (values > 0)).all():
            undrawn.append(label)
    if theory:  # one legend entry for every dashed line
        ax.plot([], [], color="0.3", label=THEORY_LABEL, **THEORY_STYLE)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    if undrawn:
        text = "not drawn where 0 or non-finite: " + "; ".join(undrawn)
        ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, va="bottom")
    return undrawn


def _theory_line(
    ax: Any, rep: ExperimentReport, run_ids: list[str], metric: str, unit: str, colour: Any
) -> bool:
    """The predicted profile of one configuration (mean over its seeds), dashed in the
    configuration's colour; False where theory predicts nothing for it."""
    x, y, got = analysis.theory_profile(rep.theory_mean(run_ids), metric)
    if got != unit or not np.isfinite(y).any():
        return False
    ax.plot(x, y, color=colour, gid="theory", **THEORY_STYLE)
    return True


def _has_unit(rep: ExperimentReport, metric: str, unit: str) -> bool:
    """Whether some selected run has this metric at step 0 over layers or time steps."""
    layers = rep.loaded.layers
    rows = layers[
        (layers["step"] == 0)
        & (layers["metric"] == metric)
        & layers["run_id"].isin(rep.runs["run_id"])
    ]
    return bool(((rows["t"] > 0) if unit == "time step" else (rows["t"] == 0)).any())


def variance_figure(rep: ExperimentReport, direction: str) -> Figure | None:
    """Per-layer preact (forward) or grad_preact (backward) variance at step 0, log scale;
    with batchnorm a second panel for normed. None if no feed-forward configuration."""
    metric = "preact_var" if direction == "forward" else "grad_preact_var"
    if not _has_unit(rep, metric, "layer"):
        return None
    normed = direction == "forward" and _has_unit(rep, "normed_var", "layer")
    fig, axes = _new_figure(2 if normed else 1)
    panels = [(metric, "before batchnorm" if normed else "")]
    panels += [("normed_var", "after batchnorm")] if normed else []
    for ax, (name, what) in zip(axes, panels, strict=True):
        _profile_panel(ax, rep, name, "layer")
        ax.set_xlabel("layer l (forward order)")
        ax.set_ylabel(f"{name} (all elements){' ' + what if what else ''}")
    what = "forward signal" if direction == "forward" else "backward gradient (dLoss/dpreact)"
    fig.suptitle(f"{rep.name}: {what} at initialisation (step 0)\n{BAND_NOTE}")
    _legend(fig, axes, rep)
    return fig


def time_figure(rep: ExperimentReport) -> Figure | None:
    """rnn: preact and grad_preact variance across time steps t of the top layer, step 0."""
    if not _has_unit(rep, "preact_var", "time step"):
        return None
    fig, axes = _new_figure(2)
    for ax, metric in zip(axes, ("preact_var", "grad_preact_var"), strict=True):
        _profile_panel(ax, rep, metric, "time step")
        ax.set_xlabel("time step t (top layer)")
        ax.set_ylabel(f"{metric} (all elements)")
    fig.suptitle(f"{rep.name}: variance across time at initialisation (step 0)\n{BAND_NOTE}")
    _legend(fig, axes, rep)
    return fig


def heatmap_figure(rep: ExperimentReport, label: str, run_ids: list[str]) -> Figure | None:
    """log10 grad_preact_var, layers (rnn: top layer's time steps) x logged training steps,
    mean over the configuration's seeds; grey where 0, non-finite or missing."""
    from matplotlib import colormaps

    matrix = analysis.step_matrix(rep.loaded.layers, run_ids, "grad_preact_var")
    if matrix.empty:
        return None
    fig, axes = _new_figure()
    ax = axes[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        data = np.ma.masked_invalid(np.log10(matrix.to_numpy(float)))
    image = ax.imshow(
        data,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap=colormaps["viridis"].with_extremes(bad="lightgrey"),
    )
    steps, positions = matrix.columns.to_list(), matrix.index.to_list()
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 15)).round().astype(int))
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    yticks = np.unique(
        np.linspace(0, len(positions) - 1, min(len(positions), 12)).round().astype(int)
    )
    ax.set_yticks(yticks, [str(positions[i]) for i in yticks])
    timed = rep.loaded.layers[rep.loaded.layers["run_id"].isin(run_ids)]["t"].max() > 0
    ax.set_xlabel("training step")
    ax.set_ylabel("time step t (top layer)" if timed else "layer l")
    fig.colorbar(image, ax=ax, label="log10 grad_preact_var (grey: 0 or non-finite)")
    ax.set_title(f"{rep.name}: {label}; mean over {len(run_ids)} seed(s)")
    return fig


def loss_figure(rep: ExperimentReport) -> Figure | None:
    """Training loss (mean over each logging interval) against step: one line per run,
    coloured by configuration."""
    curves = rep.loaded.curves
    if curves.empty or "metric" not in curves:
        return None
    loss = curves[curves["metric"] == "loss_avg"]
    fig, axes = _new_figure()
    ax = axes[0]
    for index, (label, run_ids) in enumerate(rep.config_runs()):
        style = _style(index)
        for n, run_id in enumerate(run_ids):
            run = loss[loss["run_id"] == run_id].sort_values("step")
            ax.plot(run["step"], run["value"], lw=1, label=label if n == 0 else None, **style)
    if not ax.lines:
        return None
    values = loss["value"].to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() > 100 * values.min():  # a diverging run: log scale
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (mean over each logging interval)")
    ax.set_title(f"{rep.name}: training loss, one line per run (seed)")
    ax.grid(True, alpha=0.3)
    _legend(fig, axes, rep)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")[:80] or "all"


def figures(rep: ExperimentReport) -> dict[str, Figure]:
    """Every figure of one experiment, by file stem (without the experiment's name)."""
    if rep.keys is None or rep.configs.empty:
        return {}
    found: dict[str, Figure | None] = {
        "forward_variance": variance_figure(rep, "forward"),
        "backward_variance": variance_figure(rep, "backward"),
        "time_variance": time_figure(rep),
        "loss": loss_figure(rep),
    }
    for index, row in enumerate(rep.config_rows, start=1):
        label, run_ids = _config_label(row, rep.keys), row["run_ids"].split()
        name = f"heatmap_{index:02d}_{_slug(label)}"
        found[name] = heatmap_figure(rep, label, run_ids)
    return {name: fig for name, fig in found.items() if fig is not None}


def figure_pngs(rep: ExperimentReport) -> dict[str, bytes]:
    """PNG bytes of every figure of one experiment (FIG_SIZE at FIG_DPI)."""
    out = {}
    for name, fig in figures(rep).items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIG_DPI)
        out[name] = buffer.getvalue()
    return out


# --- entry point ----------------------------------------------------------------------------


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        store.atomic_write_text(path, data)
    return path


def _terminal_text(document: Sequence[Section], width: int = PIPE_WIDTH) -> str:
    from rich.console import Console

    console = Console(record=True, file=io.StringIO(), width=width, color_system=None)
    print_terminal(document, console)
    return console.export_text()


def _render(fmt: str, reports, document, th: Thresholds, per_layer: bool, pngs) -> str:
    """The report as text in one of FORMATS (terminal: plain text, no colour)."""
    renderers: dict[str, Callable[[], str]] = {
        "terminal": lambda: _terminal_text(document),
        "markdown": lambda: render_markdown(document),
        "csv": lambda: render_csv(reports, th, per_layer),
        "json": lambda: render_json(reports, th, per_layer),
        "html": lambda: render_html(document, pngs),
        "latex": lambda: render_latex(document),
    }
    return renderers[fmt]()


def generate(
    results_dir: Path,
    *,
    fmt: str = "terminal",
    out: Path | None = None,
    plots: Path | None = None,
    per_layer: bool = False,
    select: Sequence[str] = (),
    thresholds: Thresholds | None = None,
    stream: TextIO | None = None,
) -> list[Path]:
    """Report every experiment under ``results_dir`` in ``fmt``: to ``out``, else to
    ``stream`` (stdout; the terminal format in colour). ``plots``: also write each
    figure as ``<plots>/<experiment>_<figure>.png``; html embeds the figures either way.
    Returns the files written. Raises store.ResultsError (no results) or ReportError."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    th = thresholds or Thresholds()
    reports = build_reports(Path(results_dir), th, select)
    pngs = {r.name: figure_pngs(r) for r in reports} if plots or fmt == "html" else {}
    written = [
        _write(Path(plots) / f"{experiment}_{name}.png", png)
        for experiment, figs in pngs.items()
        for name, png in figs.items()
        if plots is not None
    ]
    document = sections(reports, th, per_layer)
    stream = stream or sys.stdout
    if fmt == "terminal" and out is None:
        from rich.console import Console

        width = None if stream.isatty() else PIPE_WIDTH
        print_terminal(document, Console(file=stream, width=width))
        return written
    text = _render(fmt, reports, document, th, per_layer, pngs)
    if out is None:
        stream.write(text)
        return written
    return [*written, _write(Path(out), text)]
