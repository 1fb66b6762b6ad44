"""Mean-field predictions (initbench.meanfield.predict) per layer, against a real
forward/backward pass of initbench's own models, and the text of `initbench theory`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from io import StringIO
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from initbench import meanfield
from initbench.config import geometry
from initbench.config.spec import ModelConfig, RunConfig
from initbench.meanfield import (
    TheoryError,
    gaussian_moments,
    numpy_activation,
    predict,
    render,
    theory_text,
)
from initbench.meanfield.decay import fit_factor
from initbench.measure.probes import Tape
from initbench.nets import models

# --- per-layer predictions ---------------------------------------------------------------------


def _mlp(**model: Any) -> dict[str, Any]:
    return {"arch": "mlp", "depth": 12, "width": 256, **model}


@pytest.mark.parametrize("std", [0.05, 0.0625, 0.08])
def test_linear_network_factor_is_sigma_w2_per_layer_exactly(std: float) -> None:
    pred = predict(_mlp(activation="linear", init={"name": "normal", "std": std}), q1=1.7)
    sigma_w2 = 256 * std**2
    layers = pred.columns["layer"]
    np.testing.assert_allclose(pred.columns["fwd_ratio"], sigma_w2 ** (layers - 1), rtol=1e-12)
    np.testing.assert_allclose(pred.columns["bwd_factor"][:-1], sigma_w2, rtol=1e-12)
    np.testing.assert_allclose(pred.columns["bwd_ratio"], sigma_w2 ** (12 - layers), rtol=1e-12)
    assert pred.summary()["forward_decay"] == pytest.approx(sigma_w2)


def test_linear_network_with_bias_adds_sigma_b2_per_layer() -> None:
    pred = predict(_mlp(activation="linear", init="lecun_normal"), q1=2.0, sigma_b2=0.5)
    np.testing.assert_allclose(pred.columns["q"], 2.0 + 0.5 * np.arange(12), rtol=1e-12)


def test_bias_init_variance_is_read_from_the_config() -> None:
    model = _mlp(activation="linear", init="lecun_normal", bias_init={"name": "normal", "std": 0.3})
    assert predict(model, q1=1.0).sigma_b2 == pytest.approx(0.09)
    assert predict(_mlp(bias_init="torch_default"), q1=1.0).sigma_b2 == pytest.approx(1 / 768)


def test_relu_xavier_halves_and_he_keeps_the_variance() -> None:
    """The headline of configs/relu_he_vs_xavier.yaml at depth 30: decay 0.5 vs 1.0."""
    xavier = predict(_mlp(depth=30, init="xavier_normal")).summary()
    he = predict(_mlp(depth=30, init="he_normal")).summary()
    assert xavier["forward_decay"] == pytest.approx(0.5)
    assert xavier["backward_decay"] == pytest.approx(0.5)
    assert xavier["forward_last_first"] == pytest.approx(2.0**-29)
    assert he["forward_decay"] == pytest.approx(1.0)
    assert he["backward_decay"] == pytest.approx(1.0)


def test_first_layer_sigma_w2_uses_its_own_shape() -> None:
    """xavier on the 784 -> 256 first layer: fan_avg = 520, sigma_w^2 = 784/520; hidden 1."""
    pred = predict(_mlp(activation="tanh", init="xavier_normal"))
    assert pred.columns["sigma_w2"][0] == pytest.approx(784 / 520)
    np.testing.assert_allclose(pred.columns["sigma_w2"][1:], 1.0)
    assert pred.q1 == pytest.approx(784 / 520)  # standardised inputs: E[x^2] = 1
    assert predict(_mlp(activation="tanh", init="xavier_normal"), input_sq=2.0).q1 == pytest.approx(
        2 * 784 / 520
    )


def test_chi_column_is_sigma_w2_times_e_dphi2_at_q() -> None:
    pred = predict(_mlp(activation="tanh", init="xavier_normal"), q1=0.8)
    tanh = numpy_activation("tanh")
    q, chi = pred.columns["q"], pred.columns["chi"]
    expected = [gaussian_moments(tanh, v)[2] for v in q[:-1]]
    np.testing.assert_allclose(chi[:-1], expected, rtol=1e-12)
    np.testing.assert_allclose(pred.columns["bwd_factor"][:-1], chi[:-1], rtol=1e-12)
    assert math.isnan(chi[-1])  # the last layer's gradient comes from the readout


def test_batchnorm_predicts_unit_input_and_relu_gradient_explosion() -> None:
    pred = predict(_mlp(init="he_normal", batchnorm=True), q1=2.0)
    np.testing.assert_allclose(pred.columns["q_in"], 1.0)
    np.testing.assert_allclose(pred.columns["q"][1:], 1.0)  # 2 * E[relu(z)^2]
    interior = pred.columns["bwd_factor"][1:-1]
    np.testing.assert_allclose(interior, math.pi / (math.pi - 1), rtol=1e-12)
    assert pred.fixed is not None and pred.fixed.chi_star == pytest.approx(math.pi / (math.pi - 1))


@pytest.mark.parametrize(
    "model, words",
    [
        (_mlp(init="uniform"), "mean 0.5"),
        (_mlp(init={"name": "constant", "value": 0.1}), "mean 0.1"),
        (_mlp(init="zeros"), "constant"),
        (_mlp(init={"name": "normal", "mean": 0.01}), "mean 0.01"),
        (_mlp(bias_init={"name": "constant", "value": 0.1}), "model.bias_init"),
        (_mlp(bias_init="uniform"), "model.bias_init"),
        (
            {"arch": "rnn", "width": 64, "init": "xavier_normal", "recurrent_init": "identity"},
            "model.recurrent_init 'identity'",
        ),
    ],
)
def test_nonzero_mean_inits_get_no_prediction_and_the_reason(model, words) -> None:
    pred = predict(model)
    assert not pred.ok and pred.fixed is None
    assert words in pred.reason
    assert pred.frame().empty
    assert pred.summary() == {"reason": pred.reason}
    assert "no prediction" in render(pred)


def test_predict_takes_a_resolved_run_config(config_factory: Callable[..., RunConfig]) -> None:
    config = config_factory(**{"model.init": "he_normal", "model.depth": 4}).as_dict()
    pred = predict(config, q1=1.3)
    assert pred.ok and list(pred.columns["layer"]) == [1, 2, 3, 4]
    assert pred.model["activation"] == {"name": "relu"}  # the resolved default
    np.testing.assert_allclose(pred.columns["q"], 1.3)


def test_shapes_match_the_models(config_factory) -> None:
    for arch in ("mlp", "cnn", "rnn"):
        cfg = config_factory(**{"model.arch": arch, "model.depth": 3, "model.width": 8})
        with torch.device("meta"):
            model = models.model_class(arch)(cfg.model)
        shapes = [tuple(layer.weight.shape) for layer in model.watched_layers()]
        assert shapes == geometry.input_weight_shapes(arch, 3, 8)


def test_cnn_tap_matrix_gives_the_padding_and_stride_factors() -> None:
    """A uniform field through 'same' zero padding keeps ((3n-2)/3n)^2 of its variance;
    a gradient through a stride-2 conv on an unbounded map keeps 1/4."""
    for n in (28, 7):
        a = meanfield.tap_matrix(n, 1)
        assert (a @ np.ones((n, n)) @ a.T).mean() == pytest.approx(((3 * n - 2) / (3 * n)) ** 2)
    a = meanfield.tap_matrix(28, 2, zero_padding=False)
    assert a.shape == (14, 28)
    assert (a.T @ np.ones((14, 14)) @ a).mean() == pytest.approx(0.25)


def test_rnn_accepts_one_drive_per_step_and_checks_its_length() -> None:
    model = {"arch": "rnn", "depth": 2, "width": 64, "init": "xavier_normal"}
    drives = np.linspace(0.1, 1.0, 28)
    pred = predict(model, q1=drives)
    first = pred.columns["q"][:28]
    assert first[0] == pytest.approx(0.1) and np.all(first[1:] > drives[1:])
    assert pred.frame().shape == (56, len(meanfield.COLUMNS) + 1)
    with pytest.raises(TheoryError, match="28"):
        predict(model, q1=[1.0, 2.0])


def test_rnn_input_drive_recovers_the_drives_behind_layer_one() -> None:
    model = {"arch": "rnn", "depth": 2, "width": 64, "activation": "relu", "init": "he_normal"}
    drives = np.linspace(0.2, 2.0, 28)
    pred = predict(model, q1=drives)
    recovered = meanfield.rnn_input_drive(model, pred.columns["q"][:28])
    np.testing.assert_allclose(recovered, drives, rtol=1e-10)
    summary = pred.summary()  # the rnn is summarised across the top layer's steps
    top = pred.columns["q"][28:]
    assert summary["forward_last_first"] == pytest.approx(top[-1] / top[0])


def test_decay_factor_is_two_to_the_fitted_slope() -> None:
    assert fit_factor(np.arange(9), 0.7 ** np.arange(9)) == pytest.approx(0.7)
    assert math.isnan(fit_factor([0], np.array([1.0])))


def test_the_fit_runs_over_the_finite_part_of_a_profile() -> None:
    """A variance that overflowed at layer 19 (or underflowed to 0, or went NaN) is fitted
    on the layers where it is finite and > 0; the backward fit reads it the other way."""
    layers = np.arange(1, 21)
    overflowed = np.append(2.0 ** layers[:18], [math.inf, math.inf])
    assert fit_factor(layers, overflowed) == pytest.approx(2.0, rel=1e-12)
    assert fit_factor(layers, overflowed[::-1], backward=True) == pytest.approx(2.0, rel=1e-12)
    underflowed = np.append(0.5 ** layers[:18], [0.0, math.nan])
    assert fit_factor(layers, underflowed) == pytest.approx(0.5, rel=1e-12)
    assert math.isnan(fit_factor([1, 2, 3], [1.0, math.inf, 0.0]))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_diverging_prediction_is_summarised_on_its_finite_layers() -> None:
    """relu with sigma_w^2 = 4: q doubles per layer and overflows past layer ~1000."""
    pred = predict(_mlp(depth=1100, init={"name": "normal", "std": 0.125}), q1=1.0)
    assert not np.isfinite(pred.columns["q"][-1])
    assert pred.summary()["forward_decay"] == pytest.approx(2.0, rel=1e-9)


def test_model_section_takes_model_configs_defaults() -> None:
    """A partial model section is completed from ModelConfig, the per-arch activation
    included; `initbench theory --format json` prints the model's keys in this order."""
    for arch, activation in (("mlp", "relu"), ("rnn", "tanh")):
        model = meanfield.model_section({"arch": arch})
        assert model["activation"] == activation
        assert ModelConfig.model_validate(model).resolved() == ModelConfig(arch=arch).resolved()
    doc = json.loads(theory_text("relu", "he_normal", depth=3, width=8, fmt="json"))
    assert list(doc["model"]) == [
        "arch",
        "depth",
        "width",
        "init",
        "bias_init",
        "batchnorm",
        "activation",
        "recurrent_init",
    ]


