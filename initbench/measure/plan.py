"""The plan of a probed step: which tensors are reduced, and where each labelled
statistic of the catalogue comes from.

A step's tensors are its *candidates*, in the layout of :func:`slots`: per watched tensor
of the catalogue (preact, normed, act, grad_preact, grad_normed) one per watched
(layer, t); the watched layers' weights (w, w_rec); their gradients; then the gradients
of the parameters that count only in the global gradient norm. A candidate may be None
(no batchnorm, no gradient). The plan depends only on which candidates exist and on
their shapes, so a run builds it once and every later probed step only looks it up.

The long table's order (results format version 1): per watched tensor, in catalogue
order, its (layer, t) in order, grouped by shape (groups in order of first appearance);
per group, every (layer, t)'s moments, then every (layer, t)'s fractions. Then per layer
the statistics of w, grad_w, w_rec and grad_w_rec (NaN for a gradient that is missing).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from initbench.measure import catalog
from initbench.measure.counts import COUNTS, Count
from initbench.measure.reduce import MOMENT_COLUMNS, Layout, Reducer, reduction_order
from initbench.nets.instrument import WatchedLayer

Label = tuple[int, int, str, str]  # (layer, t, name, metric)
Slot = tuple[str, int, int]  # (tensor, layer, t) of a candidate; t = 0 for weights
GRADIENTS = ("grad_w", "grad_w_rec", "grad_other")  # the rows of the global gradient norm


def weight_slots(layers: Sequence[WatchedLayer]) -> list[tuple[Slot, torch.nn.Parameter]]:
    """The watched layers' weights (w, then w_rec where the layer has one) and their slots."""
    found = [(("w", layer.index, 0), layer.weight) for layer in layers]
    return found + [
        (("w_rec", layer.index, 0), layer.recurrent_weight)
        for layer in layers
        if layer.recurrent_weight is not None
    ]


def slots(keys: Sequence[tuple[int, int]], weights: Sequence[Slot], others: int) -> list[Slot]:
    """The slot of every candidate of a step: ``keys`` are the watched (layer, t) in the
    tape's order, ``weights`` the slots of :func:`weight_slots`, ``others`` the number of
    parameters counted only in the global gradient norm."""
    watched = [(tensor, layer, t) for tensor in catalog.WATCHED for layer, t in keys]
    grads = [(f"grad_{tensor}", layer, t) for tensor, layer, t in weights]
    return watched + list(weights) + grads + [("grad_other", i, 0) for i in range(others)]


@dataclass(frozen=True)
class Entry:
    """Where one labelled value comes from: column ``column`` of row ``row``'s
    statistics, or count slot ``slot``; neither is NaN (a missing weight gradient's)."""

    label: Label
    row: int | None = None
    column: int = 0
    slot: int | None = None


