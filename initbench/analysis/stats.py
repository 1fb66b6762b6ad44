"""Statistics over seeds: mean and sample std that propagate NaN (a diverged seed is
never silently skipped), Student's t quantile for the theory check, and the chi-square
quantile for a variance's confidence interval (the finite-width spread)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (n-1) over seeds; NaN propagates; std is NaN for one seed."""
    with np.errstate(invalid="ignore", over="ignore"):
        mean = float(np.mean(values)) if len(values) else math.nan
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return mean, std


def nan_mean(values: pd.Series) -> float:
    """Mean that propagates NaN (pandas' reductions skip it by default)."""
    return mean_std(values.to_numpy(float))[0]


def nan_std(values: pd.Series) -> float:
    """Sample std (n-1) that propagates NaN; NaN for a single value."""
    return mean_std(values.to_numpy(float))[1]


def _t_central(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with an integer dof >= 1, exactly (Abramowitz & Stegun
    26.7.3 odd dof, 26.7.4 even dof)."""
    theta = math.atan(t / math.sqrt(dof))
    c2, total, term = math.cos(theta) ** 2, 1.0, 1.0
    if dof % 2 == 0:
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if dof == 1:
        return 2 * theta / math.pi
    for k in range(1, (dof - 1) // 2):
        term *= c2 * 2 * k / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def student_t_quantile(p: float, dof: int) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with dof >= 1 degrees of freedom, by
    bisection on the exact distribution: 12.706 at p = 0.975 and dof 1, 4.303 at dof 2."""
    if not 0.5 < p < 1 or dof < 1:
        raise ValueError(f"need 0.5 < p < 1 and dof >= 1, got p={p}, dof={dof}")
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _t_central(hi, dof) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-13 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, dof) < target else (lo, mid)
    return (lo + hi) / 2


def _lower_gamma(a: float, x: float) -> float:
    """The regularized lower incomplete gamma P(a, x): its series for x < a + 1, else
    1 - the continued fraction of Q (Numerical Recipes, 6.2; Lentz's method)."""
    if x <= 0:
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = 0
        while abs(term) > 1e-16 * abs(total):
            n += 1
            term *= x / (a + n)
            total += term
        return total * math.exp(log_front)
    tiny = 1e-300
    b, c, d = x + 1 - a, 1 / tiny, 1 / (x + 1 - a)
    fraction, i = d, 0
    while True:
        i += 1
        an, b = -i * (i - a), b + 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        fraction *= d * c
        if abs(d * c - 1) < 1e-16:
            return 1 - math.exp(log_front) * fraction


def chi2_quantile(p: float, dof: int) -> float:
    """The p-quantile (0 < p < 1) of the chi-square distribution with dof >= 1 degrees
    of freedom, by bisection on its exact CDF P(dof/2, x/2): 5.024 at p = 0.975 and
    dof 1, 0.0506 at p = 0.025 and dof 2."""
    if not 0 < p < 1 or dof < 1:
        raise ValueError(f"need 0 < p < 1 and dof >= 1, got p={p}, dof={dof}")
    lo, hi = 0.0, float(dof) + 1.0
    while _lower_gamma(dof / 2, hi / 2) < p:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-13 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _lower_gamma(dof / 2, mid / 2) < p else (lo, mid)
    return (lo + hi) / 2


def variance_interval(variance: float, dof: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided ``level`` confidence interval of a normal population's variance from
    a sample variance with ``dof`` degrees of freedom: dof s² / chi2 quantiles at
    (1 + level) / 2 and (1 - level) / 2. (NaN, NaN) for dof < 1 or a NaN variance."""
    if dof < 1 or math.isnan(variance):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return (
        dof * variance / chi2_quantile(1 - tail, dof),
        dof * variance / chi2_quantile(tail, dof),
    )
