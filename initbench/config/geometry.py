"""Architecture geometry, torch-free: input layout, conv strides, watched weight shapes.

models.py builds the networks from these; initbench.analysis and initbench.meanfield read
them without importing torch. One definition, so the report's formula checks and the theory's fans
can never drift from the networks that were trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from initbench.config.architectures import ARCHITECTURES

IMAGE_SHAPE: Final = (1, 28, 28)  # (channels, height, width) every dataset provides
IMAGE_SIZE: Final = IMAGE_SHAPE[1]
MLP_INPUTS: Final = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]  # 784, flattened
RNN_INPUTS: Final = IMAGE_SHAPE[0] * IMAGE_SHAPE[2]  # one row of 28 pixels per time step
RNN_STEPS: Final = IMAGE_SHAPE[1]  # 28 rows = 28 time steps
NUM_CLASSES: Final = 10
# data.sequence -> (time steps T, inputs per step) of a recurrent model reading the image:
# its rows, or its pixels one at a time (sequential MNIST, Le et al. 2015), in order or
# under a fixed permutation (the dataset applies it; the model reads pixels in order).
SEQUENCES: Final = {
    "rows": (RNN_STEPS, RNN_INPUTS),
    "pixels": (MLP_INPUTS, 1),
    "permuted_pixels": (MLP_INPUTS, 1),
}


def sequence_shape(sequence: str) -> tuple[int, int]:
    """(T, inputs per step) of a ``data.sequence``."""
    return SEQUENCES[sequence]


def time_steps(arch: str, sequence: str = "rows") -> int:
    """Time steps a layer of ``arch`` runs reading ``sequence`` (1 for a feed-forward one)."""
    return sequence_shape(sequence)[0] if ARCHITECTURES.get(arch).recurrent else 1


def sequence_of(data: Mapping[str, Any]) -> str:
    """The ``sequence`` of a resolved ``data`` reference (rows where it has none)."""
    return str(data.get("sequence", "rows"))


def gate_blocks(arch: str) -> int:
    """Stacked gate blocks of a layer's weights (lstm 4, gru 3; 1 elsewhere)."""
    return max(1, len(ARCHITECTURES.get(arch).gates))


