"""Init-only runs (train.steps: 0): step 0 measured alone, no update, no test pass, and a
report that shows the step-0 tables and says why the trained ones are missing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from initbench import analysis
from initbench.cli import main
from initbench.config.memory import estimate
from initbench.results import store
from initbench.sweep.train import execute_run
from tests.conftest import make_config

SPEC = """
name: initonly
data: {name: synthetic, n_train: 64, n_test: 32}
model: {depth: 3, width: 8, init: he_normal}
train: {steps: 0, batch_size: 16}
seeds: 2
"""


def _run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _sweep(tmp_path: Path, text: str = SPEC, *sets: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / "results"
    args = ["run", str(spec), "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return out


def test_steps_0_records_step_0_alone_through_the_cli(tmp_path: Path) -> None:
    out = _sweep(tmp_path)
    runs = sorted((out / "initonly" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "ok"
        assert summary["steps_planned"] == summary["steps_done"] == 0
        assert summary["test_loss"] is None and summary["test_accuracy"] is None
        layers = pd.read_parquet(run / "layers.parquet")
        curves = pd.read_parquet(run / "curves.parquet")
        assert set(layers["step"]) == {0} and set(curves["step"]) == {0}
        assert not curves["metric"].str.startswith("test_").any()  # no test pass
        loss = curves.set_index("metric")["value"]["loss"]
        assert summary["final_loss"] == loss and math.isfinite(loss)
        assert set(layers["metric"]) >= {"preact_var", "act_sq", "grad_preact_var", "grad_w_var"}


def test_an_init_only_run_measures_what_a_trained_run_measures_at_step_0() -> None:
    # no update and no optimizer: the step-0 pass is the trained run's, bit for bit
    trained = execute_run(make_config(**{"train.steps": 3, "train.log_every": 1}).as_dict())
    init = execute_run(make_config(**{"train.steps": 0}).as_dict())
    at0 = np.asarray(trained.layers["step"]) == 0
    np.testing.assert_array_equal(init.layers["value"], np.asarray(trained.layers["value"])[at0])
    np.testing.assert_array_equal(init.layers["metric"], np.asarray(trained.layers["metric"])[at0])


def test_trainability_of_an_init_only_run_is_undefined_never_no(tmp_path: Path) -> None:
    # a diverged init-only run too: it went non-finite at init, it never failed to train
    out = _sweep(tmp_path, SPEC, "model.init={name: normal, std: 1.0e+30}")
    experiment = store.load_experiment(out / "initonly")
    analysed = analysis.analyse_runs(experiment.runs, experiment.layers, analysis.Thresholds())
    assert set(analysed["status"]) == {"diverged"}
    assert analysed["init_only"].all() and set(analysed["trainable"]) == {""}
    assert "no-learning" not in " ".join(analysed["flags"])
    assert set(analysed["fwd_verdict_last"]) == {""}  # no trained network to judge


def test_the_report_shows_step_0_and_says_why_nothing_after_training(tmp_path: Path) -> None:
    out = _sweep(tmp_path)
    result = _run("report", str(out), "--format", "markdown", "--per-layer")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "At initialisation (step 0)" in text and "After training" not in text
    assert "no after-training table: every configuration is init-only" in text
    answer = text.split("### Answer", 1)[1].split("### Findings", 1)[0]
    assert "init only, loss@0" in answer
    assert "is not trained (train.steps 0: trainability undefined" in answer
    assert "does not train" not in answer and "unknown" not in answer
    per_layer = text.split("### Layer by layer", 1)[1].split("## Glossary", 1)[0]
    assert "@0" in per_layer and "@last" not in per_layer


def test_a_sweep_of_trained_and_init_only_runs_reports_each_as_it_is(tmp_path: Path) -> None:
    out = _sweep(tmp_path, SPEC + "grid:\n  train.steps: [0, 2]\n", "seeds=1")
    text = _run("report", str(out), "--format", "markdown").output
    trained = text.split("### After training", 1)[1].split("\n## ", 1)[0]
    assert "left out after training, init-only: steps=0" in trained
    rows = [line for line in trained.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and rows[1].startswith("| 2 |")  # the header and the trained one


def test_memory_of_an_init_only_run_has_no_optimizer_state_or_test_pass() -> None:
    config = make_config(**{"train.steps": 0, "train.optimizer": "adam"}).as_dict()
    parts = estimate(config).parts
    assert parts["optimizer"] == 0 and parts["evaluation"] == 0
    trained = estimate(make_config(**{"train.optimizer": "adam"}).as_dict()).parts
    assert trained["optimizer"] > 0 and trained["evaluation"] > 0


def test_a_large_sweep_of_short_runs_stays_in_this_process() -> None:
    # a process per run costs more than an init-only run: 1000 of them are long in all,
    # yet each is short
    from initbench import api
    from initbench.config.spec import build_spec
    from initbench.sweep.executors import ExecutorOptions
    from initbench.sweep.runner import PARALLEL_WORTH, SHORT_RUN, estimated_seconds

    raw = {
        "name": "many",
        "data": {"name": "synthetic", "n_train": 256, "n_test": 64},
        "model": {"depth": 50, "width": 256},
        "train": {"steps": 0},
        "seeds": 1000,
    }
    spec = build_spec(raw, "many.yaml", "")
    seconds = [estimated_seconds(run) for run in spec.runs]
    assert sum(seconds) > PARALLEL_WORTH and max(seconds) < SHORT_RUN
    assert api._with_default_workers(ExecutorOptions(), spec).workers == 1
