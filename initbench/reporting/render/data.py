"""The data formats: csv (one row per configuration, or per configuration and layer) and
json (everything the tables show, with the thresholds and definitions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Final

import numpy as np
import pandas as pd

import initbench
from initbench.analysis import Thresholds, format_value
from initbench.analysis.spectra import spectrum_table
from initbench.reporting import notes
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.spread import spread_records
from initbench.results import store

REPORT_VERSION: Final = 1  # of the json/csv report layout


def config_frame(rep: ExperimentReport) -> pd.DataFrame:
    """One row per configuration: experiment, every config key (varying and constant),
    then the aggregated columns of analysis.aggregate."""
    if not rep.has_rows:
        return pd.DataFrame()
    frame = rep.configs.copy()
    for key, value in rep.keys.constant.items():
        frame[key] = format_value(value) if isinstance(value, bool) else value
    keys = [*rep.keys.varying, *rep.keys.constant]
    rest = [c for c in frame.columns if c not in keys]
    frame = frame[keys + rest]
    frame.insert(0, "experiment", rep.name)
    return frame


def per_layer_frame(rep: ExperimentReport) -> pd.DataFrame:
    """analysis.per_layer of every configuration, stacked, with its keys and run ids."""
    frames = []
    for row in config_frame(rep).to_dict("records"):
        signal = rep.layer_signal(row["run_ids"].split())
        keys = {k: row[k] for k in ("experiment", *rep.keys.varying)}
        frames.append(signal.assign(**keys, run_ids=row["run_ids"]))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    front = ["experiment", *rep.keys.varying, "run_ids"]
    return frame[front + [c for c in frame.columns if c not in front]]


def render_csv(reports: Sequence[ExperimentReport], per_layer: bool) -> str:
    """One row per configuration (all experiments; keys as columns), or with ``per_layer``
    one row per configuration and layer (and rnn time step). Non-finite as nan / inf."""
    build = per_layer_frame if per_layer else config_frame
    frames = [f for f in (build(r) for r in reports) if not f.empty]
    if not frames:
        return ""
    return pd.concat(frames, ignore_index=True).to_csv(index=False, na_rep="nan")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _json_experiment(rep: ExperimentReport, per_layer: bool) -> dict[str, Any]:
    experiment = rep.experiment
    out: dict[str, Any] = {
        "name": rep.name,
        "path": str(rep.path),
        "varying": list(rep.keys.varying) if rep.keys else [],
        "constant": dict(rep.keys.constant) if rep.keys else {},
        "counts": {"complete": len(experiment.runs), **rep.status_counts()},
        "incomplete": experiment.incomplete,
        "unreadable": experiment.unreadable,
        "notes": notes.experiment_notes(rep),
        "configurations": _records(config_frame(rep)),
        "runs": _records(rep.runs),
        "finite_width": spread_records(rep),
    }
    if per_layer and rep.keys is not None:
        out["per_layer"] = _records(per_layer_frame(rep))
    if not experiment.spectra.empty:  # per run and step, theory at step 0 (analysis.spectra)
        spectrum = spectrum_table(experiment.runs, experiment.spectra)
        out["spectrum"] = _records(spectrum[spectrum["run_id"].isin(rep.runs["run_id"])])
    return out


def render_json(reports: Sequence[ExperimentReport], th: Thresholds, per_layer: bool) -> str:
    """Everything the tables show, per configuration and per run, with the thresholds and
    definitions; non-finite numbers as the strings 'nan', 'inf', '-inf' (as in results)."""
    document = {
        "report_version": REPORT_VERSION,
        "initbench": initbench.__version__,
        "thresholds": asdict(th),
        "definitions": notes.definitions(th),
        "experiments": [_json_experiment(r, per_layer) for r in reports],
    }
    return store.to_json(document) + "\n"
