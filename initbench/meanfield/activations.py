"""phi and phi' of every registered activation on numpy arrays, keyed like
``initbench.config.activations.ACTIVATIONS`` (whose parameter models validate them), with
the closed-form Gaussian moments where they exist."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from initbench.config.activations import ACTIVATIONS
from initbench.meanfield.model import TheoryError

Array = np.ndarray
Fn = Callable[[Array], Array]

SELU_LAMBDA = 1.0507009873554804934193349852946  # Klambauer et al. 2017, as torch.nn.SELU
SELU_ALPHA = 1.6732632423543772848170429916717
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.Softplus returns x where beta * x exceeds it


@dataclass(frozen=True)
class NumpyActivation:
    """phi and phi' of one activation on numpy arrays; ``closed(q)`` (q a float or an
    array) gives the moments E phi, E phi^2, E phi'^2 of phi(sqrt(q) z) where exact."""

    name: str
    phi: Fn
    dphi: Fn
    closed: Callable[[Any], tuple[Any, Any, Any]] | None = None


def _rectifier(name: str, slope: float) -> NumpyActivation:
    # phi = x (x > 0), slope x (x <= 0): E phi = (1-s) sqrt(q/2pi), E phi^2 = q (1+s^2)/2,
    # E phi'^2 = (1+s^2)/2 (He et al. 2015); slope 1 is the linear net.
    def closed(q: Any) -> tuple[Any, Any, Any]:
        half = (1 + slope**2) / 2
        return (1 - slope) * np.sqrt(q / (2 * math.pi)), q * half, half + 0 * q

    return NumpyActivation(
        name, lambda x: np.where(x > 0, x, slope * x), lambda x: np.where(x > 0, 1.0, slope), closed
    )


def _sigmoid(x: Array) -> Array:
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + e^-x) without overflow


def _elu(alpha: float, scale: float = 1.0) -> tuple[Fn, Fn]:
    def phi(x: Array) -> Array:
        return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))

    def dphi(x: Array) -> Array:
        return scale * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))

    return phi, dphi


_erf = np.vectorize(math.erf, otypes=[float])
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_CUBIC = 0.044715  # torch's tanh approximation of GELU


def _normal_cdf(x: Array) -> Array:
    """Phi(x); beyond |x| = 8.3 it is 0 or 1 to within 5e-17, so erf is skipped there."""
    out = (x > 0).astype(float)
    inside = np.abs(x) < 8.3
    out[inside] = 0.5 * (1 + _erf(x[inside] / math.sqrt(2)))
    return out


def _gelu(approximate: str) -> tuple[Fn, Fn]:
    if approximate == "none":  # x Phi(x); derivative Phi(x) + x phi_N(x)
        density = lambda x: np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        return (lambda x: x * _normal_cdf(x)), (lambda x: _normal_cdf(x) + x * density(x))

    def inner(x: Array) -> Array:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        return np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))

    def dphi(x: Array) -> Array:
        t = inner(x)
        slope = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x**2)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * slope

    return (lambda x: 0.5 * x * (1 + inner(x))), dphi


def _softplus(beta: float) -> tuple[Fn, Fn]:
    def phi(x: Array) -> Array:
        return np.where(beta * x > SOFTPLUS_THRESHOLD, x, np.logaddexp(0.0, beta * x) / beta)

    def dphi(x: Array) -> Array:
        return np.where(beta * x > SOFTPLUS_THRESHOLD, 1.0, _sigmoid(beta * x))

    return phi, dphi


def _silu_dphi(x: Array) -> Array:
    s = _sigmoid(x)
    return s * (1 + x * (1 - s))


_BUILDERS: dict[str, Callable[[Any], NumpyActivation]] = {
    "linear": lambda p: _rectifier("linear", 1.0),
    "relu": lambda p: _rectifier("relu", 0.0),
    "leaky_relu": lambda p: _rectifier("leaky_relu", p.negative_slope),
    "elu": lambda p: NumpyActivation("elu", *_elu(p.alpha)),
    "selu": lambda p: NumpyActivation("selu", *_elu(SELU_ALPHA, SELU_LAMBDA)),
    "gelu": lambda p: NumpyActivation("gelu", *_gelu(p.approximate)),
    "silu": lambda p: NumpyActivation("silu", lambda x: x * _sigmoid(x), _silu_dphi),
    "softplus": lambda p: NumpyActivation("softplus", *_softplus(p.beta)),
    "tanh": lambda p: NumpyActivation("tanh", np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": lambda p: NumpyActivation(
        "sigmoid", _sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))
    ),
}


def numpy_activation(name: str, params: Mapping[str, Any] | None = None) -> NumpyActivation:
    """The numpy phi/phi' of a registered activation, its parameters validated (and
    defaulted) by the model ``activations.ACTIVATIONS`` uses, so the two cannot disagree."""
    entry = ACTIVATIONS.get(name)
    validated = entry.params.model_validate(dict(params or {}))
    if name not in _BUILDERS:
        raise TheoryError(
            f"activation {name!r} has no numpy version in initbench.meanfield.activations"
        )
    return _BUILDERS[name](validated)
