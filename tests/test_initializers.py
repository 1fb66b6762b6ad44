"""Initializers against closed-form moments and against torch.nn.init itself.

Three kinds of check:

* exact: bit-for-bit equality with the torch.nn.init function a name claims to follow,
  given a torch.Generator with the same seed (small tensors, several fan layouts);
* closed form: ``expected_moments`` against the formulas written out here, independently
  of initializers.py (the report compares measured w_var with these);
* statistical: sample mean / variance / kurtosis / range of big seeded draws against the
  closed form, with tolerances derived from the sampling error (see ``_var_tolerance``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from initbench.config.initializers import (
    INITIALIZERS,
    TRUNCATED_NORMAL_STD,
    InitError,
    cannot_apply,
    compute_fans,
    expected_moments,
    initialize,
    weight_scale_sigma2,
)
from initbench.config.registry import UnknownNameError

init = torch.nn.init

# Big shapes for statistics: an mlp-like weight whose fan_in (1024) and fan_out (256) differ,
# so a mode mix-up shows, and a 3x3 conv kernel (fan_in 64*9 = 576, fan_out 128*9 = 1152).
MLP_SHAPE = (256, 1024)
CONV_SHAPE = (128, 64, 3, 3)
# Small shapes for exact comparisons: tall, wide, conv1d/2d/3d kernels with odd fans.
SMALL_SHAPES = [(7, 5), (5, 7), (13, 300), (4, 3, 5), (16, 8, 3, 3), (4, 2, 3, 3, 3)]


def draw(name: str, params: dict[str, Any], shape: tuple[int, ...], seed: int = 0, **kw: Any):
    """A tensor of ``shape`` initialised by initbench from Generator().manual_seed(seed)."""
    t = torch.empty(shape)
    initialize(t, name, params, torch.Generator().manual_seed(seed), **kw)
    return t


def torch_draw(fn: Callable[..., Any], shape: tuple[int, ...], seed: int = 0, **kw: Any):
    """The same with a torch.nn.init function and a generator of the same seed."""
    t = torch.empty(shape)
    fn(t, generator=torch.Generator().manual_seed(seed), **kw)
    return t


# --------------------------------------------------------------------------------------
# Closed forms, written out from the papers / torch docs, not taken from initializers.py.
# Each maps (fan_in, fan_out, rows, cols) -> (mean, variance) of one element; rows and
# cols are the weight flattened to a matrix as orthogonal_ does (shape[0], prod(rest)).

Moments = Callable[[int, int, int, int], tuple[float, float]]


def _he(a: float = 0.0, mode: str = "fan_in", gain: float = 1.0) -> Moments:
    # He et al. 2015: Var = 2 / ((1 + a^2) fan); gain multiplies the std
    fan = (lambda fi, fo: fi) if mode == "fan_in" else (lambda fi, fo: fo)
    return lambda fi, fo, r, c: (0.0, gain * gain * 2.0 / ((1 + a * a) * fan(fi, fo)))


def _glorot(gain: float = 1.0) -> Moments:
    # Glorot & Bengio 2010: Var = gain^2 * 2 / (fan_in + fan_out)
    return lambda fi, fo, r, c: (0.0, gain * gain * 2.0 / (fi + fo))


def _lecun(mode: str = "fan_in", gain: float = 1.0) -> Moments:
    return lambda fi, fo, r, c: (0.0, gain * gain / (fi if mode == "fan_in" else fo))


def _orthogonal(gain: float = 1.0) -> Moments:
    # gain * (semi-)orthogonal: sum of squares gain^2 min(r, c) spread over r*c elements
    return lambda fi, fo, r, c: (0.0, gain * gain * min(r, c) / (r * c))


TN = {"distribution": "truncated_normal"}
UNI = {"distribution": "uniform"}

# (name, params, closed form, distribution family: normal | uniform | truncated | fixed)
CASES: list[tuple[str, dict[str, Any], Moments, str]] = [
    ("zeros", {}, lambda fi, fo, r, c: (0.0, 0.0), "fixed"),
    ("constant", {"value": 0.37}, lambda fi, fo, r, c: (0.37, 0.0), "fixed"),
    ("uniform", {}, lambda fi, fo, r, c: (0.5, 1.0 / 12), "uniform"),
    ("uniform", {"low": -0.3, "high": 0.1}, lambda fi, fo, r, c: (-0.1, 0.4**2 / 12), "uniform"),
    ("normal", {}, lambda fi, fo, r, c: (0.0, 0.01**2), "normal"),
    ("normal", {"mean": 0.2, "std": 0.05}, lambda fi, fo, r, c: (0.2, 0.05**2), "normal"),
    # nn.Linear / nn.Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), Var = 1/(3 fan_in)
    ("torch_default", {}, lambda fi, fo, r, c: (0.0, 1.0 / (3 * fi)), "uniform"),
    ("torch_rnn", {}, lambda fi, fo, r, c: (0.0, 1.0 / (3 * fo)), "uniform"),
    ("variance_scaling", {}, lambda fi, fo, r, c: (0.0, 1.0 / fi), "normal"),
    (
        "variance_scaling",
        {"scale": 2.0, "mode": "fan_out", **UNI},
        lambda fi, fo, r, c: (0.0, 2.0 / fo),
        "uniform",
    ),
    (
        "variance_scaling",
        {"scale": 0.5, "mode": "fan_avg", **TN},
        lambda fi, fo, r, c: (0.0, 0.5 / ((fi + fo) / 2)),
        "truncated",
    ),
    ("he_normal", {}, _he(), "normal"),
    ("he_normal", {"mode": "fan_out"}, _he(mode="fan_out"), "normal"),
    ("he_normal", {"negative_slope": 0.2}, _he(0.2), "normal"),
    ("he_normal", TN, _he(), "truncated"),
    ("he_uniform", {}, _he(), "uniform"),
    ("he_uniform", {"mode": "fan_out", "negative_slope": 0.1}, _he(0.1, "fan_out"), "uniform"),
    ("he_normal", {"gain": 0.5}, _he(gain=0.5), "normal"),
    ("he_normal", {"gain": 1.3, "negative_slope": 0.2, **TN}, _he(0.2, gain=1.3), "truncated"),
    ("he_uniform", {"gain": 2.0, "mode": "fan_out"}, _he(mode="fan_out", gain=2.0), "uniform"),
    ("xavier_normal", {}, _glorot(), "normal"),
    ("xavier_normal", {"gain": 5 / 3, **TN}, _glorot(5 / 3), "truncated"),
    ("xavier_uniform", {}, _glorot(), "uniform"),
    ("xavier_uniform", {"gain": math.sqrt(2)}, _glorot(math.sqrt(2)), "uniform"),
    ("lecun_normal", {}, _lecun(), "normal"),
    ("lecun_normal", TN, _lecun(), "truncated"),
    ("lecun_uniform", {}, _lecun(), "uniform"),
    ("lecun_uniform", {"mode": "fan_out"}, _lecun("fan_out"), "uniform"),
    ("lecun_normal", {"gain": 1.7}, _lecun(gain=1.7), "normal"),
    ("lecun_uniform", {"gain": 0.3, "mode": "fan_out"}, _lecun("fan_out", 0.3), "uniform"),
    ("orthogonal", {}, _orthogonal(), "fixed"),
    ("orthogonal", {"gain": 1.5}, _orthogonal(1.5), "fixed"),
]
# identity applies to square matrices only: tested on its own below.
CASE_IDS = [
    f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}" for n, p, _, _ in CASES
]


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0], math.prod(shape[1:])


_BIG: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}


def big_draw(name: str, params: dict[str, Any], shape: tuple[int, ...]) -> torch.Tensor:
    """One seeded big draw per case and shape, shared by the statistical tests (speed)."""
    key = (f"{name}{sorted(params.items())}", shape)
    if key not in _BIG:
        _BIG[key] = draw(name, params, shape, seed=1)
    return _BIG[key]


def test_every_registered_initializer_is_covered() -> None:
    """A new registry entry must come with its closed form here."""
    # identity (square only), delta_orthogonal (conv only) and lsuv (data-dependent, no
    # formula) have tests of their own: tests/test_structured_inits.py, tests/test_lsuv.py
    own = {"identity", "delta_orthogonal", "lsuv"}
    assert {n for n, *_ in CASES} | own == set(INITIALIZERS.names())


@pytest.mark.parametrize(("name", "params", "closed", "family"), CASES, ids=CASE_IDS)
def test_expected_moments_match_closed_form(name, params, closed, family) -> None:
    for shape in [MLP_SHAPE, CONV_SHAPE, *SMALL_SHAPES]:
        fi, fo = compute_fans(shape)
        mean, var = expected_moments(name, params, shape)
        want_mean, want_var = closed(fi, fo, *_matrix(shape))
        assert mean == pytest.approx(want_mean, rel=1e-12, abs=1e-15), shape
        assert var == pytest.approx(want_var, rel=1e-12, abs=1e-15), shape


def _var_tolerance(var: float, n: int) -> float:
    """5 standard errors of a sample variance of n iid draws.

    SE(s^2) = var * sqrt((kappa - 1) / n) with kappa the kurtosis; kappa <= 3 for every
    family here (normal 3, truncated normal 2.37, uniform 1.8), so sqrt(2 / n) bounds it.
    At 5 SE a correct initializer fails with probability < 1e-6 (and the seeds are fixed);
    a wrong fan (factor 2 or 4 here) or a missing gain is off by tens of SE.
    """
    return 5 * var * math.sqrt(2.0 / n)


@pytest.mark.parametrize("shape", [MLP_SHAPE, CONV_SHAPE], ids=["mlp", "conv"])
@pytest.mark.parametrize(("name", "params", "closed", "family"), CASES, ids=CASE_IDS)
def test_sample_moments_match_closed_form(name, params, closed, family, shape) -> None:
    w32 = big_draw(name, params, shape)
    w, n = w32.double().flatten(), w32.numel()
    mean, var = closed(*compute_fans(shape), *_matrix(shape))
    if family == "fixed" and name != "orthogonal":
        assert torch.all(w32 == torch.tensor(mean, dtype=torch.float32))
        return
    sample_var = w.var(correction=0).item()
    if name == "orthogonal":  # deterministic given the matrix: exact up to float32 rounding
        assert sample_var + w.mean().item() ** 2 == pytest.approx(var, rel=1e-5)
        return
    # mean: 5 standard errors sigma / sqrt(n)
    assert abs(w.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(sample_var - var) < _var_tolerance(var, n), (sample_var, var)


def _kurtosis_truncated(a: float) -> float:
    """Kurtosis E[z^4] / E[z^2]^2 of a standard normal truncated to [-a, a]."""
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    m2 = 1 - 2 * a * pdf / mass
    m4 = 3 * m2 - 2 * a**3 * pdf / mass  # integrate z^4 phi by parts
    return m4 / m2**2


KURTOSIS = {"normal": 3.0, "uniform": 1.8, "truncated": _kurtosis_truncated(2.0)}


@pytest.mark.parametrize(
    ("name", "params", "closed", "family"),
    [c for c in CASES if c[3] in KURTOSIS],
    ids=[i for i, c in zip(CASE_IDS, CASES, strict=True) if c[3] in KURTOSIS],
)
def test_distribution_family_by_kurtosis(name, params, closed, family) -> None:
    """The 'distribution' is honoured: kurtosis 3 (normal), 2.37 (2-sigma truncated), 1.8.

    Sample kurtosis of n = 262144 draws has SE about sqrt(24 / n) = 0.01 for a normal
    (less for the lighter tails); 0.1 is 10 SE and under a fifth of the gap between families.
    """
    w = big_draw(name, params, MLP_SHAPE).double().flatten()
    z = w - w.mean()
    kurt = (z**4).mean().item() / (z**2).mean().item() ** 2
    assert kurt == pytest.approx(KURTOSIS[family], abs=0.1)


def test_truncated_normal_constant_is_the_2_sigma_truncated_std() -> None:
    # scipy.stats.truncnorm(-2, 2).std(), from the closed form of the truncated variance
    pdf2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    std = math.sqrt(1 - 2 * 2 * pdf2 / math.erf(2 / math.sqrt(2)))
    assert pytest.approx(std, abs=1e-15) == TRUNCATED_NORMAL_STD


@pytest.mark.parametrize("shape", [MLP_SHAPE, CONV_SHAPE], ids=["mlp", "conv"])
@pytest.mark.parametrize(
    ("name", "params", "closed", "family"),
    [c for c in CASES if c[3] == "truncated"],
    ids=[i for i, c in zip(CASE_IDS, CASES, strict=True) if c[3] == "truncated"],
)
def test_truncated_normal_bounds_keras_convention(name, params, closed, family, shape) -> None:
    """Keras/JAX: draw N(0, (std/0.8796)^2) truncated at 2 of those wide sigmas."""
    std = math.sqrt(closed(*compute_fans(shape), *_matrix(shape))[1])
    bound = 2 * std / 0.87962566103423978
    w = big_draw(name, params, shape).double()
    assert w.abs().max().item() <= bound * (1 + 1e-6)  # float32 rounding of the clamp
    # the density at the cut is 5% of the peak: thousands of draws lie within 1% of it
    assert w.max().item() > 0.99 * bound
    assert w.min().item() < -0.99 * bound


@pytest.mark.parametrize("shape", [MLP_SHAPE, CONV_SHAPE], ids=["mlp", "conv"])
@pytest.mark.parametrize(
    ("name", "params", "closed", "family"),
    [c for c in CASES if c[3] == "uniform"],
    ids=[i for i, c in zip(CASE_IDS, CASES, strict=True) if c[3] == "uniform"],
)
def test_uniform_bounds(name, params, closed, family, shape) -> None:
    """U(mean - b, mean + b) with b = sqrt(3 Var): within the bounds and reaching them.

    P(no draw within eps*b of an end) = (1 - eps/2)^n = exp(-131) for eps = 1e-3, n = 262144.
    """
    mean, var = closed(*compute_fans(shape), *_matrix(shape))
    half = math.sqrt(3 * var)
    w = big_draw(name, params, shape).double()
    lo, hi = w.min().item(), w.max().item()
    slack = 1e-6 * half + 1e-7 * abs(mean)  # float32 rounding
    assert mean - half - slack <= lo < mean - half + 1e-3 * half
    assert mean + half - 1e-3 * half < hi <= mean + half + slack


def test_named_uniform_bounds_written_out() -> None:
    """The bounds as the papers state them, not via sqrt(3 Var)."""
    fi, fo = 300, 40
    cases = {
        ("he_uniform", ()): math.sqrt(6 / fi),
        ("lecun_uniform", ()): math.sqrt(3 / fi),
        ("xavier_uniform", (("gain", 2.0),)): 2.0 * math.sqrt(6 / (fi + fo)),
        ("torch_default", ()): 1 / math.sqrt(fi),
        ("torch_rnn", ()): 1 / math.sqrt(fo),
    }
    for (name, params), bound in cases.items():
        w = draw(name, dict(params), (fo, fi), seed=5).double()
        assert w.abs().max().item() <= bound * (1 + 1e-6), name
        assert w.abs().max().item() > 0.99 * bound, name


def test_identity_moments_exact() -> None:
    n, gain = 64, 1.5
    w = draw("identity", {"gain": gain}, (n, n)).double()
    assert torch.equal(w, gain * torch.eye(n, dtype=torch.float64))
    mean, var = expected_moments("identity", {"gain": gain}, (n, n))
    assert mean == pytest.approx(gain / n, rel=1e-12)
    # population variance of n entries gain and n^2 - n zeros
    assert var == pytest.approx(gain**2 / n - (gain / n) ** 2, rel=1e-12)
    assert w.mean().item() == pytest.approx(mean, rel=1e-12)
    assert w.var(correction=0).item() == pytest.approx(var, rel=1e-12)


# --------------------------------------------------------------------------------------
# Bit-for-bit equality with torch.nn.init (same generator seed)

TORCH_TWINS: list[tuple[str, dict[str, Any], Callable[..., Any], dict[str, Any]]] = [
    ("he_normal", {}, init.kaiming_normal_, {"nonlinearity": "relu"}),
    ("he_uniform", {}, init.kaiming_uniform_, {"nonlinearity": "relu"}),
    ("he_normal", {"mode": "fan_out"}, init.kaiming_normal_, {"mode": "fan_out"}),
    ("he_uniform", {"mode": "fan_out"}, init.kaiming_uniform_, {"mode": "fan_out"}),
    (
        "he_normal",
        {"negative_slope": 0.2},
        init.kaiming_normal_,
        {"a": 0.2, "nonlinearity": "leaky_relu"},
    ),
    (
        "he_uniform",
        {"negative_slope": 0.2, "mode": "fan_out"},
        init.kaiming_uniform_,
        {"a": 0.2, "mode": "fan_out", "nonlinearity": "leaky_relu"},
    ),
    ("xavier_normal", {}, init.xavier_normal_, {}),
    ("xavier_normal", {"gain": 5 / 3}, init.xavier_normal_, {"gain": 5 / 3}),
    ("xavier_uniform", {}, init.xavier_uniform_, {}),
    ("xavier_uniform", {"gain": 0.7}, init.xavier_uniform_, {"gain": 0.7}),
    ("lecun_normal", {}, init.kaiming_normal_, {"nonlinearity": "linear"}),
    ("lecun_uniform", {}, init.kaiming_uniform_, {"nonlinearity": "linear"}),
    ("orthogonal", {}, init.orthogonal_, {}),
    ("orthogonal", {"gain": 1.5}, init.orthogonal_, {"gain": 1.5}),
    ("normal", {}, init.normal_, {"mean": 0.0, "std": 0.01}),
    ("normal", {"mean": 0.3, "std": 0.5}, init.normal_, {"mean": 0.3, "std": 0.5}),
    ("uniform", {}, init.uniform_, {"a": 0.0, "b": 1.0}),
    ("uniform", {"low": -2.0, "high": 3.0}, init.uniform_, {"a": -2.0, "b": 3.0}),
    # nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in))
    ("torch_default", {}, init.kaiming_uniform_, {"a": math.sqrt(5)}),
]


@pytest.mark.parametrize(
    ("name", "params", "fn", "kwargs"),
    TORCH_TWINS,
    ids=[f"{n}-{fn.__name__}-{kw}" for n, _, fn, kw in TORCH_TWINS],
)
def test_bit_for_bit_equal_to_torch(name, params, fn, kwargs) -> None:
    for shape in SMALL_SHAPES:
        for seed in (0, 12345):
            ours = draw(name, params, shape, seed=seed)
            theirs = torch_draw(fn, shape, seed=seed, **kwargs)
            assert torch.equal(ours, theirs), (shape, seed, (ours - theirs).abs().max())


GAINED_TWINS: list[tuple[str, dict[str, Any], Callable[..., Any], dict[str, Any]]] = [
    ("he_normal", {"gain": 0.5}, init.kaiming_normal_, {"nonlinearity": "relu"}),
    ("he_uniform", {"gain": 1.7, "mode": "fan_out"}, init.kaiming_uniform_, {"mode": "fan_out"}),
    (
        "he_normal",
        {"gain": 3.0, "negative_slope": 0.2},
        init.kaiming_normal_,
        {"a": 0.2, "nonlinearity": "leaky_relu"},
    ),
    ("lecun_normal", {"gain": 0.8}, init.kaiming_normal_, {"nonlinearity": "linear"}),
    ("lecun_uniform", {"gain": 2.5}, init.kaiming_uniform_, {"nonlinearity": "linear"}),
]


@pytest.mark.parametrize(
    ("name", "params", "fn", "kwargs"),
    GAINED_TWINS,
    ids=[f"{n}-{p}" for n, p, _, _ in GAINED_TWINS],
)
def test_gain_multiplies_torch_draw(name, params, fn, kwargs) -> None:
    """gain g: the same draw as torch's function (same generator seed) times g, up to the
    float32 rounding of computing std once instead of std then the product."""
    for shape in SMALL_SHAPES:
        ours = draw(name, params, shape, seed=3)
        theirs = params["gain"] * torch_draw(fn, shape, seed=3, **kwargs)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)


def test_lecun_gain_is_torch_gain() -> None:
    """lecun's gain is torch's own: std = gain / sqrt(fan_in); he's multiplies sqrt(2)."""
    shape = (20, 50)
    g = 1.9
    lecun = draw("lecun_normal", {"gain": g}, shape, seed=2)
    torch.testing.assert_close(
        lecun, torch_draw(init.normal_, shape, seed=2, std=g / math.sqrt(50)), rtol=1e-6, atol=0
    )
    he = draw("he_normal", {"gain": g}, shape, seed=2)
    std = g * init.calculate_gain("relu") / math.sqrt(50)
    torch.testing.assert_close(
        he, torch_draw(init.normal_, shape, seed=2, std=std), rtol=1e-6, atol=0
    )


