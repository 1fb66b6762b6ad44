"""The correlation map of two inputs through a wide random network, its fixed point c* and
the depth scales xi_q and xi_c (Poole et al. 2016; Schoenholz et al. 2017, Sec. 3).

With the variance at its fixed point q*, two inputs whose pre-activations have correlation
c map to (u1, u2) ~ N(0, q* [[1, c], [c, 1]]) and the next layer's correlation is::

    f(c)   = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*        the correlation map
    chi_c  = f'(c*) = sigma_w^2 E[phi'(u1) phi'(u2)] at c = c*      its slope at c*
    xi_c   = -1 / ln chi_c                                            correlation depth scale
    xi_q   = -1 / ln (d/dq sigma_w^2 E[phi(sqrt(q) z)^2] at q*)       variance depth scale

E[phi(u1) phi(u2)] = sum_k a_k^2 c^k (a_k: phi's Hermite coefficients at q*), so f is
increasing and convex on [0, 1] with f(1) = 1 and f'(1) = chi_1: for chi_1 <= 1 (ordered,
critical) c* = 1 and chi_c = chi_1; for chi_1 > 1 (chaotic) f has exactly one fixed point
c* in [0, 1), reached by Newton's method from c = 0 (monotone, as f is convex).
"""

from __future__ import annotations

import math

import numpy as np

from initbench.meanfield.activations import NumpyActivation
from initbench.meanfield.gaussian import Q_FLOOR, gaussian_nodes

_NEWTON_STEPS = 60
_C_TOL = 1e-13


def correlation_moments(act: NumpyActivation, q: float, c: float) -> tuple[float, float]:
    """(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)]) for (u1, u2) ~ N(0, q [[1, c], [c, 1]]).

    u1 = sqrt(q) z1 and u2 = c u1 + sqrt(1 - c^2) sqrt(q) z2, integrated by the product of
    :func:`~initbench.meanfield.gaussian.gaussian_nodes` in z1 and z2 (its panels resolve phi's
    bends in u1; in z2 each panel is at most 1 wide and u2 varies at most as fast as u1)."""
    x, w = gaussian_nodes(q)  # x = sqrt(q) z
    s = math.sqrt(max(1.0 - c * c, 0.0))
    u2 = c * x[:, None] + s * x[None, :]  # (n, n): row i is z1_i, column j is z2_j
    with np.errstate(over="ignore", under="ignore"):
        y1, dy1 = act.phi(x), act.dphi(x)
        y2, dy2 = act.phi(u2), act.dphi(u2)
    return float((w * y1) @ y2 @ w), float((w * dy1) @ dy2 @ w)


def correlation_map(
    act: NumpyActivation, sigma_w2: float, sigma_b2: float, q_star: float, c: float
) -> float:
    """f(c) = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*: the next layer's correlation."""
    return (sigma_w2 * correlation_moments(act, q_star, c)[0] + sigma_b2) / q_star


def correlation_fixed_point(
    act: NumpyActivation, sigma_w2: float, sigma_b2: float, q_star: float, chi_1: float
) -> tuple[float, float]:
    """(c*, chi_c): the correlation map's stable fixed point and its slope there. chi_1 <= 1:
    c* = 1 and chi_c = chi_1; chi_1 > 1: Newton's method from c = 0 (see the module)."""
    if chi_1 <= 1.0:
        return 1.0, chi_1
    c = 0.0
    for _ in range(_NEWTON_STEPS):
        pair, slope = correlation_moments(act, q_star, c)
        gap = (sigma_w2 * pair + sigma_b2) / q_star - c  # >= 0 left of c*
        step = gap / (1.0 - sigma_w2 * slope)
        if not step > _C_TOL:  # gap 0 (c* = 0: odd phi, no bias) or converged
            break
        c = min(c + step, 1.0)
    return c, sigma_w2 * correlation_moments(act, q_star, c)[1]


def variance_slope(act: NumpyActivation, sigma_w2: float, q: float) -> float:
    """d/dq of sigma_w^2 E[phi(sqrt(q) z)^2] = sigma_w^2 E[phi phi' z] / sqrt(q) (by parts),
    the slope of the variance map; at q -> 0 it tends to sigma_w^2 phi'(0)^2."""
    q = max(float(q), Q_FLOOR)
    x, w = gaussian_nodes(q)
    root = math.sqrt(q)
    with np.errstate(over="ignore", under="ignore"):
        return float(sigma_w2 * (w @ (act.phi(x) / root * act.dphi(x) * (x / root))))
