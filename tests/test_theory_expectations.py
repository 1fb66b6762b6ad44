"""Mean-field theory's building blocks (initbench.meanfield) against closed forms,
quadrature, Monte Carlo and the literature's numbers.

Three independent ways to a Gaussian expectation are compared for every activation:
the closed form (written out here where initbench.meanfield has none), the module's composite
quadrature, Gauss-Hermite (numpy's hermegauss, where the integrand is smooth) and a
seeded Monte Carlo mean whose tolerance is its own standard error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from initbench import meanfield
from initbench.config.activations import ACTIVATIONS, build_activation
from initbench.config.initializers import weight_scale_sigma2
from initbench.meanfield import (
    activations,
    critical_sigma_w2,
    fixed_point,
    gaussian_moments,
    numpy_activation,
    quadrature_moments,
)

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


def _hermite(act: meanfield.NumpyActivation, q: float, nodes: int = 150) -> np.ndarray:
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
    """Why the theory does not use plain Gauss-Hermite: tanh's chi at large q, selu's kink."""
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
        ("selu", {}, meanfield.SELU_ALPHA, meanfield.SELU_LAMBDA),
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
