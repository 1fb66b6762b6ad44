"""Training semantics: determinism, probes that change nothing, divergence, failures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from initbench.config.spec import build_spec
from initbench.results import store
from initbench.run.runner import execute, plan
from initbench.run.train import batch_indices, derive_seed, execute_run
from tests.conftest import make_config


def _layers(result) -> pd.DataFrame:
    return pd.DataFrame(result.layers)


def test_same_config_same_numbers_bit_for_bit() -> None:
    config = make_config(**{"model.arch": "cnn", "model.batchnorm": True}).as_dict()
    first, second = execute_run(config), execute_run(config)
    assert first.summary["status"] == "ok"
    np.testing.assert_array_equal(first.layers["value"], second.layers["value"])
    np.testing.assert_array_equal(first.curves["value"], second.curves["value"])


def test_probing_every_step_does_not_change_training() -> None:
    every = execute_run(make_config(**{"train.log_every": 1}).as_dict())
    rarely = execute_run(make_config(**{"train.log_every": 1000}).as_dict())

    def loss(r):
        curves = zip(r.curves["step"], r.curves["metric"], r.curves["value"], strict=True)
        return [v for s, m, v in curves if m == "loss" and s == 6]

    assert loss(every) == loss(rarely)
    assert every.summary["test_loss"] == rarely.summary["test_loss"]


def test_step_zero_is_the_network_at_initialisation_and_last_step_is_trained() -> None:
    result = execute_run(make_config(**{"train.steps": 5, "train.log_every": 2}).as_dict())
    steps = sorted(set(result.layers["step"].tolist()))
    assert steps == [0, 2, 4, 5]
    assert result.summary["steps_done"] == 5
    layers = _layers(result)
    w0 = layers.query("step == 0 and layer == 2 and metric == 'w_var'")["value"].item()
    assert w0 == pytest.approx(1 / (3 * 16), rel=0.3)  # torch_default: Var = 1/(3 fan_in)


def _step0_preact_sq(init: str, depth: int) -> np.ndarray:
    """preact_sq per layer at initialisation of a wide ReLU mlp with ``init``."""
    config = make_config(
        **{
            "model.init": init,
            "model.depth": depth,
            "model.width": 256,
            "train.steps": 1,
            "train.batch_size": 128,
        }
    )
    layers = _layers(execute_run(config.as_dict())).query("step == 0 and metric == 'preact_sq'")
    return layers.sort_values("layer")["value"].to_numpy()


def test_he_normal_relu_preserves_the_forward_second_moment() -> None:
    # He et al. 2015: with Var(W) = 2/fan_in, E[preact^2] is preserved across ReLU layers
    q = _step0_preact_sq("he_normal", depth=12)
    assert q[-1] / q[1] == pytest.approx(1.0, abs=0.5)
    xq = _step0_preact_sq("xavier_normal", depth=12)
    # Xavier on square ReLU layers: sigma_w^2 = 1, so q halves per layer: 2^-10 over 10 layers
    assert xq[-1] / xq[1] == pytest.approx(2.0**-10, rel=0.5)


def test_divergence_is_recorded_with_step_and_layer_and_keeps_the_records() -> None:
    config = make_config(
        **{
            "model.init": {"name": "normal", "std": 1.0},
            "model.depth": 6,
            "train.lr": 1.0,
            "train.steps": 20,
            "train.log_every": 5,
        }
    )
    result = execute_run(config.as_dict())
    summary = result.summary
    assert summary["status"] == "diverged"
    assert summary["diverged_step"] is not None and summary["diverged_step"] <= 20
    where = summary["diverged_at"]
    # located in computation order: a forward statistic or the loss, not layer 1's gradient
    assert not where["what"].startswith("grad_"), where
    layers = _layers(result)
    assert (layers["step"] == summary["diverged_step"]).any(), "stats at the divergence step kept"
    assert not np.isfinite(layers["value"]).all(), "non-finite values stored as such"
    assert summary["test_accuracy"] is None


def test_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path) -> None:
    raw = {
        "name": "mixed",
        "data": {"name": "synthetic", "n_train": 64, "n_test": 32},
        "model": {"depth": 2, "width": 8},
        "train": {"steps": 3, "log_every": 1, "batch_size": 32},
        "grid": {"train.batch_size": [32, 100]},
    }  # 100 > 64 examples: that run fails
    spec = build_spec(raw, "<test>", "")
    report = execute(plan(spec, tmp_path))
    assert report.counts == {"ok": 1, "failed": 1}
    experiment = store.load_experiment(tmp_path / "mixed")
    failed = experiment.runs.query("status == 'failed'")
    assert "exceeds the training set" in failed["error"].item()


def test_diverging_run_does_not_stop_the_sweep(tmp_path) -> None:
    raw = {
        "name": "div",
        "data": {"name": "synthetic", "n_train": 64, "n_test": 32},
        "model": {"depth": 4, "width": 8, "init": {"name": "normal", "std": 1.0}},
        "train": {"steps": 10, "log_every": 5, "batch_size": 32},
        "grid": {"train.lr": [1.0, 0.0001]},
    }
    report = execute(plan(build_spec(raw, "<test>", ""), tmp_path))
    assert report.counts["diverged"] == 1 and report.counts["ok"] == 1


def test_complete_runs_are_skipped_and_force_redoes_them(tmp_path) -> None:
    raw = {
        "name": "again",
        "data": {"name": "synthetic", "n_train": 64, "n_test": 32},
        "model": {"depth": 1, "width": 4},
        "train": {"steps": 2, "batch_size": 32},
        "seeds": 2,
    }
    spec = build_spec(raw, "<test>", "")
    assert execute(plan(spec, tmp_path)).counts["ok"] == 2
    again = plan(spec, tmp_path)
    assert (len(again.todo), len(again.done)) == (0, 2)
    assert len(plan(spec, tmp_path, force=True).todo) == 2


def test_batches_are_seeded_full_and_cover_each_epoch() -> None:
    first = list(
        zip(range(3), batch_indices(10, 3, seed=5, device=torch.device("cpu")), strict=False)
    )
    second = list(
        zip(range(3), batch_indices(10, 3, seed=5, device=torch.device("cpu")), strict=False)
    )
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, second, strict=True))
    epoch = torch.cat([b for _, b in first])
    assert len(set(epoch.tolist())) == 9  # 3 full batches of one permutation, no repeats
    assert derive_seed(0, "init") != derive_seed(0, "order") != derive_seed(1, "init")


def test_summary_records_versions_timing_and_config() -> None:
    result = execute_run(make_config().as_dict(), experiment="exp")
    summary = result.summary
    assert summary["versions"]["torch"] == torch.__version__
    assert summary["train_seconds"] > 0 and summary["total_seconds"] >= summary["train_seconds"]
    assert summary["config"] == result.config and summary["experiment"] == "exp"
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and math.isfinite(summary["final_loss"])
