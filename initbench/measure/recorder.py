"""The host side of a run's probed steps: the long table, steps finished later in one
batch, and where a step first went non-finite.

A step whose sums are all finite and precise is only checked when it arrives; its
statistics are finished with the run's other such steps, per plan, when the table is
read (:class:`Deferred`): one batch of array operations per run instead of one per step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from initbench.measure.plan import Label, Plan


@dataclass(slots=True)
class Deferred:
    """A probed step's per-row Σx and Σx² and its counts, all finite and precise, kept to
    be finished with other steps' (:func:`finish_deferred`)."""

    plan: Plan
    total: np.ndarray
    squares: np.ndarray
    counts: np.ndarray
    grad_norm: float


def defer(plan: Plan, host: np.ndarray) -> Deferred | None:
    """The step's sums, to be finished later, when they alone give :meth:`Plan.finish`'s
    values and every value is finite; None when the step must be finished now (a
    non-finite or imprecise row: the two-pass path needs the step's tensors; or a weight
    without gradient)."""
    layout = plan.layout
    if plan.undefined or not layout.pieces:
        return None
    total, squares = layout.sums(host)  # non-finite where the vector is (counts never are)
    if not layout.all_trusted(total, squares):
        return None
    grad_norm = plan.grad_norm(squares)
    return Deferred(plan, total, squares, layout.counts_of(host).copy(), grad_norm)


def finish_deferred(plan: Plan, deferred: Sequence[Deferred]) -> np.ndarray:
    """(steps, labels) values of deferred steps of one plan, finished together: the
    values :meth:`Plan.finish` gives each step."""
    layout = plan.layout
    stats = layout.stats_from_sums(
        np.stack([d.total for d in deferred]), np.stack([d.squares for d in deferred])
    )
    counts = np.stack([d.counts for d in deferred])
    return plan.values(stats, layout.fractions(counts, stats))


@dataclass(slots=True)
class _Step:
    step: int
    labels: list[Label]
    values: np.ndarray | None  # None until a deferred step is finished
    deferred: Deferred | None = None


@dataclass
class Recorder:
    """Host-side long table of every probed step. Steps added as :class:`Deferred` are
    finished together, per plan, when the table is read."""

    steps: list[_Step] = field(default_factory=list)

    def add(self, step: int, labels: list[Label], values: np.ndarray) -> None:
        """Store one step's statistics (host values, one per label)."""
        if len(labels) != len(values):
            raise ValueError(f"{len(labels)} labels for {len(values)} values")
        self.steps.append(_Step(step, labels, values))

    def add_deferred(self, step: int, deferred: Deferred) -> None:
        """Store one step's sums; its values are computed when the table is read."""
        self.steps.append(_Step(step, deferred.plan.labels, None, deferred))

    def _finish_deferred(self) -> None:
        by_plan: dict[int, list[_Step]] = defaultdict(list)
        for entry in self.steps:
            if entry.deferred is not None:
                by_plan[id(entry.deferred.plan)].append(entry)
        for entries in by_plan.values():
            plan = entries[0].deferred.plan  # type: ignore[union-attr]
            values = finish_deferred(plan, [e.deferred for e in entries])  # type: ignore[misc]
            for entry, row in zip(entries, values, strict=True):
                entry.values, entry.deferred = row, None

    def columns(self) -> dict[str, np.ndarray]:
        """The long table as columns (schema.LAYER_COLUMNS)."""
        self._finish_deferred()
        # label columns built once per distinct label list (one per plan): a long table
        # then makes no Python object per row (a million of them cost a full garbage
        # collection, 0.1 s, each time a table was built)
        built: dict[int, dict[str, np.ndarray]] = {}
        for entry in self.steps:
            if id(entry.labels) not in built:
                built[id(entry.labels)] = _label_columns(entry.labels)
        parts = [built[id(entry.labels)] for entry in self.steps] or [_label_columns([])]
        sizes = [len(entry.labels) for entry in self.steps]
        steps = np.array([entry.step for entry in self.steps], dtype=np.int32)
        values = [entry.values for entry in self.steps]
        return {
            "step": np.repeat(steps, sizes),
            **{key: np.concatenate([part[key] for part in parts]) for key in parts[0]},
            "value": np.concatenate(values) if values else np.array([], np.float64),  # type: ignore[arg-type]
        }


def _label_columns(labels: Sequence[Label]) -> dict[str, np.ndarray]:
    """The layer, t, name and metric columns of a list of labels."""
    layer, t, name, metric = zip(*labels, strict=True) if labels else ((), (), (), ())
    return {
        "layer": np.asarray(layer, dtype=np.int16),
        "t": np.asarray(t, dtype=np.int16),
        "name": np.asarray(name, dtype=object),
        "metric": np.asarray(metric, dtype=object),
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