# --- against a real forward/backward pass of initbench's models ------------------------------


def _measure(model_cfg: dict[str, Any], seeds: int, batch: int) -> tuple[np.ndarray, ...]:
    """Per (layer, t): mean over seeds of preact_sq; geometric mean of grad_preact_var."""
    q, g = [], []
    for seed in range(seeds):
        from initbench.config.spec import ModelConfig

        cfg = ModelConfig.model_validate(model_cfg).resolved()
        gen = torch.Generator().manual_seed(seed)
        model = models.build_model(cfg, gen).double()
        x = torch.randn(batch, 1, 28, 28, generator=gen, dtype=torch.float64)  # E[x^2] = 1
        y = torch.randint(0, 10, (batch,), generator=gen)
        tape = Tape()
        torch.nn.functional.cross_entropy(model(x, tape), y).backward()
        pre = [tape.tensors["preact"][k] for k in sorted(tape.tensors["preact"])]
        q.append([float(p.detach().square().mean()) for p in pre])
        g.append([math.log(float(p.grad.var())) for p in pre])
    return np.mean(q, axis=0), np.exp(np.mean(g, axis=0))


def _assert_close_in_log(measured: np.ndarray, predicted: np.ndarray, tol: float) -> None:
    np.testing.assert_array_less(np.abs(np.log(measured / predicted)), tol)


