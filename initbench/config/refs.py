"""Named references to registry entries (``data``, ``model.init``, ``model.activation``,
``train.optimizer`` ...): a name or a mapping ``{name: ..., <param>: ...}``, resolved to a
frozen mapping with every parameter filled in, so that two spellings of one configuration
get one run id; and the "did you mean" message of an unknown key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

from initbench.config.activations import ACTIVATIONS
from initbench.config.architectures import ARCHITECTURES
from initbench.config.datasets import DATASETS
from initbench.config.initializers import INITIALIZERS
from initbench.config.optimizers import OPTIMIZERS
from initbench.config.problems import shown
from initbench.config.registry import Registry, UnknownNameError


def _unknown_key_message(key: str, known: list[str], what: str = "key") -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    # the closest only, with those as close: 'widht' is 'width', not also 'widths'
    ratios = [difflib.SequenceMatcher(None, key, c).ratio() for c in close]
    close = [c for c, r in zip(close, ratios, strict=True) if r >= max(ratios) - 0.05]
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
