"""The residual stream's mean field at initialisation (Yang & Schoenholz 2017) for
nets.residual's pre-activation blocks h_{b+1} = h_b + alpha F_b(h_b).

With zero-mean weights the branch is uncorrelated with the stream it reads, so the second
moments add: q_{b+1} = q_b + alpha^2 q_F, where q_F is the branch's last preact second
moment: layer j of the branch gives sigma_w^2 E[phi(sqrt(q_in) z)^2] + sigma_b^2 from its
activation's input q_in (the stream q_b for the first layer; 1 after a norm). With ReLU
and He (sigma_w^2 = 2), q_F = q_b and alpha = 1 doubles the stream per block (2^L);
alpha = 1/sqrt(L) gives (1 + 1/L)^L < e; SkipInit's alpha = 0 and Fixup's zeroed last
layer keep q_b = q_0: the identity map.

Backward the skip path mirrors it: the stream's gradient variance grows towards the input
by 1 + alpha^2 prod_j sigma_w^2 E[phi'(sqrt(q_in,j) z)^2] per block (no norm; with a norm
the branch's backward factor depends on the batch, and no backward prediction is made).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from initbench.config.geometry import MLP_INPUTS
from initbench.config.runconfig import norm_of
from initbench.meanfield.activations import Array, numpy_activation
from initbench.meanfield.gaussian import gaussian_moments
from initbench.meanfield.geometry import _sigma2, bias_sigma2
from initbench.meanfield.model import TheoryError, model_section, split_ref

RESIDUAL_COLUMNS = {
    "block": "residual block b (1-based)",
    "stream_q": "predicted stream_sq after block b (stream_var: zero-mean weights)",
    "branch_q": "predicted branch_sq, alpha^2 q_F: what block b adds",
    "branch_ratio": "branch_q / the stream's q before the block",
    "grad_stream_ratio": "predicted grad_stream_var / that of the last block (no norm only)",
}


def _alpha(residual: Any, blocks: int) -> float:
    if residual == "1/sqrt(L)":
        return 1 / math.sqrt(blocks)
    if residual == "skipinit":
        return 0.0
    return 1.0 if residual == "fixup" else float(residual)


def _layer_sigma2(model: Mapping[str, Any]) -> list[float]:
    """sigma_w^2 of each branch layer (Fixup: the scaled ones, then 0)."""
    width, m, blocks = int(model["width"]), int(model.get("branch_layers", 2)), int(model["depth"])
    sigma2 = _sigma2("model.init", model["init"], (width, width))
    if isinstance(sigma2, str):
        raise TheoryError(sigma2)
    if model["residual"] != "fixup":
        return [sigma2] * m
    scale = blocks ** (-1 / (2 * m - 2))
    return [sigma2 * scale**2] * (m - 1) + [0.0]


def residual_stream(config: Mapping[str, Any], input_sq: float = 1.0) -> dict[str, Array]:
    """Per block the RESIDUAL_COLUMNS of a residual mlp's config (or model section), from
    standardised inputs of second moment ``input_sq``."""
    model = model_section(config)
    if model.get("residual") is None or model["arch"] != "mlp":
        raise TheoryError("residual_stream is of a residual mlp (model.residual, arch mlp)")
    act = numpy_activation(*split_ref(model["activation"]))
    blocks, width = int(model["depth"]), int(model["width"])
    b2 = bias_sigma2(model)
    stem = _sigma2("model.init", model["init"], (width, MLP_INPUTS))
    if isinstance(b2, str) or isinstance(stem, str):
        raise TheoryError(str(b2 if isinstance(b2, str) else stem))
    alpha2, sigma2 = _alpha(model["residual"], blocks) ** 2, _layer_sigma2(model)
    normed = norm_of(model) != "none"
    q, stream, branch, grad_factor = stem * input_sq + b2, [], [], []
    for _ in range(blocks):
        q_in, chi = q, 1.0
        for s2 in sigma2:
            _, sq, dsq = gaussian_moments(act, 1.0 if normed else q_in)
            chi *= s2 * dsq
            q_in = s2 * sq + b2
        branch.append(alpha2 * q_in)
        grad_factor.append(1 + alpha2 * chi)
        q = q + alpha2 * q_in
        stream.append(q)
    before = np.array([stem * input_sq + b2, *stream[:-1]])
    grad = np.cumprod([1.0, *grad_factor[:0:-1]])[::-1]  # block b's relative to the last
    return {
        "block": np.arange(1, blocks + 1),
        "stream_q": np.array(stream),
        "branch_q": np.array(branch),
        "branch_ratio": np.array(branch) / before,
        "grad_stream_ratio": np.full(blocks, np.nan) if normed else grad,
    }
