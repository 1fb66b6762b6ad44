"""How much memory one run needs, estimated from its config before anything runs.

An upper-side estimate, not a measurement: it exists so that a spec asking for
``model.depth=1000 model.width=16384`` (a terabyte of weights) or a million-example
dataset is refused at validation, with the estimate and the limit, instead of being
killed mid-sweep. Every part is float32 (4 bytes per value) as the runs are:

- ``weights``: every parameter (watched layers, biases, normalisation, readout);
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
    model_map_positions,
    model_weight_shapes,
    sequence_of,
    time_steps,
)
from initbench.config.optimizers import OPTIMIZERS
from initbench.config.runconfig import layer_widths, norm_of

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


def parameter_count(model: Mapping[str, Any], sequence: str = "rows") -> int:
    """Parameters of the network ``model`` describes (as nets.models builds it): watched
    weights with their biases, the normalisation's scale and shift, and the readout."""
    shapes = model_weight_shapes(model, sequence)
    weights = sum(math.prod(shape) for _, _, shape in shapes)
    # a bias per output unit of each input map (a gated cell's stacked gate blocks); the
    # rnn's recurrent map has none, a gated cell's has (b_ih and b_hh, as torch's)
    units = sum(shape[0] for _, tensor, shape in shapes if tensor == "w")
    biases = 2 * units if ARCHITECTURES.get(model["arch"]).gates else units
    widths = layer_widths(model)
    stem = 0
    if model.get("residual") is not None:  # the stem: Linear(784, width) or Conv2d(1, width, 3)
        stem = (9 if model["arch"] == "cnn" else MLP_INPUTS) * widths[0] + widths[0]
    norm = 2 * sum(widths) if norm_of(model) != "none" else 0
    return stem + weights + biases + norm + widths[-1] * NUM_CLASSES + NUM_CLASSES


def _values_per_unit(arch: str) -> int:
    """Values a recurrent layer keeps per unit and step: the rnn its input projection,
    preact, act and stacked output; a gated cell with G gates its input and recurrent
    projections, pre-activations and activations per gate (4 G), and its cell state,
    tanh of it, hidden state and stacked output (4)."""
    gates = len(ARCHITECTURES.get(arch).gates)
    return 4 * gates + 4 if gates else 4


def forward_values(model: Mapping[str, Any], sequence: str = "rows") -> int:
    """Values one example's forward pass produces in the watched layers: preact, the
    normalisation's output (if any) and act, per layer, position and time step (a
    recurrent layer: :func:`_values_per_unit` per step); plus the input."""
    arch, depth, widths = model["arch"], model["depth"], layer_widths(model)
    normed = 1 if norm_of(model) != "none" else 0
    per_unit = 2 + normed
    if model.get("residual") is not None:  # each watched layer, plus the stream per block
        positions = model_map_positions(model)
        shapes = model_weight_shapes(model)
        units = sum(shape[0] * positions.get(layer, 1) for layer, _, shape in shapes)
        return MLP_INPUTS + (per_unit + 2) * units
    if arch == "cnn":
        units = sum(w * p for w, p in zip(widths, cnn_positions(depth), strict=True))
    elif ARCHITECTURES.get(arch).recurrent:
        units = sum(widths) * time_steps(arch, sequence)
        per_unit = _values_per_unit(arch) + normed
    else:
        units = sum(widths) * int(model.get("branch_layers", 2) if model.get("residual") else 1)
    return MLP_INPUTS + per_unit * units


def layer_values(model: Mapping[str, Any], sequence: str = "rows") -> int:
    """Values one example's largest watched layer produces (a recurrent layer: all its
    time steps); evaluation, without a backward pass, holds about two such layers at a
    time."""
    arch, depth, widths = model["arch"], model["depth"], layer_widths(model)
    if arch == "cnn" and model.get("residual") is not None:
        return widths[0] * max(model_map_positions(model).values(), default=1) * 2  # + stream
    if arch == "cnn":
        return max(w * p for w, p in zip(widths, cnn_positions(depth), strict=True))
    return max(widths) * time_steps(arch, sequence)


def _data_examples(data: Mapping[str, Any]) -> tuple[int, int]:
    """(train, test) examples the dataset reference loads."""
    entry = DATASETS.get(data["name"])
    params = entry.params.model_validate({k: v for k, v in data.items() if k != "name"})
    n_train = getattr(params, "n_train", None)
    n_test = getattr(params, "n_test", None)
    return n_train or IDX_SPLIT_SIZES[0], n_test or IDX_SPLIT_SIZES[1]


def _table_rows(model: Mapping[str, Any], train: Mapping[str, Any], sequence: str) -> int:
    """Rows of the probe's long table over the whole run (steps 0, every log_every, last;
    an init-only run: step 0); a gated cell's gates and cell state add 2 tensors per gate
    and 2 more."""
    logged = train["steps"] // train["log_every"] + 2 if train["steps"] else 1
    gates = len(ARCHITECTURES.get(model["arch"]).gates)
    tensors = TENSORS_PER_STEP + (2 * gates + 2 if gates else 0)
    layers = sum(1 for _, tensor, _ in model_weight_shapes(model, sequence) if tensor == "w")
    return logged * layers * time_steps(model["arch"], sequence) * tensors * STATISTICS_PER_TENSOR


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
    # an init-only run (steps 0) builds no optimizer and makes no test pass
    chunk, copies = (min(EVAL_CHUNK, n_test), copies) if train["steps"] else (0, 0)
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
