"""Mean-field theory (initbench.theory) against closed forms, quadrature, Monte Carlo,
the literature's numbers and a real forward/backward pass of initbench's own models.

Three independent ways to a Gaussian expectation are compared for every activation:
the closed form (written out here where theory.py has none), the module's composite
quadrature, Gauss-Hermite (numpy's hermegauss, where the integrand is smooth) and a
seeded Monte Carlo mean whose tolerance is its own standard error.
"""

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
from numpy.polynomial.hermite_e import hermegauss

from initbench import theory
from initbench.config import geometry
from initbench.config.activations import ACTIVATIONS, build_activation
from initbench.config.initializers import weight_scale_sigma2
from initbench.config.spec import RunConfig
from initbench.measure.probes import Tape
from initbench.nets import models
from initbench.theory import (
    TheoryError,
    activations,
    critical_sigma_w2,
    fixed_point,
    gaussian_moments,
    numpy_activation,
    predict,
    quadrature_moments,
    render,
    theory_text,
)
from initbench.theory.decay import fit_factor

# (name, params): every activation at its defaults, plus the parameters that change shape.
ACTIVATION_CASES = [(name, {}) for name in ACTIVATIONS.names()] + [
    ("leaky_relu", {"negative_slope": 0.2}),
    ("elu", {"alpha": 0.5}),
    ("softplus", {"beta": 2.0}),
    ("gelu", {"approximate": "tanh"}),
]
SMOOTH = {"tanh", "sigmoid", "gelu", "silu", "softplus"}  # analytic: Gauss-Hermite converges
CLOSED = {"linear", "relu", "leaky_relu"}


def _id(case: tuple[str, dict[str, Any]]) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


# --- numpy phi/phi' against the torch modules ---------------------------------------------------


def test_every_registered_activation_has_a_numpy_twin() -> None:
    assert set(activations._BUILDERS) == set(ACTIVATIONS.names())


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=_id)
def test_numpy_phi_and_derivative_equal_torch(case: tuple[str, dict[str, Any]]) -> None:
    name, params = case
    act = numpy_activation(name, params)
    grid = np.linspace(-30.0, 30.0, 3000)  # even count: 0 (a kink) is not on it
    x = torch.tensor(grid, dtype=torch.float64, requires_grad=True)
    y = build_activation(name, params)(x)
    (dy,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(act.phi(grid), y.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(act.dphi(grid), dy.numpy(), rtol=1e-12, atol=1e-14)


def test_numpy_activation_validates_parameters_like_the_registry() -> None:
    with pytest.raises(Exception, match="negative_slope"):
        numpy_activation("leaky_relu", {"negative_slope": -1})
    with pytest.raises(KeyError, match="did you mean"):
        numpy_activation("rleu")


# --- Gaussian expectations: closed form vs quadrature vs Gauss-Hermite vs Monte Carlo -----------

QS = [1e-4, 0.3, 1.0, 4.0, 100.0]


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("name, slope", [("linear", 1.0), ("relu", 0.0), ("leaky_relu", 0.2)])
def test_closed_forms_equal_quadrature(name: str, slope: float, q: float) -> None:
    act = numpy_activation(name, {"negative_slope": slope} if name == "leaky_relu" else {})
    closed = (
        (1 - slope) * math.sqrt(q / (2 * math.pi)),  # E phi
        q * (1 + slope**2) / 2,  # E phi^2: He et al. 2015
        (1 + slope**2) / 2,  # E phi'^2
    )
    np.testing.assert_allclose(gaussian_moments(act, q), closed, rtol=1e-12)
    np.testing.assert_allclose(quadrature_moments(act, q), closed, rtol=1e-10, atol=1e-15)


def _hermite(act: theory.NumpyActivation, q: float, nodes: int = 150) -> np.ndarray:
    x, w = hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)  # hermegauss integrates against exp(-x^2/2)
    y, dy = act.phi(math.sqrt(q) * x), act.dphi(math.sqrt(q) * x)
    return np.array([w @ y, w @ y**2, w @ dy**2])


@pytest.mark.parametrize("q", [0.01, 0.25, 1.0])
@pytest.mark.parametrize("case", [c for c in ACTIVATION_CASES if c[0] in SMOOTH], ids=_id)
def test_quadrature_equals_gauss_hermite_for_smooth_activations(case, q) -> None:
    act = numpy_activation(*case)
    np.testing.assert_allclose(gaussian_moments(act, q), _hermite(act, q), rtol=1e-8, atol=1e-14)


def test_gauss_hermite_alone_fails_where_the_composite_rule_does_not() -> None:
    """Why theory.py does not use plain Gauss-Hermite: tanh's chi at large q, selu's kink."""
    tanh, selu = numpy_activation("tanh"), numpy_activation("selu")
    assert abs(_hermite(tanh, 100.0, 100)[2] / gaussian_moments(tanh, 100.0)[2] - 1) > 0.5
    assert abs(_hermite(selu, 1.0, 100)[2] / gaussian_moments(selu, 1.0)[2] - 1) > 1e-3


def _elu_closed(q: float, alpha: float, scale: float = 1.0) -> tuple[float, float, float]:
    """E over z of elu(sqrt(q) z) etc., from E[e^{a z} 1(z<0)] = e^{a^2/2} Phi(-a)."""
    s = math.sqrt(q)

    def tail(a: float) -> float:  # e^{a^2/2} Phi(-a)
        return math.exp(a * a / 2) * 0.5 * math.erfc(a / math.sqrt(2))

    mean = s / math.sqrt(2 * math.pi) + alpha * (tail(s) - 0.5)
    sq = q / 2 + alpha**2 * (tail(2 * s) - 2 * tail(s) + 0.5)
    dsq = 0.5 + alpha**2 * tail(2 * s)
    return scale * mean, scale**2 * sq, scale**2 * dsq


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0, 4.0, 25.0])
@pytest.mark.parametrize(
    "name, params, alpha, scale",
    [
        ("elu", {}, 1.0, 1.0),
        ("elu", {"alpha": 0.5}, 0.5, 1.0),
        ("selu", {}, theory.SELU_ALPHA, theory.SELU_LAMBDA),
    ],
)
def test_elu_and_selu_quadrature_equals_closed_form(name, params, alpha, scale, q) -> None:
    act = numpy_activation(name, params)
    expected = _elu_closed(q, alpha, scale)
    np.testing.assert_allclose(gaussian_moments(act, q), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("q", [0.5, 4.0])
@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=_id)
def test_moments_agree_with_monte_carlo(case, q) -> None:
    act = numpy_activation(*case)
    z = np.random.default_rng(20170101).standard_normal(100_000)
    y, dy = act.phi(math.sqrt(q) * z), act.dphi(math.sqrt(q) * z)
    for value, sample in zip(gaussian_moments(act, q), (y, y**2, dy**2), strict=True):
        stderr = sample.std() / math.sqrt(sample.size)
        assert abs(value - sample.mean()) <= 5 * stderr + 1e-12


