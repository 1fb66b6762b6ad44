"""Activation functions and the properties the probes and the theory need.

``kind`` decides which extra statistic a layer records: ``rectifier`` activations get
``dead_frac`` (units whose input is <= 0 for the whole batch), ``bounded`` ones get
``sat_frac`` (saturated elements, relative to ``output_range``). ``zero_negative_grad``
says whether such a unit is truly dead: only where the gradient is exactly 0 for every
negative input (relu; leaky_relu with negative_slope 0) does it pass no gradient, so only
there does the report flag ``dead``; elu, selu and leaky_relu still pass gradient.
``torch_gain`` is what ``torch.nn.init.calculate_gain`` returns for it, shown by
``initbench list`` - note that torch's SELU gain (3/4) is not the self-normalising choice
(lecun_normal is).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from initbench.config.registry import NoParams, Params, Registry

if TYPE_CHECKING:
    from torch import nn

Kind = Literal["rectifier", "bounded", "smooth", "linear"]


@dataclass(frozen=True)
class Activation:
    """One activation: formula, kind, output range and how to build its torch module."""

    formula: str
    kind: Kind
    params: type[Params]
    module: Callable[[Any], nn.Module]
    output_range: tuple[float, float] = (-math.inf, math.inf)
    torch_gain: str = ""
    # True when, with these parameters, the derivative is exactly 0 for every input < 0:
    # a unit whose input is <= 0 for the whole batch then passes no gradient (dead).
    zero_negative_grad: Callable[[Mapping[str, Any]], bool] = lambda params: False


ACTIVATIONS: Registry[Activation] = Registry("activation")


class SlopeParams(Params):
    negative_slope: float = Field(default=0.01, ge=0)


class AlphaParams(Params):
    alpha: float = Field(default=1.0, gt=0)


class BetaParams(Params):
    beta: float = Field(default=1.0, gt=0)


class GeluParams(Params):
    approximate: Literal["none", "tanh"] = "none"


def _nn() -> Any:
    from torch import nn

    return nn


ACTIVATIONS.add(
    "relu",
    Activation(
        "max(0, x)",
        "rectifier",
        NoParams,
        lambda p: _nn().ReLU(),
        torch_gain="sqrt(2)",
        zero_negative_grad=lambda params: True,
    ),
)
ACTIVATIONS.add(
    "leaky_relu",
    Activation(
        "x if x > 0 else negative_slope * x  (default 0.01)",
        "rectifier",
        SlopeParams,
        lambda p: _nn().LeakyReLU(p.negative_slope),
        torch_gain="sqrt(2 / (1 + negative_slope^2))",
        zero_negative_grad=lambda params: params.get("negative_slope", 0.01) == 0,
    ),
)
ACTIVATIONS.add(
    "elu",
    Activation(
        "x if x > 0 else alpha * (exp(x) - 1)",
        "rectifier",
        AlphaParams,
        lambda p: _nn().ELU(p.alpha),
        torch_gain="1 (torch has no ELU gain)",
    ),
)
ACTIVATIONS.add(
    "selu",
    Activation(
        "lambda * (x if x > 0 else alpha * (exp(x) - 1)), lambda=1.0507, alpha=1.6733 "
        "(Klambauer et al. 2017)",
        "rectifier",
        NoParams,
        lambda p: _nn().SELU(),
        torch_gain="3/4 (not self-normalising; use lecun_normal)",
    ),
)
ACTIVATIONS.add(
    "gelu",
    Activation(
        "x * Phi(x)  (approximate: none | tanh)",
        "smooth",
        GeluParams,
        lambda p: _nn().GELU(approximate=p.approximate),
        torch_gain="1 (torch has no GELU gain)",
    ),
)
ACTIVATIONS.add(
    "silu",
    Activation(
        "x * sigmoid(x)  (swish)",
        "smooth",
        NoParams,
        lambda p: _nn().SiLU(),
        torch_gain="1 (torch has no SiLU gain)",
    ),
)
ACTIVATIONS.add(
    "softplus",
    Activation(
        "log(1 + exp(beta x)) / beta",
        "smooth",
        BetaParams,
        lambda p: _nn().Softplus(beta=p.beta),
        output_range=(0.0, math.inf),
        torch_gain="1 (torch has no softplus gain)",
    ),
)
ACTIVATIONS.add(
    "tanh",
    Activation("tanh(x)", "bounded", NoParams, lambda p: _nn().Tanh(), (-1.0, 1.0), "5/3"),
)
ACTIVATIONS.add(
    "sigmoid",
    Activation(
        "1 / (1 + exp(-x))", "bounded", NoParams, lambda p: _nn().Sigmoid(), (0.0, 1.0), "1"
    ),
)
ACTIVATIONS.add(
    "linear",
    Activation(
        "x  (no non-linearity)", "linear", NoParams, lambda p: _nn().Identity(), torch_gain="1"
    ),
)

# Saturation threshold: an element is saturated beyond this fraction of the half-range.
SATURATION_FRACTION = 0.99


def dead_units_pass_no_gradient(ref: Mapping[str, Any]) -> bool:
    """True when a unit of activation ``ref`` (``{name, **params}``) whose input is <= 0
    for the whole batch passes no gradient, i.e. ``dead_frac`` counts truly dead units."""
    entry = ACTIVATIONS.get(str(ref["name"]))
    params = entry.params.model_validate({k: v for k, v in ref.items() if k != "name"})
    return entry.zero_negative_grad(params.model_dump())


def build_activation(name: str, params: dict[str, Any]) -> nn.Module:
    """The torch module for an activation reference."""
    entry = ACTIVATIONS.get(name)
    return entry.module(entry.params.model_validate(params))
