"""`initbench theory` and api.depth_scales: any initializer (a spec's reference syntax, or
sigma_w^2 directly), the fixed point and depth scales, and located exit-2 errors."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from initbench import api
from initbench.cli import main
from initbench.meanfield import TheoryError, fixed_point, numpy_activation


def _theory(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["theory", *args])
    return result.exit_code, result.output


def _json(*args: str) -> dict:
    code, out = _theory(*args, "--format", "json")
    assert code == 0, out
    return json.loads(out)


def test_sigma_w2_directly_prints_every_quantity_and_the_phase() -> None:
    code, out = _theory("--activation", "tanh", "--sigma-w2", "2", "--sigma-b2", "0.05")
    assert code == 0, out
    for label in ("q*", "c*", "chi_1", "chi_c", "xi_q", "xi_c"):
        assert f"  {label} " in out
    assert "25.21" in out and "phase: chaotic" in out
    assert "21.4" not in out  # the old 1/ln chi_1 = 21.48, printed as the depth scale


def test_json_is_the_fixed_point() -> None:
    doc = _json("--activation", "tanh", "--sigma-w2", "3", "--sigma-b2", "0.05")
    fp = fixed_point(numpy_activation("tanh"), 3.0, 0.05)
    assert doc["depth_scale"] == pytest.approx(fp.depth_scale) == pytest.approx(9.05, rel=0.005)
    assert (doc["c_star"], doc["xi_q"], doc["regime"]) == (fp.c_star, fp.xi_q, "chaotic")
    assert doc["sigma_w2_from"] == "given"


@pytest.mark.parametrize(
    "init",
    [
        ["--init", "{name: normal, std: 0.1}"],
        ["--init", "normal", "--param", "std=0.1"],
        ["--init", "{name: normal}", "--param", "std=0.1"],
    ],
)
def test_a_fixed_std_normal_needs_the_width_and_gives_width_times_std2(init: list[str]) -> None:
    code, out = _theory("--activation", "tanh", *init)
    assert code == 2 and "depends on the width" in out and "--width" in out
    doc = _json("--activation", "tanh", *init, "--width", "256")
    assert doc["sigma_w2"] == pytest.approx(256 * 0.1**2)
    assert "at width 256" in doc["sigma_w2_from"]


@pytest.mark.parametrize(
    ("init", "sigma_w2"),
    [("xavier_normal", 1.0), ("he_uniform", 2.0), ("{name: orthogonal, gain: 1.5}", 2.25)],
)
def test_fan_scaled_inits_give_a_width_free_sigma_w2(init: str, sigma_w2: float) -> None:
    doc = _json("--activation", "tanh", "--init", init)
    assert doc["sigma_w2"] == pytest.approx(sigma_w2)
    assert "every width" in doc["sigma_w2_from"]
    assert _json("--activation", "tanh", "--init", init, "--sigma-w2", str(sigma_w2)) == doc


def test_variance_scaling_scale_is_sigma_w2() -> None:
    doc = _json("--activation", "tanh", "--init", "{name: variance_scaling, scale: 1.75}")
    assert doc["sigma_w2"] == pytest.approx(1.75)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--init", "xavier_normal", "--sigma-w2", "2"], "contradicts init xavier_normal"),
        (["--init", "nromal"], "did you mean: normal"),
        (["--init", "normal", "--param", "sdt=1"], "sdt: Extra inputs are not permitted"),
        (["--init", "{name: normal"], "--init:1: invalid YAML"),
        (["--init", "[1, 2]"], "expected a name or {name: ...}"),
        (["--param", "std=1"], "give --init"),
        (["--init", "normal", "--param", "std"], "expected KEY=VALUE"),
        ([], "give an initializer (--init) or sigma_w^2 (--sigma-w2)"),
        (["--sigma-w2", "0"], "sigma_w2 must be > 0"),
        (["--sigma-w2", "2", "--batchnorm"], "batchnorm: only for the per-layer prediction"),
        (["--sigma-w2", "2", "--depth", "5"], "needs --width"),
        (["--init", "uniform"], "mean 0.5 per element, not 0"),
    ],
)
def test_bad_input_exits_2_with_where(args: list[str], message: str) -> None:
    code, out = _theory("--activation", "tanh", *args)
    assert code == 2, out
    assert message in " ".join(out.split())


def test_depth_gives_the_per_layer_table_with_the_new_fixed_point_line() -> None:
    code, out = _theory(
        "--activation", "tanh", "--sigma-w2", "2", "--sigma-b2", "0.05", "--depth", "4",
        "--width", "64",
    )  # fmt: skip
    assert code == 0, out
    assert "init variance_scaling" in out and "xi_c = 25.21 layers" in out
    assert "fwd_factor" in out  # the table


def test_depth_with_a_mapping_init() -> None:
    code, out = _theory(
        "--activation", "tanh", "--init", "{name: normal, std: 0.0625}", "--depth", "3",
        "--width", "256", "--format", "json",
    )  # fmt: skip
    assert code == 0, out
    assert json.loads(out)["rows"][1]["sigma_w2"] == pytest.approx(1.0)


def test_api_depth_scales_is_the_commands() -> None:
    scales = api.depth_scales("tanh", init={"name": "normal", "std": 0.1}, width=256)
    doc = _json("--activation", "tanh", "--init", "{name: normal, std: 0.1}", "--width", "256")
    summary = scales.summary()
    assert summary["sigma_w2"] == doc["sigma_w2"] and summary["regime"] == doc["regime"]
    assert summary["depth_scale"] == pytest.approx(doc["depth_scale"])
    assert api.depth_scales("tanh", sigma_w2=1.5, sigma_b2=0.05).fixed.depth_scale == (
        pytest.approx(15.8, rel=0.005)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": "he_normal", "sigma_w2": 1.0}, "contradicts"),
        ({"init": {"name": "normal", "std": 0.1}}, "depends on the width"),
        ({"sigma_w2": 1.0, "sigma_b2": -1.0}, "sigma_b2 must be >= 0"),
        ({}, "give an initializer"),
    ],
)
def test_api_depth_scales_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(TheoryError, match=match):
        api.depth_scales("tanh", **kwargs)


def test_unbounded_variance_says_why_there_is_no_depth_scale() -> None:
    doc = _json("--activation", "relu", "--sigma-w2", "4")
    assert doc["q_star"] is None and doc["depth_scale"] is None and "q* = inf" in doc["note"]
    code, out = _theory("--activation", "relu", "--sigma-w2", "4")
    assert code == 0 and "no xi_c or xi_q" in out
    assert not math.isnan(doc["chi_star"])


def test_activation_takes_the_reference_syntax_too() -> None:
    doc = _json("--activation", "{name: elu, alpha: 0.5}", "--sigma-w2", "1.5")
    elu = numpy_activation("elu", {"alpha": 0.5})
    assert doc["chi_star"] == pytest.approx(fixed_point(elu, 1.5).chi_star)
    assert doc["chi_star"] != pytest.approx(fixed_point(numpy_activation("elu"), 1.5).chi_star)


def test_recurrent_init_takes_the_reference_syntax() -> None:
    args = ["--activation", "tanh", "--init", "xavier_normal", "--arch", "rnn", "--depth", "1"]
    doc = _json(*args, "--width", "16", "--recurrent-init", "{name: orthogonal, gain: 0.5}")
    assert doc["rows"][0]["sigma_rec2"] == pytest.approx(0.25)
