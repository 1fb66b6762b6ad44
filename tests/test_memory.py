"""A run's memory, estimated before anything runs: the parts against the real network,
and the refusals it drives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from initbench.cli import main
from initbench.config.memory import BYTES, estimate, forward_values, human, parameter_count
from initbench.config.spec import SpecError, load_spec
from initbench.nets.models import build_model
from initbench.sweep.runner import check_memory
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[1]
ARCHS = [
    {"model.arch": "mlp", "model.batchnorm": True},
    {"model.arch": "mlp"},
    {"model.arch": "cnn", "model.batchnorm": True},
    {"model.arch": "rnn", "model.depth": 2},
]


@pytest.mark.parametrize("overrides", ARCHS, ids=lambda o: "-".join(map(str, o.values())))
def test_parameter_count_is_the_built_networks(overrides) -> None:
    config = make_config(**overrides)
    model = build_model(config.model, torch.Generator().manual_seed(0))
    assert parameter_count(config.as_dict()["model"]) == sum(p.numel() for p in model.parameters())


def test_forward_values_of_an_mlp_are_its_watched_tensors_and_input() -> None:
    model = {"arch": "mlp", "depth": 3, "width": 16, "batchnorm": False}
    assert forward_values(model) == 784 + 2 * 3 * 16  # input, then preact and act per layer


@pytest.mark.parametrize(
    ("optimizer", "copies"), [("sgd", 0), ({"name": "sgd", "momentum": 0.9}, 1), ("adam", 2)]
)
def test_optimizer_state_follows_the_optimizer(optimizer, copies) -> None:
    parts = estimate(make_config(**{"train.optimizer": optimizer}).as_dict()).parts
    assert parts["optimizer"] == copies * parts["weights"]
    assert parts["weights"] == parts["gradients"]


def test_data_counts_both_splits_as_float32_images() -> None:
    parts = estimate(make_config(**{"data.n_train": 1000, "data.n_test": 200}).as_dict()).parts
    assert parts["data"] == 1200 * 784 * BYTES


def test_human_units() -> None:
    assert [human(v) for v in (999, 1000, 2.5e9, 3e15)] == ["999 B", "1 kB", "2.5 GB", "3e+03 TB"]


def test_a_sweep_that_does_not_fit_is_refused_with_the_estimate_and_the_limit() -> None:
    spec = load_spec(ROOT / "configs" / "smoke.yaml", ["model.width=4096"])
    with pytest.raises(
        SpecError, match=r"needs about .* per run x 2 runs in parallel, more than the 1 GB"
    ):
        check_memory(spec, parallel=2, available=10**9)
    check_memory(spec, parallel=1, available=10**13)  # fits


def test_impossible_sizes_exit_2_before_anything_is_written(tmp_path: Path) -> None:
    args = ["--set", "model.depth=1000", "--set", "model.width=16384", "--out", str(tmp_path / "o")]
    done = CliRunner().invoke(main, ["run", str(ROOT / "configs" / "smoke.yaml"), *args])
    assert done.exit_code == 2 and "TB" in done.output and "available" in done.output
    assert not (tmp_path / "o").exists()


def test_validate_shows_the_largest_runs_memory() -> None:
    done = CliRunner().invoke(main, ["validate", str(ROOT / "configs" / "smoke.yaml")])
    assert done.exit_code == 0 and "memory: up to" in done.output and "weights" in done.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_device_cuda_without_one_exits_2_before_anything_is_written(tmp_path: Path) -> None:
    args = ["--device", "cuda", "--out", str(tmp_path / "o")]
    done = CliRunner().invoke(main, ["run", str(ROOT / "configs" / "smoke.yaml"), *args])
    assert done.exit_code == 2 and "sees no CUDA device" in done.output
    assert not (tmp_path / "o").exists()