@pytest.mark.parametrize("name", ["he_normal", "he_uniform", "lecun_normal", "lecun_uniform"])
def test_gain_at_its_default_leaves_the_run_id(name) -> None:
    from initbench.config.runconfig import RunConfig

    data = {"name": "synthetic"}
    plain = RunConfig.model_validate({"seed": 0, "data": data, "model": {"init": name}})
    gained = {"name": name, "gain": 1.0}
    same = RunConfig.model_validate({"seed": 0, "data": data, "model": {"init": gained}})
    other = {"name": name, "gain": 2.0}
    changed = RunConfig.model_validate({"seed": 0, "data": data, "model": {"init": other}})
    assert "gain" not in plain.identity()["model"]["init"]
    assert plain.run_id == same.run_id != changed.run_id


def test_truncated_normal_equals_torch_trunc_normal() -> None:
    """he_normal(truncated) = trunc_normal_(std = sqrt(2/fan_in)/0.8796, cut at 2 of it)."""
    for shape in SMALL_SHAPES:
        wide = math.sqrt(2 / compute_fans(shape)[0]) / 0.87962566103423978
        ours = draw("he_normal", TN, shape, seed=7)
        theirs = torch_draw(init.trunc_normal_, shape, seed=7, std=wide, a=-2 * wide, b=2 * wide)
        assert torch.equal(ours, theirs), shape


