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
        "784 -> depth x [Linear(width) -> norm? -> act] -> Linear(10); model.widths per "
        "layer; model.residual: depth pre-activation blocks h + alpha F(h)",
        "each hidden Linear with its norm and activation: fc1..fc<depth> (residual: each "
        "branch layer res<l>)",
    ),
)
ARCHITECTURES.add(
    "cnn",
    Architecture(
        "depth x [Conv2d 3x3 -> norm? -> act], stride 2 at 1/3 and 2/3 of depth, "
        "global average pool -> Linear(10); model.residual: residual blocks, 1x1 projection "
        "shortcuts at stride 2",
        "each conv with its norm and activation: conv1..conv<depth> (residual: each branch "
        "layer res<l> and projection proj<l>)",
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
