"""Gaussian expectations E_z[f(sqrt(q) z)], z ~ N(0, 1), of an activation and its
derivative: closed forms for linear, relu and leaky_relu, otherwise a composite
Gauss-Legendre rule in z (panels split at 0, where elu/selu have a kink, and refined
geometrically around the activation's own scale |z| ~ 1/sqrt(q)).

A plain Gauss-Hermite rule is exact for smooth activations at q <~ 1, but with 100 nodes
it misses tanh's chi at q = 100 by ~90% and selu's E[phi'^2] at q = 1 by ~1%. The tests
check closed forms, this rule and Gauss-Hermite (where it is valid) against Monte Carlo.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.polynomial.legendre import leggauss

from initbench.meanfield.activations import Array, NumpyActivation

Moments = tuple[float, float, float]  # (E[phi], E[phi^2], E[phi'^2]) at one q
Q_FLOOR, Q_CEIL = 1e-300, 1e40  # q range of the fixed-point search (0 and inf beyond)

_LEG_X, _LEG_W = leggauss(12)  # nodes per panel; each panel is a smooth piece
Z_MAX = 12.0  # N(0, 1) mass beyond |z| = 12 is 4e-33
_UNIT_EDGES = np.arange(1.0, Z_MAX + 0.5)  # unit panels resolve the Gaussian itself
_BENDS = 2.0 ** np.arange(-6, 9)  # |x| = 1/64 .. 256: where activations bend


def gaussian_nodes(q: float) -> tuple[Array, Array]:
    """Nodes x = sqrt(q) z and weights w with sum(w f(x)) = E_z[f(sqrt(q) z)], z ~ N(0, 1).

    Composite 12-point Gauss-Legendre on z in [-12, 12] with panel edges at 0 (the kink of
    relu/elu/selu), at every integer and at 2^k / sqrt(q), k = -6..8 (where phi bends):
    432 nodes at q = 1, within 2e-11 of a 40-point rule on 0.1-wide panels for every
    activation and q in 1e-8..1e8.
    """
    q = max(float(q), Q_FLOOR)
    bends = _BENDS / math.sqrt(q)
    positive = np.unique(np.concatenate([_UNIT_EDGES, bends[bends < Z_MAX]]))
    edges = np.concatenate([-positive[::-1], [0.0], positive])
    lo, hi = edges[:-1, None], edges[1:, None]
    z = ((lo + hi) / 2 + (hi - lo) / 2 * _LEG_X).ravel()
    w = ((hi - lo) / 2 * _LEG_W).ravel() * np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(q) * z, w


def quadrature_moments(act: NumpyActivation, q: float) -> Moments:
    """(E phi, E phi^2, E phi'^2) of phi(sqrt(q) z) by the composite rule, closed form or not."""
    x, w = gaussian_nodes(q)
    with np.errstate(over="ignore", under="ignore"):
        y, dy = act.phi(x), act.dphi(x)
    return float(w @ y), float(w @ (y * y)), float(w @ (dy * dy))


def field_moments(act: NumpyActivation, q: Any) -> Array:
    """Moments (..., 3) at every entry of q (a number or an array): closed forms exactly;
    otherwise quadrature at log-spaced q 2% apart across the entries' range, interpolated
    linearly in log q (relative error ~1e-5; exact where all entries are equal)."""
    q = np.maximum(np.asarray(q, dtype=float), Q_FLOOR)
    if act.closed is not None:
        return np.stack(np.broadcast_arrays(*act.closed(q)), axis=-1)
    lo, hi = float(q.min()), float(q.max())
    if hi <= lo * (1 + 1e-12):
        return np.broadcast_to(np.array(quadrature_moments(act, lo)), (*q.shape, 3)).copy()
    grid = np.geomspace(lo, hi, min(100, 2 + int(math.log(hi / lo) / 0.02)))
    table = np.array([quadrature_moments(act, g) for g in grid])
    return np.stack([np.interp(np.log(q), np.log(grid), table[:, k]) for k in range(3)], axis=-1)


def gaussian_moments(act: NumpyActivation, q: float) -> Moments:
    """(E phi, E phi^2, E phi'^2) of phi(sqrt(q) z), z ~ N(0, 1): closed form where one
    exists (linear, relu, leaky_relu), the composite quadrature otherwise."""
    mean, sq, dsq = field_moments(act, q)
    return float(mean), float(sq), float(dsq)
