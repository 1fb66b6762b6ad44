"""The mean-field map's fixed point, the gradient factor chi there, the depth scale and
the order-to-chaos edge (Poole et al. 2016; Schoenholz et al. 2017), with z ~ N(0, 1)::

    q^{l+1} = sigma_w^2 * E_z[phi(sqrt(q^l) z)^2] + sigma_b^2    forward: preact second moment
    chi^l   = sigma_w^2 * E_z[phi'(sqrt(q^l) z)^2]               backward: gradient factor

chi* = chi(q*) < 1 ordered (gradients vanish e-fold every xi = -1/ln chi* layers), = 1
critical (xi = inf), > 1 chaotic (they grow e-fold every 1/ln chi* layers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from initbench.meanfield.activations import NumpyActivation
from initbench.meanfield.gaussian import Q_CEIL, Q_FLOOR, gaussian_moments

Regime = Literal["ordered", "critical", "chaotic"]
CRITICAL_TOL = 1e-9  # |chi* - 1| up to this counts as critical


@dataclass(frozen=True)
class FixedPoint:
    """q* reached from q0 by iterating the forward map, chi* = chi(q*) and the depth scale
    xi = 1/|ln chi*| (Schoenholz et al. 2017; inf at chi* = 1). q* may be 0 or inf, the
    limit the variance runs to; chi* is then its limiting value."""

    q_star: float
    chi_star: float
    depth_scale: float
    regime: Regime


def _bisect_log(
    g: Callable[[float], float], lo: float, hi: float, iters: int = 80, rtol: float = 1e-14
) -> float:
    """A root of g between lo and hi, where g changes sign, bisecting in log space."""
    g_lo = g(lo)
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        g_mid = g(mid)
        if (g_mid > 0) == (g_lo > 0):
            lo, g_lo = mid, g_mid
        else:
            hi = mid
        if hi / lo - 1 < rtol:
            break
    return math.sqrt(lo * hi)


def iterate_limit(forward: Callable[[float], float], q0: float) -> float:
    """Where q <- forward(q) goes from q0: the first fixed point in the direction q moves
    (forward is increasing in q for every activation here), or 0 or inf if there is none."""
    q0 = max(float(q0), Q_FLOOR)
    gap = forward(q0) - q0
    if abs(gap) <= 1e-12 * q0:
        return q0  # marginal: every q is fixed (relu at sigma_w^2 = 2, linear at 1)
    sign, lo = (1.0 if gap > 0 else -1.0), q0
    for k in range(64):  # quarter decades for 8 decades, then strides doubling to the bound
        hi = min(max(lo * 10.0 ** (sign * 0.25 * 2 ** max(0, k - 31)), Q_FLOOR), Q_CEIL)
        if hi == lo:
            break
        turned = forward(hi) - hi
        # a crossing within rounding (1e-12 q) is no fixed point: tanh at sigma_w^2 = 1
        # creeps to 0 as q - 2 q^2, which rounding makes look like sign changes near 1e-16
        if (turned > 0) != (gap > 0) and abs(turned) > 1e-12 * hi:
            return _bisect_log(lambda q: forward(q) - q, min(lo, hi), max(lo, hi))
        lo = hi
    return math.inf if gap > 0 else 0.0


def _regime(chi: float) -> Regime:
    if abs(chi - 1) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


def depth_scale(chi: float) -> float:
    """xi = 1/|ln chi| layers: gradients change e-fold over xi layers; inf at chi = 1."""
    if _regime(chi) == "critical":
        return math.inf
    return 0.0 if chi == 0 else 1.0 / abs(math.log(chi))


def fixed_point_at(q_star: float, chi: float) -> FixedPoint:
    """The FixedPoint of a known q* and chi*, with its depth scale and regime."""
    return FixedPoint(q_star, chi, depth_scale(chi), _regime(chi))


def fixed_point(
    act: NumpyActivation, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0
) -> FixedPoint:
    """q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2 reached from q0, and
    chi* = sigma_w^2 E[phi'(sqrt(q*) z)^2] (Poole et al. 2016; Schoenholz et al. 2017)."""
    q_star = iterate_limit(lambda q: sigma_w2 * gaussian_moments(act, q)[1] + sigma_b2, q0)
    return fixed_point_at(
        q_star, sigma_w2 * gaussian_moments(act, min(max(q_star, Q_FLOOR), Q_CEIL))[2]
    )


def critical_sigma_w2(
    act: NumpyActivation,
    sigma_b2: float = 0.0,
    q0: float = 1.0,
    bounds: tuple[float, float] = (1e-2, 1e2),
) -> float:
    """The sigma_w^2 at which chi* = 1 (the order-to-chaos edge), by bisection; NaN when
    chi* - 1 keeps its sign over ``bounds``. relu: 2 (He et al. 2015); tanh: 1 at
    sigma_b^2 = 0 and 1.76 at sigma_b^2 = 0.05 (Schoenholz et al. 2017)."""

    def excess(sigma_w2: float) -> float:
        return fixed_point(act, sigma_w2, sigma_b2, q0).chi_star - 1.0

    lo, hi = bounds
    if (excess(lo) > 0) == (excess(hi) > 0):
        return math.nan
    return _bisect_log(excess, lo, hi, rtol=1e-10)
