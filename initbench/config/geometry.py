"""Architecture geometry, torch-free: input layout, conv strides, watched weight shapes.

models.py builds the networks from these; initbench.analysis and initbench.meanfield read
them without importing torch. One definition, so the report's formula checks and the theory's fans
can never drift from the networks that were trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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


def weight_shapes(
    arch: str, depth: int, width: int, sequence: str = "rows"
) -> list[tuple[int, str, tuple[int, ...]]]:
    """(layer, tensor, shape) of every watched weight as the models build it: ``w`` (the
    affine weight; input-to-hidden for a recurrent model, its gate blocks stacked) and,
    for a recurrent model reading ``sequence``, ``w_rec``."""
    entry = ARCHITECTURES.get(arch)  # UnknownNameError for any other
    rows = gate_blocks(arch) * width
    first = {
        "mlp": (width, MLP_INPUTS),
        "cnn": (width, IMAGE_SHAPE[0], 3, 3),
    }.get(arch, (rows, sequence_shape(sequence)[1]))
    rest = (width, width, 3, 3) if arch == "cnn" else (rows, width)
    shapes: list[tuple[int, str, tuple[int, ...]]] = []
    for layer in range(1, depth + 1):
        shapes.append((layer, "w", first if layer == 1 else rest))
        if entry.recurrent:
            shapes.append((layer, "w_rec", (rows, width)))
    return shapes


def input_weight_shapes(
    arch: str, depth: int, width: int, sequence: str = "rows"
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


def multiply_adds(arch: str, depth: int, width: int, sequence: str = "rows") -> int:
    """Multiply-adds of the watched layers' forward pass for one example: a weight is
    applied once per output position (cnn) or time step (rnn, lstm, gru). The scheduler's
    estimate of a run's cost (runs ordered longest first), not a measurement."""
    shapes = weight_shapes(arch, depth, width, sequence)
    if arch == "cnn":
        per_layer = [shape for _, _, shape in shapes]
        return sum(math.prod(s) * p for s, p in zip(per_layer, cnn_positions(depth), strict=True))
    repeats = sequence_shape(sequence)[0] if ARCHITECTURES.get(arch).recurrent else 1
    return repeats * sum(math.prod(shape) for _, _, shape in shapes)
