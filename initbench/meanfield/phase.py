"""The order-to-chaos phase diagram of one activation over the (sigma_w^2, sigma_b^2) plane
(Poole et al. 2016, Fig. 1; Schoenholz et al. 2017, Fig. 1-2): every point's fixed point,
phase and depth scales, and the critical line chi_1 = 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from initbench.meanfield.activations import NumpyActivation, numpy_activation
from initbench.meanfield.fixedpoint import critical_sigma_w2, fixed_point
from initbench.meanfield.model import TheoryError, split_ref

if TYPE_CHECKING:
    import pandas as pd

# The plane Schoenholz et al. 2017 draw for tanh (Fig. 1: sigma_w^2 1..4, sigma_b^2 0..0.1
# in their experiments), widened to show the ordered phase below sigma_w^2 = 1.
SIGMA_W2_RANGE: Final = (0.5, 4.5)
SIGMA_B2_RANGE: Final = (0.0, 0.3)
RESOLUTION: Final = 25  # points per axis
GRID_COLUMNS: Final = (
    "sigma_w2",
    "sigma_b2",
    "q_star",
    "chi_star",
    "c_star",
    "chi_c",
    "xi_q",
    "depth_scale",
    "regime",
)


def checked_activation(activation: str | Mapping[str, Any]) -> NumpyActivation:
    """The numpy activation of a reference; TheoryError (with "did you mean") if unknown."""
    from pydantic import ValidationError

    from initbench.config.registry import UnknownNameError

    try:
        return numpy_activation(*split_ref(activation))
    except UnknownNameError as exc:
        raise TheoryError(f"activation: {exc.message}") from None
    except ValidationError as exc:
        raise TheoryError(f"activation: {exc}") from None


def axes(resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """The sigma_w^2 and sigma_b^2 values of the default plane, ``resolution`` each."""
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    return np.linspace(*SIGMA_W2_RANGE, resolution), np.linspace(*SIGMA_B2_RANGE, resolution)


def phase_grid(
    activation: str | Mapping[str, Any], sigma_w2: Sequence[float], sigma_b2: Sequence[float]
) -> pd.DataFrame:
    """A row per (sigma_w^2, sigma_b^2): q*, chi_1 (``chi_star``), c*, chi_c, xi_q, xi_c
    (``depth_scale``) and the phase (``regime``), as :func:`fixed_point` gives them."""
    import pandas as pd

    act = checked_activation(activation)
    rows = []
    for b2 in sigma_b2:
        for w2 in sigma_w2:
            fixed = fixed_point(act, float(w2), float(b2)).summary()
            rows.append({"sigma_w2": float(w2), "sigma_b2": float(b2), **fixed})
    return pd.DataFrame(rows, columns=list(GRID_COLUMNS))


def critical_line(activation: str | Mapping[str, Any], sigma_b2: Sequence[float]) -> pd.DataFrame:
    """The order-to-chaos edge: for each sigma_b^2 the sigma_w^2 where chi_1 = 1 (NaN where
    there is none in :func:`critical_sigma_w2`'s bounds)."""
    import pandas as pd

    act = checked_activation(activation)
    edge = [critical_sigma_w2(act, float(b2)) for b2 in sigma_b2]
    return pd.DataFrame({"sigma_b2": np.asarray(sigma_b2, dtype=float), "sigma_w2": edge})
