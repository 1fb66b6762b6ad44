"""Mean-field predictions of per-layer variance at initialisation.

The signal-propagation map of wide random networks (Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos"; Schoenholz et al. 2017,
"Deep information propagation"), with z ~ N(0, 1), sigma_w^2 = fan_in * Var(W) of the
layer's initializer and sigma_b^2 = Var(b)::

    q^{l+1} = sigma_w^2 * E_z[phi(sqrt(q^l) z)^2] + sigma_b^2    forward: preact second moment
    chi^l   = sigma_w^2 * E_z[phi'(sqrt(q^l) z)^2]               backward: gradient factor

Fixed point q* of the forward map, chi* = chi(q*), depth scale xi = -1/ln chi*
(Schoenholz et al. 2017): chi* < 1 ordered (gradients vanish e-fold every xi layers),
chi* = 1 critical (xi = inf), chi* > 1 chaotic (they grow e-fold every 1/ln chi* layers).

Conventions, chosen so that predictions compare with what initbench measures:

* ``q`` is the second moment E[h^2] of a pre-activation element. The tool's
  ``preact_var`` is the variance over *all* elements of the batch tensor; with zero-mean
  weights and biases the all-element mean of a pre-activation is 0 up to O(1/width)
  (even after ReLU, whose outputs have a positive mean), so ``preact_var`` =
  ``preact_sq`` = q. Non-zero-mean weights or biases (uniform [0, 1], constant, identity)
  break the map itself: they get no prediction, and the reason.
* Backward, the tool measures ``grad_preact_var`` g^l. Through W^{l+1} (out x in) the
  gradient picks up out * Var(W^{l+1}) * E[phi'^2] = chi^l * fan_out/fan_in of W^{l+1}.
  Every W^{l+1}, l >= 1, of initbench's models is square, so g^l / g^{l+1} = chi^l. The
  only non-square weight, W^1 (784 inputs, 1 channel or 28 pixels), never carries
  grad_preact: it sets q^1 (its sigma_w^2 differs: xavier gives 784/520 for the mlp) and
  grad_w^1 only. The readout sets g^L's scale, so g is predicted relative to g^L.
* CNN: a 3x3 'same' conv averages each position's window, v_out = sigma_w^2 A E[phi^2]
  A^T + sigma_b^2 per map position (Xiao et al. 2018), where the tap matrix A drops the
  taps on the zero padding; a gradient's field goes back as A^T G A. A uniform field
  shrinks by ((3n-2)/3n)^2 on an n x n map (0.95 at 28, 0.82 at 7); once its borders are
  low, later layers lose less. A stride-2 conv scales the gradient by ~1/4 (each input
  position feeds 9/4 outputs instead of 9). Reported values are means over positions;
  the backward decay (summary) is of g^l times layer l's map positions, the gradient's
  sum over positions, which the strides keep (as the report measures it).
* Batchnorm: the activation's input is normalised, so its variance is predicted 1 in
  every layer and q^{l+1} = sigma_w^2 E[phi(z)^2] + sigma_b^2 at any depth. Backward,
  grad_preact = grad_normed / sigma_unit, sigma_unit^2 being the per-unit batch variance
  sigma_w^2 Var_z[phi(z)]: per layer E[phi'(z)^2] / Var_z[phi(z)], for ReLU
  pi/(pi-1) = 1.47 (the large-batch gradient explosion of Yang et al. 2019).
* RNN (Chen, Pennington & Schoenholz 2018): q_{l,t} = sigma_ih^2 E[phi(h_{l-1,t})^2] +
  sigma_b^2 + sigma_rec^2 E[phi(h_{l,t-1})^2], h_0 = 0; back-propagation through time
  adds the recurrent path sigma_rec^2 E[phi'^2] g_{l,t+1} to the one from the layer above.

Gaussian expectations use closed forms for linear, relu and leaky_relu and a composite
Gauss-Legendre rule in z otherwise (panels split at 0, where elu/selu have a kink, and
refined geometrically around the activation's own scale |z| ~ 1/sqrt(q)). A plain
Gauss-Hermite rule is exact for smooth activations at q <~ 1, but with 100 nodes it
misses tanh's chi at q = 100 by ~90% and selu's E[phi'^2] at q = 1 by ~1%. The tests
check closed forms, this rule and Gauss-Hermite (where it is valid) against Monte Carlo.

Only numpy (and pydantic, through the registries) at import; pandas when a table is asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.polynomial.legendre import leggauss
from pydantic import ValidationError

from initbench.config.activations import ACTIVATIONS
from initbench.config.architectures import ARCHITECTURES
from initbench.config.geometry import (
    IMAGE_SIZE,
    RNN_STEPS,
    cnn_positions,
    cnn_strides,
    input_weight_shapes,
)
from initbench.config.initializers import INITIALIZERS, compute_fans, expected_moments
from initbench.config.registry import UnknownNameError

if TYPE_CHECKING:
    import pandas as pd

Array = np.ndarray
Regime = Literal["ordered", "critical", "chaotic"]
Moments = tuple[float, float, float]  # (E[phi], E[phi^2], E[phi'^2]) at one q

SELU_LAMBDA = 1.0507009873554804934193349852946  # Klambauer et al. 2017, as torch.nn.SELU
SELU_ALPHA = 1.6732632423543772848170429916717
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.Softplus returns x where beta * x exceeds it
CRITICAL_TOL = 1e-9  # |chi* - 1| up to this counts as critical
Q_FLOOR, Q_CEIL = 1e-300, 1e40  # q range of the fixed-point search (0 and inf beyond)


class TheoryError(ValueError):
    """A request the theory cannot answer as asked (unknown arch, bad q1, ...)."""


# --- phi and phi' on numpy arrays, keyed like activations.ACTIVATIONS --------------------------

Fn = Callable[[Array], Array]


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
        raise TheoryError(f"activation {name!r} has no numpy version in theory.py")
    return _BUILDERS[name](validated)


# --- Gaussian expectations -------------------------------------------------------------------

_LEG_X, _LEG_W = leggauss(12)  # nodes per panel; each panel is a smooth piece
Z_MAX = 12.0  # N(0, 1) mass beyond |z| = 12 is 4e-33
_UNIT_EDGES = np.arange(1.0, Z_MAX + 0.5)  # unit panels resolve the Gaussian itself
_BENDS = 2.0 ** np.arange(-6, 9)  # |x| = 1/64 .. 256: where activations bend


def gaussian_nodes(q: float) -> tuple[Array, Array]:
    """Nodes x = sqrt(q) z and weights w with sum(w f(x)) = E_z[f(sqrt(q) z)], z ~ N(0, 1).

    Composite 12-point Gauss-Legendre on z in [-12, 12] with panel edges at 0 (the kink of
    relu/elu/selu), at every integer and at 2^k / sqrt(q), k = -6..8 (where phi bends):
    432 nodes at q = 1, within 2e-11 of a 40-point rule on 0.1-wide panels for every
    activation and q in 1e-8..1e8.
    """
    q = max(float(q), Q_FLOOR)
    bends = _BENDS / math.sqrt(q)
    positive = np.unique(np.concatenate([_UNIT_EDGES, bends[bends < Z_MAX]]))
    edges = np.concatenate([-positive[::-1], [0.0], positive])
    lo, hi = edges[:-1, None], edges[1:, None]
    z = ((lo + hi) / 2 + (hi - lo) / 2 * _LEG_X).ravel()
    w = ((hi - lo) / 2 * _LEG_W).ravel() * np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(q) * z, w


def quadrature_moments(act: NumpyActivation, q: float) -> Moments:
    """(E phi, E phi^2, E phi'^2) of phi(sqrt(q) z) by the composite rule, closed form or not."""
    x, w = gaussian_nodes(q)
    with np.errstate(over="ignore", under="ignore"):
        y, dy = act.phi(x), act.dphi(x)
    return float(w @ y), float(w @ (y * y)), float(w @ (dy * dy))


def field_moments(act: NumpyActivation, q: Any) -> Array:
    """Moments (..., 3) at every entry of q (a number or an array): closed forms exactly;
    otherwise quadrature at log-spaced q 2% apart across the entries' range, interpolated
    linearly in log q (relative error ~1e-5; exact where all entries are equal)."""
    q = np.maximum(np.asarray(q, dtype=float), Q_FLOOR)
    if act.closed is not None:
        return np.stack(np.broadcast_arrays(*act.closed(q)), axis=-1)
    lo, hi = float(q.min()), float(q.max())
    if hi <= lo * (1 + 1e-12):
        return np.broadcast_to(np.array(quadrature_moments(act, lo)), (*q.shape, 3)).copy()
    grid = np.geomspace(lo, hi, min(100, 2 + int(math.log(hi / lo) / 0.02)))
    table = np.array([quadrature_moments(act, g) for g in grid])
    return np.stack([np.interp(np.log(q), np.log(grid), table[:, k]) for k in range(3)], axis=-1)


def gaussian_moments(act: NumpyActivation, q: float) -> Moments:
    """(E phi, E phi^2, E phi'^2) of phi(sqrt(q) z), z ~ N(0, 1): closed form where one
    exists (linear, relu, leaky_relu), the composite quadrature otherwise."""
    mean, sq, dsq = field_moments(act, q)
    return float(mean), float(sq), float(dsq)


# --- fixed point, depth scale, criticality ------------------------------------------------------


@dataclass(frozen=True)
class FixedPoint:
    """q* reached from q0 by iterating the forward map, chi* = chi(q*) and the depth scale
    xi = 1/|ln chi*| (Schoenholz et al. 2017; inf at chi* = 1). q* may be 0 or inf, the
    limit the variance runs to; chi* is then its limiting value."""

    q_star: float
    chi_star: float
    depth_scale: float
    regime: Regime


def _bisect_log(
    g: Callable[[float], float], lo: float, hi: float, iters: int = 80, rtol: float = 1e-14
) -> float:
    """A root of g between lo and hi, where g changes sign, bisecting in log space."""
    g_lo = g(lo)
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        g_mid = g(mid)
        if (g_mid > 0) == (g_lo > 0):
            lo, g_lo = mid, g_mid
        else:
            hi = mid
        if hi / lo - 1 < rtol:
            break
    return math.sqrt(lo * hi)


def iterate_limit(forward: Callable[[float], float], q0: float) -> float:
    """Where q <- forward(q) goes from q0: the first fixed point in the direction q moves
    (forward is increasing in q for every activation here), or 0 or inf if there is none."""
    q0 = max(float(q0), Q_FLOOR)
    gap = forward(q0) - q0
    if abs(gap) <= 1e-12 * q0:
        return q0  # marginal: every q is fixed (relu at sigma_w^2 = 2, linear at 1)
    sign, lo = (1.0 if gap > 0 else -1.0), q0
    for k in range(64):  # quarter decades for 8 decades, then strides doubling to the bound
        hi = min(max(lo * 10.0 ** (sign * 0.25 * 2 ** max(0, k - 31)), Q_FLOOR), Q_CEIL)
        if hi == lo:
            break
        turned = forward(hi) - hi
        # a crossing within rounding (1e-12 q) is no fixed point: tanh at sigma_w^2 = 1
        # creeps to 0 as q - 2 q^2, which rounding makes look like sign changes near 1e-16
        if (turned > 0) != (gap > 0) and abs(turned) > 1e-12 * hi:
            return _bisect_log(lambda q: forward(q) - q, min(lo, hi), max(lo, hi))
        lo = hi
    return math.inf if gap > 0 else 0.0


def _regime(chi: float) -> Regime:
    if abs(chi - 1) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


def depth_scale(chi: float) -> float:
    """xi = 1/|ln chi| layers: gradients change e-fold over xi layers; inf at chi = 1."""
    if _regime(chi) == "critical":
        return math.inf
    return 0.0 if chi == 0 else 1.0 / abs(math.log(chi))


def _fixed(q_star: float, chi: float) -> FixedPoint:
    return FixedPoint(q_star, chi, depth_scale(chi), _regime(chi))


def fixed_point(
    act: NumpyActivation, sigma_w2: float, sigma_b2: float = 0.0, q0: float = 1.0
) -> FixedPoint:
    """q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2 reached from q0, and
    chi* = sigma_w^2 E[phi'(sqrt(q*) z)^2] (Poole et al. 2016; Schoenholz et al. 2017)."""
    q_star = iterate_limit(lambda q: sigma_w2 * gaussian_moments(act, q)[1] + sigma_b2, q0)
    return _fixed(q_star, sigma_w2 * gaussian_moments(act, min(max(q_star, Q_FLOOR), Q_CEIL))[2])


def critical_sigma_w2(
    act: NumpyActivation,
    sigma_b2: float = 0.0,
    q0: float = 1.0,
    bounds: tuple[float, float] = (1e-2, 1e2),
) -> float:
    """The sigma_w^2 at which chi* = 1 (the order-to-chaos edge), by bisection; NaN when
    chi* - 1 keeps its sign over ``bounds``. relu: 2 (He et al. 2015); tanh: 1 at
    sigma_b^2 = 0 and 1.76 at sigma_b^2 = 0.05 (Schoenholz et al. 2017)."""

    def excess(sigma_w2: float) -> float:
        return fixed_point(act, sigma_w2, sigma_b2, q0).chi_star - 1.0

    lo, hi = bounds
    if (excess(lo) > 0) == (excess(hi) > 0):
        return math.nan
    return _bisect_log(excess, lo, hi, rtol=1e-10)


# --- the shapes and spatial maps of initbench's models (models.py, without torch) ------------


def tap_matrix(n_in: int, stride: int, zero_padding: bool = True) -> Array:
    """A (n_out x n_in): row o holds 1/3 at each input position that tap k = 0, 1, 2 of
    output o reads (3 taps, padding 1, ``stride``); taps on the zero padding are dropped,
    or, without ``zero_padding``, wrap around as on an unbounded map. A 3x3 conv's variance
    field goes forward as A v A^T (Xiao et al. 2018), a gradient's back as A^T G A."""
    n_out = (n_in - 1) // stride + 1
    taps = stride * np.arange(n_out)[:, None] + np.arange(3) - 1  # (n_out, 3) input rows
    keep = (taps >= 0) & (taps < n_in) if zero_padding else np.ones(taps.shape, dtype=bool)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    a = np.zeros((n_out, n_in))
    np.add.at(a, (rows[keep], (taps % n_in)[keep]), 1 / 3)
    return a


def cnn_tap_matrices(depth: int, zero_padding: bool = True) -> list[Array]:
    """One tap matrix per conv layer, from the 28 x 28 image down the strides."""
    maps, n = [], IMAGE_SIZE
    for stride in cnn_strides(depth):
        maps.append(tap_matrix(n, stride, zero_padding))
        n = maps[-1].shape[0]
    return maps


@dataclass(frozen=True)
class Geometry:
    """What the map needs of an architecture (index 0 = layer 1): ``sigma_w2``, fan_in
    Var(W) of each layer's (input) weight; ``fan_ratio``, its fan_out / fan_in; ``maps``,
    its tap matrix (1 x 1 without spatial extent); ``hidden_sigma2``, sigma_w^2 of a hidden
    layer (for the fixed point at any depth); ``sigma_rec2``, the rnn's recurrent one."""

    sigma_w2: Array
    fan_ratio: Array
    maps: list[Array]
    hidden_sigma2: float
    sigma_rec2: float = 0.0


# --- reading a config ----------------------------------------------------------------------------


def _ref(value: Any) -> tuple[str, dict[str, Any]]:
    """A named reference ``name`` or ``{name, **params}`` as (name, params)."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and "name" in value:
        return str(value["name"]), {k: v for k, v in value.items() if k != "name"}
    raise TheoryError(f"expected a name or a mapping with 'name', got {value!r}")


def _sigma2(
    key: str, ref: Any, shape: Sequence[int], fans: tuple[int, int] | None = None
) -> float | str:
    """fan_in Var(W) of the weight ``ref`` initialises (with ``fans``: Var(b) of a bias), or
    why the mean-field map cannot use it."""
    name, params = _ref(ref)
    mean, var = expected_moments(name, params, shape, fans)
    what = f"{key} {name!r} ({INITIALIZERS.get(name).formula})"
    if mean != 0.0:
        return (
            f"{what} has mean {mean:.4g} per element, not 0: the mean-field map assumes "
            "i.i.d. zero-mean weights and biases, so no prediction is shown"
        )
    if fans is not None:
        return var
    if var == 0.0:
        return f"{what} is constant: nothing random, the symmetry never breaks; no prediction"
    return compute_fans(shape)[0] * var


def _geometry(model: Mapping[str, Any], padding_correction: bool) -> Geometry | str:
    """The Geometry of a model section, or why no prediction can be made."""
    arch, depth, width = model["arch"], model["depth"], model["width"]
    shapes = input_weight_shapes(arch, max(depth, 2), width)  # [1] is a hidden layer's
    scale = {s: _sigma2("model.init", model["init"], s) for s in dict.fromkeys(shapes)}
    rec: float | str = 0.0
    if arch == "rnn":
        ref = model.get("recurrent_init") or model["init"]
        rec = _sigma2("model.recurrent_init", ref, (width, width))
    for value in [*scale.values(), rec]:
        if isinstance(value, str):
            return value
    hidden, shapes = float(scale[shapes[1]]), shapes[:depth]
    maps = (
        cnn_tap_matrices(depth, padding_correction) if arch == "cnn" else [np.ones((1, 1))] * depth
    )
    ratio = [compute_fans(s)[1] / compute_fans(s)[0] for s in shapes]
    return Geometry(np.array([scale[s] for s in shapes]), np.array(ratio), maps, hidden, float(rec))


def _bias_sigma2(model: Mapping[str, Any]) -> float | str:
    """sigma_b^2 of model.bias_init (with a hidden weight's fans), or why it is unusable."""
    fans = compute_fans(input_weight_shapes(model["arch"], 2, model["width"])[1])
    return _sigma2("model.bias_init", model["bias_init"], (model["width"],), fans)


def model_section(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` section of a resolved run config (or a model section itself), with
    spec.ModelConfig's defaults filled in (activation: relu, rnn: tanh) and the arch checked."""
    model = {
        "arch": "mlp",
        "depth": 5,
        "width": 256,
        "init": "torch_default",
        "bias_init": "zeros",
        "batchnorm": False,
        **config.get("model", config),
    }
    ARCHITECTURES.get(model["arch"])  # UnknownNameError, with the close matches
    model["activation"] = model.get("activation") or ("tanh" if model["arch"] == "rnn" else "relu")
    if model["batchnorm"] and model["arch"] == "rnn":
        raise TheoryError("batchnorm is not available for arch rnn")
    return model


# --- propagation ----------------------------------------------------------------------------------

COLUMN_HELP = {
    "layer": "watched layer l (1-based)",
    "t": "rnn time step (1-based); 0 for mlp and cnn",
    "sigma_w2": "fan_in * Var(W) of the layer's (input-to-hidden) weight",
    "sigma_rec2": "rnn only: fan_in * Var(W) of the recurrent weight",
    "q": "predicted preact second moment = preact_var = preact_sq (zero-mean weights and biases)",
    "q_in": "second moment of the activation's input: q, or 1 after batchnorm (normed_var)",
    "act_mean": "predicted act_mean = E[phi(sqrt(q_in) z)]",
    "act_sq": "predicted act_sq = E[phi(sqrt(q_in) z)^2]",
    "chi": "sigma_w^2 E[phi'(sqrt(q_in) z)^2] with the next layer's sigma_w^2 (rnn: recurrent)",
    "fwd_factor": "q / q of the layer before (rnn: of the step before)",
    "bwd_factor": "predicted grad_preact_var / that of the layer after (rnn: of the step after)",
    "fwd_ratio": "q / q of layer 1 (rnn: of step 1 of the same layer)",
    "bwd_ratio": "grad_preact_var / that of the last layer (rnn: of the last step)",
}
COLUMNS = tuple(k for k in COLUMN_HELP if k != "sigma_rec2")  # every arch's columns, in order


def _columns(
    keys: dict[str, Array], q: Array, q_in: Array, mom: Array, chi: Array, g: Array
) -> dict[str, Array]:
    """The COLUMNS of one run of layers (or of time steps) from q, the moments (n, 3), chi
    and the predicted grad_preact variance g (any scale)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        return {
            **keys,
            "q": q,
            "q_in": q_in,
            "act_mean": mom[:, 0],
            "act_sq": mom[:, 1],
            "chi": chi,
            "fwd_factor": np.append(np.nan, q[1:] / q[:-1]),
            "bwd_factor": np.append(g[:-1] / g[1:], np.nan),
            "fwd_ratio": q / q[0],
            "bwd_ratio": g / g[-1],
        }


def _ff_forward(
    act: NumpyActivation, geo: Geometry, v1: Array, sigma_b2: float, batchnorm: bool
) -> tuple[list[Array], list[Array]]:
    """Per layer, the preact variance field v and the moments field (E phi, E phi^2,
    E phi'^2 at each position): v_{l+1} = sigma_w^2 A E[phi(sqrt(v_l) z)^2] A^T + sigma_b^2."""
    fields, moments, v = [], [], v1
    for i in range(len(geo.sigma_w2)):
        fields.append(v)
        moments.append(field_moments(act, np.ones_like(v) if batchnorm else v))
        if i + 1 < len(geo.sigma_w2):
            a = geo.maps[i + 1]
            v = geo.sigma_w2[i + 1] * (a @ moments[i][..., 1] @ a.T) + sigma_b2
    return fields, moments


def _unit_var(fields: list[Array], moments: list[Array], i: int, sigma_b2: float) -> float:
    """Batchnorm's per-unit preact variance at layer i + 1: q1 at layer 1 (it depends on
    the data), else the part sigma_w^2 A Var[phi] A^T of v = sigma_w^2 A E[phi^2] A^T +
    sigma_b^2 that varies over the batch (phi of the layer before)."""
    if i == 0:
        return float(fields[0].mean())
    mean, sq = moments[i - 1][..., 0].mean(), moments[i - 1][..., 1].mean()
    return float((fields[i].mean() - sigma_b2) * (1 - mean**2 / sq))


def _ff_backward(
    geo: Geometry, fields: list[Array], moments: list[Array], sigma_b2: float, batchnorm: bool
) -> Array:
    """g^l / g^L of grad_preact_var: G^l = E[phi'^2] sigma_w^2 fan_out/fan_in A^T G^{l+1} A
    (Schoenholz et al. 2017) from a uniform G^L (the readout, or the cnn's average pool);
    with batchnorm over the per-unit preact variance (grad_preact = grad_normed / std)."""
    grad, g = np.ones_like(fields[-1]), np.ones(len(fields))
    for i in reversed(range(len(fields) - 1)):
        a = geo.maps[i + 1]
        grad = moments[i][..., 2] * geo.sigma_w2[i + 1] * geo.fan_ratio[i + 1] * (a.T @ grad @ a)
        if batchnorm:
            grad = grad / _unit_var(fields, moments, i, sigma_b2)
        g[i] = grad.mean()
    return g


def first_field(geo: Geometry, q1: float) -> Array:
    """Layer 1's preact variance field, of mean q1: one value for an mlp; for a cnn the
    shape A 1 A^T of a uniform input seen through the zero padding."""
    taps = geo.maps[0].sum(axis=1)  # share of each output row's taps inside the image
    shape = np.outer(taps, taps)
    return q1 * shape / shape.mean()


def propagate_feedforward(
    act: NumpyActivation, geo: Geometry, q1: float, sigma_b2: float, batchnorm: bool = False
) -> dict[str, Array]:
    """Per-layer COLUMNS of an mlp or cnn from layer 1's preact second moment q1; a cnn's
    are means over positions of its fields. With batchnorm phi's input has q_in = 1."""
    fields, moments = _ff_forward(act, geo, first_field(geo, q1), sigma_b2, batchnorm)
    g = _ff_backward(geo, fields, moments, sigma_b2, batchnorm)
    depth = len(fields)
    q = np.array([v.mean() for v in fields])
    mom = np.array([m.reshape(-1, 3).mean(axis=0) for m in moments])
    chi = np.append(geo.sigma_w2[1:] * mom[:-1, 2], np.nan)
    keys = {
        "layer": np.arange(1, depth + 1),
        "t": np.zeros(depth, dtype=int),
        "sigma_w2": geo.sigma_w2,
    }
    return _columns(keys, q, np.ones(depth) if batchnorm else q, mom, chi, g)


def _rnn_forward(
    act: NumpyActivation, geo: Geometry, drive: Array, sigma_b2: float
) -> tuple[Array, Array]:
    """q[l, t] = u[l, t] + sigma_rec^2 E[phi(h[l, t-1])^2] (h_0 = 0) with the input drive
    u[0, t] = drive[t], u[l, t] = sigma_ih^2 E[phi(h[l-1, t])^2] + sigma_b^2; and moments."""
    depth, steps = len(geo.sigma_w2), len(drive)
    q, moments = np.zeros((depth, steps)), np.zeros((depth, steps, 3))
    for i in range(depth):
        for t in range(steps):
            q[i, t] = drive[t] if i == 0 else geo.sigma_w2[i] * moments[i - 1, t, 1] + sigma_b2
            if t > 0:
                q[i, t] += geo.sigma_rec2 * moments[i, t - 1, 1]
            moments[i, t] = gaussian_moments(act, q[i, t])
    return q, moments


def _rnn_backward(geo: Geometry, dsq: Array) -> Array:
    """g[l, t] = E[phi'^2] (sigma_rec^2 g[l, t+1] + sigma_ih^2 fan_out/fan_in g[l+1, t]),
    the loss entering at the top layer's last step: back-propagation through time under
    the gradient-independence assumption (Chen et al. 2018)."""
    depth, steps = dsq.shape
    g = np.zeros((depth + 1, steps + 1))
    for i in reversed(range(depth)):
        for t in reversed(range(steps)):
            source = 1.0 if (i, t) == (depth - 1, steps - 1) else 0.0
            up = geo.sigma_w2[i + 1] * geo.fan_ratio[i + 1] * g[i + 1, t] if i + 1 < depth else 0.0
            g[i, t] = dsq[i, t] * (source + geo.sigma_rec2 * g[i, t + 1] + up)
    return g[:depth, :steps]


def propagate_rnn(
    act: NumpyActivation, geo: Geometry, drive: Array, sigma_b2: float
) -> dict[str, Array]:
    """Per-(layer, step) COLUMNS of a stacked Elman rnn (Chen, Pennington & Schoenholz
    2018) from layer 1's input drive per step; factors and ratios run across time within
    each layer, and chi is the recurrent sigma_rec^2 E[phi'^2], the per-step BPTT factor."""
    q, moments = _rnn_forward(act, geo, drive, sigma_b2)
    g = _rnn_backward(geo, moments[..., 2])
    depth, steps = q.shape
    parts = []
    for i in range(depth):
        keys = {
            "layer": np.full(steps, i + 1),
            "t": np.arange(1, steps + 1),
            "sigma_w2": np.full(steps, geo.sigma_w2[i]),
        }
        chi = geo.sigma_rec2 * moments[i, :, 2]
        parts.append(_columns(keys, q[i], q[i], moments[i], chi, g[i]))
    out = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
    return {**out, "sigma_rec2": np.full(depth * steps, geo.sigma_rec2)}


# --- predictions for a run config ------------------------------------------------------------


def decay_factor(values: Array) -> float:
    """2**slope of the least-squares line through log2(values) against their index: the
    report's decay per layer (1 = preserved, 0.5 = halves per layer)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log2(np.asarray(values, dtype=float))
    keep = np.isfinite(logs)
    if keep.sum() < 2:
        return math.nan
    return float(2.0 ** np.polyfit(np.flatnonzero(keep), logs[keep], 1)[0])


@dataclass(frozen=True)
class Prediction:
    """The mean-field prediction for one configuration: the per-layer ``columns`` (COLUMNS;
    rnn: a row per layer and step, plus ``sigma_rec2``), the fixed point and the notes on
    what was assumed; ``reason`` says why there is no prediction (columns then empty)."""

    model: dict[str, Any]
    q1: float
    sigma_b2: float | None
    columns: dict[str, Array] = field(default_factory=dict)
    fixed: FixedPoint | None = None
    reason: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether there is a prediction."""
        return self.reason is None

    def frame(self) -> pd.DataFrame:
        """The per-layer columns as a DataFrame (no rows when there is no prediction)."""
        import pandas as pd

        names = [*COLUMNS, "sigma_rec2"] if self.model["arch"] == "rnn" else list(COLUMNS)
        return pd.DataFrame({k: self.columns.get(k, np.array([])) for k in names})

    def summary(self) -> dict[str, Any]:
        """Forward and backward decay as the report defines them (rnn: across the top
        layer's time steps), last/first ratios and the fixed point; or just the reason."""
        if self.fixed is None:
            return {"reason": self.reason}
        layer = self.columns["layer"]
        rows = layer == layer.max() if self.model["arch"] == "rnn" else np.ones(len(layer), bool)
        q, g = self.columns["q"][rows], self.columns["bwd_ratio"][rows]
        if self.model["arch"] == "cnn":  # the per-channel sum over positions, as measured
            g = g * np.array(cnn_positions(int(self.model["depth"])), dtype=float)
        return {
            "forward_decay": decay_factor(q),
            "backward_decay": decay_factor(g[::-1]),
            "forward_last_first": float(q[-1] / q[0]),
            "backward_first_last": float(g[0] / g[-1]),
            "q_star": self.fixed.q_star,
            "chi_star": self.fixed.chi_star,
            "depth_scale": self.fixed.depth_scale,
            "regime": self.fixed.regime,
        }


def _first_q(
    model: Mapping[str, Any],
    geo: Geometry,
    q1: float | Sequence[float] | None,
    sigma_b2: float,
    input_sq: float,
) -> Array:
    """Layer 1's preact second moment (rnn: its input drive at each of the 28 steps), as
    given or q1 = sigma_w1^2 mean(A 1 A^T) E[x^2] + sigma_b^2 with E[x^2] = input_sq."""
    steps = RNN_STEPS if model["arch"] == "rnn" else 1
    if q1 is None:
        q1 = geo.sigma_w2[0] * float(geo.maps[0].sum(axis=1).mean() ** 2) * input_sq + sigma_b2
    first = np.atleast_1d(np.asarray(q1, dtype=float))
    if first.size == 1:
        first = np.full(steps, first[0])
    if first.shape != (steps,) or not np.all(np.isfinite(first)) or np.any(first <= 0):
        raise TheoryError(f"q1 must be a number > 0 (rnn: or {steps} of them), got {q1!r}")
    return first


def _fixed_point_of(
    act: NumpyActivation, model: Mapping[str, Any], geo: Geometry, first: Array, sigma_b2: float
) -> FixedPoint:
    """mlp/cnn: the hidden layers' fixed point from q1 (batchnorm: the activation always
    sees q = 1, and chi* is the per-layer backward factor E[phi'(z)^2] / Var phi(z));
    rnn: q* = sigma_rec^2 E[phi^2] + mean drive, chi* the stationary per-step BPTT factor."""
    if model["arch"] == "rnn":
        return fixed_point(act, geo.sigma_rec2, float(first.mean()), q0=float(first[0]))
    if not model["batchnorm"]:
        return fixed_point(act, geo.hidden_sigma2, sigma_b2, q0=float(first[0]))
    mean, sq, dsq = gaussian_moments(act, 1.0)
    return _fixed(geo.hidden_sigma2 * sq + sigma_b2, dsq / (sq - mean**2))


def _notes(model: Mapping[str, Any], geo: Geometry, given_q1: bool, padding: bool) -> list[str]:
    """What the prediction assumed, in words, for under its table."""
    notes = [
        "q is the preact second moment; with zero-mean weights and biases it is the "
        "predicted preact_var too (the all-element mean is ~0).",
        "q1 as given (the measured layer-1 preact)."
        if given_q1
        else f"q1 = sigma_w1^2 E[x^2] + sigma_b^2 for standardised inputs (E[x^2] = 1), layer 1's "
        f"sigma_w^2 = {geo.sigma_w2[0]:.4g}; pass the measured layer-1 preact_sq to compare.",
        "Infinite width: measured values scatter around these by an amount that grows with "
        "depth/width (Hanin & Rolnick 2018); the seeds show how much.",
    ]
    if model["batchnorm"]:
        notes.append(
            "batchnorm: the activation's input (normed) has variance 1 in every "
            "layer; backward per layer E[phi'(z)^2] / Var phi(z) (large batch)."
        )
    if model["arch"] == "cnn":
        notes.append(
            f"cnn: 'same' zero padding {'modelled' if padding else 'ignored'} "
            "(((3n-2)/3n)^2 per layer on an n x n map at first); stride-2 convs "
            "scale the per-element gradient variance by ~1/4 and keep its sum over "
            "positions: the backward decay and first/last ratio of the summary are of that "
            "sum (as the report measures them), the table's bwd_factor and bwd_ratio per "
            "element."
        )
    if model["arch"] == "rnn":
        notes.append(
            "rnn: layer 1's input drive is taken equal at every step unless q1 "
            "lists 28; MNIST's rows differ (the border rows are background)."
        )
    return notes


def predict(
    config: Mapping[str, Any],
    q1: float | Sequence[float] | None = None,
    *,
    sigma_b2: float | None = None,
    input_sq: float = 1.0,
    padding_correction: bool = True,
) -> Prediction:
    """The mean-field prediction for a resolved run config (or its ``model`` section).

    q1: layer 1's preact second moment, the measured ``preact_sq`` (or ``preact_var``) at
    step 0; rnn: layer 1's input drive, one number or one per step (28). None derives it
    from E[x^2] = input_sq. sigma_b2: None reads ``model.bias_init``. padding_correction:
    model the cnn's zero padding (False: an unbounded map)."""
    model = model_section(config)
    act = numpy_activation(*_ref(model["activation"]))
    geo = _geometry(model, padding_correction)
    b2 = _bias_sigma2(model) if sigma_b2 is None else float(sigma_b2)
    if isinstance(geo, str) or isinstance(b2, str):
        return Prediction(model, math.nan, None, reason=geo if isinstance(geo, str) else str(b2))
    if not b2 >= 0:
        raise TheoryError(f"sigma_b2 must be >= 0, got {b2}")
    first = _first_q(model, geo, q1, b2, input_sq)
    if model["arch"] == "rnn":
        columns = propagate_rnn(act, geo, first, b2)
    else:
        columns = propagate_feedforward(act, geo, float(first[0]), b2, model["batchnorm"])
    fixed = _fixed_point_of(act, model, geo, first, b2)
    notes = _notes(model, geo, q1 is not None, padding_correction)
    return Prediction(model, float(first[0]), b2, columns, fixed, None, tuple(notes))


def rnn_input_drive(config: Mapping[str, Any], q_layer1: Sequence[float]) -> Array:
    """Layer 1's input drive at each step from its measured preact second moments,
    u_t = q_{1,t} - sigma_rec^2 E[phi(sqrt(q_{1,t-1}) z)^2] (u_1 = q_{1,1}), floored just
    above 0. Passed as ``q1`` to :func:`predict`, layer 1 reproduces the measurement and
    the layers above and every gradient stay predictions: MNIST's rows differ too much
    (background rows at the top and bottom) for one drive per step to fit."""
    model = model_section(config)
    geo = _geometry(model, padding_correction=True)
    if isinstance(geo, str):
        raise TheoryError(geo)
    act = numpy_activation(*_ref(model["activation"]))
    q = np.asarray(q_layer1, dtype=float)
    drive = q.copy()
    drive[1:] -= geo.sigma_rec2 * np.array([gaussian_moments(act, v)[1] for v in q[:-1]])
    return np.maximum(drive, 1e-12 * q)


# --- text for `initbench theory` ----------------------------------------------------------------

FORMATS = ("terminal", "markdown", "csv", "json")


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars as Python ones, NaN and infinities as None."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _headline(pred: Prediction) -> list[str]:
    m = pred.model
    line = (
        f"mean-field prediction: {m['arch']}, depth {m['depth']}, width {m['width']}, "
        f"activation {_ref(m['activation'])[0]}, init {_ref(m['init'])[0]}"
        + (", batchnorm" if m["batchnorm"] else "")
    )
    if not pred.ok:
        return [line, f"no prediction: {pred.reason}"]
    s, unit = pred.summary(), "steps" if m["arch"] == "rnn" else "layers"
    return [
        f"{line}, sigma_b^2 = {pred.sigma_b2:.4g}, q1 = {pred.q1:.4g}",
        f"fixed point: q* = {s['q_star']:.4g}, chi* = {s['chi_star']:.4g}, "
        f"depth scale {s['depth_scale']:.4g} {unit} ({s['regime']})",
        f"forward decay {s['forward_decay']:.4g} per {unit[:-1]} (last/first "
        f"{s['forward_last_first']:.4g}); backward decay {s['backward_decay']:.4g} "
        f"(first/last {s['backward_first_last']:.4g})",
    ]


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return str(v) if isinstance(v, int | np.integer) else f"{v:.4g}"

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    rows = frame.itertuples(index=False)
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _json(pred: Prediction) -> str:
    rows = [{k: _plain(v) for k, v in r.items()} for r in pred.frame().to_dict("records")]
    doc = {
        "model": pred.model,
        "q1": _plain(pred.q1),
        "sigma_b2": pred.sigma_b2,
        "summary": {k: _plain(v) for k, v in pred.summary().items()},
        "reason": pred.reason,
        "notes": list(pred.notes),
        "columns": COLUMN_HELP,
        "rows": rows,
    }
    return json.dumps(doc, indent=2)


def render(pred: Prediction, fmt: str = "terminal") -> str:
    """The prediction as text: terminal (plain table), markdown, csv (table only) or json
    (non-finite numbers as null)."""
    if fmt not in FORMATS:
        raise TheoryError(f"unknown format {fmt!r} (available: {', '.join(FORMATS)})")
    if fmt == "csv":
        return pred.frame().to_csv(index=False)
    if fmt == "json":
        return _json(pred) + "\n"
    head = _headline(pred)
    if not pred.ok:
        return "\n".join(head) + "\n"
    notes = [f"- {n}" for n in pred.notes]
    if fmt == "markdown":
        title = [f"**{head[0]}**", *head[1:]]
        return "\n\n".join(["  \n".join(title), _markdown_table(pred.frame()), "\n".join(notes)])
    table = pred.frame().to_string(index=False, float_format=lambda v: f"{v:.4g}")
    return "\n".join([*head, "", table, "", "notes:", *notes]) + "\n"


def theory_text(
    activation: str | Mapping[str, Any],
    init: str | Mapping[str, Any],
    depth: int,
    width: int,
    arch: str = "mlp",
    q1: float | None = None,
    sigma_b2: float = 0.0,
    batchnorm: bool = False,
    recurrent_init: str | Mapping[str, Any] | None = None,
    padding_correction: bool = True,
    fmt: str = "terminal",
) -> str:
    """What `initbench theory` prints: the predicted per-layer table, without training.
    Raises TheoryError (with the registries' "did you mean") for any bad argument."""
    if depth < 1 or width < 1:
        raise TheoryError(f"depth and width must be >= 1, got {depth} and {width}")
    if recurrent_init is not None and arch != "rnn":
        raise TheoryError(f"recurrent_init applies only to arch rnn (this is {arch})")
    model = {
        "arch": arch,
        "depth": depth,
        "width": width,
        "activation": activation,
        "init": init,
        "recurrent_init": recurrent_init,
        "batchnorm": batchnorm,
    }
    try:
        pred = predict(model, q1, sigma_b2=sigma_b2, padding_correction=padding_correction)
    except UnknownNameError as exc:
        raise TheoryError(exc.message) from None
    except ValidationError as exc:
        raise TheoryError(str(exc)) from None
    return render(pred, fmt)
