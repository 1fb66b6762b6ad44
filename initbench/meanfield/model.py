"""Reading what the theory is asked about: a run config's model section and its named
references, with ``initbench.config.spec.ModelConfig``'s defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from initbench.config.architectures import ARCHITECTURES
from initbench.config.geometry import sequence_of
from initbench.config.runconfig import norm_of
from initbench.config.spec import ModelConfig


class TheoryError(ValueError):
    """A request the theory cannot answer as asked (unknown arch, bad q1, ...)."""


# The keys a partial model section is completed with, ModelConfig's defaults, in the order
# `initbench theory --format json` prints the model (then the keys given beyond these).
DEFAULTED_KEYS: Final = ("arch", "depth", "width", "init", "bias_init", "batchnorm")


def split_ref(value: Any) -> tuple[str, dict[str, Any]]:
    """A named reference ``name`` or ``{name, **params}`` as (name, params)."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and "name" in value:
        return str(value["name"]), {k: v for k, v in value.items() if k != "name"}
    raise TheoryError(f"expected a name or a mapping with 'name', got {value!r}")


def _default_activation(arch: str) -> str:
    """The activation ModelConfig resolves to when none is given (relu; rnn: tanh)."""
    return split_ref(ModelConfig.model_construct(arch=arch).resolved().activation)[0]


def model_section(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` section of a resolved run config (or a model section itself), with
    ModelConfig's defaults filled in (activation: its per-arch one) and the arch checked."""
    defaults = {key: ModelConfig.model_fields[key].default for key in DEFAULTED_KEYS}
    model = {**defaults, **config.get("model", config)}
    sequence = sequence_of(config.get("data", {})) if "model" in config else "rows"
    if sequence != "rows":  # the steps the Elman map runs over (config.geometry.SEQUENCES)
        model["sequence"] = sequence
    ARCHITECTURES.get(model["arch"])  # UnknownNameError, with the close matches
    model["activation"] = model.get("activation") or _default_activation(model["arch"])
    if norm_of(model) == "batch" and model["arch"] == "rnn":
        raise TheoryError("batchnorm is not available for arch rnn")
    return model


def recurrent_init(model: Mapping[str, Any]) -> Any:
    """The reference that initialises an rnn's recurrent weight: ``recurrent_init``, or
    where that is None (or absent) ``init``, as ModelConfig resolves it."""
    return model.get("recurrent_init") or model.get("init")