@pytest.mark.parametrize(
    "model, tol",
    [
        ({"activation": "tanh", "init": "xavier_normal"}, 0.08),
        ({"activation": "relu", "init": "xavier_normal"}, 0.25),  # relu: widest spread
        ({"activation": "relu", "init": "he_normal", "batchnorm": True}, 0.15),
        ({"activation": "selu", "init": "lecun_normal"}, 0.15),
    ],
)
def test_mlp_prediction_matches_a_real_network(model: dict[str, Any], tol: float) -> None:
    """Within the finite-width spread; the per-layer factors being tested differ by more
    (0.5 per layer for relu/xavier, 1.47 for batchnorm, 1.07 for selu)."""
    q, g = _measure({"arch": "mlp", "depth": 6, "width": 256, **model}, seeds=2, batch=64)
    pred = predict({"arch": "mlp", "depth": 6, "width": 256, **model}, q1=q[0])
    _assert_close_in_log(q, pred.columns["q"], tol)
    _assert_close_in_log(g / g[-1], pred.columns["bwd_ratio"], tol)


def test_cnn_prediction_with_padding_matches_a_real_network() -> None:
    """Linear convs (their variance fluctuates least): per-layer factors within 12%
    (a 1/4 factor at the stride-2 layers), and q closer than without the padding
    correction (the 7 x 7 layers lose ~12% each)."""
    model = {"arch": "cnn", "depth": 7, "width": 32, "activation": "linear", "init": "lecun_normal"}
    q, g = _measure(model, seeds=2, batch=4)
    fwd, bwd = q[1:] / q[:-1], g[:-1] / g[1:]
    pred, flat = predict(model, q1=q[0]), predict(model, q1=q[0], padding_correction=False)
    _assert_close_in_log(fwd, pred.columns["fwd_factor"][1:], 0.12)
    _assert_close_in_log(bwd, pred.columns["bwd_factor"][:-1], 0.12)
    err = np.abs(np.log(q / pred.columns["q"]))[-1]
    assert err < np.abs(np.log(q / flat.columns["q"]))[-1]


