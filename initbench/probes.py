"""Per-layer statistics of one probed training step.

A :class:`Tape` is passed through the model's forward pass on logging steps only. It
keeps the watched tensors and asks autograd to retain the gradients of ``preact`` and
``normed``; that changes no value the training computes. After ``loss.backward()``,
:func:`measure` turns the tape into one flat float64 tensor of statistics (computed on
the device, tensors of equal shape stacked so each statistic is one kernel per group)
plus static row labels, and :class:`Recorder` copies it to the host in one transfer.

Definitions (see schema.LAYER_METRICS): ``X_mean``, ``X_var`` (unbiased) and ``X_sq``
are over *all* elements of the batch tensor, never a per-unit variance averaged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from initbench.activations import SATURATION_FRACTION
from initbench.models import WatchedLayer

Label = tuple[int, int, str, str]  # (layer, t, name, metric)

FORWARD_QUANTITIES = ("preact", "normed", "act")
GRAD_QUANTITIES = ("preact", "normed")


@dataclass
class Tape:
    """The watched tensors of one forward pass, keyed by (layer, t)."""

    tensors: dict[str, dict[tuple[int, int], torch.Tensor]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def watch(
        self,
        layer: int,
        t: int,
        preact: torch.Tensor,
        normed: torch.Tensor | None,
        act: torch.Tensor,
    ) -> None:
        """Keep this layer's tensors; retain the gradients of preact and normed."""
        for quantity, tensor in (("preact", preact), ("normed", normed), ("act", act)):
            if tensor is None:
                continue
            if quantity in GRAD_QUANTITIES and tensor.requires_grad:
                tensor.retain_grad()
            self.tensors[quantity][(layer, t)] = tensor


def moments(stacked: torch.Tensor) -> torch.Tensor:
    """(G, ...) -> (G, 3): mean, unbiased variance and mean square of each group member
    over all its elements, in float64."""
    flat = stacked.detach().reshape(stacked.shape[0], -1).double()
    var, mean = torch.var_mean(flat, dim=1, correction=1)
    return torch.stack([mean, var, flat.square().mean(dim=1)], dim=1)


