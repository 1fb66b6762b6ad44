"""What the probe sees of a network: its watched layers, and the tape a forward pass
hands each layer's tensors to.

The models (:mod:`initbench.nets.models`) call ``tape.watch`` on logging steps only; what
a tape does with the tensors is the measuring stage's business (:mod:`initbench.measure`),
so the networks know nothing of statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class WatchedLayer:
    """A watched layer: index, name, its weights and the activation's kind/range."""

    index: int
    name: str
    weight: nn.Parameter
    recurrent_weight: nn.Parameter | None
    activation: str
    kind: str
    output_range: tuple[float, float]


class Tape(Protocol):
    """Receives one watched layer's tensors during a forward pass. A tape that needs only
    some of them subclasses this and overrides those methods; the others do nothing."""

    def watch(
        self,
        layer: int,
        t: int,
        preact: torch.Tensor,
        normed: torch.Tensor | None,
        act: torch.Tensor,
    ) -> None:
        """Layer ``layer`` at time step ``t`` (0 for feed-forward) computed ``preact``
        (affine output), ``normed`` (batchnorm output, None without) and ``act``."""

    def watch_block(self, layer: int, stream: torch.Tensor, branch: torch.Tensor) -> None:
        """A residual block whose last watched layer is ``layer`` added ``branch`` to the
        stream, giving ``stream`` (its output)."""

    def watch_gates(
        self,
        layer: int,
        t: int,
        gates: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        cell: torch.Tensor | None,
    ) -> None:
        """A gated layer's gates at (layer, t), after its :meth:`watch`: gate name ->
        (pre-activation, activation), and the LSTM's cell state c_t (None for a GRU)."""
