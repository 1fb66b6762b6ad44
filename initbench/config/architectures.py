"""The architectures a spec can name (``model.arch``): what each network is and what it
watches. The classes live in :mod:`initbench.nets.models`; they are looked up only when a
network is built, so validating a spec or listing the catalog does not import torch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from initbench.config.registry import Registry

if TYPE_CHECKING:
    from initbench.nets.models import InstrumentedModel


@dataclass(frozen=True)
class Architecture:
    """One architecture: what it is, what it watches, and the name of its model class in
    :mod:`initbench.nets.models`."""

    summary: str
    watched: str
    class_name: str

    def model_class(self) -> type[InstrumentedModel]:
        """The model class (imports torch)."""
        return getattr(importlib.import_module("initbench.nets.models"), self.class_name)


ARCHITECTURES: Registry[Architecture] = Registry("architecture")
ARCHITECTURES.add(
    "mlp",
    Architecture(
        "784 -> depth x [Linear(width) -> BatchNorm1d? -> act] -> Linear(10)",
        "each hidden Linear with its batchnorm and activation: fc1..fc<depth>",
        "MLP",
    ),
)
ARCHITECTURES.add(
    "cnn",
    Architecture(
        "depth x [Conv2d 3x3 -> BatchNorm2d? -> act], stride 2 at 1/3 and 2/3 of depth, "
        "global average pool -> Linear(10)",
        "each conv with its batchnorm and activation: conv1..conv<depth>",
        "CNN",
    ),
)
ARCHITECTURES.add(
    "rnn",
    Architecture(
        "Elman RNN over 28 rows of 28 pixels, depth stacked layers of width units, "
        "readout from the last state",
        "each layer at each time step t = 1..28: rnn1..rnn<depth>",
        "RNN",
    ),
)
