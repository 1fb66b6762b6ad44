"""data.scale multiplies the normalised input, the gaussian dataset is N(0, 1) noise with
random labels, and the mean field's q1 follows the scale."""

from __future__ import annotations

import pytest
import torch

from initbench.config.spec import RunConfig
from initbench.data import clear_memo, load_dataset
from initbench.meanfield import predict


def test_scale_multiplies_the_standardised_input() -> None:
    clear_memo()
    plain = load_dataset("synthetic", {"n_train": 64, "n_test": 16}, seed=0)
    scaled = load_dataset("synthetic", {"n_train": 64, "n_test": 16, "scale": 2.0}, seed=0)
    torch.testing.assert_close(scaled.train_x, 2.0 * plain.train_x)
    torch.testing.assert_close(scaled.test_x, 2.0 * plain.test_x)
    assert float(scaled.train_x.square().mean()) == pytest.approx(4.0, rel=1e-5)
    assert scaled.info["scale"] == 2.0


def test_gaussian_is_standard_normal_noise_with_balanced_random_labels() -> None:
    data = load_dataset("gaussian", {"n_train": 2000, "n_test": 100}, seed=3)
    assert data.train_x.shape == (2000, 1, 28, 28) and data.train_x.dtype == torch.float32
    assert float(data.train_x.mean()) == pytest.approx(0.0, abs=3e-3)  # 1.6M draws: sd 8e-4
    assert float(data.train_x.var()) == pytest.approx(1.0, abs=5e-3)
    assert torch.bincount(data.train_y, minlength=10).tolist() == [200] * 10
    again = load_dataset("gaussian", {"n_train": 2000, "n_test": 100, "scale": 0.5}, seed=3)
    torch.testing.assert_close(again.train_x, 0.5 * data.train_x)


def test_scale_at_its_default_keeps_the_run_id() -> None:
    plain = RunConfig.model_validate({"seed": 0, "data": "mnist5k"})
    same = RunConfig.model_validate({"seed": 0, "data": {"name": "mnist5k", "scale": 1.0}})
    other = RunConfig.model_validate({"seed": 0, "data": {"name": "mnist5k", "scale": 2.0}})
    assert plain.run_id == same.run_id != other.run_id
    assert "scale" not in plain.as_dict()["data"]


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_theory_q1_follows_the_input_scale(scale: float) -> None:
    config = {"data": {"name": "gaussian", "scale": scale}, "model": {"init": "he_normal"}}
    assert predict(config).q1 == pytest.approx(2 * scale**2)  # sigma_w1^2 E[x^2], He: 2
