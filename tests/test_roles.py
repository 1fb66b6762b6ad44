"""Per-role inits (model.first_init, model.readout_init) and the readout's recorded
weight and gradient statistics."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from initbench.analysis.initcheck import init_check
from initbench.config.thresholds import Thresholds
from initbench.nets.models import build_model, init_problems
from initbench.sweep.train import execute_run
from tests.conftest import make_config


def _layers(result) -> pd.DataFrame:
    return pd.DataFrame(result.layers)


def test_unset_roles_leave_the_run_id_and_set_ones_change_it() -> None:
    plain = make_config()
    assert "first_init" not in plain.identity()["model"]
    assert "readout_init" not in plain.identity()["model"]
    for key in ("model.first_init", "model.readout_init"):
        changed = make_config(**{key: "zeros"})
        assert changed.run_id != plain.run_id
        assert changed.identity()["model"][key.split(".")[1]] == {"name": "zeros"}


@pytest.mark.parametrize("arch", ["mlp", "cnn", "rnn"])
def test_first_and_readout_weights_follow_their_role(arch) -> None:
    config = make_config(
        **{
            "model.arch": arch,
            "model.depth": 3,
            "model.width": 8,
            "model.init": "he_normal",
            "model.first_init": {"name": "constant", "value": 0.25},
            "model.readout_init": "zeros",
        }
    )
    model = build_model(config.model, torch.Generator().manual_seed(0))
    layers = model.watched_layers()
    assert torch.all(layers[0].weight == 0.25)
    assert all(layer.weight.std() > 0 for layer in layers[1:])
    assert torch.all(model.readout.weight == 0)
    if arch == "rnn":  # the recurrent weight keeps init (recurrent_init unset)
        assert layers[0].recurrent_weight.std() > 0


def test_cnn_with_delta_orthogonal_needs_a_readout_init() -> None:
    cnn = {"model.arch": "cnn", "model.depth": 3, "model.width": 8}
    config = make_config(**cnn, **{"model.init": "delta_orthogonal"})
    problems = init_problems(config.model)
    assert [key for key, _ in problems] == ["model.init"]
    assert "model.readout_init" in problems[0][1] and "(10, 8)" in problems[0][1]
    fixed = make_config(**cnn, **{"model.init": "delta_orthogonal", "model.readout_init": "zeros"})
    assert init_problems(fixed.model) == []
    wrong = make_config(**cnn, **{"model.first_init": "identity"})
    assert [key for key, _ in init_problems(wrong.model)] == ["model.first_init"]


def test_lsuv_as_recurrent_init_alone_is_refused() -> None:
    config = make_config(**{"model.arch": "rnn", "model.recurrent_init": "lsuv"})
    problems = init_problems(config.model)
    assert [key for key, _ in problems] == ["model.recurrent_init"]
    assert "set it as model.init" in problems[0][1]


def test_the_readout_is_recorded_after_the_watched_layers() -> None:
    """Zeros at the readout (muP's choice): its weight is 0 at step 0, but its gradient is
    not, dL/dW = (softmax - onehot) h^T; the gradient below it is 0 at step 0."""
    config = make_config(**{"model.readout_init": "zeros", "model.depth": 3})
    layers = _layers(execute_run(config.as_dict()))
    readout = layers[layers["name"] == "readout"]
    assert set(readout["layer"]) == {4} and set(readout["t"]) == {0}
    assert set(readout["metric"]) == {"w_mean", "w_var", "w_norm", "grad_w_var", "grad_w_norm"}
    at0 = readout[readout["step"] == 0].set_index("metric")["value"]
    assert at0["w_norm"] == 0 and at0["grad_w_norm"] > 0
    hidden = layers[(layers["step"] == 0) & (layers["metric"] == "grad_preact_var")]
    assert (hidden["value"] == 0).all()
    later = readout[(readout["step"] > 0) & (readout["metric"] == "w_norm")]
    assert (later["value"] > 0).all()  # trained away from zero


def test_init_check_reads_first_and_readout_init() -> None:
    config = make_config(
        **{
            "model.init": "he_normal",
            "model.first_init": "lecun_normal",
            "model.readout_init": "xavier_normal",
            "model.width": 64,
        }
    )
    result = execute_run(config.as_dict())
    flat = pd.json_normalize({"config": result.config}).iloc[0].to_dict()  # a runs row
    record = {k: v for k, v in flat.items() if v is not None}
    check = init_check(record, _layers(result), Thresholds())
    by_layer = check.set_index("layer")
    assert by_layer.loc[1, "init"] == "lecun_normal"
    assert by_layer.loc[2, "init"] == "he_normal"
    assert by_layer.loc[4, "init"] == "xavier_normal"
    assert by_layer.loc[4, "tensor"] == "readout"
    assert not check["mismatch"].any(), check


def test_theory_takes_layer_1_from_first_init() -> None:
    from initbench.meanfield.geometry import geometry_of

    model = make_config(**{"model.init": "he_normal", "model.first_init": "lecun_normal"})
    geo = geometry_of(model.as_dict()["model"], padding_correction=True)
    assert geo.sigma_w2.tolist() == pytest.approx([1.0, 2.0, 2.0])  # fan_in Var(W) per layer
    plain = geometry_of(make_config(**{"model.init": "he_normal"}).as_dict()["model"], True)
    assert plain.sigma_w2.tolist() == pytest.approx([2.0, 2.0, 2.0])
    lsuv = make_config(**{"model.first_init": "lsuv"}).as_dict()["model"]
    assert "no prediction" in geometry_of(lsuv, True)


def test_init_check_leaves_the_readout_out_when_its_init_is_unset() -> None:
    result = execute_run(make_config(**{"model.init": "he_normal"}).as_dict())
    flat = pd.json_normalize({"config": result.config}).iloc[0].to_dict()
    record = {k: v for k, v in flat.items() if v is not None}
    check = init_check(record, _layers(result), Thresholds())
    assert check["layer"].tolist() == [1, 2, 3]  # the report as before readout_init existed