@pytest.mark.parametrize("init", ["he_normal", "xavier_normal", "torch_default"])
def test_cnn_backward_decay_of_the_sum_over_positions_mirrors_the_forward(init: str) -> None:
    """Every hidden conv is square, so mean-field theory gives the gradient's sum over
    positions the forward signal's per-layer factor chi; per element, the stride-2 layers
    would divide it by 4 more (he_normal would read about 0.5 per layer at depth 5)."""
    model = {"arch": "cnn", "depth": 5, "width": 16, "activation": "relu", "init": init}
    summary = predict(model).summary()
    assert summary["backward_decay"] == pytest.approx(summary["forward_decay"], rel=0.02)
    per_element = predict(model).columns["bwd_ratio"]
    assert per_element[0] < 0.1 * summary["backward_first_last"]  # two strides: 1/16


def test_rnn_prediction_matches_a_real_network() -> None:
    model = {
        "arch": "rnn",
        "depth": 2,
        "width": 128,
        "init": "xavier_normal",
        "recurrent_init": {"name": "orthogonal", "gain": 1.2},
    }
    q, g = _measure(model, seeds=1, batch=64)
    pred = predict(model, q1=q[0])  # input drive of every step = q at t = 1
    np.testing.assert_allclose(q, pred.columns["q"], rtol=0.08)
    for layer in range(2):
        rows = slice(28 * layer + 14, 28 * layer + 28)  # the last 14 steps of each layer
        g_rel = g[rows] / g[28 * layer + 27]
        np.testing.assert_allclose(g_rel, pred.columns["bwd_ratio"][rows], rtol=0.15)


# --- text for the CLI --------------------------------------------------------------------------


def test_theory_text_terminal_has_the_summary_table_and_notes() -> None:
    text = theory_text("tanh", "xavier_normal", depth=50, width=256)
    assert text.startswith("mean-field prediction: mlp, depth 50, width 256, activation tanh")
    assert "q1 = 1.508" in text and "(critical)" in text and "notes:" in text
    assert len([line for line in text.splitlines() if line.strip().startswith("50 ")]) == 1


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json"])
def test_theory_text_formats(fmt: str) -> None:
    text = theory_text("relu", "he_normal", depth=5, width=64, q1=1.0, fmt=fmt)
    if fmt == "markdown":
        assert "| layer | t | sigma_w2 | q |" in text
    elif fmt == "csv":
        frame = pd.read_csv(StringIO(text))
        assert list(frame.columns) == list(meanfield.COLUMNS) and len(frame) == 5
    else:
        doc = json.loads(text)
        assert doc["summary"]["regime"] == "critical"
        assert doc["summary"]["depth_scale"] is None  # inf is not JSON
        assert doc["rows"][-1]["chi"] is None and doc["rows"][0]["q"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "tahn"}, "did you mean: tanh"),
        ({"init": "he_norml"}, "did you mean: he_normal"),
        ({"arch": "transformer"}, "unknown architecture"),
        ({"q1": -1.0}, "q1 must be"),
        ({"depth": 0}, "depth and width"),
        ({"recurrent_init": "orthogonal"}, "only to arch rnn"),
        ({"fmt": "yaml"}, "unknown format"),
        ({"sigma_b2": -0.1}, "sigma_b2"),
        ({"activation": {"name": "leaky_relu", "negative_slope": -1}}, "negative_slope"),
    ],
)
def test_theory_text_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args = {"activation": "relu", "init": "he_normal", "depth": 3, "width": 8, **kwargs}
    with pytest.raises(TheoryError, match=match):
        theory_text(**args)
