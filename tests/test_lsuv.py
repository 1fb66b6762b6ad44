"""LSUV (Mishkin & Matas 2016): every watched layer at unit preact variance on the run's
own batch 0, recorded in the summary; a layer that cannot get there is said, not hidden."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from initbench.cli import main
from initbench.config.initializers import resolve
from initbench.config.spec import build_spec
from initbench.nets.lsuv import apply_lsuv, preact_variance
from initbench.nets.models import build_model
from initbench.reporting import generate
from initbench.results import store
from initbench.sweep.train import Trainer, execute_run
from tests.conftest import make_config

TOL = 0.1


def _config(arch: str, activation: str, **more):
    return make_config(
        **{
            "model.arch": arch,
            "model.depth": 4,
            "model.width": 16,
            "model.activation": activation,
            "model.init": {"name": "lsuv", "tol": TOL},
            "train.steps": 2,
            "train.log_every": 1,
            **more,
        }
    )


def _step0(layers: dict) -> pd.DataFrame:
    frame = pd.DataFrame(layers)
    return frame[(frame["step"] == 0) & (frame["name"] != "readout")]


def _pooled_var(rows: pd.DataFrame, n: int) -> float:
    """The variance over all of a layer's time steps from each step's mean and unbiased
    variance over its n elements (what LSUV measures for an rnn layer)."""
    mean = rows.query("metric == 'preact_mean'").sort_values("t")["value"].to_numpy()
    var = rows.query("metric == 'preact_var'").sort_values("t")["value"].to_numpy()
    total = n * len(mean)
    square = np.sum((n - 1) * var + n * mean**2) / total
    return (square - mean.mean() ** 2) * total / (total - 1)


@pytest.mark.parametrize("arch", ["mlp", "cnn", "rnn"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "elu"])
def test_every_watched_layer_at_unit_variance_at_step_0(arch, activation) -> None:
    config = _config(arch, activation)
    result = execute_run(config.as_dict())
    assert result.status == "ok"
    step0 = _step0(result.layers)
    fits = result.summary["lsuv"]
    assert [f["layer"] for f in fits] == [1, 2, 3, 4] and result.summary["lsuv_note"] == ""
    for fit in fits:
        assert fit["reached"] and abs(fit["variance"] - 1) < TOL and fit["iterations"] <= 10
        rows = step0[step0["layer"] == fit["layer"]]
        if arch == "rnn":  # the probe records each time step; LSUV fits all of them at once
            measured = _pooled_var(rows, config.train.batch_size * 16)
        else:  # the probe's own preact_var at step 0, on the same batch: the calibration one
            measured = rows.query("metric == 'preact_var'")["value"].item()
        assert measured == pytest.approx(fit["variance"], rel=1e-6)
        assert abs(measured - 1) < TOL


def test_a_feed_forward_layer_needs_one_rescaling() -> None:
    """preact = W x (zero bias) is linear in W: one division by sqrt(Var) gives 1."""
    result = execute_run(_config("mlp", "relu").as_dict())
    for fit in result.summary["lsuv"]:
        assert fit["iterations"] == 1 and fit["variance"] == pytest.approx(
            1, abs=1e-5
        )  # float32 forward


def test_the_calibration_batch_is_the_runs_batch_0_and_runs_repeat() -> None:
    config = _config("mlp", "tanh")
    trainer = Trainer(config, torch.device("cpu"))
    trainer.setup()
    first = next(trainer.batches)
    x = trainer.train_x[first]
    for fit in trainer.lsuv_fits:
        assert preact_variance(trainer.model, x, fit.layer) == pytest.approx(fit.variance, 1e-12)
    a, b = execute_run(config.as_dict()), execute_run(config.as_dict())
    np.testing.assert_array_equal(a.layers["value"], b.layers["value"])
    assert a.summary["lsuv"] == b.summary["lsuv"]


def test_rnn_rescales_the_input_weight_and_keeps_the_recurrent_one() -> None:
    config = _config("rnn", "relu", **{"model.recurrent_init": "orthogonal"})
    model = build_model(config.model, torch.Generator().manual_seed(0))
    layers = model.watched_layers()
    before = [(layer.weight.clone(), layer.recurrent_weight.clone()) for layer in layers]
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    fits = apply_lsuv(model, lambda: x)
    for (w, r), layer, fit in zip(before, layers, fits, strict=True):
        factor = (layer.weight / w).flatten()[0]
        torch.testing.assert_close(layer.weight, factor * w)
        assert torch.equal(layer.recurrent_weight, r)
        # relu is positively homogeneous: every step's preact is linear in W_ih
        assert fit.iterations == 1 and fit.variance == pytest.approx(1, abs=1e-5)  # float32 forward


def test_batchnorm_running_statistics_are_left_as_they_were() -> None:
    config = _config("cnn", "relu", **{"model.batchnorm": True})
    model = build_model(config.model, torch.Generator().manual_seed(0))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    apply_lsuv(model, lambda: x)
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_only_layers_initialised_by_lsuv_are_rescaled() -> None:
    config = _config("mlp", "relu", **{"model.first_init": "he_normal"})
    result = execute_run(config.as_dict())
    assert [f["layer"] for f in result.summary["lsuv"]] == [2, 3, 4]
    plain = execute_run(make_config().as_dict())
    assert plain.summary["lsuv"] is None and plain.summary["lsuv_note"] is None


def _dead_spec() -> str:
    # layer 1 all zeros: every relu unit of layer 1 is 0, so layer 2's preact is 0 whatever
    # its scale, and LSUV must say so; layers 3 and 4 then get zero input too
    return """\
