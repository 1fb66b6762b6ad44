"""initbench.analysis: configurations, seeds aggregated, layer by layer, bands and step
matrices."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from analysis_tables import (
    TH,
    he_weights,
    healthy,
    rows,
    run_record,
    table,
)

from initbench import analysis

# --------------------------------------------------------------------------------------
# Configurations and seeds


def blank_analysed(records: list[dict[str, Any]]) -> pd.DataFrame:
    """analyse_runs-like rows: the given keys, every number NaN, verdicts 'stable', no
    theory (no note: as if theory had not been asked)."""
    columns = [*records[0], *analysis.numeric_columns(), *analysis.verdict_columns()]
    frame = pd.DataFrame(records).reindex(columns=[*columns, "theory_positions"])
    frame[analysis.verdict_columns()] = "stable"
    return frame.assign(theory_note_init="")


def sweep_runs() -> pd.DataFrame:
    records = []
    for depth in (10, 3):
        xavier = {
            "config.model.init.gain": 1.0,
            "config.model.init.mode": "fan_avg",
            "config.model.init.negative_slope": math.nan,
        }
        for init, extra in (("xavier_normal", xavier), ("he_normal", {})):
            for seed in (0, 1):
                run_id = f"{init[:2]}{depth}s{seed}"
                records.append(
                    run_record(
                        run_id,
                        seed,
                        **{"config.model.init.name": init, "config.model.depth": depth, **extra},
                    )
                )
    return pd.DataFrame(records)


def test_configurations_follow_the_spec_grid_order():
    runs = sweep_runs()
    grid = {"model.init": ["he_normal", "xavier_normal"], "model.depth": [3, 10]}
    keys = analysis.describe_configs(runs, grid)
    assert keys.varying == ("model.depth", "model.init")  # first grid key innermost
    assert keys.constant["model.arch"] == "mlp" and keys.constant["model.width"] == 16
    assert "seed" not in keys.constant
    assert keys.labels.loc["he3s0"].tolist() == [3, "he_normal"]
    keys_reversed = analysis.describe_configs(runs, {"model.init": ["xavier_normal", "he_normal"]})
    analysed = blank_analysed(
        [
            {
                "run_id": r,
                "seed": 0,
                "status": "ok",
                "status_text": "ok",
                "flags": "",
                "trainable": "yes",
            }
            for r in runs.run_id
        ]
    )
    ordered = analysis.aggregate(analysed, keys_reversed)
    assert list(zip(ordered["model.depth"], ordered["model.init"], strict=True)) == [
        (3, "xavier_normal"),
        (3, "he_normal"),
        (10, "xavier_normal"),
        (10, "he_normal"),
    ]


def test_labels_show_non_default_parameters_only():
    he_only = {
        f"config.model.init.{k}": math.nan for k in ("mode", "negative_slope", "distribution")
    }
    runs = pd.DataFrame(
        [
            run_record(
                "a",
                **{
                    "config.model.init.name": "normal",
                    "config.model.init.std": 0.1,
                    "config.model.init.mean": 0.0,
                    **he_only,
                },
            ),
            run_record(
                "b",
                **{
                    "config.model.init.name": "normal",
                    "config.model.init.std": 0.01,
                    "config.model.init.mean": 0.0,
                    **he_only,
                },
            ),
        ]
    )
    keys = analysis.describe_configs(
        runs, {"model.init": [{"name": "normal", "std": 0.01}, {"name": "normal", "std": 0.1}]}
    )
    assert keys.labels["model.init"].tolist() == ["normal(std=0.1)", "normal"]
    assert keys.ranks["model.init"]["normal"] < keys.ranks["model.init"]["normal(std=0.1)"]


def test_seeds_aggregate_as_mean_and_sample_std_with_their_count():
    runs = sweep_runs()
    parts = []
    for run_id, forward in zip(runs.run_id, np.linspace(0.4, 1.1, len(runs)), strict=True):
        parts += healthy(run_id, 0, forward) + he_weights(run_id)
    analysed = analysis.analyse_runs(runs, table(parts), TH)
    keys = analysis.describe_configs(runs, {"model.init": ["he_normal", "xavier_normal"]})
    configs = analysis.aggregate(analysed, keys).set_index(["model.depth", "model.init"])
    pair = analysed.set_index("run_id").loc[["he10s0", "he10s1"], "fwd_factor_init"]
    row = configs.loc[(10, "he_normal")]
    assert row["seeds"] == 2 and row["seed_list"] == "0 1"
    assert row["fwd_factor_init_mean"] == pytest.approx(pair.mean())
    assert row["fwd_factor_init_std"] == pytest.approx(pair.std(ddof=1))
    assert row["run_ids"] == "he10s0 he10s1"


def test_one_seed_has_no_std_and_nan_is_never_skipped():
    analysed = blank_analysed(
        [
            {
                "run_id": "a",
                "seed": 0,
                "status": "ok",
                "status_text": "ok",
                "flags": "",
                "trainable": "yes",
            },
            {
                "run_id": "b",
                "seed": 1,
                "status": "diverged",
                "status_text": "diverged at step 3",
                "flags": "diverged",
                "trainable": "no",
            },
        ]
    )
    analysed["final_loss"] = [0.5, math.nan]
    analysed["fwd_verdict_last"] = ["stable", "non-finite"]
    labels = pd.DataFrame({"model.lr": [0.1, 0.2]}, index=pd.Index(["a", "b"], name="run_id"))
    keys = analysis.ConfigKeys(("model.lr",), {}, labels, {"model.lr": {0.1: (0,), 0.2: (1,)}})
    per_run = analysis.aggregate(analysed, keys)
    assert per_run["seeds"].tolist() == [1, 1]
    assert per_run["final_loss_std"].isna().all()  # undefined for n = 1, never 0
    together = analysis.aggregate(analysed, analysis.ConfigKeys((), {}, labels.iloc[:, :0], {}))
    row = together.iloc[0]
    assert math.isnan(row["final_loss_mean"])  # the diverged seed is not silently skipped
    assert row["fwd_verdict_last"] == "mixed: stable 1, non-finite 1"
    assert row["flags"] == "diverged 1/2"
    assert row["status"] == "1 ok, 1 diverged at step 3"
    assert (row["n_ok"], row["n_diverged"], row["n_failed"]) == (1, 1, 0)


# --------------------------------------------------------------------------------------
# Layer by layer, bands and step matrices


def test_per_layer_aggregates_each_layer_at_init_and_each_runs_last_step():
    layers = table(
        rows("a", 0, "preact_var", [1.0, 2.0]),
        rows("b", 0, "preact_var", [3.0, 4.0]),
        rows("a", 10, "preact_var", [5.0, 6.0]),
        rows("b", 4, "preact_var", [7.0, math.nan]),  # b diverged at step 4
        rows("a", 5, "preact_var", [100.0, 100.0]),  # neither step 0 nor a's last: unused
    )
    out = analysis.per_layer(layers, {"a": 10, "b": 4}).set_index("layer")
    assert out.loc[1, "preact_var_init_mean"] == pytest.approx(2.0)
    assert out.loc[1, "preact_var_init_std"] == pytest.approx(math.sqrt(2.0))
    assert out.loc[1, "preact_var_last_mean"] == pytest.approx(6.0)
    assert math.isnan(out.loc[2, "preact_var_last_mean"])
    assert out["n"].tolist() == [2, 2]


def test_band_and_step_matrix_propagate_nan():
    layers = table(
        rows("a", 0, "grad_preact_var", [1.0, 2.0]),
        rows("b", 0, "grad_preact_var", [3.0, math.nan]),
        rows("a", 5, "grad_preact_var", [1.0, 1.0]),
    )
    frame, unit = analysis.band(layers, ["a", "b"], "grad_preact_var")
    assert unit == "layer"
    assert (
        frame["mean"].iloc[0] == 2.0 and frame["lo"].iloc[0] == 1.0 and frame["hi"].iloc[0] == 3.0
    )
    assert math.isnan(frame["mean"].iloc[1])
    matrix = analysis.step_matrix(layers, ["a", "b"], "grad_preact_var")
    assert matrix.loc[1, 0] == 2.0 and math.isnan(matrix.loc[2, 0])
    assert math.isnan(matrix.loc[1, 5])  # b has no step 5: not the mean of a alone


def test_run_config_gives_back_the_ints_that_pandas_turned_into_floats() -> None:
    """A key that only some runs have makes its column float (NaN elsewhere): the config
    rebuilt from a row validates again (strict ints), its floats stay numbers."""
    from initbench.analysis.configs import run_config
    from initbench.config.initializers import resolve

    runs = pd.DataFrame(
        [
            {
                "config.model.init.name": "lsuv",
                "config.model.init.max_iter": 10,
                "config.model.init.tol": 0.1,
            },
            {"config.model.init.name": "he_normal"},
        ]
    )
    rebuilt = run_config(runs.iloc[0].to_dict())
    assert runs["config.model.init.max_iter"].dtype == float  # what pandas does
    init = rebuilt["model"]["init"]
    assert init["max_iter"] == 10 and isinstance(init["max_iter"], int)
    assert init["tol"] == 0.1
    resolve("lsuv", {k: v for k, v in init.items() if k != "name"})  # validates again
    assert "max_iter" not in run_config(runs.iloc[1].to_dict())["model"]["init"]
