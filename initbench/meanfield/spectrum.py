"""The spectrum of the input-output Jacobian J = D_L W_L ... D_1 W_1 at initialisation:
its first two moments, as Pennington, Schoenholz & Ganguli 2017 ("Resurrecting the
sigmoid in deep learning through dynamical isometry: theory and practice") derive them.

D_l = diag(phi'(h_l)), h_l ~ N(0, q_l) the layer's pre-activations (q_l from the
mean-field map, :func:`initbench.meanfield.predict`). With mu_k(q) = E[phi'(sqrt(q) z)^(2k)]:

* mean: m1 = tr(J J^T) / N_L = prod_l sigma_w,l^2 mu_1(q_l) = prod_l chi_l (mean field;
  chi_l with the layer's own sigma_w^2).
* spread: in free probability the normalised variance s = Var / mean^2 of a product of
  free positive elements is the sum of theirs, so
  Var(eigenvalues of J J^T) = m1^2 sum_l [mu_2(q_l) / mu_1(q_l)^2 - 1 + v_W,l],
  v_W the normalised variance of W_l W_l^T's spectrum: 1 for square i.i.d. weights
  (Marchenko-Pastur, -s_1 = 1 in the paper), 0 for orthogonal (s_1 = 0); for layer 1
  (N_1 x 784) N_1/784 and max(0, N_1/784 - 1). At m1 = 1 and equal layers this is the
  paper's sigma^2_{JJ^T} = L (mu_2/mu_1^2 - 1 - s_1).

Both are large-width limits (Pennington et al. assume D_l free of the weights); neither
says anything about batchnorm, convolutions or recurrence here: those get no prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from initbench.config.geometry import MLP_INPUTS
from initbench.config.runconfig import input_init, layer_widths, norm_of
from initbench.meanfield.activations import NumpyActivation, numpy_activation
from initbench.meanfield.gaussian import gaussian_nodes
from initbench.meanfield.model import model_section, split_ref
from initbench.meanfield.prediction import predict

# Weights whose W W^T spectrum is known at large width: i.i.d. zero-mean entries of any
# distribution (Marchenko-Pastur is universal) and Haar orthogonal ones.
IID_INITS: Final = frozenset(
    {
        "normal",
        "uniform",
        "torch_default",
        "variance_scaling",
        "he_normal",
        "he_uniform",
        "xavier_normal",
        "xavier_uniform",
        "lecun_normal",
        "lecun_uniform",
    }
)
ORTHOGONAL_INITS: Final = frozenset({"orthogonal"})
NOTE: Final = (
    "mean-field and free-probability expectations at infinite width (Pennington, Schoenholz "
    "& Ganguli 2017): the mean is prod chi_l, the variance of the squared singular values "
    "m1^2 sum_l (mu2/mu1^2 - 1 + v_W); a finite network scatters around them"
)


@dataclass(frozen=True)
class SpectrumPrediction:
    """Predicted mean and variance of the squared singular values of J (the eigenvalues
    of J J^T), or the reason there is none (``mean`` and ``variance`` then NaN)."""

    mean: float
    variance: float
    reason: str | None = None

    @property
    def spread(self) -> float:
        """The normalised variance, variance / mean^2 (0: an isometry up to scale)."""
        return self.variance / self.mean**2 if self.reason is None else math.nan


def derivative_moments(act: NumpyActivation, q: float) -> tuple[float, float]:
    """(mu_1, mu_2) = (E[phi'(sqrt(q) z)^2], E[phi'(sqrt(q) z)^4]), z ~ N(0, 1)."""
    x, w = gaussian_nodes(q)
    with np.errstate(over="ignore", under="ignore"):
        d2 = act.dphi(x) ** 2
    return float(w @ d2), float(w @ (d2 * d2))


def weight_spread(init: str, fan_out: int, fan_in: int) -> float | None:
    """v_W: the normalised variance of W W^T's spectrum (W fan_out x fan_in) at large
    width, or None for an initializer whose spectrum is not known here."""
    ratio = fan_out / fan_in
    if init in IID_INITS:
        return ratio  # Marchenko-Pastur: Var / mean^2 = N_out / N_in
    if init in ORTHOGONAL_INITS:
        return max(0.0, ratio - 1.0)  # orthonormal rows: all gain^2; columns: zeros too
    return None


def _no_prediction(reason: str) -> SpectrumPrediction:
    return SpectrumPrediction(math.nan, math.nan, reason)


def _refusal(model: Mapping[str, Any]) -> str | None:
    if model["arch"] != "mlp":
        return f"arch {model['arch']}: the spectrum's theory here is for the mlp's dense layers"
    norm = norm_of(model)
    if norm == "batch":
        return "batchnorm: no per-example Jacobian (the batch's statistics couple examples)"
    if norm == "layer":
        return "layernorm: its per-example projection's effect on the spectrum is not modelled"
    if model.get("residual") is not None:
        return "residual blocks: the spectrum of I + alpha J_F products is not modelled here"
    for init in dict.fromkeys(_layer_inits(model, 2)):
        if weight_spread(init, 1, 1) is None:
            return (
                f"init {init!r}: W W^T's spectrum is known here only for i.i.d. "
                f"({', '.join(sorted(IID_INITS))}) and orthogonal weights"
            )
    return None


def _layer_inits(model: Mapping[str, Any], depth: int) -> list[str]:
    """The initializer name of each of ``depth`` layers' weights (:func:`input_init`)."""
    return [split_ref(input_init(model, layer)[1])[0] for layer in range(1, depth + 1)]