data: {name: synthetic, n_train: 128, n_test: 64}
model: {arch: mlp, depth: 4, width: 16, init: lsuv, first_init: zeros}
train: {steps: 2, log_every: 1, batch_size: 32}
"""


def test_a_layer_that_cannot_reach_unit_variance_is_said_in_summary_and_report(tmp_path) -> None:
    text = _dead_spec()
    spec = build_spec({"name": "dead", **yaml.safe_load(text)}, "dead", text)
    (run,) = spec.runs
    result = execute_run(run.as_dict(), "dead")
    fits = {f["layer"]: f for f in result.summary["lsuv"]}
    assert set(fits) == {2, 3, 4}
    assert not fits[2]["reached"] and fits[2]["variance"] == 0 and fits[2]["iterations"] == 0
    assert "fc2 (layer 2): preact variance 0" in result.summary["lsuv_note"]
    store.write_spec(tmp_path / "dead", text)
    store.write_run(tmp_path / "dead", result)
    out = io.StringIO()
    generate(tmp_path, fmt="markdown", stream=out)
    assert "LSUV: fc2 (layer 2): preact variance 0" in out.getvalue()


def test_lsuv_parameters_are_validated_and_its_base_resolved() -> None:
    _, params = resolve("lsuv", {})
    assert params.base == {"name": "orthogonal", "gain": 1.0}
    _, params = resolve("lsuv", {"base": {"name": "he_normal", "mode": "fan_out"}})
    assert params.base["mode"] == "fan_out" and params.base["gain"] == 1.0
    with pytest.raises(ValidationError, match="data-dependent itself"):
        resolve("lsuv", {"base": "lsuv"})
    with pytest.raises(ValidationError, match="did you mean: he_normal"):
        resolve("lsuv", {"base": "he_norml"})
    with pytest.raises(ValidationError):
        resolve("lsuv", {"tol": 0.0})
    a = make_config(**{"model.init": "lsuv"})
    b = make_config(**{"model.init": {"name": "lsuv", "base": {"name": "orthogonal"}}})
    assert a.run_id == b.run_id


def test_list_marks_lsuv_as_data_dependent() -> None:
    out = CliRunner().invoke(main, ["list", "initializers"], env={"COLUMNS": "300"}).output
    assert "lsuv (data-dependent)" in out
    assert "delta_orthogonal" in out


def test_report_labels_keep_the_base_inside_the_init(tmp_path) -> None:
    """lsuv's nested base is part of model.init's label, not a config key of its own, and
    the init check says there is no formula instead of failing on the parameters."""
    from initbench.analysis.configs import describe_configs

    text = """\
data: {name: synthetic, n_train: 128, n_test: 64}
model: {arch: mlp, depth: 2, width: 8}
train: {steps: 1, log_every: 1, batch_size: 32}
grid: {model.init: [lsuv, {name: lsuv, base: {name: orthogonal, gain: 2.0}}, he_normal]}
"""
    spec = build_spec({"name": "labels", **yaml.safe_load(text)}, "labels", text)
    store.write_spec(tmp_path / "labels", text)
    for run in spec.runs:
        store.write_run(tmp_path / "labels", execute_run(run.as_dict(), "labels"))
    runs = store.load_experiment(tmp_path / "labels").runs
    keys = describe_configs(runs, yaml.safe_load(text)["grid"])
    assert keys.varying == ("model.init",)
    assert set(keys.labels["model.init"]) == {"lsuv", "lsuv(base.gain=2)", "he_normal"}
    out = io.StringIO()
    generate(tmp_path, fmt="markdown", stream=out)
    assert "lsuv is data-dependent: no formula to check" in out.getvalue()
