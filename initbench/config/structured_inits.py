"""Structured initializers: (semi-)orthogonal, identity and delta-orthogonal weights.

Registered in :data:`initbench.config.initializers.INITIALIZERS` (which imports this
module), with the conventions stated there. torch is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from initbench.config.initializers import INITIALIZERS, Initializer
from initbench.config.registry import Params

if TYPE_CHECKING:
    import torch


class GainParams(Params):
    gain: float = Field(default=1.0, gt=0)


def _apply_orthogonal(t: torch.Tensor, p: GainParams, g: torch.Generator, fans: Any) -> None:
    import torch

    torch.nn.init.orthogonal_(t, p.gain, generator=g)


def _orthogonal_moments(p: GainParams, shape: Sequence[int], fans: Any) -> tuple[float, float]:
    # (rows, cols) = (shape[0], prod(shape[1:])): the orthonormal rows (or columns) fix the
    # sum of squares to gain^2 * min(rows, cols) over rows * cols elements.
    rows, cols = shape[0], math.prod(shape[1:])
    return 0.0, p.gain**2 * min(rows, cols) / (rows * cols)


INITIALIZERS.add(
    "orthogonal",
    Initializer(
        summary="(semi-)orthogonal matrix times gain (Saxe et al. 2014); conv kernels flattened",
        formula="W = gain * Q, Q from QR of a Gaussian matrix (rows or columns orthonormal); "
        "Var = gain^2 min(r, c) / (r c)",
        convention="torch.nn.init.orthogonal_(gain)",
        params=GainParams,
        apply=_apply_orthogonal,
        moments=_orthogonal_moments,
        check=lambda p, shape: (
            None if len(shape) >= 2 else f"orthogonal needs a matrix, got shape {tuple(shape)}"
        ),
    ),
)


def _apply_identity(t: torch.Tensor, p: GainParams, g: torch.Generator, fans: Any) -> None:
    import torch

    with torch.no_grad():
        torch.nn.init.eye_(t)
        t.mul_(p.gain)


def _identity_moments(p: GainParams, shape: Sequence[int], fans: Any) -> tuple[float, float]:
    n = shape[0]
    mean = p.gain / n
    return mean, p.gain**2 / n - mean**2


def _identity_check(p: GainParams, shape: Sequence[int]) -> str | None:
    if len(shape) == 2 and shape[0] == shape[1]:
        return None
    return f"identity needs a square matrix, got shape {tuple(shape)}"


INITIALIZERS.add(
    "identity",
    Initializer(
        summary="identity times gain, for square recurrent weights (IRNN, Le et al. 2015)",
        formula="W = gain * I  (square weights only)",
        convention="torch.nn.init.eye_, scaled by gain",
        params=GainParams,
        apply=_apply_identity,
        moments=_identity_moments,
        check=_identity_check,
    ),
)


def _kernel_centre(shape: Sequence[int]) -> tuple[int, ...]:
    """The centre tap of a conv kernel (out, in, k1, k2, ...): k // 2 along each k."""
    return tuple(k // 2 for k in shape[2:])


def _delta_check(p: GainParams, shape: Sequence[int]) -> str | None:
    if len(shape) < 3:
        return (
            f"delta_orthogonal is for conv kernels (out, in, k1, ...), got shape {tuple(shape)}, "
            "which has no kernel taps (use orthogonal for a matrix)"
        )
    if any(k % 2 == 0 for k in shape[2:]):
        return f"delta_orthogonal needs odd kernel sizes (a centre tap), got shape {tuple(shape)}"
    return None


def _apply_delta_orthogonal(t: torch.Tensor, p: GainParams, g: torch.Generator, fans: Any) -> None:
    import torch

    centre = torch.empty(t.shape[0], t.shape[1], dtype=t.dtype, device=t.device)  # (out, in)
    torch.nn.init.orthogonal_(centre, p.gain, generator=g)
    t.zero_()
    t[(slice(None), slice(None), *_kernel_centre(t.shape))] = centre


def _delta_moments(p: GainParams, shape: Sequence[int], fans: Any) -> tuple[float, float]:
    # gain^2 min(out, in) summed squares at the centre, spread over every element
    out, inp = shape[0], shape[1]
    return 0.0, p.gain**2 * min(out, inp) / math.prod(shape)


INITIALIZERS.add(
    "delta_orthogonal",
    Initializer(
        summary="conv kernel zero but its centre tap, an orthogonal (out x in) matrix times "
        "gain (Xiao et al. 2018): a linear conv stack is then an isometry per position",
        formula="W[:, :, centre] = gain * Q, Q (out x in) from QR of a Gaussian matrix (rows "
        "or columns orthonormal), W = 0 elsewhere; Var = gain^2 min(out, in) / (out in k1 k2)",
        convention="jax.nn.initializers.delta_orthogonal (torch has none); centre = k // 2",
        params=GainParams,
        apply=_apply_delta_orthogonal,
        moments=_delta_moments,
        check=_delta_check,
        mean_field="the mean-field map here spreads a conv's variance over its taps as i.i.d. "
        "weights do; delta-orthogonal puts it all on the centre tap (no spatial averaging, "
        "no loss to the zero padding), so this map does not describe it",
    ),
)
