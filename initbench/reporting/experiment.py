"""One experiment as a report sees it: read from the store, analysed, and narrowed by
``--select``. Every table, note, figure and data format reads these objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import pandas as pd

from initbench import analysis
from initbench.analysis import Thresholds, format_value
from initbench.results import schema, store

ALL_RUNS: Final = "all runs"  # the label of the one configuration of a grid-less experiment


class ReportError(ValueError):
    """A report option that cannot be honoured (format, --select)."""


@dataclass
class ExperimentReport:
    """Everything a report shows about one experiment (after ``--select``)."""

    experiment: store.Experiment
    keys: analysis.ConfigKeys | None
    runs: pd.DataFrame  # analysis.analyse_runs rows of the selected runs
    configs: pd.DataFrame  # analysis.aggregate rows of the selected configurations
    notes: list[str] = field(default_factory=list)  # why something is not reported

    @property
    def name(self) -> str:
        """The experiment folder's name."""
        return self.experiment.name

    @property
    def path(self) -> Path:
        """The experiment folder."""
        return self.experiment.path

    @property
    def has_rows(self) -> bool:
        """Whether some configuration was analysed and selected (there are tables to show)."""
        return self.keys is not None and not self.configs.empty

    @cached_property
    def config_rows(self) -> list[dict[str, Any]]:
        """The configurations as dicts, in table order (computed once: to_dict is slow)."""
        return self.configs.to_dict("records")

    @cached_property
    def run_rows(self) -> list[dict[str, Any]]:
        """The analysed runs as dicts."""
        return self.runs.to_dict("records")

    def status_counts(self) -> dict[str, int]:
        """How many of the experiment's complete runs have each status."""
        status = self.experiment.runs.get("status", pd.Series(dtype=object))
        return {s: int((status == s).sum()) for s in schema.STATUSES}

    # --- labels of configurations ---------------------------------------------------------

    def label(self, row: Mapping[str, Any]) -> str:
        """'model.depth=30, model.init=he_normal': a configuration by its varying keys."""
        return ", ".join(f"{k}={format_value(row[k])}" for k in self._varying) or ALL_RUNS

    def short_label(self, row: Mapping[str, Any]) -> str:
        """'depth=30 init=xavier_normal': the varying keys by their last name, leaving out
        keys that do not apply to this configuration ('none', e.g. an mlp's recurrent_init)."""
        values = [(k.rsplit(".", 1)[-1], format_value(row[k])) for k in self._varying]
        parts = [f"{name}={value}" for name, value in values if value != "none"]
        return " ".join(parts) or ALL_RUNS

    @cached_property
    def run_labels(self) -> dict[str, str]:
        """run id -> :meth:`label` of its configuration."""
        return {r: self.label(row) for row in self.config_rows for r in row["run_ids"].split()}

    def config_runs(self) -> list[tuple[str, list[str]]]:
        """(legend label: the varying values, run ids) of every configuration, in table order."""
        out = []
        for row in self.config_rows:
            label = ", ".join(format_value(row[k]) for k in self._varying) or ALL_RUNS
            out.append((label, row["run_ids"].split()))
        return out

    @property
    def _varying(self) -> tuple[str, ...]:
        return tuple(self.keys.varying) if self.keys else ()

    # --- what the per-layer tables and figures read --------------------------------------

    @cached_property
    def theory(self) -> dict[str, pd.DataFrame]:
        """run id -> :func:`analysis.theory_layers` of each selected run (no rows where theory
        makes no prediction), from the run's step-0 statistics."""
        layers = self.experiment.layers
        if self.runs.empty or layers.empty:
            return {}
        step0 = layers[(layers["step"] == 0) & layers["run_id"].isin(self.runs["run_id"])]
        stats = {r: analysis.RunStats(f) for r, f in step0.groupby("run_id", sort=False)}
        empty = analysis.RunStats(step0.iloc[0:0])
        runs, out = self.experiment.runs, {}
        for record in runs[runs["run_id"].isin(self.runs["run_id"])].to_dict("records"):
            run_stats = stats.get(record["run_id"], empty)
            predicted = analysis.run_theory(record, run_stats)
            out[record["run_id"]] = analysis.theory_layers(predicted, run_stats)
        return out

    def theory_mean(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """:func:`analysis.theory_mean` over some of the selected runs (a configuration)."""
        return analysis.theory_mean([self.theory[r] for r in run_ids if r in self.theory])

    def layer_signal(self, run_ids: list[str]) -> pd.DataFrame:
        """:func:`analysis.per_layer` of one configuration's runs (step 0 and each run's last
        step), with the predicted profile beside it where theory gives one."""
        last = self.runs.set_index("run_id")["last_step"]
        last_steps = {r: int(last[r]) for r in run_ids if r in last.index and not pd.isna(last[r])}
        signal = analysis.per_layer(self.experiment.layers, last_steps)
        theory = self.theory_mean(run_ids)
        if len(theory) and len(signal):
            signal = signal.merge(theory, on=["layer", "t"], how="left")
        return signal

    @cached_property
    def spreads(self) -> list[dict[str, Any]]:
        """:func:`analysis.finite_width` of every selected configuration with 2 seeds or
        more, beside the configuration's row (its keys, ``seeds``), in table order."""
        runs, layers = self.experiment.runs, self.experiment.layers
        out = []
        for row in self.config_rows:
            if row["seeds"] >= 2:
                found = analysis.finite_width(runs, layers, row["run_ids"].split())
                out.append({**row, **found, "seeds": found["seeds"]})
        return out

    def init_checks(self, run_ids: list[str], th: Thresholds) -> list[pd.DataFrame]:
        """:func:`analysis.init_check` of each of these runs' weights at step 0."""
        records = self.experiment.runs.set_index("run_id", drop=False)
        layers = self.experiment.layers
        return [
            analysis.init_check(records.loc[r].to_dict(), layers[layers["run_id"] == r], th)
            for r in run_ids
        ]


# --- --select -------------------------------------------------------------------------------


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


def _select(
    configs: pd.DataFrame, keys: analysis.ConfigKeys, wanted: dict[str, set[str]]
) -> pd.DataFrame | None:
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


def _check_select(wanted: dict[str, set[str]], all_keys: list[analysis.ConfigKeys | None]) -> None:
    known = {k for keys in all_keys if keys for k in (*keys.varying, *keys.constant)}
    missing = sorted(set(wanted) - known)
    if missing:
        raise ReportError(
            f"--select: no experiment has key(s) {', '.join(missing)}; "
            f"keys: {', '.join(sorted(known)) or 'none'}"
        )


# --- building -------------------------------------------------------------------------------


def build_report(
    experiment: store.Experiment,
    keys: analysis.ConfigKeys | None,
    th: Thresholds,
    wanted: dict[str, set[str]],
) -> ExperimentReport:
    """Analyse, aggregate and (with --select) filter one loaded experiment."""
    report = ExperimentReport(experiment, None, pd.DataFrame(), pd.DataFrame())
    if keys is None:
        report.notes.append("no complete runs to report")
        return report
    try:
        runs = analysis.analyse_runs(experiment.runs, experiment.layers, th)
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
    return report


def build_reports(
    results_dir: Path, th: Thresholds, select: Sequence[str] = ()
) -> list[ExperimentReport]:
    """One report per experiment folder under ``results_dir`` (raises store.ResultsError
    when there is none, ReportError when no experiment has a --select key). A corrupt run
    is named with its reason, never raised."""
    wanted = parse_select(select)
    found = store.find_experiments(Path(results_dir))
    experiments = [store.load_experiment(path, skip_unreadable=True) for path in found]
    all_keys = [
        analysis.describe_configs(exp.runs, exp.grid) if not exp.runs.empty else None
        for exp in experiments
    ]
    _check_select(wanted, all_keys)
    return [build_report(e, k, th, wanted) for e, k in zip(experiments, all_keys, strict=True)]