def cnn_strides(depth: int) -> list[int]:
    """Stride of each conv layer: 2 at layers floor(depth/3)+1 and floor(2 depth/3)+1
    (28x28 -> 14x14 -> 7x7 for depth >= 3), never at layer 1; 1 elsewhere."""
    down = {depth // 3, (2 * depth) // 3} - {0}
    return [2 if i in down else 1 for i in range(depth)]


Widths = int | Sequence[int]  # one width for every layer, or each watched layer's


def per_layer(depth: int, width: Widths) -> list[int]:
    """Each of ``depth`` watched layers' units (channels): ``width`` repeated, or the
    sequence itself (its length must be ``depth``)."""
    if isinstance(width, int):
        return [width] * depth
    if len(width) != depth:
        raise ValueError(f"{len(width)} widths for depth {depth}")
    return [int(w) for w in width]


def weight_shapes(
    arch: str, depth: int, width: Widths, sequence: str = "rows"
) -> list[tuple[int, str, tuple[int, ...]]]:
    """(layer, tensor, shape) of every watched weight as the models build it: ``w`` (the
    affine weight; input-to-hidden for a recurrent model, its gate blocks stacked) and,
    for a recurrent model reading ``sequence``, ``w_rec``. ``width``: one for every layer
    or each layer's (model.widths, :func:`per_layer`)."""
    entry = ARCHITECTURES.get(arch)  # UnknownNameError for any other
    widths, blocks = per_layer(depth, width), gate_blocks(arch)
    inputs = {"mlp": MLP_INPUTS, "cnn": IMAGE_SHAPE[0]}.get(arch, sequence_shape(sequence)[1])
    kernel = (3, 3) if arch == "cnn" else ()
    shapes: list[tuple[int, str, tuple[int, ...]]] = []
    for layer, (n_in, n_out) in enumerate(
        zip([inputs, *widths[:-1]], widths, strict=True), start=1
    ):
        shapes.append((layer, "w", (blocks * n_out, n_in, *kernel)))
        if entry.recurrent:
            shapes.append((layer, "w_rec", (blocks * n_out, n_out)))
    return shapes


def input_weight_shapes(
    arch: str, depth: int, width: Widths, sequence: str = "rows"
) -> list[tuple[int, ...]]:
    """Shape of each watched layer's ``w`` (input-to-hidden for an rnn), layer 1 first."""
    shapes = weight_shapes(arch, depth, width, sequence)
    return [shape for _, tensor, shape in shapes if tensor == "w"]


def cnn_positions(depth: int) -> list[int]:
    """Output positions (height x width) of each conv layer: 'same' padding, so a stride-2
    layer halves the side (rounding up), a stride-1 layer keeps it."""
    side, positions = IMAGE_SIZE, []
    for stride in cnn_strides(depth):
        side = -(-side // stride)
        positions.append(side * side)
    return positions


def map_positions(arch: str, depth: int) -> dict[int, int]:
    """Layer -> output positions (height x width) of each watched layer that has a map:
    every conv of a cnn; none for mlp and rnn layers."""
    return dict(enumerate(cnn_positions(depth), start=1)) if arch == "cnn" else {}


def multiply_adds(arch: str, depth: int, width: Widths, sequence: str = "rows") -> int:
    """Multiply-adds of the watched layers' forward pass for one example: a weight is
    applied once per output position (cnn) or time step (rnn, lstm, gru). The scheduler's
    estimate of a run's cost (runs ordered longest first), not a measurement."""
    shapes = weight_shapes(arch, depth, width, sequence)
    if arch == "cnn":
        maps = cnn_positions(depth)
        return sum(math.prod(s) * p for (_, _, s), p in zip(shapes, maps, strict=True))
    repeats = time_steps(arch, sequence)
    return repeats * sum(math.prod(shape) for _, _, shape in shapes)


def residual_plan(arch: str, depth: int, branch_layers: int) -> list[tuple[int, str, int, int]]:
    """(layer, role, stride, block) of every watched layer of a residual net (nets.residual)
    in forward order: per block its ``branch`` layers, the first with the block's stride
    (a cnn's: :func:`cnn_strides` over the blocks), then, in a cnn block of stride 2, its
    1x1 ``projection`` shortcut."""
    strides = cnn_strides(depth) if arch == "cnn" else [1] * depth
    plan: list[tuple[int, str, int, int]] = []
    for block, stride in enumerate(strides, start=1):
        for j in range(branch_layers):
            plan.append((len(plan) + 1, "branch", stride if j == 0 else 1, block))
        if stride != 1:
            plan.append((len(plan) + 1, "projection", stride, block))
    return plan


def model_weight_shapes(
    model: Mapping[str, Any], sequence: str = "rows"
) -> list[tuple[int, str, tuple[int, ...]]]:
    """:func:`weight_shapes` of a model section (model.widths; a recurrent model reading
    ``sequence``; a residual net's branch layers and projections, :func:`residual_plan`)."""
    widths = model.get("widths") or int(model["width"])
    if model.get("residual") is None:
        return weight_shapes(model["arch"], int(model["depth"]), widths, sequence)
    w = widths if isinstance(widths, int) else int(widths[0])
    conv = model["arch"] == "cnn"
    plan = residual_plan(model["arch"], int(model["depth"]), int(model.get("branch_layers", 2)))
    kernel = {"branch": (3, 3) if conv else (), "projection": (1, 1)}
    return [(layer, "w", (w, w, *kernel[role])) for layer, role, _, _ in plan]


def model_map_positions(model: Mapping[str, Any]) -> dict[int, int]:
    """:func:`map_positions` of a model section; a residual cnn's per watched layer."""
    arch, depth = str(model.get("arch")), int(model.get("depth") or 0)
    if model.get("residual") is None or arch != "cnn":
        return map_positions(arch, depth)
    side, out = IMAGE_SIZE, {}
    for layer, role, stride, _ in residual_plan(arch, depth, int(model.get("branch_layers", 2))):
        if role == "branch" and stride != 1:
            side = -(-side // stride)
        out[layer] = side * side
    return out
