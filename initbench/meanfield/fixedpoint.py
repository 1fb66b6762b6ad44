"""The mean-field map's fixed point, the gradient factor chi_1 there, the correlation
depth scales and the order-to-chaos edge (Poole et al. 2016; Schoenholz et al. 2017),
with z ~ N(0, 1)::

    q^{l+1} = sigma_w^2 * E_z[phi(sqrt(q^l) z)^2] + sigma_b^2    forward: preact second moment
    chi_1   = sigma_w^2 * E_z[phi'(sqrt(q*) z)^2]                backward: gradient factor

chi_1 < 1 ordered (gradients vanish e-fold every -1/ln chi_1 layers), = 1 critical, > 1
chaotic (they grow). The correlation map, its fixed point c* and the depth scales xi_c
(how fast two inputs' correlation forgets where it started) and xi_q are in
:mod:`~initbench.meanfield.depthscale`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from initbench.meanfield.activations import NumpyActivation
from initbench.meanfield.depthscale import correlation_fixed_point, variance_slope
from initbench.meanfield.gaussian import Q_CEIL, Q_FLOOR, gaussian_moments

Regime = Literal["ordered", "critical", "chaotic"]
CRITICAL_TOL = 1e-9  # |chi_1 - 1| up to this counts as critical
INFINITE_Q = (
    "q* = inf (the variance grows without bound): there is no fixed point to linearise "
    "the correlation map about, so no xi_c or xi_q"
)


@dataclass(frozen=True)
class FixedPoint:
    """The fixed point of the mean-field maps (Schoenholz et al. 2017): q* reached from q0
    by iterating the variance map (0 or inf where the variance runs there), chi_star =
    chi_1 at q* (its limit at q* = 0 or inf), the correlation map's stable fixed point
    ``c_star`` and slope there ``chi_c``, the correlation depth scale ``depth_scale`` =
    xi_c = -1/ln chi_c (inf when critical) and the variance one ``xi_q``. ``note`` says why
    the correlation quantities are NaN, where they are."""

    q_star: float
    chi_star: float
    depth_scale: float
    regime: Regime
    c_star: float = math.nan
    chi_c: float = math.nan
    xi_q: float = math.nan
    note: str | None = None

    def summary(self) -> dict[str, float | str | None]:
        """The fields by name, as ``initbench theory`` and its JSON print them."""
        return dataclasses.asdict(self)


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


def depth_scale(slope: float) -> float:
    """-1/ln slope layers: a map whose slope at its stable fixed point is ``slope`` (< 1)
    approaches it as exp(-l / xi); inf at slope 1 (within CRITICAL_TOL), 0 at slope 0,
    NaN above 1 (no stable fixed point: nothing to approach)."""
    if abs(slope - 1) <= CRITICAL_TOL:
        return math.inf
    if not 0 <= slope < 1:
        return math.nan
    return 0.0 if slope == 0 else -1.0 / math.log(slope)


def fixed_point_at(q_star: float, chi: float, note: str | None = None) -> FixedPoint:
    """The FixedPoint of a known q* and chi_1 whose correlation map is not modelled
    (batchnorm, rnn): ``note`` says why; xi_c and xi_q are NaN."""
    return FixedPoint(q_star, chi, math.nan, _regime(chi), note=note)


def variance_fixed_point(
    act: NumpyActivation, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0
) -> tuple[float, float]:
    """(q*, chi_1): where the variance map goes from q0 (:func:`iterate_limit`) and
    sigma_w^2 E[phi'(sqrt(q*) z)^2] there (its limit at q* = 0 or inf)."""
    q_star = iterate_limit(lambda q: sigma_w2 * gaussian_moments(act, q)[1] + sigma_b2, q0)
    return q_star, sigma_w2 * gaussian_moments(act, min(max(q_star, Q_FLOOR), Q_CEIL))[2]


def fixed_point(
    act: NumpyActivation, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0
) -> FixedPoint:
    """q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2 reached from q0,
    chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2], the correlation map's c* and chi_c, and the
    depth scales xi_c and xi_q (Poole et al. 2016; Schoenholz et al. 2017). At q* = 0
    (sigma_b^2 = 0 and phi(0) = 0, ordered or critical) they are the limits as q* -> 0."""
    q_star, chi = variance_fixed_point(act, sigma_w2, sigma_b2, q0)
    regime = _regime(chi)
    if math.isinf(q_star):
        return FixedPoint(q_star, chi, math.nan, regime, note=INFINITE_Q)
    if regime == "chaotic":
        c_star, chi_c = correlation_fixed_point(act, sigma_w2, sigma_b2, q_star, chi)
    else:
        c_star, chi_c = 1.0, chi  # f'(1) = chi_1 <= 1 and f is convex: c* = 1
    xi_q = depth_scale(variance_slope(act, sigma_w2, q_star))
    return FixedPoint(q_star, chi, depth_scale(chi_c), regime, c_star, chi_c, xi_q)


def critical_sigma_w2(
    act: NumpyActivation,
    sigma_b2: float = 0.0,
    q0: float = 1.0,
    bounds: tuple[float, float] = (1e-2, 1e2),
) -> float:
    """The sigma_w^2 at which chi_1 = 1 (the order-to-chaos edge), by bisection; NaN when
    chi_1 - 1 keeps its sign over ``bounds``. relu: 2 (He et al. 2015); tanh: 1 at
    sigma_b^2 = 0 and 1.76 at sigma_b^2 = 0.05 (Schoenholz et al. 2017)."""

    def excess(sigma_w2: float) -> float:
        return variance_fixed_point(act, sigma_w2, sigma_b2, q0)[1] - 1.0

    lo, hi = bounds
    if (excess(lo) > 0) == (excess(hi) > 0):
        return math.nan
    return _bisect_log(excess, lo, hi, rtol=1e-10)
