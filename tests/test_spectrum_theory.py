"""The Jacobian spectrum's theory (initbench.meanfield.spectrum) against closed forms, Monte
Carlo, and measured spectra of networks at initialisation (analysis.spectra)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from initbench.analysis import student_t_quantile
from initbench.analysis.spectra import run_spectrum_theory, spectrum_summary
from initbench.meanfield import numpy_activation
from initbench.meanfield.spectrum import (
    SpectrumPrediction,
    derivative_moments,
    pooled,
    predict_spectrum,
)
from initbench.results.store import flatten
from initbench.sweep.train import execute_run
from tests.conftest import make_config


def _mlp(activation: str, init, depth: int, width: int) -> dict:
    return {"arch": "mlp", "activation": activation, "init": init, "depth": depth, "width": width}


def test_linear_orthogonal_network_is_predicted_an_isometry() -> None:
    pred = predict_spectrum(_mlp("linear", "orthogonal", 20, 256))
    assert pred.mean == pytest.approx(1.0, rel=1e-12)
    assert pred.variance == 0.0


@pytest.mark.parametrize("depth", [1, 4, 30])
def test_linear_gaussian_square_network_has_the_fuss_catalan_variance(depth: int) -> None:
    # L square Gaussian matrices of variance 1/N: m1 = 1, m2 = L + 1 (Fuss-Catalan), Var = L
    init = {"name": "normal", "std": 1 / 28}
    pred = predict_spectrum(_mlp("linear", init, depth, 784), q1=1.0)
    assert pred.mean == pytest.approx(1.0, rel=1e-9)
    assert pred.variance == pytest.approx(depth, rel=1e-9)


def test_relu_he_spread_grows_twice_as_fast_as_orthogonals() -> None:
    # relu: mu1 = mu2 = 1/2, so mu2/mu1^2 - 1 = 1 per layer; Gaussian weights add 1 per
    # square layer and N/784 for the first, orthogonal ones nothing
    depth, width = 16, 256
    he = predict_spectrum(_mlp("relu", "he_normal", depth, width), q1=2.0)
    orth = predict_spectrum(
        _mlp("relu", {"name": "orthogonal", "gain": math.sqrt(2)}, depth, width)
    )
    assert he.mean == pytest.approx(1.0, rel=1e-9)
    assert orth.mean == pytest.approx(1.0, rel=1e-9)
    assert he.variance == pytest.approx(depth + depth - 1 + width / 784, rel=1e-9)
    assert orth.variance == pytest.approx(depth, rel=1e-9)


@pytest.mark.parametrize("q", [0.1, 1.0, 5.0])
def test_derivative_moments_match_monte_carlo(q: float) -> None:
    z = np.random.default_rng(0).standard_normal(2_000_000)
    d2 = (1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2
    mu1, mu2 = derivative_moments(numpy_activation("tanh", {}), q)
    assert mu1 == pytest.approx(d2.mean(), rel=2e-3)
    assert mu2 == pytest.approx((d2 * d2).mean(), rel=4e-3)


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"arch": "cnn", "depth": 3, "width": 4}, "arch cnn"),
        ({"arch": "mlp", "batchnorm": True}, "batchnorm"),
        ({"arch": "mlp", "init": "identity"}, "identity"),
        ({"arch": "mlp", "init": "uniform"}, "mean"),
    ],
)
def test_no_prediction_says_why(model: dict, says: str) -> None:
    pred = predict_spectrum(model)
    assert pred.reason and says in pred.reason
    assert math.isnan(pred.mean) and math.isnan(pred.spread)


def _measured_and_predicted(activation: str, init: str, seeds: int) -> tuple[list[float], float]:
    means, predicted = [], []
    for seed in range(seeds):
        config = make_config(
            seed=seed,
            **{"model.activation": activation, "model.init": init, "model.depth": 6},
            **{"model.width": 128, "train.steps": 1, "train.jacobian": True},
        )
        result = execute_run(config.as_dict())
        spectra = pd.DataFrame(result.spectra).assign(run_id="r")
        means.append(float(spectrum_summary(spectra)["mean_sq"].iloc[0]))
        record = {"run_id": "r", **flatten(result.config, "config.")}
        theory = run_spectrum_theory(record, spectra)
        predicted.append(theory["theory_mean_sq"])
    return means, float(np.mean(predicted))


@pytest.mark.parametrize(("activation", "init"), [("tanh", "xavier_normal"), ("relu", "he_normal")])
def test_mean_squared_singular_value_is_the_product_of_chis(activation: str, init: str) -> None:
    means, predicted = _measured_and_predicted(activation, init, seeds=5)
    n, sd = len(means), float(np.std(means, ddof=1))
    interval = student_t_quantile(0.975, n - 1) * sd * math.sqrt(1 + 1 / n)
    assert abs(np.mean(means) - predicted) <= interval, (means, predicted)
    assert interval < 0.5 * predicted  # the seeds pin it: a wrong chi (784/128 off) fails


def test_pooled_inputs_are_a_mixture_of_their_spectra() -> None:
    # two inputs: eigenvalue distributions with (mean, var) (1, 0) and (3, 1), equal parts:
    # pooled mean 2, pooled E[lambda^2] = (1 + 10) / 2 = 5.5, variance 5.5 - 4 = 1.5
    got = pooled([SpectrumPrediction(1.0, 0.0), SpectrumPrediction(3.0, 1.0)])
    assert (got.mean, got.variance) == (2.0, 1.5)
    refused = SpectrumPrediction(math.nan, math.nan, "why")
    assert pooled([SpectrumPrediction(1.0, 0.0), refused]).reason == "why"


def test_the_input_scale_enters_through_layer_one() -> None:
    # relu/he is scale-free (prod chi = 1 at any q); tanh's chi falls as q1 grows
    relu = _mlp("relu", "he_normal", 6, 64)
    assert predict_spectrum(relu, input_sq=0.2).mean == pytest.approx(1.0, rel=1e-12)
    tanh = _mlp("tanh", "orthogonal", 6, 64)
    assert predict_spectrum(tanh, input_sq=0.5).mean > predict_spectrum(tanh, input_sq=2.0).mean
    assert predict_spectrum(tanh, input_sq=2.0).mean == pytest.approx(
        predict_spectrum(tanh, q1=2.0).mean, rel=1e-12
    )  # orthogonal layer 1 has sigma_w^2 = 1: q1 = E[x^2]


def _orthogonal(rng: np.random.Generator, rows: int, cols: int, gain: float) -> np.ndarray:
    """A (semi-)orthogonal rows x cols matrix times gain (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    return gain * (q if rows >= cols else q.T)


def _monte_carlo(orthogonal: bool, depth: int, width: int, sigma_w2: float) -> np.ndarray:
    """Eigenvalues of J J^T of tanh networks drawn in numpy, 6 networks of one input each
    with E[x^2] = 1, J = D_L W_L ... D_1 W_1 (784 inputs)."""
    rng, eigenvalues = np.random.default_rng(0), []
    for _ in range(6):
        x = rng.standard_normal(784)
        h_in, jac = x * math.sqrt(784) / np.linalg.norm(x), np.eye(784)
        for layer in range(depth):
            fan_in = 784 if layer == 0 else width
            w = (
                _orthogonal(rng, width, fan_in, math.sqrt(sigma_w2))
                if orthogonal
                else rng.standard_normal((width, fan_in)) * math.sqrt(sigma_w2 / fan_in)
            )
            h = w @ h_in
            jac = (1 - np.tanh(h) ** 2)[:, None] * (w @ jac)
            h_in = np.tanh(h)
        values = np.linalg.svd(jac, compute_uv=False) ** 2
        eigenvalues.append(np.concatenate([values, np.zeros(width - len(values))]))
    return np.concatenate(eigenvalues)


@pytest.mark.parametrize("width", [400, 1000])  # 1000 > 784: J J^T has 216 zeros
@pytest.mark.parametrize("orthogonal", [False, True], ids=["gaussian", "orthogonal"])
def test_spread_matches_monte_carlo_of_tanh_networks(orthogonal: bool, width: int) -> None:
    # the mu2/mu1^2 term of a nonlinear activation, which the closed forms above never test,
    # and layer 1's v_W on either side of 784 units
    depth, sigma_w2 = 6, 1.5
    init = (
        {"name": "orthogonal", "gain": math.sqrt(sigma_w2)}
        if orthogonal
        else {"name": "variance_scaling", "scale": sigma_w2}
    )
    lam = _monte_carlo(orthogonal, depth, width, sigma_w2)
    pred = predict_spectrum(_mlp("tanh", init, depth, width), input_sq=1.0)
    assert lam.mean() == pytest.approx(pred.mean, rel=0.05)
    assert lam.var() / lam.mean() ** 2 == pytest.approx(pred.spread, rel=0.05)
