"""Stored results as tidy pandas tables (what ``initbench.load`` returns): each run's
config keys as plain columns, joined onto its layer and curve tables."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from initbench.analysis.configs import config_labels
from initbench.analysis.spectra import spectrum_table
from initbench.results import store
from initbench.results.store import Experiment


@dataclass(frozen=True, eq=False, repr=False)
class Results:
    """Stored results as tidy pandas tables, over one or several experiments.

    runs: a row per complete run: ``experiment``, ``run_id``, each config key as a dotted
        column (``model.depth``, ``model.init``; a named reference as its name and the
        parameters that differ from its defaults: ``normal(std=0.1)``), ``seed``, then
        the summary's fields (``status``, ``test_accuracy``, ``final_loss`` ...).
    layers, curves: the long tables (step, layer, t, name, metric, value; step, metric,
        value), each row led by its run's ``experiment``, ``run_id``, config keys, seed.
    spectra: the Jacobian singular values (step, example, index, value, input_sq; runs with
        ``train.jacobian`` only), led likewise.
    spectrum: per run and step, the spectra's summary beside the theory at step 0
        (:data:`initbench.analysis.spectra.SPECTRUM_COLUMNS`), led likewise.
    config_keys: the config columns (``seed`` last). incomplete: experiment -> run
    folders without a summary. unreadable: "experiment/run_id" -> why it was left out.
    """

    path: Path
    experiments: tuple[str, ...]
    runs: pd.DataFrame
    layers: pd.DataFrame
    curves: pd.DataFrame
    spectra: pd.DataFrame
    spectrum: pd.DataFrame
    config_keys: tuple[str, ...]
    incomplete: dict[str, list[str]]
    unreadable: dict[str, str]

    @property
    def varying(self) -> tuple[str, ...]:
        """The config keys whose value differs between the runs."""
        runs = self.runs
        return tuple(k for k in self.config_keys if runs[k].astype(str).nunique() > 1)

    def __repr__(self) -> str:
        statuses = self.runs["status"].value_counts()
        shown = ", ".join(f"{n} {s}" for s, n in statuses.items())
        return (
            f"Results({self.path}: {len(self.experiments)} experiment(s), "
            f"{len(self.runs)} runs ({shown}); varying: {', '.join(self.varying) or 'none'})"
        )


def load_results(path: str | Path) -> Results:
    """Load the results at ``path``: a results folder (every experiment in it) or one
    experiment folder, as pandas tables (see :class:`Results`).

    Raises ResultsError when ``path`` does not exist, holds no experiment folder, or none
    of its runs is complete, and when a run was written by a newer initbench. A run
    that cannot be read is left out with a warning and listed in ``unreadable``.
    """
    root = Path(path)
    loaded = [store.load_experiment(p, skip_unreadable=True) for p in store.find_experiments(root)]
    tables = [_tidy(e) for e in loaded if not e.runs.empty]
    unreadable = {f"{e.name}/{r}": why for e in loaded for r, why in e.unreadable.items()}
    if not tables:
        incomplete = sum(len(e.incomplete) for e in loaded)
        raise store.ResultsError(
            f"{root}: no complete run to load in {len(loaded)} experiment folder(s) "
            f"({', '.join(e.name for e in loaded)}): {incomplete} incomplete, "
            f"{len(unreadable)} unreadable"
        )
    if unreadable:
        warnings.warn(
            f"{root}: {len(unreadable)} run(s) could not be read and are left out: "
            f"{', '.join(unreadable)} (see Results.unreadable)",
            stacklevel=2,
        )
    runs, layers, curves, spectra, spectrum = (
        pd.concat([t[i] for t in tables], ignore_index=True) for i in range(5)
    )
    keys = dict.fromkeys(k for t in tables for k in t[5])
    return Results(
        root,
        tuple(e.name for e in loaded),
        runs,
        layers,
        curves,
        spectra,
        spectrum,
        tuple(keys),
        {e.name: list(e.incomplete) for e in loaded if e.incomplete},
        unreadable,
    )


def _tidy(experiment: Experiment) -> tuple[Any, ...]:
    """One experiment's runs, layers, curves, spectra and spectrum summary with plain
    config columns, and their names."""
    raw = experiment.runs
    labels = config_labels(raw)
    keys = labels[sorted(labels.columns)].reset_index()
    if "config.seed" in raw:
        keys["seed"] = raw["config.seed"].to_numpy()
    keys.insert(0, "experiment", experiment.name)
    own = [c for c in raw.columns if c.startswith("config.") or c in ("run_id", "experiment")]
    runs = pd.concat([keys, raw.drop(columns=own).reset_index(drop=True)], axis=1)

    def joined(table: pd.DataFrame) -> pd.DataFrame:
        return keys.merge(table, on="run_id", how="right", validate="one_to_many")

    spectrum = spectrum_table(experiment.runs, experiment.spectra)
    tables = (experiment.layers, experiment.curves, experiment.spectra, spectrum)
    return runs, *(joined(t) for t in tables), list(keys.columns[2:])