# --- the literature's numbers ------------------------------------------------------------------


@pytest.mark.parametrize("q", [1e-3, 1.0, 1e3])
def test_he_value_two_makes_relu_critical(q: float) -> None:
    relu = numpy_activation("relu")
    sigma_w2 = weight_scale_sigma2("he_normal", {}, (256, 256))
    assert sigma_w2 == pytest.approx(2.0)
    assert sigma_w2 * gaussian_moments(relu, q)[2] == pytest.approx(1.0)
    assert fixed_point(relu, sigma_w2, 0.0, q0=q).regime == "critical"


def test_critical_sigma_w2_of_relu_is_the_he_value() -> None:
    assert critical_sigma_w2(numpy_activation("relu")) == pytest.approx(2.0, rel=1e-8)


def test_he_with_negative_slope_makes_leaky_relu_critical() -> None:
    leaky = numpy_activation("leaky_relu", {"negative_slope": 0.2})
    sigma_w2 = weight_scale_sigma2("he_normal", {"negative_slope": 0.2}, (256, 256))
    assert fixed_point(leaky, sigma_w2, 0.0, q0=3.0).chi_star == pytest.approx(1.0)


def test_selu_with_lecun_normal_has_fixed_point_one() -> None:
    """Klambauer et al. 2017: E[selu(z)] = 0 and E[selu(z)^2] = 1 for z ~ N(0, 1), so with
    lecun_normal (sigma_w^2 = 1) the variance map's fixed point is q* = 1, from either side."""
    selu = numpy_activation("selu")
    mean, sq, _ = gaussian_moments(selu, 1.0)
    assert mean == pytest.approx(0.0, abs=1e-8)
    assert sq == pytest.approx(1.0, abs=1e-8)
    sigma_w2 = weight_scale_sigma2("lecun_normal", {}, (256, 256))
    for q0 in (0.2, 5.0):
        fp = fixed_point(selu, sigma_w2, 0.0, q0)
        assert fp.q_star == pytest.approx(1.0, abs=1e-6)
        # at q* the gradient grows 7% per layer (selu is slightly chaotic)
        assert fp.chi_star == pytest.approx(1.0716, abs=1e-4)
        assert fp.regime == "chaotic"


