"""The correlation map, its fixed point c* and the depth scales xi_c and xi_q
(initbench.meanfield.depthscale, fixedpoint) against Schoenholz et al. 2017's numbers,
closed forms and a Monte Carlo estimate made independently of the module's quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

from initbench.meanfield import critical_sigma_w2, fixed_point, numpy_activation
from initbench.meanfield.depthscale import (
    correlation_map,
    correlation_moments,
    variance_slope,
)
from initbench.meanfield.fixedpoint import INFINITE_Q

TANH = numpy_activation("tanh")

# Schoenholz et al. 2017 (tanh, sigma_b^2 = 0.05): xi_c in the chaotic phase (Fig. 2) and
# in the ordered phase; the issue asked for 5%, these hold to 0.5%.
PAPER_XI_C = [(2.0, 25.2), (2.5, 11.8), (3.0, 9.05), (4.0, 6.98), (1.0, 3.63), (1.25, 6.80)]
PAPER_XI_C += [(1.5, 15.8)]
PAPER_CRITICAL = [(0.0, 1.0), (0.01, 1.424), (0.05, 1.761), (0.1, 1.986)]  # (sigma_b^2, sigma_w^2)


@pytest.mark.parametrize(("sigma_w2", "xi_c"), PAPER_XI_C)
def test_xi_c_reproduces_schoenholz(sigma_w2: float, xi_c: float) -> None:
    fp = fixed_point(TANH, sigma_w2, 0.05)
    assert fp.depth_scale == pytest.approx(xi_c, rel=0.005)
    assert fp.regime == ("chaotic" if sigma_w2 >= 2 else "ordered")


@pytest.mark.parametrize(("sigma_b2", "sigma_w2"), PAPER_CRITICAL)
def test_critical_line_reproduces_schoenholz(sigma_b2: float, sigma_w2: float) -> None:
    assert critical_sigma_w2(TANH, sigma_b2) == pytest.approx(sigma_w2, rel=0.005)


def test_xi_c_is_not_the_gradient_scale_in_the_chaotic_phase() -> None:
    """The old output 1/ln chi_1 (21.48 at sigma_w^2 = 2) is the gradients' growth scale."""
    fp = fixed_point(TANH, 2.0, 0.05)
    assert 1 / math.log(fp.chi_star) == pytest.approx(21.48, abs=0.01)
    assert fp.depth_scale == pytest.approx(-1 / math.log(fp.chi_c))
    assert fp.depth_scale > 25


def _mc_sampled(sigma_w2: float, sigma_b2: float, c: float, q: float, n: int = 400_000) -> dict:
    """From seeded samples alone: q* by iterating the sampled variance map; at the given q
    and correlation c, the sampled correlation map f and its slope chi_c (means and
    standard errors)."""
    rng = np.random.default_rng(2017)
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    q_mc = 1.0
    for _ in range(200):
        q_mc = sigma_w2 * float(np.mean(np.tanh(math.sqrt(q_mc) * z1) ** 2)) + sigma_b2
    y1 = np.tanh(math.sqrt(q) * z1)
    y2 = np.tanh(math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2))
    f = (sigma_w2 * y1 * y2 + sigma_b2) / q
    chi = sigma_w2 * (1 - y1**2) * (1 - y2**2)
    sem = math.sqrt(n)
    return {"q": q_mc, "f": (f.mean(), f.std() / sem), "chi_c": (chi.mean(), chi.std() / sem)}


@pytest.mark.parametrize("sigma_w2", [2.0, 3.0, 4.0])
def test_chaotic_fixed_point_agrees_with_monte_carlo(sigma_w2: float) -> None:
    """The sampled maps at the module's q* and c*: q* within 1%, c* maps to itself and the
    slope is chi_c, each within 4 standard errors of the samples. (xi_c itself amplifies the
    slope's error by 1 / (chi_c |ln chi_c|), 26 at sigma_w^2 = 2, so it is compared only
    where that leaves the samples 5%; solving the sampled map for c* would likewise amplify
    its noise by 1 / (1 - chi_c).)"""
    fp = fixed_point(TANH, sigma_w2, 0.05)
    mc = _mc_sampled(sigma_w2, 0.05, fp.c_star, fp.q_star)
    assert fp.q_star == pytest.approx(mc["q"], rel=0.01)
    (f, f_err), (chi, chi_err) = mc["f"], mc["chi_c"]
    assert abs(f - fp.c_star) <= 4 * f_err and abs(chi - fp.chi_c) <= 4 * chi_err
    if chi_err / (chi * abs(math.log(chi))) < 0.01:
        assert fp.depth_scale == pytest.approx(-1 / math.log(chi), rel=0.05)


