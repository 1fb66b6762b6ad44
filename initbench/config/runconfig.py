"""One run's resolved configuration: named references to registry entries, the model and
train sections, and the run id that hashes them.

Named references (data, init, recurrent_init, bias_init, activation, optimizer) are a
name or a mapping ``{name: ..., <param>: ...}``; they resolve to a mapping with every
parameter filled in, so that two spellings of one configuration get one run id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from initbench.config.activations import ACTIVATIONS
from initbench.config.architectures import ARCHITECTURES, is_recurrent
from initbench.config.datasets import DATASETS
from initbench.config.initializers import INITIALIZERS
from initbench.config.optimizers import OPTIMIZERS
from initbench.config.problems import shown
from initbench.config.registry import ADDED, Registry, UnknownNameError, is_added

RUN_ID_LENGTH = 12


def _unknown_key_message(key: str, known: list[str], what: str = "key") -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {what} {shown(key)}{hint} (allowed: {', '.join(known)})"


# --- named references to registry entries ------------------------------------------------


def _ref_validator(registry: Registry[Any], kind: str) -> Callable[[Any], Any]:
    """Validator turning ``name`` or ``{name, **params}`` into ``{name, **all_params}``."""

    def validate(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping) or "name" not in value:
            raise PydanticCustomError(
                "named_ref",
                "expected a {kind} name or a mapping with 'name', got {got}",
                {"kind": kind, "got": shown(value)},
            )
        try:
            entry = registry.get(value["name"])
        except UnknownNameError as exc:
            raise PydanticCustomError("unknown_name", "{msg}", {"msg": exc.message}) from None
        params = {k: v for k, v in value.items() if k != "name"}
        try:
            validated = entry.params.model_validate(params)
        except ValidationError as exc:
            raise _nested_error(exc, f"{kind} {shown(value['name'])}", entry.params) from None
        return {"name": value["name"], **validated.model_dump(mode="json")}

    return validate


def _nested_error(exc: ValidationError, what: str, params: type[BaseModel]) -> PydanticCustomError:
    err = exc.errors()[0]
    sub = ".".join(str(p) for p in err["loc"])
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = _unknown_key_message(sub, list(params.model_fields), f"parameter of {what}")
    elif sub:
        message = f"{message} (got {shown(err.get('input'))})"
    return PydanticCustomError("invalid_params", "{msg}", {"msg": message, "subloc": sub})


class FrozenDict(dict[str, Any]):
    """A named reference inside a frozen config: a dict (it compares, serialises and
    hashes into the run id as one) that refuses every change, so a run's config and its
    run_id cannot drift apart. Copy it with ``dict(ref)`` to change it."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a run's config is frozen; copy the mapping with dict(...) to change it")

    __setitem__ = __delitem__ = __ior__ = _refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))  # pickle and deepcopy rebuild, never assign


@dataclass(frozen=True)
class RefOf:
    """Field metadata: the registry a named reference resolves in (for :func:`identity`)."""

    registry: Registry[Any]


def _ref(registry: Registry[Any], kind: str) -> Any:
    validate = _ref_validator(registry, kind)
    return Annotated[
        dict[str, Any], BeforeValidator(validate), AfterValidator(FrozenDict), RefOf(registry)
    ]


InitRef = _ref(INITIALIZERS, "initializer")
ActivationRef = _ref(ACTIVATIONS, "activation")
DatasetRef = _ref(DATASETS, "dataset")
OptimizerRef = _ref(OPTIMIZERS, "optimizer")


def _check_arch(value: Any) -> str:
    try:
        ARCHITECTURES.get(value)
    except UnknownNameError as exc:
        raise PydanticCustomError("unknown_name", "{msg}", {"msg": exc.message}) from None
    return str(value)


# --- the resolved configuration of one run -----------------------------------------------------


def _doc(text: str) -> Any:
    """A spec key's meaning, for the generated docs (docs/definitions.md)."""
    return Field(description=text)


_STRICT = ConfigDict(
    extra="forbid", frozen=True, strict=True, allow_inf_nan=False, validate_default=True
)
PositiveInt = Annotated[int, Field(ge=1)]


