"""The optimizers a spec can name (``train.optimizer``), their parameters and builders.

Torch is imported only when an optimizer is built, so validating a spec, listing the
catalog and reporting results never pay for importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from initbench.config.registry import Params, Registry

if TYPE_CHECKING:
    import torch

    from initbench.config.spec import RunConfig


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: its parameters and how to build it (lr and weight_decay from train)."""

    summary: str
    params: type[Params]
    build: Callable[[list[torch.nn.Parameter], float, float, Any], torch.optim.Optimizer]
    state_copies: Callable[[Any], int]  # values of state kept per parameter (memory estimate)


class SGDParams(Params):
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDParams:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class AdamParams(Params):
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)


def _sgd(
    parameters: list[torch.nn.Parameter], lr: float, weight_decay: float, p: SGDParams
) -> torch.optim.Optimizer:
    import torch

    return torch.optim.SGD(
        parameters, lr=lr, momentum=p.momentum, nesterov=p.nesterov, weight_decay=weight_decay
    )


def _adam(
    parameters: list[torch.nn.Parameter], lr: float, weight_decay: float, p: AdamParams
) -> torch.optim.Optimizer:
    import torch

    return torch.optim.Adam(
        parameters, lr=lr, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=weight_decay
    )


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
OPTIMIZERS.add(
    "sgd",
    Optimizer(
        "SGD with optional (Nesterov) momentum: exposes the scale differences between inits",
        SGDParams,
        _sgd,
        lambda p: 1 if p.momentum > 0 else 0,  # the momentum buffer
    ),
)
OPTIMIZERS.add(
    "adam",
    Optimizer(
        "Adam (Kingma & Ba 2015): per-parameter scaling hides much of an init's scale",
        AdamParams,
        _adam,
        lambda p: 2,  # first and second moments
    ),
)


def build_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config.train`` over all of ``model``'s parameters."""
    ref = dict(config.train.optimizer)
    entry = OPTIMIZERS.get(ref.pop("name"))
    params = entry.params.model_validate(ref)
    return entry.build(list(model.parameters()), config.train.lr, config.train.weight_decay, params)
