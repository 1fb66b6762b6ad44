"""Every catalogue a spec can name, in one place: the registries behind ``initbench
list`` and the named references of a run's config (``model.init``, ``data`` ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from initbench.config.activations import ACTIVATIONS
from initbench.config.architectures import ARCHITECTURES
from initbench.config.datasets import DATASETS
from initbench.config.initializers import INITIALIZERS
from initbench.config.optimizers import OPTIMIZERS
from initbench.config.registry import Registry, UnknownNameError

# ``initbench list TOPIC`` -> the registry listed.
CATALOGUES: Final[Mapping[str, Registry[Any]]] = {
    "initializers": INITIALIZERS,
    "activations": ACTIVATIONS,
    "datasets": DATASETS,
    "architectures": ARCHITECTURES,
    "optimizers": OPTIMIZERS,
}

# A named reference in a run config (the last key of its path) -> the registry it names.
REFERENCES: Final[Mapping[str, Registry[Any]]] = {
    "init": INITIALIZERS,
    "recurrent_init": INITIALIZERS,
    "bias_init": INITIALIZERS,
    "first_init": INITIALIZERS,
    "readout_init": INITIALIZERS,
    "activation": ACTIVATIONS,
    "data": DATASETS,
    "optimizer": OPTIMIZERS,
}


def ref_defaults(kind: str, name: str) -> dict[str, Any] | None:
    """Default parameters of a named reference (``init``, ``activation``, ``data`` ...),
    or None where the kind or the name is unknown, or a parameter has no default."""
    registry = REFERENCES.get(kind)
    if registry is None:
        return None
    try:
        return registry.get(name).params().model_dump(mode="json")
    except (UnknownNameError, ValueError):
        return None
