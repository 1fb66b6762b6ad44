"""The concrete tape: what a probed forward pass keeps of each watched layer.

A :class:`Tape` is passed through the model's forward pass on logging steps only
(:class:`initbench.nets.instrument.Tape` is its protocol). It keeps references to the
watched tensors and asks autograd to retain the gradients of ``preact`` and ``normed``;
that changes no value the training computes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import torch

from initbench.measure.catalog import GATED, gate_tensors
from initbench.measure.reduce import is_large

Key = tuple[int, int]  # (layer, t)
Store = Callable[[str, Key, torch.Tensor], torch.Tensor]  # (name, key, tensor) -> a copy

FORWARD = ("preact", "normed", "act")  # what a layer hands the tape, in the catalogue's order
BLOCK = ("stream", "branch")  # what a residual block hands the tape at its last layer
# a gated layer's gates and cell state (catalog.GATED less the gradient)
GATE_FORWARD = tuple(name for name in GATED if not name.startswith("grad_"))
# whose gradients the tape keeps (grad_preact ...)
WITH_GRAD = ("preact", "normed", "stream", "cell")


class Tape:
    """The watched tensors of one forward pass: ``tensors[quantity][(layer, t)]``, in the
    order the layers were watched, and after ``backward()`` their gradients
    (:meth:`gradients`).

    With a ``store`` (a run's :meth:`Probe.store`), each tensor of PACK_LIMIT elements or
    more is copied into a buffer kept across steps, and so is its gradient (by a hook,
    instead of ``retain_grad``). Holding the large tensors themselves would keep the
    allocator from reusing their memory, and the fresh pages cost more than the copy
    (measured: 3,300 page faults per step of a 28x28 CNN without the probe, 10,000 with
    it holding the tensors, and 40% of the step's time).
    """

    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        quantities = FORWARD + BLOCK + GATE_FORWARD
        self.tensors: dict[str, dict[Key, torch.Tensor]] = {q: {} for q in quantities}
        self.grads: dict[str, dict[Key, torch.Tensor]] = {q: {} for q in WITH_GRAD}

    def watch(
        self,
        layer: int,
        t: int,
        preact: torch.Tensor,
        normed: torch.Tensor | None,
        act: torch.Tensor,
    ) -> None:
        """Keep this layer's tensors and the gradients of preact and normed."""
        for quantity, tensor in zip(FORWARD, (preact, normed, act), strict=True):
            if tensor is not None:
                self._keep(quantity, (layer, t), tensor)

    def watch_block(self, layer: int, stream: torch.Tensor, branch: torch.Tensor) -> None:
        """Keep a residual block's output ``stream`` (and its gradient) and the ``branch``
        it added, under the block's last watched layer."""
        for quantity, tensor in (("stream", stream), ("branch", branch)):
            self._keep(quantity, (layer, 0), tensor)

    def watch_gates(
        self,
        layer: int,
        t: int,
        gates: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        cell: torch.Tensor | None,
    ) -> None:
        """Keep a gated layer's gate pre-activations and activations and its cell state
        (and the cell state's gradient)."""
        named = {}
        for gate, tensors in gates.items():
            named.update(zip(gate_tensors(gate), tensors, strict=True))
        if cell is not None:
            named["cell"] = cell
        for quantity, tensor in named.items():
            self._keep(quantity, (layer, t), tensor)

    def _keep(self, quantity: str, key: Key, tensor: torch.Tensor) -> None:
        """Keep one tensor (a copy in the store's buffer if large) and, for WITH_GRAD, its
        gradient."""
        if self.store is not None and is_large(tensor.numel()):
            self._store_one(quantity, key, tensor)
            return
        if quantity in WITH_GRAD and tensor.requires_grad:
            tensor.retain_grad()
        self.tensors[quantity][key] = tensor

    def _store_one(self, quantity: str, key: Key, tensor: torch.Tensor) -> None:
        """A copy of a large tensor in the store's buffer; its gradient copied by a hook."""
        assert self.store is not None
        self.tensors[quantity][key] = self.store(quantity, key, tensor)
        if quantity in WITH_GRAD and tensor.requires_grad:
            tensor.register_hook(functools.partial(self._keep_grad, quantity, key))

    def _keep_grad(self, quantity: str, key: Key, grad: torch.Tensor) -> None:
        assert self.store is not None
        self.grads[quantity][key] = self.store(f"grad_{quantity}", key, grad)

    def gradients(self, quantity: str) -> list[torch.Tensor | None]:
        """The gradients of the watched ``quantity`` tensors after ``backward()``, in the
        order of ``tensors[quantity]`` (None for a tensor that got none)."""
        kept = self.grads[quantity]
        tensors = self.tensors[quantity]
        if not kept:
            return [tensor.grad for tensor in tensors.values()]
        return [kept.get(key, tensor.grad) for key, tensor in tensors.items()]

    def keyed(self, name: str, keys: list[Key]) -> list[torch.Tensor | None]:
        """A gated layer's watched tensor ``name`` of catalog.GATED (``grad_cell``: the
        cell state's gradient) at each of ``keys`` (None where it has none)."""
        quantity = name.removeprefix("grad_")
        tensors = self.tensors[quantity]
        if not tensors:
            return [None] * len(keys)
        if name != quantity:
            tensors = dict(zip(tensors, self.gradients(quantity), strict=True))
        return [tensors.get(key) for key in keys]
