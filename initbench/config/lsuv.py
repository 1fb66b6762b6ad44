"""LSUV, layer-sequential unit-variance init (Mishkin & Matas 2016), as a registry entry.

What is decided here, torch-free: its parameters and the part that needs no data (the
base init, applied to every weight LSUV owns). The data-dependent part, the rescaling of
each watched layer on the run's first training batch, is :mod:`initbench.nets.lsuv`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, field_validator

# registers orthogonal, the default base, before lsuv
from initbench.config import structured_inits  # noqa: F401
from initbench.config.initializers import INITIALIZERS, InitError, Initializer, resolve
from initbench.config.registry import Params, UnknownNameError

NAME = "lsuv"


class LsuvParams(Params):
    """LSUV's parameters: the base init (any data-free initializer reference, resolved to
    the full mapping), the tolerance on |Var(preact) - 1| and the most rescalings."""

    model_config = ConfigDict(validate_default=True)

    base: dict[str, Any] = Field(default="orthogonal")  # type: ignore[assignment]
    tol: float = Field(default=0.1, gt=0, lt=1)
    max_iter: int = Field(default=10, ge=1, le=1000)

    @field_validator("base", mode="before")
    @classmethod
    def _resolved_base(cls, value: Any) -> dict[str, Any]:
        ref = {"name": value} if isinstance(value, str) else value
        if not isinstance(ref, Mapping) or "name" not in ref:
            raise ValueError(
                f"base: expected an initializer name or a mapping with 'name', got {value!r}"
            )
        name, params = ref["name"], {k: v for k, v in ref.items() if k != "name"}
        try:
            entry, validated = resolve(name, params)
        except UnknownNameError as exc:
            raise ValueError(f"base: {exc.message}") from None
        except ValidationError as exc:
            raise ValueError(f"base {name!r}: {exc.errors()[0]['msg']}") from None
        if entry.data_dependent:
            raise ValueError(f"base {name!r} is data-dependent itself; name a data-free init")
        return {"name": name, **validated.model_dump(mode="json")}


def _base(p: LsuvParams) -> tuple[Initializer, Params]:
    ref = dict(p.base)
    return resolve(ref.pop("name"), ref)


def _check(p: LsuvParams, shape: Sequence[int]) -> str | None:
    entry, validated = _base(p)
    return entry.check(validated, shape)


def _apply(t: Any, p: LsuvParams, g: Any, fans: tuple[int, int]) -> None:
    entry, validated = _base(p)
    entry.apply(t, validated, g, fans)


def _moments(p: LsuvParams, shape: Sequence[int], fans: Any) -> tuple[float, float]:
    raise InitError(
        "lsuv is data-dependent: each layer's scale is set on the run's first batch, so the "
        "weight variance has no formula (the run's summary records what LSUV did)"
    )


INITIALIZERS.add(
    NAME,
    Initializer(
        summary="data-dependent: the base init, then each watched layer rescaled on the run's "
        "batch 0 to unit preact variance (Mishkin & Matas 2016)",
        formula="W = base init; then per watched layer l = 1..depth, in forward order: "
        "W_l <- W_l / sqrt(Var(preact_l)) on the run's first training batch until "
        "|Var(preact_l) - 1| < tol, at most max_iter times (rnn: W_ih alone, Var over all the "
        "layer's time steps; W_hh keeps recurrent_init); biases untouched",
        convention="LSUV (Mishkin & Matas 2016, Alg. 1), its orthonormal pre-init a parameter",
        params=LsuvParams,
        apply=_apply,
        moments=_moments,
        check=_check,
        data_dependent=True,
        mean_field="lsuv sets each layer's scale on a batch of data, not by a formula, so "
        "sigma_w^2 is not known before the run",
    ),
)
