"""The two-pass path: a tensor's moments at float32 precision whatever its values.

The packed reduction (:mod:`initbench.measure.reduce`) derives a tensor's moments from
Σx and Σx² in float32 pieces. Where that formula cannot keep float32 precision (squares
that underflow or overflow, a mean large against the spread, non-finite values) the
tensor is measured again here: exact power-of-two scaling, centring, and the corrected
two-pass formula.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

_EXPONENT_BITS = {  # dtype -> (integer dtype of its width, mask of the exponent field)
    torch.float32: (torch.int32, 0x7F800000),
    torch.float64: (torch.int64, 0x7FF0000000000000),
}


def flat_rows(stacked: torch.Tensor) -> torch.Tensor:
    """(G, ...) -> (G, n) without autograd history, in float32 or float64."""
    flat = stacked.detach().reshape(stacked.shape[0], -1)
    return flat if flat.dtype in _EXPONENT_BITS else flat.float()


def _power_of_two_floor(peak: torch.Tensor) -> torch.Tensor:
    """2^floor(log2 peak) within the dtype's normal range (the largest for a non-finite
    peak): dividing by it is exact and leaves every |x| / scale below 2."""
    int_dtype, mask = _EXPONENT_BITS[peak.dtype]
    info = torch.finfo(peak.dtype)
    scale = (peak.view(int_dtype) & mask).view(peak.dtype)
    return scale.clamp_(info.tiny, 2.0 ** math.floor(math.log2(info.max)))


def raw_moments(flat: torch.Tensor) -> torch.Tensor:
    """(G, n) -> (G, 5) in the input's dtype: per row the peak |x|, the scale s, the mean
    m of y = x / s, and the sums of d and d^2 where d = y - m (see :func:`finish_moments`).

    Two-pass with a power-of-two scale: y is exact, |y| < 2, so float32 squares of tiny
    (1e-20) or huge values neither underflow nor overflow, and centring on m removes the
    cancellation of a large mean. A row with a non-finite element gives non-finite sums.
    """
    n = flat.shape[1]
    peak = torch.maximum(flat.amax(dim=1), flat.amin(dim=1).neg_())  # (G,); NaN propagates
    scale = _power_of_two_floor(peak)
    y = flat / scale[:, None]
    mean = y.sum(dim=1).div_(n)
    sum_d = y.sub_(mean[:, None]).sum(dim=1)
    return torch.stack([peak, scale, mean, sum_d, y.square_().sum(dim=1)], dim=1)


def finish_moments(raw: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """(R, 5) from :func:`raw_moments` and (R,) element counts -> (R, 4) float64: mean,
    unbiased variance, mean square and L2 norm of each row's tensor.

    Corrected two-pass formula (Chan, Golub & LeVeque 1983): var = (Σd² − (Σd)²/n)/(n−1),
    mean = (m + Σd/n)·s. A tensor with a non-finite element gives what the float64
    reference gives: mean ±inf or NaN, var NaN, sq and norm inf (NaN if it holds a NaN).
    """
    peak, scale, mean_y, sum_d, sum_d2 = raw.double().unbind(dim=1)
    finite = torch.isfinite(peak)
    mean = torch.where(finite, mean_y + sum_d / n, mean_y) * scale
    centred = (sum_d2 - sum_d * sum_d / n).clamp_(min=0.0) * scale.square()  # n·biased var
    sq = torch.where(finite, centred / n + mean.square(), peak)
    return torch.stack([mean, centred / (n - 1), sq, (sq * n).sqrt()], dim=1)


def two_pass_moments(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """(mean, var, sq, norm) of each tensor by the two-pass path, as a (G, 4) host array
    (same-shape tensors measured together)."""
    out = np.empty((len(tensors), 4))
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, tensor in enumerate(tensors):
        by_shape[tuple(tensor.shape)].append(i)
    with torch.no_grad():
        for rows in by_shape.values():
            flat = flat_rows(torch.stack([tensors[i] for i in rows]))
            n = torch.full((len(rows),), flat.shape[1], dtype=torch.float64, device=flat.device)
            out[rows] = finish_moments(raw_moments(flat), n).cpu().numpy()
    return out
