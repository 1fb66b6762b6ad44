"""Statistics over the batch's examples (``train.per_example: true``): for each watched
preact and act, per example n, ln(q_n / q_in,n), then its mean and variance over the
batch (catalog.PER_EXAMPLE defines them).

Taken on the host's request at probed steps only, from the tape's tensors, in float64:
a (B, units) reduction per watched tensor, exact, with no packing (it is asked for
studies at initialisation, not for every step of long training).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from initbench.measure import catalog
from initbench.measure.plan import Label
from initbench.measure.tape import Tape
from initbench.nets.instrument import WatchedLayer


def mean_squares(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,) float64: each example's mean of squares over its other axes."""
    return x.detach().flatten(1).double().square().mean(dim=1)


def log_ratios(tensor: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(B,) ln(q_n / q_in,n): each example's mean square over its input's (0 gives -inf)."""
    return torch.log(mean_squares(tensor)) - torch.log(mean_squares(inputs))


def per_example(
    tape: Tape, inputs: torch.Tensor, layers: Sequence[WatchedLayer]
) -> tuple[list[Label], np.ndarray]:
    """Labels and values of catalog.PER_EXAMPLE for every watched (layer, t) of ``tape``,
    whose forward pass read ``inputs`` (B, ...): per tensor, by layer and time step."""
    names = {layer.index: layer.name for layer in layers}
    labels: list[Label] = []
    rows: list[torch.Tensor] = []
    for tensor in catalog.PER_EXAMPLE_OF:
        for (layer, t), value in sorted(tape.tensors[tensor].items()):
            ratios = log_ratios(value, inputs)
            var = ratios.var() if len(ratios) > 1 else ratios.new_tensor(float("nan"))
            rows.append(torch.stack([ratios.mean(), var]))
            labels += [
                (layer, t, names[layer], f"{tensor}_{r}") for r in catalog.PER_EXAMPLE_REDUCTIONS
            ]
    values = torch.cat(rows).cpu().numpy() if rows else np.array([], np.float64)
    return labels, values
