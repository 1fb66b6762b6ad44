"""initbench.analysis: theory beside measurement (the prediction of each run, the
theory-mismatch check over seeds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from analysis_tables import (
    TH,
    analyse,
    healthy,
    rows,
    run_record,
    table,
)

from initbench import analysis, meanfield
from initbench.analysis import Thresholds
from initbench.config import geometry

# --------------------------------------------------------------------------------------
# Theory beside measurement


@pytest.mark.parametrize(
    ("p", "dof", "expected"),  # Student's t tables (e.g. Abramowitz & Stegun Table 26.10)
    [
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 3, 3.1824),
        (0.975, 4, 2.7764),
        (0.975, 9, 2.2622),
        (0.975, 30, 2.0423),
        (0.975, 1000, 1.9623),
        (0.995, 5, 4.0321),
        (0.75, 1, 1.0),
    ],
)
def test_student_t_quantile_matches_the_tables(p, dof, expected):
    assert analysis.student_t_quantile(p, dof) == pytest.approx(expected, abs=5e-5)


def preact_sq(run_id: str, q1: float, depth: int = 3) -> list[dict[str, Any]]:
    """Step-0 preact_sq of every layer (only layer 1's is what theory reads)."""
    return rows(run_id, 0, "preact_sq", [q1] * depth)


def test_run_prediction_is_theory_predict_from_the_runs_layer1_preact_sq():
    record = run_record(
        "t",
        **{
            "config.model.activation.name": "tanh",
            "config.model.init.name": "xavier_normal",
            "config.model.init.mode": "fan_avg",
            "config.model.init.gain": 1.0,
            "config.model.init.negative_slope": None,
        },
    )
    out = analyse([record], healthy("t", 0), preact_sq("t", 2.5)).loc["t"]
    model = {"arch": "mlp", "depth": 3, "width": 16, "activation": {"name": "tanh"}}
    model["init"] = {"name": "xavier_normal", "mode": "fan_avg", "gain": 1.0}
    model["init"]["distribution"] = "normal"
    expected = meanfield.predict({"model": model}, q1=2.5).summary()
    assert out["theory_q1"] == 2.5
    assert out["theory_fwd_factor_init"] == pytest.approx(expected["forward_decay"], rel=1e-12)
    assert out["theory_fwd_ratio_init"] == pytest.approx(expected["forward_last_first"], rel=1e-12)
    assert out["theory_bwd_factor_init"] == pytest.approx(expected["backward_decay"], rel=1e-12)
    assert out["theory_bwd_ratio_init"] == pytest.approx(expected["backward_first_last"], rel=1e-12)
    assert out["theory_positions"] == 3 and out["theory_note_init"] == ""
    assert meanfield.predict({"model": model}, q1=0.1).summary() != expected  # q1 matters for tanh


def test_relu_he_predicts_one_and_uniform_init_gets_the_reason_instead():
    uniform = {"config.model.init.name": "uniform", "config.model.init.low": 0.0}
    uniform["config.model.init.high"] = 1.0
    records = [run_record("he"), run_record("u", **uniform)]
    for key in ("mode", "negative_slope", "distribution"):
        records[1][f"config.model.init.{key}"] = None
    out = analyse(
        records, healthy("he", 0), healthy("u", 0), preact_sq("he", 1.7), preact_sq("u", 9)
    )
    assert out.loc["he", "theory_fwd_factor_init"] == pytest.approx(1.0, rel=1e-12)
    assert out.loc["he", "theory_bwd_ratio_init"] == pytest.approx(1.0, rel=1e-12)
    assert math.isnan(out.loc["u", "theory_fwd_factor_init"])
    assert "mean 0.5 per element, not 0" in out.loc["u", "theory_note_init"]


def test_a_missing_layer1_preact_sq_is_a_reason_not_a_guess():
    out = analyse([run_record("a")], healthy("a", 0)).loc["a"]
    assert math.isnan(out["theory_fwd_factor_init"]) and math.isnan(out["theory_q1"])
    assert "preact_sq was not recorded" in out["theory_note_init"]


def check_group(measured: Sequence[float], predicted: float, depth: int = 10) -> pd.DataFrame:
    """A configuration's analysed seeds with every quantity measured as ``measured``."""
    frame = pd.DataFrame({"theory_note_init": "", "theory_positions": depth}, index=measured)
    for quantity in analysis.THEORY_QUANTITIES:
        frame[f"{quantity}_init"] = list(measured)
        frame[f"theory_{quantity}_init"] = predicted
    return frame.reset_index(drop=True)


def test_theory_mismatch_fires_beyond_the_seeds_spread_and_the_tolerance():
    # he-like measurement (1.0 per layer) against a prediction of 0.5: far outside the spread
    out = analysis.theory_check(check_group([1.0, 1.02, 0.98], 0.5), TH)
    assert out["theory_check"].startswith("theory-mismatch: fwd factor")
    assert out["theory_mismatch"] == "fwd_factor, fwd_ratio, bwd_factor, bwd_ratio"
    logs = np.log(np.array([1.0, 1.02, 0.98]) / 0.5)
    bound = 4.302653 * logs.std(ddof=1) * math.sqrt(1 + 1 / 3)  # t(0.975, 2 dof)
    assert out["theory_logdev_fwd_factor"] == pytest.approx(logs.mean())
    assert out["theory_allowed_fwd_factor"] == pytest.approx(max(math.log(1.05), bound))
    assert out["theory_allowed_fwd_ratio"] == pytest.approx(max(9 * math.log(1.05), bound))


def test_theory_agrees_within_the_spread_or_the_tolerance_and_needs_two_seeds():
    matching = analysis.theory_check(check_group([0.49, 0.52, 0.50], 0.5), TH)
    assert matching["theory_check"] == "consistent" and matching["theory_mismatch"] == ""
    # the seeds agree to 1e-4 but sit 2% off: within the 5% per-layer tolerance
    close = analysis.theory_check(check_group([0.51, 0.5101], 0.5), TH)
    assert close["theory_check"] == "consistent"
    assert close["theory_allowed_fwd_factor"] == pytest.approx(math.log(1.05))
    looser = analysis.theory_check(
        check_group([0.51, 0.5101], 0.5), Thresholds(theory_tolerance=0.01)
    )
    assert looser["theory_check"].startswith("theory-mismatch")
    one = analysis.theory_check(check_group([0.9], 0.5), TH)
    assert one["theory_check"] == "not evaluated (1 seed)"
    assert one["theory_logdev_fwd_factor"] == pytest.approx(math.log(1.8))
    assert math.isnan(one["theory_allowed_fwd_factor"])


def test_theory_check_without_prediction_or_with_a_non_finite_measurement():
    none = check_group([0.5, 0.5], math.nan).assign(theory_note_init="uniform: mean 0.5")
    out = analysis.theory_check(none, TH)
    assert out["theory_check"] == "no prediction" and out["theory_note"] == "uniform: mean 0.5"
    group = check_group([0.5, 0.52], 0.5)
    group.loc[1, "fwd_ratio_init"] = 0.0  # a collapsed profile: ln 0
    assert analysis.theory_check(group, TH)["theory_check"] == "consistent; undefined: fwd ratio"


def test_predicted_gradient_is_anchored_at_the_measured_last_layer():
    layers = table(healthy("a", 0, backward=0.5), preact_sq("a", 2.0))
    predicted = analysis.run_theory(run_record("a"), layers)
    frame = analysis.theory_layers(predicted, layers).set_index("layer")
    measured = 1e-3 * 2.0**2  # healthy(): the gradient halves from layer 3 back to 1
    assert frame.loc[3, "theory_grad_preact_var_init"] == pytest.approx(measured)
    assert frame.loc[1, "theory_grad_preact_var_init"] == pytest.approx(measured)  # he: kept
    assert frame["theory_preact_var_init"].tolist() == pytest.approx([2.0, 2.0, 2.0])
    other = frame.reset_index().assign(theory_preact_var_init=6.0)  # a second seed
    mean = analysis.theory_mean([frame.reset_index(), other])
    positions, values, unit = analysis.theory_profile(mean, "preact_var")
    assert unit == "layer" and positions.tolist() == [1, 2, 3]
    assert values.tolist() == pytest.approx([4.0, 4.0, 4.0]) and mean["theory_n"].eq(2).all()


def test_an_rnn_of_depth_one_has_no_forward_prediction():
    record = run_record("r", **{"config.model.arch": "rnn", "config.model.depth": 1})
    record["config.model.activation.name"] = "tanh"
    q = list(np.linspace(0.5, 1.5, geometry.RNN_STEPS))
    layers = table(rows("r", 0, "preact_sq", q, layer=1))
    predicted = analysis.run_theory(record, layers)
    summary = analysis.theory_summary(predicted)
    assert math.isnan(summary["theory_fwd_factor_init"])
    assert summary["theory_bwd_factor_init"] > 0 and summary["theory_positions"] == 28
    assert "forward profile is the measurement itself" in summary["theory_note_init"]


def predicted_table(pred: meanfield.Prediction) -> pd.DataFrame:
    """A run's step-0 long table whose preact_var and grad_preact_var are the prediction's
    q and bwd_ratio, row by row (layer, t)."""
    c = pred.columns
    frames = [
        pd.DataFrame(
            {
                "run_id": "p",
                "step": 0,
                "layer": c["layer"],
                "t": c["t"],
                "name": "",
                "metric": metric,
                "value": c[column],
            }
        )
        for metric, column in (("preact_var", "q"), ("grad_preact_var", "bwd_ratio"))
    ]
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize(
    "model",
    [
        {"arch": "mlp", "depth": 6, "width": 32, "activation": "tanh", "init": "xavier_normal"},
        {"arch": "cnn", "depth": 5, "width": 8, "activation": "relu", "init": "he_normal"},
        {"arch": "rnn", "depth": 2, "width": 16, "init": "xavier_normal"},
    ],
    ids=lambda m: m["arch"],
)
def test_theory_summarises_a_predicted_profile_as_analysis_reads_a_measured_one(model):
    """One definition of the factors and ratios: analysis's verdict numbers of a table
    holding the predicted profiles are the prediction's own summary (an rnn's over its top
    layer's time steps, a cnn's backward one over the gradient's sum over positions)."""
    pred = meanfield.predict(model)
    record = run_record("p", **{"config.model.arch": model["arch"]})
    record["config.model.depth"] = model["depth"]
    out = analysis.signal_at(
        predicted_table(pred), 0, "init", TH, analysis.gradient_positions(record)
    )
    summary = pred.summary()
    for quantity, (key, _) in analysis.THEORY_QUANTITIES.items():
        assert out[f"{quantity}_init"] == pytest.approx(summary[key], rel=1e-12)
