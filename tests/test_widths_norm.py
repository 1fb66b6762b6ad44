"""Per-layer widths (model.widths) and normalisation (model.norm): the config keys, the
networks' shapes, and He 2015's fan_in / fan_out ratios on a non-uniform MLP, in theory
and measured."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from initbench.config.geometry import weight_shapes
from initbench.config.memory import parameter_count
from initbench.config.spec import ModelConfig
from initbench.meanfield import predict
from initbench.measure.probes import Tape
from initbench.nets import models

WIDTHS = [1024, 512, 256, 128, 64]  # He 2015's question: 784 -> 1024 -> ... -> 64


def _he(mode: str) -> dict[str, Any]:
    return {"arch": "mlp", "widths": WIDTHS, "init": {"name": "he_normal", "mode": mode}}


def test_widths_set_depth_and_the_layers_shapes() -> None:
    config = ModelConfig.model_validate({"widths": WIDTHS})
    assert config.depth == 5
    model = models.build_model(config.resolved(), torch.Generator().manual_seed(0))
    shapes = [tuple(layer.weight.shape) for layer in model.watched_layers()]
    assert shapes == [(1024, 784), (512, 1024), (256, 512), (128, 256), (64, 128)]
    assert shapes == [s for _, _, s in weight_shapes("mlp", 5, WIDTHS)]
    assert parameter_count(config.model_dump()) == sum(p.numel() for p in model.parameters())


def test_cnn_widths_are_channels() -> None:
    config = ModelConfig.model_validate({"arch": "cnn", "widths": [4, 8, 16]})
    model = models.build_model(config.resolved(), torch.Generator().manual_seed(0))
    assert [layer.weight.shape[0] for layer in model.watched_layers()] == [4, 8, 16]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "model, key",
    [
        ({"widths": [8, 4], "depth": 3}, "depth"),
        ({"widths": [8, 4], "width": 8}, "width"),
        ({"widths": [8, 4], "width": 4}, "width"),
        ({"arch": "rnn", "widths": [8, 4]}, "widths"),
        ({"widths": []}, "widths"),
        ({"batchnorm": True, "norm": "layer"}, "norm"),
        ({"batchnorm": True, "norm": "none"}, "norm"),
        ({"arch": "rnn", "norm": "batch"}, "norm"),
    ],
)
def test_contradicting_keys_are_located_errors(model: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        ModelConfig.model_validate(model)
    (error,) = err.value.errors()
    assert key in [*map(str, error["loc"]), error.get("ctx", {}).get("subloc")]


def test_a_resolved_config_with_widths_validates_again() -> None:
    config = ModelConfig.model_validate({"widths": WIDTHS})
    assert ModelConfig.model_validate(config.model_dump(mode="json")) == config


def test_agreeing_keys_are_accepted() -> None:
    assert ModelConfig.model_validate({"widths": [8, 8], "width": 8, "depth": 2}).depth == 2
    assert ModelConfig.model_validate({"batchnorm": True, "norm": "batch"}).normalization == "batch"
    assert ModelConfig.model_validate({"batchnorm": True}).normalization == "batch"
    assert ModelConfig.model_validate({"arch": "rnn", "norm": "layer"}).normalization == "layer"


@pytest.mark.parametrize(
    "norm, module", [("batch", torch.nn.BatchNorm1d), ("layer", torch.nn.LayerNorm)]
)
def test_norm_builds_its_module_and_the_tape_sees_normed(norm: str, module: type) -> None:
    config = ModelConfig.model_validate({"depth": 2, "width": 16, "norm": norm}).resolved()
    model = models.build_model(config, torch.Generator().manual_seed(0))
    assert all(isinstance(block.norm, module) for block in model.blocks)
    tape = Tape()
    model(torch.randn(32, 1, 28, 28), tape)
    normed = tape.tensors["normed"][(2, 0)]
    axis = 0 if norm == "batch" else 1  # batchnorm: per unit over the batch; layer: per example
    means = normed.mean(axis)
    torch.testing.assert_close(means, torch.zeros_like(means), atol=1e-5, rtol=0)


def test_rnn_layernorm_normalises_each_steps_recurrent_preactivation() -> None:
    config = ModelConfig.model_validate({"arch": "rnn", "depth": 1, "width": 8, "norm": "layer"})
    model = models.build_model(config.resolved(), torch.Generator().manual_seed(0))
    tape = Tape()
    model(torch.randn(4, 1, 28, 28), tape)
    preact, normed = tape.tensors["preact"][(1, 5)], tape.tensors["normed"][(1, 5)]
    torch.testing.assert_close(normed, torch.nn.functional.layer_norm(preact, (8,)))


# --- He 2015: fan_in keeps the forward pass, fan_out the backward -------------------------------


def test_theory_fan_in_keeps_forward_and_fan_out_keeps_backward() -> None:
    ratio = np.array(WIDTHS[1:]) / np.array(WIDTHS[:-1])  # n_{l+1} / n_l = 1/2
    fan_in = predict(_he("fan_in"), q1=1.0).columns
    np.testing.assert_allclose(fan_in["fwd_factor"][1:], 1.0, rtol=1e-9)
    np.testing.assert_allclose(fan_in["bwd_factor"][:-1], ratio, rtol=1e-9)
    fan_out = predict(_he("fan_out"), q1=1.0).columns
    np.testing.assert_allclose(fan_out["fwd_factor"][1:], 1 / ratio, rtol=1e-9)
    np.testing.assert_allclose(fan_out["bwd_factor"][:-1], 1.0, rtol=1e-9)


def _measured_factors(model_cfg: dict[str, Any], seeds: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer forward (preact_sq) and backward (grad_preact_var) factors at init,
    geometric means over seeds, from a float64 forward/backward pass of N(0, 1) input."""
    fwd, bwd = [], []
    for seed in range(seeds):
        cfg = ModelConfig.model_validate(model_cfg).resolved()
        gen = torch.Generator().manual_seed(seed)
        model = models.build_model(cfg, gen).double()
        x = torch.randn(512, 1, 28, 28, generator=gen, dtype=torch.float64)
        tape = Tape()
        torch.nn.functional.cross_entropy(model(x, tape), torch.randint(0, 10, (512,))).backward()
        pre = [tape.tensors["preact"][k] for k in sorted(tape.tensors["preact"])]
        q = np.array([float(p.detach().square().mean()) for p in pre])
        g = np.array([float(p.grad.var()) for p in pre])
        fwd.append(np.log(q[1:] / q[:-1]))
        bwd.append(np.log(g[:-1] / g[1:]))
    return np.exp(np.mean(fwd, axis=0)), np.exp(np.mean(bwd, axis=0))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_measured_fan_ratios_follow_the_theory(mode: str) -> None:
    fwd, bwd = _measured_factors(_he(mode))
    predicted = predict(_he(mode), q1=1.0).columns
    # finite width: the last layers have 64-128 units; a factor within 25% of the theory's
    # tells 1 from 2 (and from 1/2) apart
    np.testing.assert_array_less(np.abs(np.log(fwd / predicted["fwd_factor"][1:])), math.log(1.25))
    np.testing.assert_array_less(np.abs(np.log(bwd / predicted["bwd_factor"][:-1])), math.log(1.25))