def predict_spectrum(
    config: Mapping[str, Any], q1: float | None = None, input_sq: float = 1.0
) -> SpectrumPrediction:
    """The predicted mean and variance of J J^T's eigenvalues for a run config (or model
    section) at initialisation, for one input: q1 and input_sq as
    :func:`initbench.meanfield.predict` takes them (layer 1's preact second moment, or None
    to derive it from the input's E[x^2] = input_sq)."""
    model = model_section(config)
    reason = _refusal(model)
    if reason:
        return _no_prediction(reason)
    prediction = predict(model, q1, input_sq=input_sq)
    if not prediction.ok:
        return _no_prediction(str(prediction.reason))
    act = numpy_activation(*split_ref(model["activation"]))
    widths = layer_widths(model)
    inits = _layer_inits(model, len(widths))
    sigma_w2, q = prediction.columns["sigma_w2"], prediction.columns["q_in"]
    log_mean, spread = 0.0, 0.0
    for layer, (s2, ql) in enumerate(zip(sigma_w2, q, strict=True), start=1):
        mu1, mu2 = derivative_moments(act, float(ql))
        if not mu1 > 0:
            return _no_prediction(f"layer {layer}: phi' is 0 almost surely (E[phi'^2] = 0)")
        fan_in = MLP_INPUTS if layer == 1 else widths[layer - 2]
        log_mean += math.log(float(s2) * mu1)
        spread += (
            mu2 / mu1**2 - 1 + float(weight_spread(inits[layer - 1], widths[layer - 1], fan_in))
        )
    mean = math.exp(log_mean)
    return SpectrumPrediction(mean, mean**2 * spread)


def pooled(predictions: Sequence[SpectrumPrediction]) -> SpectrumPrediction:
    """The moments of several inputs' spectra pooled into one distribution (a mixture in
    equal parts): mean = mean_i m_i, variance = mean_i (v_i + m_i^2) - mean^2; no
    prediction if one input has none."""
    for prediction in predictions:
        if prediction.reason:
            return prediction
    means = np.array([p.mean for p in predictions])
    second = np.array([p.variance for p in predictions]) + means**2
    mean = float(means.mean())
    return SpectrumPrediction(mean, float(second.mean()) - mean**2)