def _undefined_where_non_finite(stacked: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """A fraction is undefined (NaN) for a group member with any non-finite element: a NaN
    compares False, so it would otherwise count as 'never active' or 'not saturated'."""
    finite = torch.isfinite(stacked.detach().reshape(stacked.shape[0], -1)).all(dim=1)
    return torch.where(finite, fraction, torch.full_like(fraction, torch.nan))


def dead_fraction(stacked: torch.Tensor) -> torch.Tensor:
    """(G, B, units[, H, W]) -> (G,): fraction of units (channels) never > 0 over the
    batch (and spatial positions); NaN where the input has a non-finite element."""
    positive = stacked.detach() > 0
    reduce_dims = [1, *range(3, stacked.dim())]
    alive = positive.amax(dim=reduce_dims) if reduce_dims else positive
    return _undefined_where_non_finite(stacked, 1.0 - alive.double().mean(dim=1))


def saturated_fraction(stacked: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(G, ...) -> (G,): fraction of elements beyond 99% of the half-range from the centre;
    NaN where the activation has a non-finite element."""
    centre, half = (low + high) / 2, (high - low) / 2
    flat = stacked.detach().reshape(stacked.shape[0], -1)
    saturated = ((flat - centre).abs() > SATURATION_FRACTION * half).double().mean(dim=1)
    return _undefined_where_non_finite(stacked, saturated)


def _groups(items: dict[tuple[int, int], torch.Tensor]) -> list[list[tuple[int, int]]]:
    """Keys grouped by tensor shape (so each group stacks), in key order."""
    by_shape: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
    for key in sorted(items):
        by_shape[tuple(items[key].shape)].append(key)
    return list(by_shape.values())


class _Collector:
    """Accumulates (labels, values) pairs; values stay on the device."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.labels: list[Label] = []
        self.values: list[torch.Tensor] = []

    def add(
        self, keys: Sequence[tuple[int, int]], metrics: Sequence[str], block: torch.Tensor
    ) -> None:
        """``block`` is (len(keys), len(metrics)); rows follow keys, columns metrics."""
        for layer, t in keys:
            self.labels.extend((layer, t, self.names[layer], m) for m in metrics)
        self.values.append(block.reshape(-1))


def _tensor_stats(tape: Tape, layers: Sequence[WatchedLayer], out: _Collector) -> None:
    kind, out_range = layers[0].kind, layers[0].output_range
    for quantity in FORWARD_QUANTITIES:
        items = tape.tensors.get(quantity, {})
        for keys in _groups(items):
            stacked = torch.stack([items[k] for k in keys])
            out.add(
                keys, [f"{quantity}_mean", f"{quantity}_var", f"{quantity}_sq"], moments(stacked)
            )
            is_input = quantity == "normed" or (
                quantity == "preact" and "normed" not in tape.tensors
            )
            if kind == "rectifier" and is_input:
                out.add(keys, ["dead_frac"], dead_fraction(stacked)[:, None])
            if kind == "bounded" and quantity == "act":
                out.add(keys, ["sat_frac"], saturated_fraction(stacked, *out_range)[:, None])
    for quantity in GRAD_QUANTITIES:
        items = {k: v.grad for k, v in tape.tensors.get(quantity, {}).items() if v.grad is not None}
        for keys in _groups(items):
            stacked = torch.stack([items[k] for k in keys])
            names = [f"grad_{quantity}_mean", f"grad_{quantity}_var", f"grad_{quantity}_sq"]
            out.add(keys, names, moments(stacked))


def _weight_block(weight: torch.Tensor) -> torch.Tensor:
    """(1, 5): mean, var, norm of the weight; var, norm of its gradient (NaN if none)."""
    w = weight.detach().double()
    grad = (
        weight.grad.detach().double() if weight.grad is not None else torch.full_like(w, torch.nan)
    )
    return torch.stack(
        [w.mean(), w.var(), torch.linalg.vector_norm(w), grad.var(), torch.linalg.vector_norm(grad)]
    )[None]


def _weight_stats(layers: Sequence[WatchedLayer], out: _Collector) -> None:
    for layer in layers:
        out.add(
            [(layer.index, 0)],
            ["w_mean", "w_var", "w_norm", "grad_w_var", "grad_w_norm"],
            _weight_block(layer.weight),
        )
        if layer.recurrent_weight is not None:
            names = ["w_rec_mean", "w_rec_var", "w_rec_norm", "grad_w_rec_var", "grad_w_rec_norm"]
            out.add([(layer.index, 0)], names, _weight_block(layer.recurrent_weight))


def measure(tape: Tape, layers: Sequence[WatchedLayer]) -> tuple[list[Label], torch.Tensor]:
    """Row labels and one flat float64 device tensor with every statistic of this step."""
    out = _Collector({layer.index: layer.name for layer in layers})
    _tensor_stats(tape, layers, out)
    _weight_stats(layers, out)
    return out.labels, torch.cat(out.values)


def global_grad_norm(parameters: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of all parameter gradients together (a 0-dim float64 device tensor)."""
    grads = [p.grad.detach().double().reshape(-1) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.cat(grads)) if grads else torch.tensor(0.0)


@dataclass
class Recorder:
    """Host-side long table of every probed step."""

    steps: list[np.ndarray] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def add(self, step: int, labels: list[Label], values: np.ndarray) -> None:
        """Store one step's statistics (host values, one per label)."""
        if len(labels) != len(values):
            raise ValueError(f"{len(labels)} labels for {len(values)} values")
        self.steps.append(np.full(len(labels), step, dtype=np.int32))
        self.labels.extend(labels)
        self.values.append(values)

    def columns(self) -> dict[str, np.ndarray]:
        """The long table as columns (schema.LAYER_COLUMNS)."""
        if not self.labels:
            empty = np.array([], dtype=object)
            return {
                "step": np.array([], np.int32),
                "layer": np.array([], np.int16),
                "t": np.array([], np.int16),
                "name": empty,
                "metric": empty,
                "value": np.array([], np.float64),
            }
        layer, t, name, metric = zip(*self.labels, strict=True)
        return {
            "step": np.concatenate(self.steps),
            "layer": np.asarray(layer, dtype=np.int16),
            "t": np.asarray(t, dtype=np.int16),
            "name": np.asarray(name, dtype=object),
            "metric": np.asarray(metric, dtype=object),
            "value": np.concatenate(self.values),
        }


def _computation_order(label: Label) -> tuple[int, int, int]:
    """Sort key following the computation: forward quantities and weights by layer and
    time step, then (slot 1) the loss, then gradients from the last layer back."""
    layer, t, _name, metric = label
    if metric.startswith("grad_"):
        return (2, -layer, -t)
    return (0, layer, t)


def first_non_finite(
    labels: Sequence[Label], values: np.ndarray, loss: float
) -> dict[str, object] | None:
    """Where a step first went non-finite, in the order the step computes: the earliest
    forward statistic (lowest layer, then time step), else the loss, else the gradient
    nearest the output. None if everything is finite."""
    bad = [(_computation_order(labels[i]), i) for i in np.flatnonzero(~np.isfinite(values))]
    if not np.isfinite(loss):
        bad.append(((1, 0, 0), -1))
    if not bad:
        return None
    _, first = min(bad)
    if first == -1:
        return {"what": "loss", "value": float(loss)}
    layer, t, name, metric = labels[first]
    return {
        "what": metric,
        "layer": int(layer),
        "t": int(t),
        "name": name,
        "value": float(values[first]),
    }