# --- layernorm's theory: batchnorm's forward, its own backward ---------------------------------


def test_layernorm_theory_relu_he_keeps_the_gradient_where_batchnorm_explodes() -> None:
    base = {"arch": "mlp", "depth": 8, "width": 256, "init": "he_normal"}
    layer = predict({**base, "norm": "layer"}, q1=1.0)
    batch = predict({**base, "batchnorm": True}, q1=1.0)
    np.testing.assert_allclose(layer.columns["q_in"], 1.0)
    np.testing.assert_allclose(layer.columns["bwd_factor"][1:-1], 1.0, rtol=1e-9)
    np.testing.assert_allclose(
        batch.columns["bwd_factor"][1:-1], math.pi / (math.pi - 1), rtol=1e-6
    )
    assert layer.fixed.chi_star == pytest.approx(1.0)


@pytest.mark.parametrize("activation, init", [("relu", "he_normal"), ("tanh", "xavier_normal")])
def test_layernorm_measured_gradient_follows_its_theory(activation: str, init: str) -> None:
    model = {"depth": 8, "width": 512, "norm": "layer", "activation": activation, "init": init}
    _, bwd = _measured_factors(model)
    predicted = predict(model, q1=1.0).columns["bwd_factor"][:-1]
    np.testing.assert_array_less(np.abs(np.log(bwd[1:] / predicted[1:])), math.log(1.1))


def test_a_set_of_width_or_depth_replaces_the_specs_widths(tmp_path: Path) -> None:
    from initbench.config.spec import load_spec

    text = "name: w\ndata: synthetic\nmodel: {widths: [16, 8, 4]}\n"
    (spec_file := tmp_path / "w.yaml").write_text(text)
    assert load_spec(spec_file).runs[0].model.layer_widths() == [16, 8, 4]
    (run,) = load_spec(spec_file, overrides=["model.depth=2", "model.width=8"]).runs
    assert run.model.widths is None and run.model.layer_widths() == [8, 8]
