"""A run's probe: one probed step's tape -> labelled statistics of the catalogue.

After ``loss.backward()`` the probe gathers the step's tensors (the tape's, the watched
layers' weights and every gradient), looks up the plan of that structure (built once per
run, :mod:`initbench.measure.plan`), and queues the packed reduction on the device
(:mod:`initbench.measure.reduce`). The step's one float64 vector reaches the host in the
step's one transfer, where the statistics are finished in float64 (now, or later with
the run's other finite steps: :mod:`initbench.measure.recorder`).

Definitions: :mod:`initbench.measure.catalog`. ``X_mean``, ``X_var`` (unbiased) and
``X_sq`` are over *all* elements of the batch tensor, never a per-unit variance averaged.
tests/test_fast_path.py checks every statistic of every model against a float64
reference written from the definitions.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from initbench.measure import catalog
from initbench.measure.counts import Scratch
from initbench.measure.plan import Label, Plan, slots, weight_slots
from initbench.measure.recorder import Deferred, defer
from initbench.measure.reduce import Layout, Reducer
from initbench.measure.tape import Key, Tape
from initbench.nets.instrument import WatchedLayer

__all__ = ["Launched", "Probe", "Tape", "measure", "moments"]  # Tape: where it used to be


@dataclass(slots=True)
class Launched:
    """A probed step whose device work is queued: ``vector`` goes to the host (with
    anything else the step sends, in one transfer: :meth:`to_host`), then :meth:`finish`
    or :meth:`defer`. ``extras``: the vector's last slots, for the caller's own values
    (see :class:`Probe`)."""

    plan: Plan
    tensors: Sequence[torch.Tensor]  # the plan's rows
    vector: torch.Tensor  # float64 on the device; the next launch overwrites it
    extras: torch.Tensor

    def to_host(self) -> np.ndarray:
        """The vector on the host (the step's one transfer; on a CPU, read in place)."""
        return self.plan.reducer.to_host()

    def finish(self, host: np.ndarray) -> tuple[list[Label], np.ndarray, float]:
        """(row labels, their float64 values, global gradient norm) from ``vector`` on
        the host."""
        return self.plan.finish(host, self.tensors)

    def defer(self, host: np.ndarray) -> Deferred | None:
        """The step's sums to finish later, or None if it must be finished now (see
        :func:`initbench.measure.recorder.defer`)."""
        return defer(self.plan, host)


class Probe:
    """Measures one run's probed steps, reusing each step structure's plan and the work
    buffers. ``parameters``: the model's parameters, for the global gradient norm (the
    watched weights' gradients are measured anyway; biases and readout are added).
    ``extras``: slots at the end of each step's vector that the caller fills
    (:attr:`Launched.extras`) to send its own values in the same transfer."""

    def __init__(
        self,
        layers: Sequence[WatchedLayer],
        parameters: Sequence[torch.nn.Parameter] = (),
        extras: int = 0,
    ) -> None:
        self.layers, self.extras = list(layers), extras
        weights = weight_slots(self.layers)
        self._weight_slots = [slot for slot, _ in weights]
        self._weights = [weight for _, weight in weights]
        watched = {id(w) for w in self._weights}
        self.others = [p for p in parameters if id(p) not in watched]
        self._with_grads = self._weights + self.others
        self.scratch = Scratch()
        self._plans: dict[tuple[object, ...], Plan] = {}
        self._stored: dict[tuple[str, Key], torch.Tensor] = {}

    def store(self, name: str, key: Key, tensor: torch.Tensor) -> torch.Tensor:
        """A copy of ``tensor`` in the buffer kept for (name, key) (a Tape's ``store``)."""
        buffer = self._stored.get((name, key))
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
            self._stored[(name, key)] = buffer
        return buffer.copy_(tensor.detach())

    def candidates(self, tape: Tape) -> tuple[list[Key], list[torch.Tensor | None]]:
        """The watched (layer, t) and every tensor of the step, in the layout of
        :func:`initbench.measure.plan.slots`."""
        watched = tape.tensors
        keys = list(watched["preact"])
        normed, normed_grads = _normed(tape, keys)
        found: list[torch.Tensor | None] = list(watched["preact"].values())
        found += normed
        found += watched["act"].values()
        found += tape.gradients("preact")
        found += normed_grads
        for quantity in ("stream", "branch"):
            found += _optional(tape, keys, quantity)[0]
        found += _optional(tape, keys, "stream")[1]
        for name in catalog.GATED:
            found += tape.keyed(name, keys)
        found += self._weights
        found += [p.grad for p in self._with_grads]
        return keys, found

    def plan(self, keys: list[tuple[int, int]], found: list[torch.Tensor | None]) -> Plan:
        """The plan of a step with these tensors (built on the first step of its kind)."""
        # the model fixes every shape and dtype but the batch's, which the first tensor shows
        first = found[0] if found and found[0] is not None else None
        structure = (
            tuple(keys),
            tuple(map(type, found)),
            None if first is None else (first.shape, first.dtype, first.device),
        )
        plan = self._plans.get(structure)
        if plan is None:
            shapes = [None if t is None else tuple(t.shape) for t in found]
            candidate_slots = slots(keys, self._weight_slots, len(self.others))
            plan = Plan(candidate_slots, shapes, self.layers, self.extras)
            self._plans[structure] = plan
        return plan

    def launch(self, tape: Tape) -> Launched:
        """Queue the device work of a probed step, after ``loss.backward()``."""
        keys, found = self.candidates(tape)
        plan = self.plan(keys, found)
        rows = _pick(found, plan.rows)
        reducer = plan.reducer
        return Launched(plan, rows, reducer.launch(rows, self.scratch), reducer.extras)

    def measure(self, tape: Tape) -> tuple[list[Label], np.ndarray, float]:
        """:meth:`launch`, transfer and finish: labels, values, global gradient norm."""
        launched = self.launch(tape)
        return launched.finish(launched.to_host())


def _normed(tape: Tape, keys: list[Key]) -> tuple[list, list]:
    """The batchnorm outputs and their gradients in the order of ``keys`` (None where a
    layer has no batchnorm)."""
    normed = tape.tensors["normed"]
    if len(normed) == len(keys):  # every layer has batchnorm, watched in the same order
        return list(normed.values()), tape.gradients("normed")
    grads = dict(zip(normed, tape.gradients("normed"), strict=True))
    return [normed.get(key) for key in keys], [grads.get(key) for key in keys]


def _optional(tape: Tape, keys: list[Key], quantity: str) -> tuple[list, list]:
    """A residual block's ``quantity`` (stream, branch) and, for the stream, its gradients,
    in the order of ``keys`` (None where a layer ends no block)."""
    kept = tape.tensors[quantity]
    if not kept:
        return [None] * len(keys), [None] * len(keys)
    grads = tape.gradients(quantity) if quantity == "stream" else [None] * len(kept)
    by_key = dict(zip(kept, grads, strict=True))
    return [kept.get(key) for key in keys], [by_key.get(key) for key in keys]


def _pick(found: list[torch.Tensor | None], rows: list[int]) -> list[torch.Tensor]:
    """The tensors of ``rows``, in order."""
    if len(rows) < 2:
        return [found[row] for row in rows]  # type: ignore[misc]
    return list(operator.itemgetter(*rows)(found))


def measure(tape: Tape, layers: Sequence[WatchedLayer]) -> tuple[list[Label], np.ndarray]:
    """Row labels and the float64 values of every statistic of this step."""
    labels, values, _ = Probe(layers).measure(tape)
    return labels, values


def moments(stacked: torch.Tensor) -> torch.Tensor:
    """(G, ...) -> (G, 3) float64: mean, unbiased variance and mean square of each group
    member over all its elements, as a probed step computes them."""
    tensors = list(stacked.detach())
    layout = Layout([tuple(t.shape) for t in tensors])
    host = Reducer(layout).launch(tensors, Scratch()).cpu().numpy()
    return torch.from_numpy(layout.finish(host, tensors)[0][:, :3].copy())
