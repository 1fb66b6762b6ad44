"""What the mean-field map needs of a model: each layer's sigma_w^2 and fan ratio from its
initializer and its shape (``initbench.config.geometry``, as the models build them), and
a CNN's tap matrices (Xiao et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from initbench.config.architectures import ARCHITECTURES
from initbench.config.geometry import IMAGE_SIZE, cnn_strides, input_weight_shapes
from initbench.config.initializers import INITIALIZERS, compute_fans, expected_moments
from initbench.config.runconfig import input_init, layer_widths
from initbench.meanfield.activations import Array
from initbench.meanfield.model import recurrent_init, split_ref


def tap_matrix(n_in: int, stride: int, zero_padding: bool = True) -> Array:
    """A (n_out x n_in): row o holds 1/3 at each input position that tap k = 0, 1, 2 of
    output o reads (3 taps, padding 1, ``stride``); taps on the zero padding are dropped,
    or, without ``zero_padding``, wrap around as on an unbounded map. A 3x3 conv's variance
    field goes forward as A v A^T (Xiao et al. 2018), a gradient's back as A^T G A."""
    n_out = (n_in - 1) // stride + 1
    taps = stride * np.arange(n_out)[:, None] + np.arange(3) - 1  # (n_out, 3) input rows
    keep = (taps >= 0) & (taps < n_in) if zero_padding else np.ones(taps.shape, dtype=bool)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    a = np.zeros((n_out, n_in))
    np.add.at(a, (rows[keep], (taps % n_in)[keep]), 1 / 3)
    return a


def cnn_tap_matrices(depth: int, zero_padding: bool = True) -> list[Array]:
    """One tap matrix per conv layer, from the 28 x 28 image down the strides."""
    maps, n = [], IMAGE_SIZE
    for stride in cnn_strides(depth):
        maps.append(tap_matrix(n, stride, zero_padding))
        n = maps[-1].shape[0]
    return maps


@dataclass(frozen=True)
class Geometry:
    """What the map needs of an architecture (index 0 = layer 1): ``sigma_w2``, fan_in
    Var(W) of each layer's (input) weight; ``fan_ratio``, its fan_out / fan_in; ``maps``,
    its tap matrix (1 x 1 without spatial extent); ``hidden_sigma2``, sigma_w^2 of a hidden
    layer (for the fixed point at any depth); ``sigma_rec2``, the rnn's recurrent one."""

    sigma_w2: Array
    fan_ratio: Array
    maps: list[Array]
    hidden_sigma2: float
    sigma_rec2: float = 0.0


def _sigma2(
    key: str, ref: Any, shape: Sequence[int], fans: tuple[int, int] | None = None
) -> float | str:
    """fan_in Var(W) of the weight ``ref`` initialises (with ``fans``: Var(b) of a bias), or
    why the mean-field map cannot use it."""
    name, params = split_ref(ref)
    what = f"{key} {name!r} ({INITIALIZERS.get(name).formula})"
    if INITIALIZERS.get(name).mean_field is not None:
        return f"{what}: {INITIALIZERS.get(name).mean_field}; no prediction"
    mean, var = expected_moments(name, params, shape, fans)
    if mean != 0.0:
        return (
            f"{what} has mean {mean:.4g} per element, not 0: the mean-field map assumes "
            "i.i.d. zero-mean weights and biases, so no prediction is shown"
        )
    if fans is not None:
        return var
    if var == 0.0:
        return f"{what} is constant: nothing random, the symmetry never breaks; no prediction"
    return compute_fans(shape)[0] * var


# Why a gated cell gets no prediction.
GATED_REASON = (
    "no mean-field prediction for gated cells: the theory exists only for simplified ones "
    "(the minimal, GRU-like cell of Chen, Pennington & Schoenholz 2018, with untied "
    "gate weights at infinite width), not for the full {arch} that was trained"
)


def geometry_of(model: Mapping[str, Any], padding_correction: bool) -> Geometry | str:
    """The Geometry of a model section, or why no prediction can be made."""
    arch, depth, widths = model["arch"], model["depth"], layer_widths(model)
    if ARCHITECTURES.get(arch).gates:
        return GATED_REASON.format(arch=arch)
    sequence = model.get("sequence", "rows")
    padded = widths if depth >= 2 else widths * 2  # [1] is a hidden layer's
    shapes = input_weight_shapes(arch, max(depth, 2), padded, sequence)
    scale = {s: _sigma2("model.init", model["init"], s) for s in dict.fromkeys(shapes)}
    key, ref = input_init(model, 1)
    first = scale[shapes[0]] if key == "init" else _sigma2(f"model.{key}", ref, shapes[0])
    rec: float | str = 0.0
    if arch == "rnn":
        rec = _sigma2("model.recurrent_init", recurrent_init(model), (widths[0], widths[0]))
    for value in [*scale.values(), first, rec]:
        if isinstance(value, str):
            return value
    hidden, shapes = float(scale[shapes[1]]), shapes[:depth]
    maps = (
        cnn_tap_matrices(depth, padding_correction) if arch == "cnn" else [np.ones((1, 1))] * depth
    )
    ratio = [compute_fans(s)[1] / compute_fans(s)[0] for s in shapes]
    sigma_w2 = np.array([first, *(scale[s] for s in shapes[1:])], dtype=float)
    return Geometry(sigma_w2, np.array(ratio), maps, hidden, float(rec))


def bias_sigma2(model: Mapping[str, Any]) -> float | str:
    """sigma_b^2 of model.bias_init (with a hidden weight's fans), or why it is unusable."""
    widths = layer_widths(model)
    if len(widths) < 2:
        widths = widths * 2
    fans = compute_fans(input_weight_shapes(model["arch"], len(widths), widths)[1])
    return _sigma2("model.bias_init", model["bias_init"], (widths[1],), fans)