class Plan:
    """What a probed step reduces, and where each labelled value comes from.

    ``rows``: the candidates reduced, in the reduction's order (:class:`Layout`);
    ``labels`` and ``index``: each value of the long table and its place in the vector
    of :meth:`values`: the rows' (R, 4) statistics flattened, the fractions, a NaN.
    """

    def __init__(
        self,
        candidate_slots: Sequence[Slot],
        shapes: Sequence[tuple[int, ...] | None],
        layers: Sequence[WatchedLayer],
        extras: int = 0,
    ) -> None:
        self.layers = {layer.index: layer for layer in layers}
        present = [i for i, shape in enumerate(shapes) if shape is not None]
        sizes = [math.prod(shapes[i]) for i in present]  # type: ignore[arg-type]
        grads = [i for i, c in enumerate(present) if candidate_slots[c][0] in GRADIENTS]
        self.rows = [present[i] for i in reduction_order(sizes, last=grads)]
        self.row_of = {candidate_slots[c]: row for row, c in enumerate(self.rows)}
        self.shape_of = {candidate_slots[c]: shapes[c] for c in self.rows}
        counts = self._counts(candidate_slots)
        self.layout = Layout([shapes[c] for c in self.rows], counts)  # type: ignore[misc]
        self.reducer = Reducer(self.layout, extras)
        entries = self._watched_entries(candidate_slots) + self._weight_entries(layers)
        self.labels: list[Label] = [entry.label for entry in entries]
        self.index = np.array([self._at(entry) for entry in entries], dtype=np.int64)
        self.undefined = any(entry.row is None and entry.slot is None for entry in entries)
        self.grad_rows = slice(len(self.rows) - len(grads), len(self.rows))  # contiguous

    def _statistics(self, slot: Slot) -> list[catalog.Statistic]:
        """The catalogue's statistics of a watched tensor, for its layer's tensors and kind."""
        tensor, layer, t = slot
        here = {name for name in catalog.WATCHED if (name, layer, t) in self.row_of}
        return catalog.taken_of(tensor, here, self.layers[layer].kind)

    def _counts(self, candidate_slots: Sequence[Slot]) -> list[tuple[int, Count]]:
        """(row, count) of every fraction the rows' statistics ask, in row order; the
        count slot of each (slot, metric) is kept in ``count_slot``."""
        counts: list[tuple[int, Count]] = []
        self.count_slot: dict[tuple[Slot, str], int] = {}
        for row, candidate in enumerate(self.rows):
            slot = candidate_slots[candidate]
            if slot[0] not in catalog.WATCHED:
                continue
            for statistic in self._statistics(slot):
                if statistic.is_fraction:
                    self.count_slot[(slot, statistic.name)] = len(counts)
                    layer = self.layers[slot[1]]
                    counts.append((row, COUNTS[statistic.reduction](layer)))
        return counts

    def _watched_entries(self, candidate_slots: Sequence[Slot]) -> list[Entry]:
        """The watched tensors' entries in the long table's order (module docstring)."""
        entries: list[Entry] = []
        for tensor in catalog.WATCHED:
            groups: dict[tuple[int, ...], list[Slot]] = defaultdict(list)
            for slot in sorted(s for s in candidate_slots if s[0] == tensor and s in self.row_of):
                groups[self.shape_of[slot]].append(slot)
            for group in groups.values():
                for fractions in (False, True):
                    for slot in group:
                        entries += self._entries(slot, fractions)
        return entries

    def _entries(self, slot: Slot, fractions: bool) -> list[Entry]:
        """A watched slot's moment entries, or its fraction entries."""
        _, layer, t = slot
        name, row = self.layers[layer].name, self.row_of[slot]
        return [
            Entry((layer, t, name, s.name), slot=self.count_slot[(slot, s.name)])
            if fractions
            else Entry((layer, t, name, s.name), row, MOMENT_COLUMNS[s.reduction])
            for s in self._statistics(slot)
            if s.is_fraction == fractions
        ]

    def _weight_entries(self, layers: Sequence[WatchedLayer]) -> list[Entry]:
        """Per layer, the statistics of each weight it has and of that weight's gradient."""
        entries: list[Entry] = []
        for layer in layers:
            for tensor in catalog.WEIGHTS:
                weight = tensor.removeprefix("grad_")
                if (weight, layer.index, 0) not in self.row_of:
                    continue  # the layer has no such weight (w_rec of a feed-forward layer)
                row = self.row_of.get((tensor, layer.index, 0))
                entries += [
                    Entry((layer.index, 0, layer.name, s.name), row, MOMENT_COLUMNS[s.reduction])
                    for s in catalog.taken_of(tensor, {tensor}, layer.kind)
                ]
        return entries

    def _at(self, entry: Entry) -> int:
        """Where an entry's value is in the vector of :meth:`values`."""
        stats = len(self.rows) * 4
        if entry.slot is not None:
            return stats + entry.slot
        if entry.row is None:
            return stats + len(self.layout.counted)
        return entry.row * 4 + entry.column

    def values(self, stats: np.ndarray, fractions: np.ndarray) -> np.ndarray:
        """(..., labels) float64 values from (..., R, 4) statistics and (..., F) fractions."""
        lead = stats.shape[:-2]
        nan = np.full((*lead, 1), np.nan)
        vector = np.concatenate([stats.reshape(*lead, -1), fractions, nan], axis=-1)
        return vector[..., self.index]

    def grad_norm(self, squares: np.ndarray) -> float:
        """The global gradient norm from the rows' Σx²: sqrt(Σ over the gradient rows)."""
        return math.sqrt(squares[self.grad_rows].sum())

    def finish(
        self, host: np.ndarray, tensors: Sequence[torch.Tensor]
    ) -> tuple[list[Label], np.ndarray, float]:
        """(labels, float64 values, global gradient norm) of a launched vector; rows whose
        fast statistics are not precise are measured again from ``tensors`` (the rows)."""
        layout = self.layout
        total, squares = layout.sums(host)
        stats, redone = layout.repaired(total, squares, tensors)
        grad = self.grad_rows
        if any(grad.start <= row < grad.stop for row in redone):  # from the repaired Σx² = n sq
            squares = stats[:, 2] * layout.n
        fractions = layout.fractions(layout.counts_of(host), stats)
        return self.labels, self.values(stats, fractions), self.grad_norm(squares)
