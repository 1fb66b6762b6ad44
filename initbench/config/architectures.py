"""The architectures a spec can name (``model.arch``): what each network is and what it
watches. The classes that build them live in :mod:`initbench.nets.models`
(``MODEL_CLASSES``), so validating a spec or listing the catalog does not import torch."""

from __future__ import annotations

from dataclasses import dataclass

from initbench.config.registry import Registry


@dataclass(frozen=True)
class Architecture:
    """One architecture: what the network is and which of its layers are watched."""

    summary: str
    watched: str


ARCHITECTURES: Registry[Architecture] = Registry("architecture")
ARCHITECTURES.add(
    "mlp",
    Architecture(
        "784 -> depth x [Linear(width) -> BatchNorm1d? -> act] -> Linear(10)",
        "each hidden Linear with its batchnorm and activation: fc1..fc<depth>",
    ),
)
ARCHITECTURES.add(
    "cnn",
    Architecture(
        "depth x [Conv2d 3x3 -> BatchNorm2d? -> act], stride 2 at 1/3 and 2/3 of depth, "
        "global average pool -> Linear(10)",
        "each conv with its batchnorm and activation: conv1..conv<depth>",
    ),
)
ARCHITECTURES.add(
    "rnn",
    Architecture(
        "Elman RNN over 28 rows of 28 pixels, depth stacked layers of width units, "
        "readout from the last state",
        "each layer at each time step t = 1..28: rnn1..rnn<depth>",
    ),
)