def test_torch_selu_gain_is_not_self_normalising() -> None:
    """torch's calculate_gain('selu') = 3/4 gives sigma_w^2 = 9/16: the variance settles
    near 0.023, not at the self-normalising q* = 1."""
    fp = fixed_point(numpy_activation("selu"), (3 / 4) ** 2, 0.0, q0=1.0)
    assert fp.q_star == pytest.approx(0.023, abs=0.001)


def test_tanh_critical_line() -> None:
    """Poole et al. 2016 / Schoenholz et al. 2017: sigma_w^2 = 1 at sigma_b^2 = 0 and
    the (1.76, 0.05) critical point used in their experiments."""
    tanh = numpy_activation("tanh")
    assert fixed_point(tanh, 1.0).regime == "critical"
    assert fixed_point(tanh, 0.99).regime == "ordered"
    assert fixed_point(tanh, 1.01).regime == "chaotic"
    assert critical_sigma_w2(tanh, 0.05, bounds=(1.0, 4.0)) == pytest.approx(1.76, abs=0.005)


def test_fixed_point_limits_and_regimes() -> None:
    tanh, relu = numpy_activation("tanh"), numpy_activation("relu")
    ordered = fixed_point(tanh, 0.5, 0.0)
    assert (ordered.q_star, ordered.chi_star, ordered.regime) == (0.0, 0.5, "ordered")
    assert ordered.depth_scale == pytest.approx(1 / math.log(2))
    critical = fixed_point(tanh, 1.0, 0.0)  # q -> 0 only as 1/l; chi -> 1
    assert (critical.q_star, critical.chi_star, critical.depth_scale) == (0.0, 1.0, math.inf)
    exploding = fixed_point(relu, 4.0, 0.0)
    assert (exploding.q_star, exploding.chi_star, exploding.regime) == (math.inf, 2.0, "chaotic")
    assert fixed_point(relu, 2.0, 0.0, q0=3.0).q_star == 3.0  # marginal: every q is fixed
    chaotic = fixed_point(tanh, 2.0, 0.0)
    assert chaotic.q_star == pytest.approx(2 * gaussian_moments(tanh, chaotic.q_star)[1])


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
        a = theory.tap_matrix(n, 1)
        assert (a @ np.ones((n, n)) @ a.T).mean() == pytest.approx(((3 * n - 2) / (3 * n)) ** 2)
    a = theory.tap_matrix(28, 2, zero_padding=False)
    assert a.shape == (14, 28)
    assert (a.T @ np.ones((14, 14)) @ a).mean() == pytest.approx(0.25)


def test_rnn_accepts_one_drive_per_step_and_checks_its_length() -> None:
    model = {"arch": "rnn", "depth": 2, "width": 64, "init": "xavier_normal"}
    drives = np.linspace(0.1, 1.0, 28)
    pred = predict(model, q1=drives)
    first = pred.columns["q"][:28]
    assert first[0] == pytest.approx(0.1) and np.all(first[1:] > drives[1:])
    assert pred.frame().shape == (56, len(theory.COLUMNS) + 1)
    with pytest.raises(TheoryError, match="28"):
        predict(model, q1=[1.0, 2.0])


def test_rnn_input_drive_recovers_the_drives_behind_layer_one() -> None:
    model = {"arch": "rnn", "depth": 2, "width": 64, "activation": "relu", "init": "he_normal"}
    drives = np.linspace(0.2, 2.0, 28)
    pred = predict(model, q1=drives)
    recovered = theory.rnn_input_drive(model, pred.columns["q"][:28])
    np.testing.assert_allclose(recovered, drives, rtol=1e-10)
    summary = pred.summary()  # the rnn is summarised across the top layer's steps
    top = pred.columns["q"][28:]
    assert summary["forward_last_first"] == pytest.approx(top[-1] / top[0])


def test_decay_factor_is_two_to_the_fitted_slope() -> None:
    assert fit_factor(np.arange(9), 0.7 ** np.arange(9)) == pytest.approx(0.7)
    assert math.isnan(fit_factor([0], np.array([1.0])))


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
        assert list(frame.columns) == list(theory.COLUMNS) and len(frame) == 5
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
