"""Jacobian spectra: the exact computation against closed forms and torch's own Jacobian,
the config's refusals, and the spectra table in the results (format 2, and format 1 read
as no spectra)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from initbench.config.runconfig import jacobian_outputs
from initbench.config.spec import SpecError, build_spec
from initbench.measure.jacobian import JacobianProbe, singular_values
from initbench.results import schema, store
from initbench.sweep.train import Trainer, batch_indices, derive_seed, execute_run
from tests.conftest import make_config

JACOBIAN = {"train.jacobian": True}


def _first_examples(config, k: int) -> tuple[Trainer, torch.Tensor]:
    """The network at initialisation and the first k examples of its first batch."""
    trainer = Trainer(config, torch.device("cpu"))
    trainer.setup()
    index = next(trainer.batches)
    return trainer, trainer.train_x[index][:k]


def _autograd_spectrum(model, x: torch.Tensor) -> np.ndarray:
    """Singular values of d(last act)/dx by torch.autograd.functional.jacobian, the act
    caught by a forward hook on the last watched layer's activation module."""
    last = (model.blocks if hasattr(model, "blocks") else model.layers)[-1].act
    caught: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda module, args, out: caught.append(out))

    def last_act(xi: torch.Tensor) -> torch.Tensor:
        caught.clear()
        model(xi.unsqueeze(0))
        return caught[-1][0].reshape(-1)  # an rnn's act is called per step: the last one

    try:
        values = []
        for xi in x:
            jac = torch.autograd.functional.jacobian(last_act, xi).reshape(-1, xi.numel())
            values.append(torch.linalg.svdvals(jac.double()).numpy())
    finally:
        handle.remove()
    return np.stack(values)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.activation": "tanh", "model.init": "xavier_normal"},
        {"model.arch": "cnn", "model.depth": 2, "model.width": 2},  # 1568 outputs > 784
        {"model.arch": "rnn", "model.depth": 2, "model.width": 8, "model.init": "orthogonal"},
    ],
    ids=["mlp", "cnn", "rnn"],
)
def test_stored_spectrum_is_svdvals_of_autograds_jacobian(overrides) -> None:
    config = make_config(**JACOBIAN, **overrides, **{"train.jacobian_examples": 3})
    trainer, x = _first_examples(config, 3)
    expected = _autograd_spectrum(trainer.model, x)
    spectra = execute_run(config.as_dict()).spectra
    at_init = spectra["step"] == 0
    got = spectra["value"][at_init].reshape(3, -1)
    n = expected.shape[1]
    np.testing.assert_allclose(got[:, :n], expected, rtol=1e-4, atol=1e-6 * expected.max())
    assert np.all(got[:, n:] == 0.0)  # J J^T's null space where the layer outnumbers 784
    model = config.model
    assert got.shape[1] == jacobian_outputs(model.arch, model.depth, model.width)


def test_linear_network_with_orthogonal_weights_is_an_isometry() -> None:
    config = make_config(
        **JACOBIAN,
        **{"model.activation": "linear", "model.init": "orthogonal", "model.depth": 12},
        **{"model.width": 64, "train.steps": 1},
    )
    spectra = execute_run(config.as_dict()).spectra
    np.testing.assert_allclose(spectra["value"], 1.0, atol=2e-6)
    assert len(spectra["value"]) == 4 * 64


def test_jacobian_changes_no_training_number() -> None:
    plain = execute_run(make_config().as_dict())
    measured = execute_run(make_config(**JACOBIAN, **{"train.jacobian_every": 2}).as_dict())
    np.testing.assert_array_equal(plain.curves["value"], measured.curves["value"])
    np.testing.assert_array_equal(plain.layers["value"], measured.layers["value"])
    assert sorted(set(measured.spectra["step"])) == [0, 2, 4, 6]
    assert plain.spectra == {}


