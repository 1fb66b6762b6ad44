"""Profiles: one metric of a run along the layers (an rnn's top layer along its time
steps) at one step, read from the long table; and the same across runs, for plots.

Which positions a profile runs over, the backward profile's sum over a cnn's map
positions and the factor fit are :mod:`initbench.meanfield.decay`'s, shared with the
predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis.configs import run_config
from initbench.analysis.stats import nan_mean
from initbench.config import geometry
from initbench.meanfield.decay import LAYER, profile_rows, summed_over_positions

TAGS: Final = {"init": "step 0", "last": "last logged step"}  # the steps a run is read at
DIRECTIONS: Final = {"fwd": "preact_var", "bwd": "grad_preact_var", "normed": "normed_var"}


class RunStats:
    """One run's long table as numpy arrays indexed by (step, metric): the lookups the
    analysis makes thousands of times, without pandas' per-filter overhead."""

    def __init__(self, run_layers: pd.DataFrame) -> None:
        self.step = run_layers["step"].to_numpy(np.int64)
        self.layer = run_layers["layer"].to_numpy(np.int64)
        self.t = run_layers["t"].to_numpy(np.int64)
        self.value = run_layers["value"].to_numpy(float)
        index: dict[tuple[int, str], list[int]] = {}
        keys = zip(self.step.tolist(), run_layers["metric"].tolist(), strict=True)
        for i, key in enumerate(keys):
            index.setdefault(key, []).append(i)
        self.index = {key: np.asarray(rows, dtype=np.int64) for key, rows in index.items()}
        self.steps = sorted(set(self.step.tolist()))

    def rows(self, step: int, metric: str) -> np.ndarray:
        """Row numbers of one metric at one step (empty if not recorded)."""
        return self.index.get((step, metric), np.zeros(0, dtype=np.int64))


def as_stats(run_layers: pd.DataFrame | RunStats) -> RunStats:
    """The RunStats of a run's long table (as it is if it already is one)."""
    return run_layers if isinstance(run_layers, RunStats) else RunStats(run_layers)


def profile(
    run_layers: pd.DataFrame | RunStats, step: int, metric: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """(positions, values, unit) of one run's metric at one step, over the positions
    :func:`initbench.meanfield.decay.profile_rows` selects (layers; an rnn's top layer's t)."""
    stats = as_stats(run_layers)
    rows = stats.rows(step, metric)
    mask, positions, unit = profile_rows(stats.layer[rows], stats.t[rows])
    return positions, stats.value[rows][mask], unit


def gradient_positions(record: Mapping[str, Any]) -> dict[int, int]:
    """Layer -> map positions that a cnn run's backward profile multiplies
    ``grad_preact_var`` by (:mod:`initbench.meanfield.decay`); empty for other architectures."""
    model = run_config(record).get("model", {})
    return geometry.model_map_positions(model)


def backward_profile(
    run_layers: pd.DataFrame | RunStats, step: int, map_positions: Mapping[int, int]
) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`profile` of ``grad_preact_var``, times each layer's map positions where
    ``map_positions`` (:func:`gradient_positions`) has them: the backward decay's v_l."""
    layers, values, unit = profile(run_layers, step, "grad_preact_var")
    if unit == LAYER:
        values = summed_over_positions(layers, values, map_positions)
    return layers, values, unit


def band(layers: pd.DataFrame, run_ids: Sequence[str], metric: str, step: int = 0):
    """(positions, mean, min, max, unit) over runs of one metric's profile at a step, for
    plots: layers l, or an rnn's time steps t of the top layer. NaN propagates."""
    rows = layers[
        (layers["step"] == step) & (layers["metric"] == metric) & layers["run_id"].isin(run_ids)
    ]
    series, unit = [], LAYER
    for run_id in run_ids:
        positions, values, unit = profile(rows[rows["run_id"] == run_id], step, metric)
        series.append(pd.Series(values, index=positions))
    if all(s.empty for s in series):
        return pd.DataFrame(columns=["position", "mean", "lo", "hi"]), unit
    table = pd.concat(series, axis=1)
    frame = pd.DataFrame(
        {
            "mean": table.mean(axis=1, skipna=False),
            "lo": table.min(axis=1, skipna=False),
            "hi": table.max(axis=1, skipna=False),
        }
    )
    return frame.rename_axis("position").reset_index(), unit


def step_matrix(layers: pd.DataFrame, run_ids: Sequence[str], metric: str) -> pd.DataFrame:
    """Mean over runs of a metric, positions (layers; rnn: top layer's time steps) x
    logged steps; a cell is NaN if any run lacks it or has NaN there."""
    rows = layers[layers["run_id"].isin(run_ids) & (layers["metric"] == metric)]
    mask, positions, _ = profile_rows(rows["layer"].to_numpy(), rows["t"].to_numpy())
    rows = rows[mask].assign(position=positions)
    if rows.empty:
        return pd.DataFrame()
    grouped = rows.groupby(["position", "step"])["value"]
    full = grouped.size() == len(run_ids)
    means = grouped.agg(nan_mean).where(full)
    return means.unstack("step")
