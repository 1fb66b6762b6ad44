"""How much memory one run needs, estimated from its config before anything runs.

An upper-side estimate, not a measurement: it exists so that a spec asking for
``model.depth=1000 model.width=16384`` (a terabyte of weights) or a million-example
dataset is refused at validation, with the estimate and the limit, instead of being
killed mid-sweep. Every part is float32 (4 bytes per value) as the runs are:

- ``weights``: every parameter (watched layers, biases, batchnorm, readout);
- ``gradients``: one per parameter;
- ``optimizer``: the optimizer's state per parameter (momentum 1, Adam 2);
- ``activations``: the forward tensors a training step keeps for its backward pass,
  their gradients, and the probe's copies of both (4 x the forward tensors);
- ``evaluation``: an evaluation chunk's input and two layers' outputs (EVAL_CHUNK examples,
  no backward pass: a layer's output is freed once the next is computed);
- ``data``: the train and test images, normalised float32;
- ``probe table``: the long table of per-layer statistics kept until the run ends;
- ``runtime``: the interpreter, torch and numpy themselves (measured: about 220 MB
  resident after ``import torch`` on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from initbench.config.architectures import ARCHITECTURES
from initbench.config.datasets import DATASETS, IDX_SPLIT_SIZES
from initbench.config.geometry import (
    MLP_INPUTS,
    NUM_CLASSES,
    cnn_positions,
    gate_blocks,
    sequence_of,
    sequence_shape,
    weight_shapes,
)
from initbench.config.optimizers import OPTIMIZERS

BYTES: Final = 4  # float32
EVAL_CHUNK: Final = 2048  # test examples per forward pass when a run evaluates
RUNTIME_BYTES: Final = 300 * 2**20  # interpreter + torch + numpy, with headroom over 220 MB
ROW_BYTES: Final = 40  # one row of the probe's long table: value, step, layer, t, two labels
STATISTICS_PER_TENSOR: Final = 4  # rows per watched tensor and step (moments, fractions)
TENSORS_PER_STEP: Final = 6  # preact, normed, act, their gradients: the most a layer has


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one run needs, by part (see the module's docstring)."""

    parts: Mapping[str, int]

    @property
    def total(self) -> int:
        """All parts together."""
        return sum(self.parts.values())

    def describe(self) -> str:
        """'1.2 GB (weights 40 MB, ...)', largest parts first."""
        ordered = sorted(self.parts.items(), key=lambda item: -item[1])
        return f"{human(self.total)} ({', '.join(f'{k} {human(v)}' for k, v in ordered)})"


def human(size: float) -> str:
    """Bytes in the largest unit that keeps the number >= 1 (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _steps(arch: str, sequence: str) -> int:
    """Time steps a layer of ``arch`` runs (1 for a feed-forward layer)."""
    return sequence_shape(sequence)[0] if ARCHITECTURES.get(arch).recurrent else 1


def parameter_count(model: Mapping[str, Any], sequence: str = "rows") -> int:
    """Parameters of the network ``model`` describes (as nets.models builds it): watched
    weights with their biases, batchnorm's scale and shift, and the readout."""
    arch, depth, width = model["arch"], model["depth"], model["width"]
    shapes = weight_shapes(arch, depth, width, sequence)
    weights = sum(math.prod(shape) for _, _, shape in shapes)
    gates = gate_blocks(arch)
    # the rnn's recurrent map has no bias; a gated cell's has, as torch's (b_ih and b_hh)
    biases = depth * width * (2 * gates if ARCHITECTURES.get(arch).gates else 1)
    batchnorm = 2 * depth * width if model.get("batchnorm") else 0
    return weights + biases + batchnorm + width * NUM_CLASSES + NUM_CLASSES


def _values_per_unit(arch: str) -> int:
    """Values a recurrent layer keeps per unit and step: the rnn its input projection,
    preact, act and stacked output; a gated cell with G gates its input and recurrent
    projections, pre-activations and activations per gate (4 G), and its cell state,
    tanh of it, hidden state and stacked output (4)."""
    gates = len(ARCHITECTURES.get(arch).gates)
    return 4 * gates + 4 if gates else 4


def forward_values(model: Mapping[str, Any], sequence: str = "rows") -> int:
    """Values one example's forward pass produces in the watched layers: preact, the
    batchnorm output (if any) and act, per layer, position and time step (a recurrent
    layer: :func:`_values_per_unit` per step); plus the input."""
    arch, depth, width = model["arch"], model["depth"], model["width"]
    per_unit = 3 if model.get("batchnorm") else 2
    if arch == "cnn":
        units = width * sum(cnn_positions(depth))
    elif ARCHITECTURES.get(arch).recurrent:
        units, per_unit = width * depth * _steps(arch, sequence), _values_per_unit(arch)
    else:
        units = width * depth
    return MLP_INPUTS + per_unit * units


def layer_values(model: Mapping[str, Any], sequence: str = "rows") -> int:
    """Values one example's largest watched layer produces (a recurrent layer: all its
    time steps); evaluation, without a backward pass, holds about two such layers at a
    time."""
    arch, depth, width = model["arch"], model["depth"], model["width"]
    if arch == "cnn":
        return width * max(cnn_positions(depth))
    return width * _steps(arch, sequence)


def _data_examples(data: Mapping[str, Any]) -> tuple[int, int]:
    """(train, test) examples the dataset reference loads."""
    entry = DATASETS.get(data["name"])
    params = entry.params.model_validate({k: v for k, v in data.items() if k != "name"})
    n_train = getattr(params, "n_train", None)
    n_test = getattr(params, "n_test", None)
    return n_train or IDX_SPLIT_SIZES[0], n_test or IDX_SPLIT_SIZES[1]


def _table_rows(model: Mapping[str, Any], train: Mapping[str, Any], sequence: str) -> int:
    """Rows of the probe's long table over the whole run (steps 0, every log_every, last);
    a gated cell's gates and cell state add 2 tensors per gate and 2 more."""
    logged = train["steps"] // train["log_every"] + 2
    gates = len(ARCHITECTURES.get(model["arch"]).gates)
    tensors = TENSORS_PER_STEP + (2 * gates + 2 if gates else 0)
    positions = model["depth"] * _steps(model["arch"], sequence)
    return logged * positions * tensors * STATISTICS_PER_TENSOR


def estimate(config: Mapping[str, Any]) -> MemoryEstimate:
    """The memory a run of the resolved ``config`` (a RunConfig's dict) needs."""
    model, train = config["model"], config["train"]
    sequence = sequence_of(config["data"])
    parameters = parameter_count(model, sequence)
    optimizer = dict(train["optimizer"])
    entry = OPTIMIZERS.get(optimizer.pop("name"))
    copies = entry.state_copies(entry.params.model_validate(optimizer))
    per_example = forward_values(model, sequence)
    n_train, n_test = _data_examples(config["data"])
    chunk = min(EVAL_CHUNK, n_test)
    parts = {
        "weights": parameters * BYTES,
        "gradients": parameters * BYTES,
        "optimizer": copies * parameters * BYTES,
        "activations": 4 * train["batch_size"] * per_example * BYTES,
        "evaluation": chunk * (MLP_INPUTS + 2 * layer_values(model, sequence)) * BYTES,
        "data": (n_train + n_test) * MLP_INPUTS * BYTES,
        "probe table": _table_rows(model, train, sequence) * ROW_BYTES,
        "runtime": RUNTIME_BYTES,
    }
    return MemoryEstimate(parts)