class ModelConfig(BaseModel):
    """Architecture, size, activation, normalisation and initialisation of the network."""

    model_config = _STRICT

    arch: Annotated[str, BeforeValidator(_check_arch), _doc("mlp, cnn, rnn, lstm or gru")] = "mlp"
    depth: Annotated[int, Field(ge=1, le=1000), _doc("hidden layers (rnn: stacked layers)")] = 5
    width: Annotated[
        int, Field(ge=1, le=16384), _doc("units (mlp), channels (cnn), hidden size (rnn)")
    ] = 256
    activation: Annotated[
        ActivationRef | None,
        _doc("see initbench list activations; none: relu, tanh for rnn (lstm, gru: tanh only)"),
    ] = None
    batchnorm: Annotated[bool, _doc("BatchNorm after each affine map (mlp, cnn)")] = False
    init: Annotated[InitRef, _doc("initializer of every weight, the readout's too")] = (
        "torch_default"
    )
    recurrent_init: Annotated[
        InitRef | None,
        _doc("rnn, lstm, gru: hidden-to-hidden weights (per gate block); none: same as init"),
    ] = None
    bias_init: Annotated[InitRef, _doc("biases (zeros, constant, normal, uniform, ...)")] = "zeros"
    forget_bias: float = Field(
        0.0,
        ge=-100,
        le=100,
        description="lstm only: added to the forget gate's bias after bias_init (0 as torch; "
        "1 as Gers et al. 2000, Jozefowicz et al. 2015, Keras' unit_forget_bias)",
        json_schema_extra=ADDED,
    )

    @model_validator(mode="after")
    def _per_arch(self) -> ModelConfig:
        if is_recurrent(self.arch) and self.batchnorm:
            raise PydanticCustomError(
                "rnn_batchnorm",
                "batchnorm is not available for arch {arch} (set model.batchnorm: false)",
                {"arch": self.arch, "subloc": "batchnorm"},
            )
        if not is_recurrent(self.arch) and self.recurrent_init is not None:
            raise PydanticCustomError(
                "not_rnn",
                "recurrent_init applies only to arch rnn, lstm or gru (this is {arch})",
                {"arch": self.arch, "subloc": "recurrent_init"},
            )
        _check_gated(self)
        return self

    def resolved(self) -> ModelConfig:
        """Copy with per-architecture defaults filled in."""
        recurrent = is_recurrent(self.arch)
        activation = self.activation or {"name": "tanh" if recurrent else "relu"}
        recurrent_ref = self.recurrent_init or (self.init if recurrent else None)
        return self.model_copy(update={"activation": activation, "recurrent_init": recurrent_ref})


def _check_gated(model: ModelConfig) -> None:
    """forget_bias is the LSTM's; a gated cell's activations are its own (tanh)."""
    if model.forget_bias != 0.0 and model.arch != "lstm":
        raise PydanticCustomError(
            "not_lstm",
            "forget_bias applies only to arch lstm (this is {arch})",
            {"arch": model.arch, "subloc": "forget_bias"},
        )
    if ARCHITECTURES.get(model.arch).gates and model.activation not in (None, {"name": "tanh"}):
        raise PydanticCustomError(
            "gated_activation",
            "arch {arch} has its own activations (sigmoid gates, tanh); leave "
            "model.activation unset or tanh",
            {"arch": model.arch, "subloc": "activation"},
        )


class TrainConfig(BaseModel):
    """Optimizer and schedule of the training loop."""

    model_config = _STRICT

    optimizer: Annotated[OptimizerRef, _doc("sgd (momentum, nesterov) or adam")] = "sgd"
    lr: Annotated[float, Field(gt=0, le=1e6), _doc("learning rate")] = 0.01
    weight_decay: Annotated[float, Field(ge=0), _doc("L2 weight decay")] = 0.0
    batch_size: Annotated[
        int,
        Field(ge=1, le=1_000_000),
        _doc("examples per step; a fresh seeded permutation per epoch, last partial dropped"),
    ] = 128
    steps: Annotated[int, Field(ge=1, le=10_000_000), _doc("optimizer updates")] = 200
    log_every: Annotated[PositiveInt, _doc("probe interval, plus step 0 and the last step")] = 10
    eval_every: Annotated[
        int, Field(ge=0), _doc("test-set evaluation interval; 0: only at the end")
    ] = 0
    clip_grad_norm: float = Field(
        0.0,
        ge=0,
        description="clip the global L2 norm of all gradients to this before each update "
        "(torch.nn.utils.clip_grad_norm_); 0: off",
        json_schema_extra=ADDED,
    )


class RunConfig(BaseModel):
    """Everything that determines one run's numbers; its hash is the run id."""

    model_config = _STRICT

    seed: Annotated[int, Field(ge=0, le=2**63 - 1)]
    data: DatasetRef
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _sequence_needs_a_recurrent_model(self) -> RunConfig:
        sequence = self.data.get("sequence", "rows")
        if sequence != "rows" and not is_recurrent(self.model.arch):
            raise PydanticCustomError(
                "not_recurrent",
                "data.sequence {sequence} applies only to arch rnn, lstm or gru (this is "
                "{arch}, which reads the whole image)",
                {"sequence": sequence, "arch": self.model.arch, "subloc": "data.sequence"},
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict of the resolved config."""
        return self.model_dump(mode="json")

    def identity(self) -> dict[str, Any]:
        """The resolved config that the run id hashes: :meth:`as_dict` less every key added
        after run ids were pinned (:data:`~initbench.config.registry.ADDED`) that is at its
        default, so that stored runs keep their ids when a key is added."""
        return _without_added_defaults(type(self), self.as_dict())

    @property
    def run_id(self) -> str:
        """Stable hash of the resolved config: same config, same id."""
        return run_id_of(self.identity())


def _without_added_defaults(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    kept = dict(values)
    for name, info in model.model_fields.items():
        if name not in kept:
            continue
        if is_added(info) and kept[name] == info.get_default(call_default_factory=True):
            del kept[name]
            continue
        value = kept[name]
        ref = next((m for m in info.metadata if isinstance(m, RefOf)), None)
        if ref is not None and isinstance(value, dict) and value.get("name") in ref.registry:
            params = ref.registry.get(value["name"]).params
            kept[name] = _without_added_defaults(params, value)
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            kept[name] = _without_added_defaults(info.annotation, value)
    return kept


def run_id_of(config: Mapping[str, Any]) -> str:
    """First RUN_ID_LENGTH hex digits of sha256 over the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_LENGTH]