def test_constant_zeros_identity_equal_torch() -> None:
    assert torch.equal(draw("zeros", {}, (5, 4, 3)), init.zeros_(torch.empty(5, 4, 3)))
    assert torch.equal(
        draw("constant", {"value": -0.25}, (6, 2)), init.constant_(torch.empty(6, 2), -0.25)
    )
    assert torch.equal(draw("identity", {}, (9, 9)), init.eye_(torch.empty(9, 9)))
    assert torch.equal(draw("identity", {"gain": 2.0}, (9, 9)), 2 * init.eye_(torch.empty(9, 9)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.Linear(30, 20),
        lambda: torch.nn.Linear(1, 7),
        lambda: torch.nn.Conv2d(8, 16, 3),
        lambda: torch.nn.Conv1d(3, 5, 4),
    ],
    ids=["linear", "linear-fan1", "conv2d", "conv1d"],
)
@pytest.mark.parametrize("seed", [0, 7])
def test_torch_default_is_what_torch_modules_do(make, seed) -> None:
    """nn.Linear/ConvNd after torch.manual_seed(s) == torch_default from Generator(s).

    The global generator and a fresh Generator seeded alike share the mt19937 stream, and
    the module draws weight then bias; initbench does the same, the bias with the weight's
    fans (torch's bias bound is 1/sqrt(fan_in of the weight)).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = make()
    g = torch.Generator().manual_seed(seed)
    w, b = torch.empty_like(module.weight), torch.empty_like(module.bias)
    initialize(w, "torch_default", {}, g)
    initialize(b, "torch_default", {}, g, fans=compute_fans(tuple(w.shape)))
    assert torch.equal(w, module.weight.detach())
    assert torch.equal(b, module.bias.detach())


def test_initialize_uses_only_its_generator() -> None:
    before = torch.get_rng_state()
    a = draw("he_normal", {}, (8, 8), seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, draw("he_normal", {}, (8, 8), seed=3))
    assert not torch.equal(a, draw("he_normal", {}, (8, 8), seed=4))


# --------------------------------------------------------------------------------------
# Fans


@given(st.lists(st.integers(1, 7), min_size=2, max_size=5))
@settings(max_examples=60, deadline=None)
def test_compute_fans_matches_torch(shape: list[int]) -> None:
    expected = init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert compute_fans(shape) == expected


@pytest.mark.parametrize(
    ("shape", "fans"),
    [
        ((20, 30), (30, 20)),  # Linear(30 -> 20): weight (out, in)
        ((5, 3, 4), (12, 20)),  # Conv1d(3 -> 5, k=4)
        ((16, 8, 3, 3), (72, 144)),  # Conv2d 3x3: the receptive field is in both fans
        ((4, 2, 3, 3, 3), (54, 108)),  # Conv3d
    ],
)
def test_compute_fans_by_hand(shape, fans) -> None:
    assert compute_fans(shape) == fans


@pytest.mark.parametrize("shape", [(5,), ()])
def test_compute_fans_refuses_vectors(shape) -> None:
    with pytest.raises(InitError, match=r"2 or more dimensions.*shape \(") as info:
        compute_fans(shape)
    assert str(tuple(shape)) in str(info.value)
    with pytest.raises(ValueError):  # torch agrees, InitError is a ValueError
        init._calculate_fan_in_and_fan_out(torch.empty(shape))


# --------------------------------------------------------------------------------------
# Where an initializer can apply


@pytest.mark.parametrize("shape", [(4, 5), (5, 4), (4, 4, 3, 3), (4, 4, 1)])
def test_identity_refused_unless_square_matrix(shape) -> None:
    reason = cannot_apply("identity", {}, shape, bias=False)
    assert reason is not None
    assert "square" in reason and str(shape) in reason
    with pytest.raises(InitError, match="square"):
        draw("identity", {}, shape)


def test_identity_allowed_on_square() -> None:
    assert cannot_apply("identity", {"gain": 0.5}, (6, 6), bias=False) is None


def test_orthogonal_of_a_vector_refused() -> None:
    reason = cannot_apply("orthogonal", {}, (7,), bias=False)
    assert reason is not None and "matrix" in reason and "(7,)" in reason
    assert cannot_apply("orthogonal", {}, (3, 4), bias=False) is None
    assert cannot_apply("orthogonal", {}, (8, 4, 3, 3), bias=False) is None


BIAS_OK = ["zeros", "constant", "normal", "uniform", "torch_default", "torch_rnn"]
BIAS_REFUSED = [n for n in INITIALIZERS.names() if n not in BIAS_OK]


def test_bias_lists_cover_the_registry() -> None:
    assert "he_normal" in BIAS_REFUSED and "variance_scaling" in BIAS_REFUSED
    assert "orthogonal" in BIAS_REFUSED and "identity" in BIAS_REFUSED


@pytest.mark.parametrize("name", BIAS_REFUSED)
def test_fan_based_initializers_refused_on_bias(name) -> None:
    reason = cannot_apply(name, {}, (16,), bias=True)
    assert reason is not None
    assert name in reason and "bias" in reason
    for usable in BIAS_OK:  # the message lists what would work
        assert usable in reason


@pytest.mark.parametrize("name", BIAS_OK)
def test_bias_initializers_allowed(name) -> None:
    assert cannot_apply(name, {}, (16,), bias=True) is None


def test_cannot_apply_unknown_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean: he_normal"):
        cannot_apply("he_normall", {}, (3, 3), bias=False)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("normal", {"std": -1.0}, "greater than 0"),
        ("normal", {"std": 0.0}, "greater than 0"),
        ("uniform", {"low": 1.0, "high": 1.0}, r"low \(1.0\) must be below high \(1.0\)"),
        ("uniform", {"low": 2.0, "high": 1.0}, "must be below high"),
        ("he_normal", {"negative_slope": -0.1}, "greater than or equal to 0"),
        ("he_normal", {"mode": "fan_avg"}, "fan_in"),
        ("xavier_normal", {"gain": math.nan}, "finite"),
        ("orthogonal", {"gain": 1, "gian": 2}, "gian"),
    ],
)
def test_bad_parameters_refused(name, params, match) -> None:
    with pytest.raises(ValidationError, match=match):
        cannot_apply(name, params, (3, 3), bias=False)


def test_bias_with_weight_fans_torch_default() -> None:
    """A bias of a Linear(300 -> 10) gets U(+-1/sqrt(300)): the weight's fan_in, not its own.

    65536 draws: variance 1/900 within 5 SE (see _var_tolerance), the bound reached to 1e-3.
    """
    n, fans = 65536, compute_fans((10, 300))
    b = draw("torch_default", {}, (n,), seed=9, fans=fans).double()
    bound = 1 / math.sqrt(300)
    assert b.abs().max().item() <= bound * (1 + 1e-6)
    assert b.abs().max().item() > (1 - 1e-3) * bound
    assert abs(b.var(correction=0).item() - bound**2 / 3) < _var_tolerance(bound**2 / 3, n)
    assert expected_moments("torch_default", {}, (n,), fans=fans) == (0.0, pytest.approx(1 / 900))
    # without the weight's fans a vector has none
    with pytest.raises(InitError, match="2 or more dimensions"):
        draw("torch_default", {}, (n,))


@pytest.mark.parametrize("name", ["zeros", "constant", "normal", "uniform"])
def test_bias_initializers_ignore_fans(name) -> None:
    a = draw(name, {}, (32,), seed=1, fans=(3, 5))
    b = draw(name, {}, (32,), seed=1, fans=(3000, 5000))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------
# Orthogonal: exact structure


@pytest.mark.parametrize("shape", [(7, 5), (5, 7), (6, 6), (16, 8, 3, 3), (8, 2, 3, 3)], ids=str)
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_orthogonal_exact_structure(shape, gain) -> None:
    """W = gain Q: sum of squares gain^2 min(r, c) and W W^T (or W^T W) = gain^2 I."""
    t = torch.empty(shape, dtype=torch.float64)
    initialize(t, "orthogonal", {"gain": gain}, torch.Generator().manual_seed(0))
    rows, cols = _matrix(shape)
    m = t.reshape(rows, cols)
    assert (m**2).sum().item() == pytest.approx(gain**2 * min(rows, cols), rel=1e-12)
    gram = m @ m.T if rows <= cols else m.T @ m
    eye = torch.eye(min(rows, cols), dtype=torch.float64)
    torch.testing.assert_close(gram, gain**2 * eye, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------
# Mean-field sigma_w^2 = fan_in Var(W)


@pytest.mark.parametrize(
    ("name", "params", "shape", "sigma2"),
    [
        ("he_normal", {}, (256, 1024), 2.0),  # relu: sigma_w^2 = 2 (the critical point)
        ("he_uniform", {}, (64, 32, 3, 3), 2.0),
        ("he_normal", {"negative_slope": 0.1}, (64, 64), 2 / 1.01),
        ("he_normal", {"mode": "fan_out"}, (32, 64), 4.0),  # 64 * 2 / 32
        ("xavier_normal", {}, (64, 64), 1.0),  # square: fan_avg = fan_in
        ("xavier_uniform", {"gain": 5 / 3}, (64, 64), 25 / 9),
        ("xavier_normal", {}, (64, 192), 1.5),  # 192 * 2 / (192 + 64)
        ("lecun_normal", {}, (10, 300), 1.0),
        ("torch_default", {}, (10, 300), 1 / 3),
        ("orthogonal", {"gain": 1.3}, (50, 50), 1.69),
        ("uniform", {"low": -1.0, "high": 1.0}, (10, 30), 10.0),  # 30 * 1/3
        ("normal", {"std": 0.1}, (10, 300), 3.0),
        ("zeros", {}, (5, 5), 0.0),
    ],
)
def test_weight_scale_sigma2(name, params, shape, sigma2) -> None:
    assert weight_scale_sigma2(name, params, shape) == pytest.approx(sigma2, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "params"),
    [("uniform", {}), ("constant", {"value": 0.5}), ("normal", {"mean": 0.1}), ("identity", {})],
)
def test_weight_scale_sigma2_none_for_nonzero_mean(name, params) -> None:
    assert weight_scale_sigma2(name, params, (8, 8)) is None


def test_gain_leaves_the_run_id_of_an_optional_reference() -> None:
    """recurrent_init is an optional reference (InitRef | None): its added parameters at
    their defaults leave the run id too. The id was computed before gain existed."""
    from initbench.config.runconfig import RunConfig

    model = {"arch": "rnn", "recurrent_init": "he_normal"}
    config = RunConfig.model_validate({"seed": 1, "data": "synthetic", "model": model})
    assert config.run_id == "ea1c6ada8ca4"