def test_jacobian_probe_schedule() -> None:
    probe = JacobianProbe(examples=4, every=0, steps=10)
    assert [s for s in range(11) if probe.due(s)] == [0]
    probe = JacobianProbe(examples=4, every=4, steps=10)
    assert [s for s in range(11) if probe.due(s)] == [0, 4, 8, 10]


def _spec_problems(**train) -> str:
    raw = {
        "name": "t",
        "data": "synthetic",
        "model": {"depth": 2, "width": 8, "batchnorm": train.pop("batchnorm", False)},
        "train": train,
    }
    with pytest.raises(SpecError) as info:
        build_spec(raw, "<t>", "")
    return str(info.value)


def test_config_refuses_what_the_exact_jacobian_cannot_take() -> None:
    assert "batchnorm" in _spec_problems(jacobian=True, batchnorm=True)
    assert "train.jacobian_every" in _spec_problems(jacobian_every=3)
    assert "exceeds train.batch_size" in _spec_problems(
        jacobian=True, jacobian_examples=9, batch_size=8
    )


def test_jacobian_keys_at_their_defaults_keep_the_run_id() -> None:
    config = make_config()
    assert "jacobian" not in json.dumps(config.identity())
    assert make_config(**JACOBIAN).run_id != config.run_id


def test_spectra_round_trip_and_a_format_1_run_has_none(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    result = execute_run(make_config(**JACOBIAN).as_dict())
    store.write_run(exp, result)
    loaded = store.load_experiment(exp)
    np.testing.assert_array_equal(loaded.spectra["value"], result.spectra["value"])
    assert list(loaded.spectra.columns) == ["run_id", *schema.SPECTRA_COLUMNS]

    old = execute_run(make_config(seed=1).as_dict())
    old.summary["format_version"] = 1
    path = store.write_run(exp, old)
    (path / schema.SPECTRA_FILE).unlink()  # format 1 wrote no spectra table
    loaded = store.load_experiment(exp)
    assert len(loaded.runs) == 2
    assert set(loaded.spectra["run_id"]) == {result.run_id}


def test_a_format_2_run_without_its_spectra_table_is_unreadable(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    path = store.write_run(exp, execute_run(make_config().as_dict()))
    (path / schema.SPECTRA_FILE).unlink()
    with pytest.raises(store.ResultsError, match=r"spectra\.parquet"):
        store.load_experiment(exp)


def test_a_non_finite_jacobian_is_stored_as_nan() -> None:
    jacobian = torch.ones(2, 3, 784)
    jacobian[1, 0, 0] = float("inf")
    assert np.isnan(singular_values(jacobian)).all()
    finite = singular_values(torch.ones(1, 3, 784))  # rank 1: sqrt(3 * 784), then zeros
    np.testing.assert_allclose(finite[0], [math.sqrt(3 * 784), 0, 0], atol=1e-9)


def test_a_later_spectrum_is_of_the_network_after_that_many_updates_on_that_batch() -> None:
    # step s: parameters after s updates, batch s, before update s (sweep.train's convention)
    config = make_config(**JACOBIAN, **{"train.steps": 3, "train.jacobian_every": 2})
    trainer = Trainer(config, torch.device("cpu"))
    trainer.setup()
    order = derive_seed(config.seed, "order")
    batches = batch_indices(
        len(trainer.train_y), config.train.batch_size, order, torch.device("cpu")
    )
    third = [next(batches) for _ in range(3)][2]
    trainer.train_step(0)
    trainer.train_step(1)
    expected = _autograd_spectrum(trainer.model, trainer.train_x[third][:4])
    trainer.train_step(2)  # measures, then applies update 2
    got = trainer.jacobian.columns()
    at_two = got["step"] == 2
    np.testing.assert_allclose(got["value"][at_two].reshape(4, -1), expected, rtol=1e-4, atol=1e-7)
    after = _autograd_spectrum(trainer.model, trainer.train_x[third][:4])
    assert not np.allclose(after, expected, rtol=1e-4, atol=1e-7)  # the update moved it
