"""Statistics over seeds: mean and sample std that propagate NaN (a diverged seed is
never silently skipped), and Student's t quantile for the theory check."""

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
