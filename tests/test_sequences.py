"""data.sequence: rows, pixels (sequential MNIST) and permuted pixels, for the recurrent
models only; geometry, memory and the Elman map follow T."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from initbench.config import geometry
from initbench.config.memory import estimate
from initbench.config.spec import SpecError
from initbench.data import clear_memo, load_dataset, pixel_permutation
from initbench.meanfield import predict
from initbench.nets.models import build_model
from tests.conftest import make_config

SMALL = {"model.depth": 2, "model.width": 8}


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_pixels_are_784_steps_of_one_input(arch: str) -> None:
    config = make_config(**{"model.arch": arch, **SMALL, "data.sequence": "pixels"})
    model = build_model(config.model, torch.Generator().manual_seed(0), "pixels")
    assert model.time_steps() == 784
    shapes = [(layer.index, tuple(layer.weight.shape)) for layer in model.watched_layers()]
    blocks = geometry.gate_blocks(arch)
    assert shapes == [(1, (blocks * 8, 1)), (2, (blocks * 8, 8))]
    assert [s for _, t, s in geometry.weight_shapes(arch, 2, 8, "pixels") if t == "w"] == [
        s for _, s in shapes
    ]
    x = torch.randn(3, 1, 28, 28)
    # reading pixel by pixel is reading the flattened image as a (B, 784, 1) sequence
    h = x.reshape(3, 784, 1)
    for layer in model.layers:
        h = layer(h)
    torch.testing.assert_close(model(x), model.readout(h[:, -1]))


def test_permuted_pixels_move_every_image_by_one_seeded_permutation() -> None:
    clear_memo()
    ref = {"n_train": 64, "n_test": 32}
    plain = load_dataset("synthetic", ref, 3)
    moved = load_dataset("synthetic", {**ref, "sequence": "permuted_pixels"}, 3)
    order = pixel_permutation(3)
    assert sorted(order.tolist()) == list(range(784)) and not torch.equal(order, torch.arange(784))
    for a, b in ((plain.train_x, moved.train_x), (plain.test_x, moved.test_x)):
        assert torch.equal(b.flatten(1), a.flatten(1)[:, order])
    assert torch.equal(pixel_permutation(3), order)  # the data seed fixes it
    assert not torch.equal(pixel_permutation(4), order)
    assert torch.equal(
        load_dataset("synthetic", {**ref, "sequence": "pixels"}, 3).train_x, plain.train_x
    )


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_a_sequence_is_refused_for_feedforward_models(arch: str) -> None:
    with pytest.raises(SpecError, match="applies only to arch rnn, lstm or gru") as info:
        make_config(**{"model.arch": arch, "data.sequence": "pixels"})
    assert "data.sequence" in str(info.value)


def test_rows_is_the_default_and_leaves_the_run_id() -> None:
    plain = make_config(**{"model.arch": "rnn"})
    assert plain.data["sequence"] == "rows"
    assert "sequence" not in plain.identity()["data"]
    rows = make_config(**{"model.arch": "rnn", "data.sequence": "rows"})
    assert rows.run_id == plain.run_id
    assert make_config(**{"model.arch": "rnn", "data.sequence": "pixels"}).run_id != plain.run_id


def _config(arch: str, sequence: str) -> dict[str, Any]:
    return make_config(**{"model.arch": arch, **SMALL, "data.sequence": sequence}).as_dict()


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_cost_and_memory_estimates_follow_t(arch: str) -> None:
    rows, pixels = (
        geometry.multiply_adds(arch, 2, 8, "rows"),
        geometry.multiply_adds(arch, 2, 8, "pixels"),
    )
    g = geometry.gate_blocks(arch)
    assert rows == 28 * g * (28 * 8 + 8 * 8 + 2 * 8 * 8)
    assert pixels == 784 * g * (1 * 8 + 8 * 8 + 2 * 8 * 8)
    small, large = estimate(_config(arch, "rows")), estimate(_config(arch, "pixels"))
    image = 4 * 32 * 784 * 4  # 4 copies x batch x the input image x 4 bytes: no steps in it
    assert large.parts["activations"] - image == 28 * (small.parts["activations"] - image)
    assert large.parts["probe table"] == 28 * small.parts["probe table"]


def test_the_elman_map_runs_over_the_784_pixel_steps() -> None:
    rows = predict(_config("rnn", "rows"))
    pixels = predict(_config("rnn", "pixels"))
    assert rows.ok and pixels.ok
    assert np.array_equal(np.unique(pixels.columns["t"]), np.arange(1, 785))
    assert np.array_equal(np.unique(rows.columns["t"]), np.arange(1, 29))
    # layer 1 reads one pixel per step: its fan_in is 1, so sigma_w1^2 = Var(W) (tanh's
    # default, torch_default: 1/3); the rows' sigma_w1^2 is 28 x 1/(3 x 28) = 1/3 too
    assert pixels.columns["sigma_w2"][0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_gated_cells_get_no_prediction_and_the_reason(arch: str) -> None:
    prediction = predict(_config(arch, "pixels"))
    assert not prediction.ok and not prediction.columns
    assert "Chen, Pennington & Schoenholz 2018" in prediction.reason
    assert arch in prediction.reason
