"""initbench.analysis: the decay of one profile, the thresholds, degenerate profiles,
and profiles read from the long table (layers, an rnn's time steps, a cnn's positions)."""

from __future__ import annotations

import math

import pytest
from analysis_tables import (
    TH,
    geometric,
    healthy,
    rows,
    run_record,
    table,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from initbench import analysis
from initbench.analysis import Thresholds, classify, decay, with_saturation
from initbench.config import geometry

# --------------------------------------------------------------------------------------
# Decay of one profile


@pytest.mark.parametrize(
    ("factor", "verdict"), [(0.5, "vanishing"), (1.0, "stable"), (2.0, "exploding")]
)
def test_geometric_forward_profile_gives_its_factor_ratio_and_verdict(factor, verdict):
    result = decay(range(1, 11), geometric(3.0, factor, 10), backward=False, thresholds=TH)
    assert result.factor == pytest.approx(factor, rel=1e-12)
    assert result.ratio == pytest.approx(factor**9, rel=1e-12)
    assert result.verdict == verdict
    assert result.note == ""


def test_backward_reads_from_last_layer_to_first():
    # the gradient is 1 at layer 10 and halves on each layer towards the input
    grads = [0.5 ** (10 - layer) for layer in range(1, 11)]
    result = decay(range(1, 11), grads, backward=True, thresholds=TH)
    assert result.factor == pytest.approx(0.5, rel=1e-12)
    assert result.ratio == pytest.approx(grads[0] / grads[-1], rel=1e-12)
    assert result.verdict == "vanishing"


def test_positions_may_come_in_any_order():
    values = geometric(1.0, 0.5, 5)
    shuffled = decay(
        [3, 1, 5, 2, 4],
        [values[2], values[0], values[4], values[1], values[3]],
        backward=False,
        thresholds=TH,
    )
    assert shuffled.factor == pytest.approx(0.5)
    assert shuffled.ratio == pytest.approx(0.5**4)


@settings(max_examples=60, deadline=None)
@given(
    factor=st.floats(1e-3, 1e3),
    layers=st.integers(2, 40),
    scale=st.floats(1e-30, 1e30),
)
def test_fit_recovers_any_geometric_factor_both_ways(factor, layers, scale):
    edges = (math.log(1.5), math.log(100) / (layers - 1))  # exactly on a threshold: either
    assume(all(abs(abs(math.log(factor)) - edge) > 1e-6 for edge in edges))
    values = geometric(scale, factor, layers)
    forward = decay(range(1, layers + 1), values, backward=False, thresholds=TH)
    backward = decay(range(1, layers + 1), values[::-1], backward=True, thresholds=TH)
    assert forward.factor == pytest.approx(factor, rel=1e-9)
    assert backward.factor == pytest.approx(factor, rel=1e-9)
    assert backward.ratio == pytest.approx(forward.ratio, rel=1e-9)
    assert forward.verdict == backward.verdict


def test_fit_is_least_squares_on_log2_not_the_end_points():
    # log2 values 0, -2, -2, -4 at l = 1..4: least-squares slope is -1.2 exactly
    result = decay([1, 2, 3, 4], [1, 0.25, 0.25, 1 / 16], backward=False, thresholds=TH)
    assert result.factor == pytest.approx(2**-1.2, rel=1e-12)
    assert result.ratio == pytest.approx(1 / 16)


# --------------------------------------------------------------------------------------
# Thresholds


@pytest.mark.parametrize(
    ("factor", "ratio", "verdict"),
    [
        (0.9, 1 / 101, "vanishing"),  # end-to-end beyond 100x
        (0.9, 1 / 99, "stable"),
        (1.1, 101, "exploding"),
        (1.1, 99, "stable"),
        (0.66, 0.5, "vanishing"),  # per-layer beyond 1/1.5
        (0.67, 0.5, "stable"),
        (1.51, 2.0, "exploding"),
        (1.49, 2.0, "stable"),
        (0.5, 200.0, "exploding"),  # the two disagree: the end-to-end ratio decides
        (2.0, 1e-3, "vanishing"),
    ],
)
def test_default_thresholds(factor, ratio, verdict):
    assert classify(factor, ratio, TH) == verdict


def test_thresholds_can_be_changed():
    strict = Thresholds(ratio=10.0, factor=1.1)
    assert classify(0.95, 0.05, TH) == "stable"
    assert classify(0.95, 0.05, strict) == "vanishing"
    assert classify(0.85, 0.5, strict) == "vanishing"
    assert classify(1.2, 2.0, strict) == "exploding"


def test_thresholds_are_described_with_their_values():
    text = "\n".join(Thresholds(ratio=50, factor=1.25, dead=0.3, chance_margin=0.02).describe())
    assert "ratio < 1/50" in text and "factor > 1.25" in text and "1/1.25 (= 0.8)" in text
    assert "dead_frac >= 0.3" in text
    assert "test accuracy < 0.12" in text


@pytest.mark.parametrize(
    "bad",
    [
        {"ratio": 1.0},
        {"factor": 0.5},
        {"dead": 0.0},
        {"saturated": 1.5},
        {"chance_margin": -0.1},
        {"init_tolerance": 0.0},
    ],
)
def test_nonsense_thresholds_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Thresholds(**bad)


# --------------------------------------------------------------------------------------
# Degenerate profiles: named, never dropped, never a crash


def test_all_zero_variance_is_collapsed():
    result = decay([1, 2, 3], [0.0, 0.0, 0.0], backward=False, thresholds=TH)
    assert result.verdict == "collapsed"
    assert math.isnan(result.factor) and math.isnan(result.ratio)
    assert "exactly 0 at every layer" in result.note


def test_zero_where_the_signal_arrives_is_vanishing_with_a_note():
    result = decay([1, 2, 3, 4], [1.0, 1e-3, 0.0, 0.0], backward=False, thresholds=TH)
    assert result.verdict == "vanishing"
    assert result.ratio == 0.0
    assert math.isnan(result.factor)
    assert "layer 3, 4" in result.note and "log 0" in result.note


def test_zero_gradient_at_the_input_is_vanishing_backward():
    result = decay([1, 2, 3], [0.0, 1e-3, 1.0], backward=True, thresholds=TH)
    assert result.verdict == "vanishing"
    assert result.ratio == 0.0


def test_zero_where_the_signal_starts_is_collapsed_not_exploding():
    result = decay([1, 2, 3], [0.0, 1.0, 1.0], backward=False, thresholds=TH)
    assert result.verdict == "collapsed"
    assert result.ratio == math.inf
    assert "layer 1" in result.note


def test_nan_is_non_finite_and_names_the_layer():
    result = decay([1, 2, 3], [1.0, math.nan, 1.0], backward=False, thresholds=TH)
    assert result.verdict == "non-finite"
    assert "layer 2" in result.note


def test_infinite_variance_is_exploding_with_a_note():
    result = decay([1, 2, 3], [1.0, 1e30, math.inf], backward=False, thresholds=TH)
    assert result.verdict == "exploding"
    assert result.ratio == math.inf
    assert "inf at layer 3" in result.note


@pytest.mark.parametrize(("values", "note"), [([], "no statistics"), ([1.0], "only one layer")])
def test_fewer_than_two_layers_is_undefined(values, note):
    result = decay(range(1, len(values) + 1), values, backward=False, thresholds=TH)
    assert result.verdict == "undefined"
    assert note in result.note


def test_duplicate_layers_are_an_error_not_a_number():
    with pytest.raises(ValueError, match="duplicate layer"):
        decay([1, 1, 2], [1.0, 2.0, 3.0], backward=False, thresholds=TH)


# --------------------------------------------------------------------------------------
# Profiles from the long table: layers, and an rnn's time steps


def test_profile_of_an_rnn_is_the_top_layer_across_time():
    layers = table(
        rows("r", 0, "preact_var", geometric(1.0, 0.5, 28), layer=1),
        rows("r", 0, "preact_var", geometric(1.0, 1.0, 28), layer=2),
        rows("r", 0, "w_var", [0.1, 0.1]),  # t = 0 rows: weights, not the time profile
    )
    positions, values, unit = analysis.profile(layers, 0, "preact_var")
    assert unit == "time step"
    assert positions.tolist() == list(range(1, 29))
    assert values.tolist() == geometric(1.0, 1.0, 28)


def test_rnn_backward_decay_is_through_time():
    grads = [0.8 ** (28 - t) for t in range(1, 29)]  # shrinks from t = 28 back to t = 1
    layers = table(
        rows("r", 0, "preact_var", [1.0] * 28, layer=1),
        rows("r", 0, "grad_preact_var", grads, layer=1),
    )
    out = analysis.signal_at(layers, 0, "init", TH)
    assert out["bwd_factor_init"] == pytest.approx(0.8)
    assert out["bwd_ratio_init"] == pytest.approx(0.8**27)
    assert out["bwd_verdict_init"] == "vanishing"
    assert out["fwd_verdict_init"] == "stable"


def test_cnn_backward_decay_is_of_the_sum_over_map_positions():
    # depth 5: stride 2 at layers 2 and 4 (784, 196, 196, 49, 49 positions). A gradient
    # whose per-element variance drops 4x into each strided layer's input keeps its sum
    # over positions: stable, where the per-element profile alone reads vanishing.
    positions = geometry.cnn_positions(5)
    assert positions == [784, 196, 196, 49, 49]
    per_element = [1.0 / n for n in positions]  # x positions = 1 at every layer
    layers = table(
        rows("c", 0, "preact_var", [1.0] * 5), rows("c", 0, "grad_preact_var", per_element)
    )
    record = run_record("c", **{"config.model.arch": "cnn", "config.model.depth": 5})
    map_positions = analysis.gradient_positions(record)
    assert map_positions == dict(enumerate(positions, start=1))
    summed = analysis.signal_at(layers, 0, "init", TH, map_positions)
    assert summed["bwd_factor_init"] == pytest.approx(1.0)
    assert summed["bwd_ratio_init"] == pytest.approx(1.0)
    assert summed["bwd_verdict_init"] == "stable"
    per_element_only = analysis.signal_at(layers, 0, "init", TH)
    assert per_element_only["bwd_ratio_init"] == pytest.approx(1 / 16)
    assert analysis.analyse_run(record, layers, TH)["bwd_verdict_init"] == "stable"
    assert analysis.gradient_positions(run_record("m")) == {}  # an mlp: per element


def test_batchnorm_normed_is_analysed_next_to_preact():
    layers = table(
        rows("r", 0, "preact_var", geometric(1.0, 0.5, 6)),
        rows("r", 0, "normed_var", [1.0] * 6),
        rows("r", 0, "grad_preact_var", [1.0] * 6),
    )
    out = analysis.signal_at(layers, 0, "init", TH)
    assert out["fwd_verdict_init"] == "vanishing"
    assert out["normed_verdict_init"] == "stable"
    assert out["normed_factor_init"] == pytest.approx(1.0)


def test_without_batchnorm_normed_is_empty_not_na():
    out = analysis.signal_at(table(healthy("r", 0)), 0, "init", TH)
    assert out["normed_verdict_init"] == ""
    assert math.isnan(out["normed_factor_init"])


# Verdicts that do not mislead (issue 16)


def test_an_overflow_is_exploding_with_the_factor_of_the_finite_layers():
    # relu with uniform [0, 1] weights: x16,400 per layer, then float32 overflows
    values = [16400.0**k for k in range(1, 10)] + [math.inf] + [math.nan] * 5
    result = decay(range(1, 16), values, backward=False, thresholds=TH)
    assert result.verdict == "exploding"
    assert result.factor == pytest.approx(16400.0)
    assert "overflowed at layer 10" in result.note and "finite layer 1..9" in result.note


def test_nan_after_growth_is_an_overflow_not_non_finite():
    values = [10.0**k for k in range(1, 6)] + [math.nan] * 3
    result = decay(range(1, 9), values, backward=False, thresholds=TH)
    assert result.verdict == "exploding"
    assert result.factor == pytest.approx(10.0)
    assert "NaN at layer 6, 7, 8 (overflowed at layer 6)" in result.note


def test_a_backward_overflow_is_read_from_the_last_layer():
    values = [math.inf, 1e6, 1e3, 1.0]  # the gradient grows x1000 per layer towards layer 1
    result = decay([1, 2, 3, 4], values, backward=True, thresholds=TH)
    assert result.verdict == "exploding"
    assert result.factor == pytest.approx(1000.0)


def test_nan_without_growth_before_stays_non_finite():
    result = decay([1, 2, 3, 4], [1.0, 1.0, 1.0, math.nan], backward=False, thresholds=TH)
    assert result.verdict == "non-finite"
    assert math.isnan(result.factor)


def test_a_saturated_network_is_not_stable():
    # tanh with uniform [0, 1] weights: factor 1.02 with every unit saturated
    result = decay([1, 2, 3, 4], [1.0, 1.02, 1.04, 1.06], backward=False, thresholds=TH)
    assert result.verdict == "stable"
    assert with_saturation(result.verdict, 1.0, TH) == "saturated"
    assert with_saturation(result.verdict, 0.1, TH) == "stable"
    assert with_saturation("vanishing", 1.0, TH) == "vanishing"  # the decay says more
    assert with_saturation("stable", math.nan, TH) == "stable"  # not recorded
