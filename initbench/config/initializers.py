"""Weight initializers: formula, fans, and application to a tensor.

Conventions (stated once, used everywhere):

* Fans follow torch.nn.init: a weight of shape (out, in, *kernel) has
  ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``; a conv
  kernel's receptive field is included.
* "normal" means a plain normal, as in torch.nn.init (kaiming_normal_,
  xavier_normal_). Keras and JAX draw their he/glorot/lecun "normal" from a normal
  truncated at +-2 sigma whose std is divided by 0.87962566103423978 so that the
  variance is still scale/fan; ask for it with ``distribution: truncated_normal``.
* Every named scaling initializer is a preset of ``variance_scaling(scale, mode,
  distribution)``: Var(W) = scale / fan, fan chosen by ``mode``.
* ``gain`` multiplies the standard deviation of the named formula, so Var(W) is gain^2
  times the paper's: he_normal(gain=g) is torch's ``kaiming_normal_`` times g (its
  ``std = calculate_gain(nonlinearity, a) / sqrt(fan)`` with the gain sqrt(2 / (1 + a^2))
  already in He's formula), lecun_normal(gain=g) is ``std = g / sqrt(fan_in)`` as torch's
  gain, xavier's is torch's ``gain``. Default 1: the paper's init.

Every draw uses the explicit ``torch.Generator`` it is given, never the global RNG.
torch is imported inside the functions so that ``initbench list`` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from initbench.config.registry import ADDED, NoParams, Params, Registry

if TYPE_CHECKING:
    import torch

# Std of a standard normal truncated to [-2, 2], as scipy.stats.truncnorm(-2, 2).std();
# Keras/JAX divide by it so a 2-sigma truncated normal keeps the intended variance.
TRUNCATED_NORMAL_STD = 0.87962566103423978

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]


class InitError(ValueError):
    """An initializer that cannot apply to a tensor (e.g. identity on a non-square weight)."""


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape, as torch.nn.init computes them."""
    if len(shape) < 2:
        raise InitError(f"fans need a weight with 2 or more dimensions, got shape {tuple(shape)}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


@dataclass(frozen=True)
class Initializer:
    """One initializer: its parameters, formula and how to apply it.

    ``moments(params, shape, fans)`` returns the (mean, variance) of one element as
    the formula defines it, which the report compares with the measured ``w_var``.
    ``check(params, shape)`` returns why the initializer cannot apply to that shape,
    or None. ``for_bias``: may initialise a bias vector (fans are the weight's).
    ``data_dependent``: its scale is set on a batch of data after ``apply`` (LSUV), so
    ``moments`` has no formula. ``mean_field``: why the mean-field map, which assumes
    i.i.d. weights of the given variance, does not describe it (None: it does).
    """

    summary: str
    formula: str
    convention: str
    params: type[Params]
    apply: Callable[[torch.Tensor, Any, torch.Generator, tuple[int, int]], None]
    moments: Callable[[Any, Sequence[int], tuple[int, int]], tuple[float, float]]
    check: Callable[[Any, Sequence[int]], str | None] = lambda params, shape: None
    for_bias: bool = False
    data_dependent: bool = False
    mean_field: str | None = None


INITIALIZERS: Registry[Initializer] = Registry("initializer")


# --- constant and naive initializers -------------------------------------------------


class ConstantParams(Params):
    value: float = 0.0


def _apply_constant(t: torch.Tensor, p: ConstantParams, g: torch.Generator, fans: Any) -> None:
    import torch

    torch.nn.init.constant_(t, p.value)


INITIALIZERS.add(
    "zeros",
    Initializer(
        summary="all zeros: the symmetry is never broken",
        formula="W = 0",
        convention="torch.nn.init.zeros_",
        params=NoParams,
        apply=lambda t, p, g, fans: _apply_constant(t, ConstantParams(value=0.0), g, fans),
        moments=lambda p, shape, fans: (0.0, 0.0),
        for_bias=True,
    ),
)
INITIALIZERS.add(
    "constant",
    Initializer(
        summary="every weight the same value",
        formula="W = value  (default 0)",
        convention="torch.nn.init.constant_",
        params=ConstantParams,
        apply=_apply_constant,
        moments=lambda p, shape, fans: (p.value, 0.0),
        for_bias=True,
    ),
)


class UniformParams(Params):
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> UniformParams:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


def _apply_uniform(t: torch.Tensor, p: UniformParams, g: torch.Generator, fans: Any) -> None:
    import torch

    torch.nn.init.uniform_(t, p.low, p.high, generator=g)


INITIALIZERS.add(
    "uniform",
    Initializer(
        summary="naive uniform; default U[0, 1), the non-zero-mean init of early RNN code",
        formula="W ~ U[low, high)  (default [0, 1)); Var = (high-low)^2/12",
        convention="torch.nn.init.uniform_",
        params=UniformParams,
        apply=_apply_uniform,
        moments=lambda p, shape, fans: ((p.low + p.high) / 2, (p.high - p.low) ** 2 / 12),
        for_bias=True,
    ),
)


class NormalParams(Params):
    mean: float = 0.0
    std: float = Field(default=0.01, gt=0)


def _apply_normal(t: torch.Tensor, p: NormalParams, g: torch.Generator, fans: Any) -> None:
    import torch

    torch.nn.init.normal_(t, p.mean, p.std, generator=g)


INITIALIZERS.add(
    "normal",
    Initializer(
        summary="fixed-scale normal, independent of fan (default 'small normal', std 0.01)",
        formula="W ~ N(mean, std^2)  (default mean 0, std 0.01)",
        convention="torch.nn.init.normal_",
        params=NormalParams,
        apply=_apply_normal,
        moments=lambda p, shape, fans: (p.mean, p.std**2),
        for_bias=True,
    ),
)


def _apply_torch_default(
    t: torch.Tensor, p: Any, g: torch.Generator, fans: tuple[int, int]
) -> None:
    import torch

    bound = 1.0 / math.sqrt(fans[0])
    torch.nn.init.uniform_(t, -bound, bound, generator=g)


INITIALIZERS.add(
    "torch_default",
    Initializer(
        summary="what nn.Linear / nn.Conv2d do unasked (kaiming_uniform_ with a=sqrt(5))",
        formula="W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); Var = 1/(3 fan_in)",
        convention="torch.nn.Linear.reset_parameters (nn.RNN instead uses 1/sqrt(hidden))",
        params=NoParams,
        apply=_apply_torch_default,
        moments=lambda p, shape, fans: (0.0, 1.0 / (3 * fans[0])),
        for_bias=True,
    ),
)


def _apply_torch_rnn(t: torch.Tensor, p: Any, g: torch.Generator, fans: tuple[int, int]) -> None:
    import torch

    bound = 1.0 / math.sqrt(fans[1])
    torch.nn.init.uniform_(t, -bound, bound, generator=g)


INITIALIZERS.add(
    "torch_rnn",
    Initializer(
        summary="what nn.RNN / nn.LSTM / nn.GRU do unasked to every weight and bias: "
        "U(+-1/sqrt(hidden)), hidden = a (gate) block's rows",
        formula="W ~ U(-1/sqrt(fan_out), 1/sqrt(fan_out)); Var = 1/(3 fan_out) (a gate "
        "block's fan_out is the hidden size; a bias takes its weight block's)",
        convention="torch.nn.RNNBase.reset_parameters (1/sqrt(hidden_size))",
        params=NoParams,
        apply=_apply_torch_rnn,
        moments=lambda p, shape, fans: (0.0, 1.0 / (3 * fans[1])),
        for_bias=True,
    ),
)


# --- variance scaling and its presets --------------------------------------------------


def _fan(mode: Mode, fans: tuple[int, int]) -> float:
    fan_in, fan_out = fans
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


def draw_variance_scaling(
    t: torch.Tensor, variance: float, distribution: Distribution, g: torch.Generator
) -> None:
    """Fill ``t`` with zero-mean draws of the given variance from ``distribution``."""
    import torch

    std = math.sqrt(variance)
    if distribution == "normal":
        torch.nn.init.normal_(t, 0.0, std, generator=g)
    elif distribution == "truncated_normal":
        wide = std / TRUNCATED_NORMAL_STD
        torch.nn.init.trunc_normal_(t, 0.0, wide, -2 * wide, 2 * wide, generator=g)
    else:
        limit = math.sqrt(3.0) * std
        torch.nn.init.uniform_(t, -limit, limit, generator=g)


def _vs_variance(scale: float, mode: Mode, fans: tuple[int, int]) -> float:
    return scale / _fan(mode, fans)


class VarianceScalingParams(Params):
    scale: float = Field(default=1.0, gt=0)
    mode: Mode = "fan_in"
    distribution: Distribution = "normal"


def _register_scaling(
    name: str,
    summary: str,
    formula: str,
    convention: str,
    params: type[Params],
    scale_of: Callable[[Any], float],
) -> None:
    """Register a preset of variance_scaling; ``scale_of(params)`` gives its scale."""

    def apply(t: torch.Tensor, p: Any, g: torch.Generator, fans: tuple[int, int]) -> None:
        draw_variance_scaling(t, _vs_variance(scale_of(p), p.mode, fans), p.distribution, g)

    def moments(p: Any, shape: Sequence[int], fans: tuple[int, int]) -> tuple[float, float]:
        return 0.0, _vs_variance(scale_of(p), p.mode, fans)

    INITIALIZERS.add(name, Initializer(summary, formula, convention, params, apply, moments))


_DIST_NOTE = (
    "distribution normal (torch; default) | truncated_normal (Keras/JAX: 2-sigma, "
    "std / 0.8796) | uniform (+-sqrt(3 Var))"
)

_register_scaling(
    "variance_scaling",
    "general scaling: Var(W) = scale / fan; all named scaling inits are presets of it",
    "Var(W) = scale / n, n = fan_in | fan_out | (fan_in+fan_out)/2 by mode; " + _DIST_NOTE,
    "Keras/JAX VarianceScaling; 'normal' is plain normal as in torch",
    VarianceScalingParams,
    lambda p: p.scale,
)


def _gain() -> Any:
    """The ``gain`` of he and lecun: added after run ids were pinned, default 1."""
    return Field(default=1.0, gt=0, json_schema_extra=ADDED)


class HeParams(Params):
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    negative_slope: float = Field(default=0.0, ge=0)  # leaky_relu slope a: scale 2/(1+a^2)
    gain: float = _gain()


class HeNormalParams(HeParams):
    distribution: Distribution = "normal"


class HeUniformParams(HeParams):
    distribution: Distribution = "uniform"


def _he_scale(p: HeParams) -> float:
    return p.gain**2 * 2.0 / (1.0 + p.negative_slope**2)


_register_scaling(
    "he_normal",
    "He et al. 2015 (Kaiming): keeps the ReLU forward (fan_in) or backward (fan_out) variance",
    "W ~ N(0, gain^2 * 2 / ((1+a^2) fan)), a = negative_slope (0 for ReLU), gain 1 is He's "
    "(std = gain * sqrt(2/(1+a^2)) / sqrt(fan)); " + _DIST_NOTE,
    "torch.nn.init.kaiming_normal_(nonlinearity='leaky_relu', a=negative_slope) * gain",
    HeNormalParams,
    _he_scale,
)
_register_scaling(
    "he_uniform",
    "He et al. 2015 (Kaiming), uniform: same variance as he_normal",
    "W ~ U(-b, b), b = gain * sqrt(6 / ((1+a^2) fan)); Var = gain^2 * 2 / ((1+a^2) fan)",
    "torch.nn.init.kaiming_uniform_(nonlinearity='leaky_relu', a=negative_slope) * gain",
    HeUniformParams,
    _he_scale,
)


class XavierParams(Params):
    gain: float = Field(default=1.0, gt=0)
    mode: Literal["fan_avg"] = "fan_avg"


class XavierNormalParams(XavierParams):
    distribution: Distribution = "normal"


class XavierUniformParams(XavierParams):
    distribution: Distribution = "uniform"


_register_scaling(
    "xavier_normal",
    "Glorot & Bengio 2010: compromise between forward and backward variance, for tanh",
    "W ~ N(0, gain^2 * 2 / (fan_in + fan_out)); " + _DIST_NOTE,
    "torch.nn.init.xavier_normal_(gain); Keras glorot_normal = truncated_normal",
    XavierNormalParams,
    lambda p: p.gain**2,
)
_register_scaling(
    "xavier_uniform",
    "Glorot & Bengio 2010 'normalized initialization' (their eq. 16)",
    "W ~ U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)); Var = gain^2 * 2/(fan_in+fan_out)",
    "torch.nn.init.xavier_uniform_(gain); Keras glorot_uniform",
    XavierUniformParams,
    lambda p: p.gain**2,
)


class LecunParams(Params):
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    gain: float = _gain()


class LecunNormalParams(LecunParams):
    distribution: Distribution = "normal"


class LecunUniformParams(LecunParams):
    distribution: Distribution = "uniform"


_register_scaling(
    "lecun_normal",
    "LeCun 1998; the init SELU's self-normalisation assumes (Klambauer et al. 2017)",
    "W ~ N(0, gain^2 / fan_in)  (gain 1: LeCun's; std = gain / sqrt(fan_in)); " + _DIST_NOTE,
    "torch.nn.init.kaiming_normal_(nonlinearity='linear') * gain; Keras lecun_normal = truncated",
    LecunNormalParams,
    lambda p: p.gain**2,
)
_register_scaling(
    "lecun_uniform",
    "LeCun 1998, uniform: same variance as lecun_normal",
    "W ~ U(-b, b), b = gain * sqrt(3 / fan_in); Var = gain^2 / fan_in",
    "torch.nn.init.kaiming_uniform_(nonlinearity='linear') * gain; Keras lecun_uniform",
    LecunUniformParams,
    lambda p: p.gain**2,
)


# --- applying an initializer -----------------------------------------------------------------


def resolve(name: str, params: dict[str, Any] | None = None) -> tuple[Initializer, Params]:
    """Registry entry and validated parameters for an initializer reference."""
    entry = INITIALIZERS.get(name)
    return entry, entry.params.model_validate(params or {})


def cannot_apply(name: str, params: dict[str, Any], shape: Sequence[int], bias: bool) -> str | None:
    """Why initializer ``name`` cannot initialise a tensor of ``shape``, or None if it can."""
    entry, validated = resolve(name, params)
    if bias:
        if not entry.for_bias:
            usable = ", ".join(n for n, e in INITIALIZERS.items() if e.for_bias)
            return f"{name} cannot initialise a bias vector (usable for biases: {usable})"
        return None
    return entry.check(validated, shape)


def initialize(
    tensor: torch.Tensor,
    name: str,
    params: dict[str, Any],
    generator: torch.Generator,
    fans: tuple[int, int] | None = None,
) -> None:
    """Fill ``tensor`` in place; ``fans`` default to its own (pass the weight's for a bias)."""
    import torch

    entry, validated = resolve(name, params)
    reason = entry.check(validated, tuple(tensor.shape)) if fans is None else None
    if reason:
        raise InitError(reason)
    with torch.no_grad():
        entry.apply(tensor, validated, generator, fans or compute_fans(tuple(tensor.shape)))


def expected_moments(
    name: str, params: dict[str, Any], shape: Sequence[int], fans: tuple[int, int] | None = None
) -> tuple[float, float]:
    """(mean, variance) of one element of a tensor of ``shape`` as the formula defines it."""
    entry, validated = resolve(name, params)
    return entry.moments(validated, shape, fans or compute_fans(shape))


def weight_scale_sigma2(name: str, params: dict[str, Any], shape: Sequence[int]) -> float | None:
    """Mean-field sigma_w^2 = fan_in * Var(W); None where the mean is not zero."""
    mean, variance = expected_moments(name, params, shape)
    if mean != 0.0:
        return None
    return compute_fans(shape)[0] * variance


# The structured (orthogonal, identity, delta_orthogonal) and data-dependent (lsuv)
# initializers have their own modules; importing them here registers them, in that order,
# wherever INITIALIZERS is used (lsuv imports structured_inits first: its default base).
from initbench.config import lsuv, structured_inits  # noqa: E402, F401