def test_c_star_is_a_fixed_point_of_the_correlation_map() -> None:
    for sigma_w2, sigma_b2 in [(2.0, 0.05), (4.0, 0.3), (1.5, 0.0)]:
        fp = fixed_point(TANH, sigma_w2, sigma_b2)
        c = fp.c_star
        assert correlation_map(TANH, sigma_w2, sigma_b2, fp.q_star, c) == pytest.approx(c, abs=1e-9)
        assert 0 <= c < 1 and fp.chi_c < 1  # stable


def test_odd_activation_without_bias_decorrelates_fully() -> None:
    fp = fixed_point(TANH, 2.0, 0.0)
    assert fp.c_star == 0.0
    # at c = 0 the expectation factorises: chi_c = sigma_w^2 E[phi'(u)]^2
    z, w = hermegauss(80)
    mean_slope = float(w @ (1 - np.tanh(math.sqrt(fp.q_star) * z) ** 2)) / math.sqrt(2 * math.pi)
    assert fp.chi_c == pytest.approx(2.0 * mean_slope**2, rel=1e-9)


def test_ordered_phase_has_c_star_one_and_chi_c_chi_1() -> None:
    fp = fixed_point(TANH, 1.25, 0.05)
    assert (fp.c_star, fp.chi_c) == (1.0, fp.chi_star)
    assert correlation_map(TANH, 1.25, 0.05, fp.q_star, 1.0) == pytest.approx(1.0, abs=1e-9)


def test_critical_point_has_infinite_xi_c() -> None:
    sigma_w2 = critical_sigma_w2(TANH, 0.05)
    assert fixed_point(TANH, sigma_w2, 0.05).depth_scale > 1e3
    assert fixed_point(TANH, 1.0, 0.0).depth_scale == math.inf


@pytest.mark.parametrize(("q", "c"), [(0.5, 0.3), (2.0, 0.9), (1.0, -0.6), (4.0, 0.999)])
def test_relu_moments_are_the_arc_cosine_kernel(q: float, c: float) -> None:
    """Cho & Saul 2009: E[relu relu] = q (sqrt(1-c^2) + (pi - acos c) c) / 2 pi and
    E[step step] = (pi - acos c) / 2 pi. The kink is off the z2 panels: ~1e-4 and 1e-3."""
    theta = math.acos(c)
    pair, slope = correlation_moments(numpy_activation("relu"), q, c)
    expected = q * (math.sqrt(1 - c * c) + (math.pi - theta) * c) / (2 * math.pi)
    assert pair == pytest.approx(expected, rel=1e-3)
    assert slope == pytest.approx((math.pi - theta) / (2 * math.pi), abs=1e-3)


@pytest.mark.parametrize(("q", "c"), [(0.3, 0.2), (1.5, 0.8), (1.0, -0.4)])
def test_tanh_moments_equal_two_dimensional_gauss_hermite(q: float, c: float) -> None:
    z, w = hermegauss(60)
    w = w / w.sum()
    u1 = math.sqrt(q) * z[:, None]
    u2 = math.sqrt(q) * (c * z[:, None] + math.sqrt(1 - c * c) * z[None, :])
    weights = w[:, None] * w[None, :]
    pair = float((weights * np.tanh(u1) * np.tanh(u2)).sum())
    slope = float((weights * (1 - np.tanh(u1) ** 2) * (1 - np.tanh(u2) ** 2)).sum())
    assert correlation_moments(TANH, q, c) == pytest.approx((pair, slope), rel=1e-5)


def test_xi_q_is_the_variance_maps_slope() -> None:
    fp = fixed_point(TANH, 2.5, 0.05)
    h = 1e-5 * fp.q_star

    def forward(q: float) -> float:
        return 2.5 * correlation_moments(TANH, q, 1.0)[0] + 0.05  # c = 1: E[phi^2]

    slope = (forward(fp.q_star + h) - forward(fp.q_star - h)) / (2 * h)
    assert variance_slope(TANH, 2.5, fp.q_star) == pytest.approx(slope, rel=1e-6)
    assert fp.xi_q == pytest.approx(-1 / math.log(slope), rel=1e-6)


def test_unbounded_variance_gives_no_depth_scale_and_says_why() -> None:
    fp = fixed_point(numpy_activation("relu"), 4.0, 0.0)
    assert math.isinf(fp.q_star) and fp.regime == "chaotic"
    assert math.isnan(fp.depth_scale) and math.isnan(fp.xi_q) and fp.note == INFINITE_Q
