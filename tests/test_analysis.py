"""Tests of initbench.analysis on hand-built tables with known answers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from initbench import analysis, theory
from initbench.analysis import Thresholds, classify, decay
from initbench.config import geometry

TH = Thresholds()

# --------------------------------------------------------------------------------------
# Builders


def rows(
    run_id: str, step: int, metric: str, values: Sequence[float], layer: int | None = None
) -> list[dict[str, Any]]:
    """Long-table rows: one per layer (t = 0), or with ``layer`` one per time step t."""
    out = []
    for i, value in enumerate(values, start=1):
        lay, t = (layer, i) if layer is not None else (i, 0)
        out.append(
            {
                "run_id": run_id,
                "step": step,
                "layer": lay,
                "t": t,
                "name": f"fc{lay}",
                "metric": metric,
                "value": float(value),
            }
        )
    return out


def table(*parts: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([r for part in parts for r in part])


def geometric(first: float, factor: float, n: int) -> list[float]:
    return [first * factor**i for i in range(n)]


def run_record(run_id: str, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A runs-table row of an mlp (width 16, depth 3, he_normal) run that went ok."""
    record = {
        "run_id": run_id,
        "status": "ok",
        "diverged_step": None,
        "error": None,
        "final_loss": 0.5,
        "test_accuracy": 0.9,
        "steps_planned": 10,
        "config.seed": seed,
        "config.model.arch": "mlp",
        "config.model.depth": 3,
        "config.model.width": 16,
        "config.model.init.name": "he_normal",
        "config.model.init.mode": "fan_in",
        "config.model.init.negative_slope": 0.0,
        "config.model.init.distribution": "normal",
    }
    record.update(extra)
    return record


def he_weights(run_id: str, scale_layer2: float = 1.0) -> list[dict[str, Any]]:
    """w_var at step 0 exactly as he_normal's formula gives it for mlp width 16, depth 3."""
    return rows(run_id, 0, "w_var", [2 / 784, 2 / 16 * scale_layer2, 2 / 16])


def healthy(run_id: str, step: int, forward: float = 1.0, backward: float = 1.0):
    return [
        *rows(run_id, step, "preact_var", geometric(1.0, forward, 3)),
        *rows(run_id, step, "grad_preact_var", geometric(1e-3, 1 / backward, 3)),
    ]


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
    assert "test accuracy <= 0.12" in text


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


# --------------------------------------------------------------------------------------
# Runs: outcome, flags, init check


def analyse(records: list[dict[str, Any]], *parts: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return analysis.analyse_runs(pd.DataFrame(records), table(*parts), TH).set_index("run_id")


def test_a_healthy_run_has_no_flags_and_both_steps_analysed():
    out = analyse([run_record("a")], healthy("a", 0), healthy("a", 10, 0.5), he_weights("a"))
    a = out.loc["a"]
    assert a["last_step"] == 10
    assert a["fwd_verdict_init"] == "stable" and a["fwd_verdict_last"] == "vanishing"
    assert a["fwd_factor_last"] == pytest.approx(0.5)
    assert a["flags"] == ""
    assert a["init_worst_ratio"] == pytest.approx(1.0)
    assert not a["init_mismatch"]


def test_flags_each_have_their_cause():
    records = [
        run_record("dead"),
        run_record("sat"),
        run_record("chance", test_accuracy=0.12),
        run_record("above", test_accuracy=0.16),
        run_record("div", status="diverged", diverged_step=7, test_accuracy=None),
        run_record("mis"),
    ]
    parts = [healthy(r["run_id"], 0) + he_weights(r["run_id"]) for r in records[:-1]]
    parts += [healthy("mis", 0) + he_weights("mis", scale_layer2=3.0)]
    parts += [rows("dead", 0, "dead_frac", [0.0, 0.5, 0.1]), rows("sat", 0, "sat_frac", [0.6])]
    out = analyse(records, *parts)
    assert out.loc["dead", "flags"] == "dead"
    assert out.loc["sat", "flags"] == "saturated"
    assert out.loc["chance", "flags"] == "no-learning"
    assert out.loc["above", "flags"] == ""
    assert out.loc["div", "flags"] == "diverged"
    assert out.loc["div", "status_text"] == "diverged at step 7"
    assert out.loc["mis", "flags"] == "init-mismatch"
    assert out.loc["mis", "init_worst_ratio"] == pytest.approx(3.0)
    assert out.loc["mis", "init_worst_at"] == "w layer 2"


def test_dead_flag_also_fires_on_the_last_step():
    out = analyse(
        [run_record("a")],
        healthy("a", 0) + he_weights("a") + rows("a", 0, "dead_frac", [0.0, 0.0, 0.0]),
        healthy("a", 5) + rows("a", 5, "dead_frac", [0.0, 0.9, 0.0]),
    )
    assert out.loc["a", "dead_max_init"] == 0.0
    assert out.loc["a", "dead_max_last"] == 0.9
    assert out.loc["a", "flags"] == "dead"


@pytest.mark.parametrize(
    ("activation", "flagged"),
    [
        ({"name": "relu"}, True),
        ({"name": "leaky_relu", "negative_slope": 0.0}, True),
        ({"name": "leaky_relu", "negative_slope": 0.01}, False),
        ({"name": "elu", "alpha": 1.0}, False),
        ({"name": "selu"}, False),
    ],
)
def test_dead_flag_only_where_units_below_zero_pass_no_gradient(activation, flagged):
    # elu/selu/leaky_relu units with input <= 0 over the batch still pass gradient: the
    # measurement is kept, the 'dead' verdict is not given
    record = run_record("a", **{f"config.model.activation.{k}": v for k, v in activation.items()})
    out = analyse(
        [record], healthy("a", 0) + he_weights("a") + rows("a", 0, "dead_frac", [0.0, 0.7, 0.0])
    )
    assert out.loc["a", "dead_max_init"] == pytest.approx(0.7)
    assert out.loc["a", "flags"] == ("dead" if flagged else "")


def test_run_flags_takes_whether_dead_units_block_gradient():
    row = {
        "dead_max_init": 0.9,
        "dead_max_last": 0.1,
        "sat_max_init": math.nan,
        "sat_max_last": math.nan,
        "test_accuracy": 0.9,
        "status": "ok",
        "init_mismatch": False,
    }
    assert analysis.run_flags(row, TH) == ["dead"]
    assert analysis.run_flags(row, TH, dead_blocks_gradient=False) == []


def test_a_diverged_run_is_measured_at_the_step_it_went_non_finite():
    last = rows("d", 4, "preact_var", [1.0, 1e20, math.inf]) + rows(
        "d", 4, "grad_preact_var", [math.nan, 1.0, 1.0]
    )
    out = analyse(
        [run_record("d", status="diverged", diverged_step=4, final_loss="nan", test_accuracy=None)],
        healthy("d", 0) + he_weights("d"),
        last,
    )
    d = out.loc["d"]
    assert d["last_step"] == 4
    assert d["fwd_verdict_last"] == "exploding" and "inf at layer 3" in d["fwd_note_last"]
    assert d["bwd_verdict_last"] == "non-finite"
    assert math.isnan(d["final_loss"]) and math.isnan(d["test_accuracy"])


def test_a_failed_run_without_statistics_is_reported_not_dropped():
    out = analyse(
        [
            run_record("ok"),
            run_record("f", status="failed", error="InitError: x", test_accuracy=None),
        ],
        healthy("ok", 0) + he_weights("ok"),
    )
    f = out.loc["f"]
    assert f["status_text"] == "failed" and f["error"] == "InitError: x"
    assert (
        f["fwd_verdict_init"] == "undefined" and f["fwd_note_init"] == "no statistics at this step"
    )
    assert not f["init_mismatch"] and "not recorded at step 0: not checked" in f["init_note"]
    assert "no-learning" not in f["flags"]  # not measured: a failed run has no accuracy


def test_summary_numbers_accept_the_stored_non_finite_strings():
    assert analysis.number("nan") != analysis.number("nan")
    assert analysis.number("inf") == math.inf and analysis.number("-inf") == -math.inf
    assert math.isnan(analysis.number(None))
    with pytest.raises(ValueError, match="not a number"):
        analysis.number("1.0 (approx)")


def test_zeros_init_is_checked_against_an_exact_zero():
    record = run_record("z", **{"config.model.init.name": "zeros"})
    for key in ("mode", "negative_slope", "distribution"):
        record[f"config.model.init.{key}"] = math.nan  # other runs' params: NaN in pandas
    check = analysis.init_check(record, table(rows("z", 0, "w_var", [0.0, 0.0, 1e-3])), TH)
    assert check["expected"].tolist() == [0.0, 0.0, 0.0]
    assert check["mismatch"].tolist() == [False, False, True]


def test_unknown_initializer_is_a_note_not_a_crash():
    record = run_record("u", **{"config.model.init.name": "from_the_future"})
    check = analysis.init_check(record, table(he_weights("u")), TH)
    assert not check["mismatch"].any()
    assert "no formula for 'from_the_future'" in check["note"].iloc[0]


def test_init_tolerance_widens_with_the_sampling_noise_of_small_weights():
    record = run_record("s")
    check = analysis.init_check(record, table(he_weights("s", scale_layer2=1.3)), TH)
    big, small = check.iloc[0], check.iloc[1]
    assert big["tolerance"] == pytest.approx(max(0.05, 5 * math.sqrt(2 / (16 * 784 - 1))))
    assert small["tolerance"] == pytest.approx(5 * math.sqrt(2 / 255))
    assert not small["mismatch"]  # 1.3x on 256 elements is within sampling noise
    tight = Thresholds(init_tolerance=0.05)
    assert analysis.check_weight(1, "w", (400, 400), {"name": "he_normal"}, 2 / 400 * 1.3, tight)[
        "mismatch"
    ]


def test_rnn_checks_the_recurrent_weight_against_recurrent_init():
    record = run_record(
        "r",
        **{
            "config.model.arch": "rnn",
            "config.model.depth": 1,
            "config.model.recurrent_init.name": "orthogonal",
            "config.model.recurrent_init.gain": 1.0,
        },
    )
    layers = table(rows("r", 0, "w_var", [2 / 28]), rows("r", 0, "w_rec_var", [1 / 16 * 2]))
    check = analysis.init_check(record, layers, TH).set_index("tensor")
    assert check.loc["w", "expected"] == pytest.approx(2 / 28)
    assert check.loc["w_rec", "expected"] == pytest.approx(1 / 16)  # orthogonal 16x16
    assert check.loc["w_rec", "mismatch"] and not check.loc["w", "mismatch"]


@pytest.mark.parametrize("arch", ["mlp", "cnn", "rnn"])
def test_weight_shapes_match_the_models(arch):
    import torch

    from initbench.config.spec import ModelConfig
    from initbench.nets.models import model_class

    config = ModelConfig.model_validate({"arch": arch, "depth": 4, "width": 8}).resolved()
    with torch.device("meta"):
        model = model_class(arch)(config)
    built = []
    for layer in model.watched_layers():
        built.append((layer.index, "w", tuple(layer.weight.shape)))
        if layer.recurrent_weight is not None:
            built.append((layer.index, "w_rec", tuple(layer.recurrent_weight.shape)))
    assert geometry.weight_shapes(arch, 4, 8) == built


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 10])
def test_cnn_positions_match_the_conv_outputs(depth):
    import torch

    from initbench.config.spec import ModelConfig
    from initbench.measure.probes import Tape
    from initbench.nets.models import model_class

    config = ModelConfig.model_validate({"arch": "cnn", "depth": depth, "width": 2}).resolved()
    model = model_class("cnn")(config)
    tape = Tape()
    model(torch.zeros(1, 1, 28, 28), tape)
    sides = [t.shape[-2] * t.shape[-1] for _, t in sorted(tape.tensors["preact"].items())]
    assert geometry.cnn_positions(depth) == sides


def test_multiply_adds_closed_forms():
    # mlp: 784 w + (L - 1) w^2; rnn: 28 steps of (28 w + w^2) per layer after the first's
    assert geometry.multiply_adds("mlp", 3, 16) == 784 * 16 + 2 * 16 * 16
    assert geometry.multiply_adds("rnn", 2, 8) == 28 * ((28 * 8 + 64) + (64 + 64))
    # cnn depth 3: strides 1, 2, 2 -> 28x28, 14x14, 7x7 outputs; 3x3 kernels
    assert geometry.multiply_adds("cnn", 3, 4) == 9 * (4 * 784 + 16 * 196 + 16 * 49)


def test_chance_is_one_over_the_class_count():
    assert analysis.CHANCE_ACCURACY == 1 / geometry.NUM_CLASSES


# --------------------------------------------------------------------------------------
# Configurations and seeds


def blank_analysed(records: list[dict[str, Any]]) -> pd.DataFrame:
    """analyse_runs-like rows: the given keys, every number NaN, verdicts 'stable', no
    theory (no note: as if theory had not been asked)."""
    columns = [*records[0], *analysis.numeric_columns(), *analysis.verdict_columns()]
    frame = pd.DataFrame(records).reindex(columns=[*columns, "theory_positions"])
    frame[analysis.verdict_columns()] = "stable"
    return frame.assign(theory_note_init="")


def sweep_runs() -> pd.DataFrame:
    records = []
    for depth in (10, 3):
        xavier = {
            "config.model.init.gain": 1.0,
            "config.model.init.mode": "fan_avg",
            "config.model.init.negative_slope": math.nan,
        }
        for init, extra in (("xavier_normal", xavier), ("he_normal", {})):
            for seed in (0, 1):
                run_id = f"{init[:2]}{depth}s{seed}"
                records.append(
                    run_record(
                        run_id,
                        seed,
                        **{"config.model.init.name": init, "config.model.depth": depth, **extra},
                    )
                )
    return pd.DataFrame(records)


def test_configurations_follow_the_spec_grid_order():
    runs = sweep_runs()
    grid = {"model.init": ["he_normal", "xavier_normal"], "model.depth": [3, 10]}
    keys = analysis.describe_configs(runs, grid)
    assert keys.varying == ("model.depth", "model.init")  # first grid key innermost
    assert keys.constant["model.arch"] == "mlp" and keys.constant["model.width"] == 16
    assert "seed" not in keys.constant
    assert keys.labels.loc["he3s0"].tolist() == [3, "he_normal"]
    keys_reversed = analysis.describe_configs(runs, {"model.init": ["xavier_normal", "he_normal"]})
    analysed = blank_analysed(
        [
            {"run_id": r, "seed": 0, "status": "ok", "status_text": "ok", "flags": ""}
            for r in runs.run_id
        ]
    )
    ordered = analysis.aggregate(analysed, keys_reversed)
    assert list(zip(ordered["model.depth"], ordered["model.init"], strict=True)) == [
        (3, "xavier_normal"),
        (3, "he_normal"),
        (10, "xavier_normal"),
        (10, "he_normal"),
    ]


def test_labels_show_non_default_parameters_only():
    he_only = {
        f"config.model.init.{k}": math.nan for k in ("mode", "negative_slope", "distribution")
    }
    runs = pd.DataFrame(
        [
            run_record(
                "a",
                **{
                    "config.model.init.name": "normal",
                    "config.model.init.std": 0.1,
                    "config.model.init.mean": 0.0,
                    **he_only,
                },
            ),
            run_record(
                "b",
                **{
                    "config.model.init.name": "normal",
                    "config.model.init.std": 0.01,
                    "config.model.init.mean": 0.0,
                    **he_only,
                },
            ),
        ]
    )
    keys = analysis.describe_configs(
        runs, {"model.init": [{"name": "normal", "std": 0.01}, {"name": "normal", "std": 0.1}]}
    )
    assert keys.labels["model.init"].tolist() == ["normal(std=0.1)", "normal"]
    assert keys.ranks["model.init"]["normal"] < keys.ranks["model.init"]["normal(std=0.1)"]


def test_seeds_aggregate_as_mean_and_sample_std_with_their_count():
    runs = sweep_runs()
    parts = []
    for run_id, forward in zip(runs.run_id, np.linspace(0.4, 1.1, len(runs)), strict=True):
        parts += healthy(run_id, 0, forward) + he_weights(run_id)
    analysed = analysis.analyse_runs(runs, table(parts), TH)
    keys = analysis.describe_configs(runs, {"model.init": ["he_normal", "xavier_normal"]})
    configs = analysis.aggregate(analysed, keys).set_index(["model.depth", "model.init"])
    pair = analysed.set_index("run_id").loc[["he10s0", "he10s1"], "fwd_factor_init"]
    row = configs.loc[(10, "he_normal")]
    assert row["seeds"] == 2 and row["seed_list"] == "0 1"
    assert row["fwd_factor_init_mean"] == pytest.approx(pair.mean())
    assert row["fwd_factor_init_std"] == pytest.approx(pair.std(ddof=1))
    assert row["run_ids"] == "he10s0 he10s1"


def test_one_seed_has_no_std_and_nan_is_never_skipped():
    analysed = blank_analysed(
        [
            {"run_id": "a", "seed": 0, "status": "ok", "status_text": "ok", "flags": ""},
            {
                "run_id": "b",
                "seed": 1,
                "status": "diverged",
                "status_text": "diverged at step 3",
                "flags": "diverged",
            },
        ]
    )
    analysed["final_loss"] = [0.5, math.nan]
    analysed["fwd_verdict_last"] = ["stable", "non-finite"]
    labels = pd.DataFrame({"model.lr": [0.1, 0.2]}, index=pd.Index(["a", "b"], name="run_id"))
    keys = analysis.ConfigKeys(("model.lr",), {}, labels, {"model.lr": {0.1: (0,), 0.2: (1,)}})
    per_run = analysis.aggregate(analysed, keys)
    assert per_run["seeds"].tolist() == [1, 1]
    assert per_run["final_loss_std"].isna().all()  # undefined for n = 1, never 0
    together = analysis.aggregate(analysed, analysis.ConfigKeys((), {}, labels.iloc[:, :0], {}))
    row = together.iloc[0]
    assert math.isnan(row["final_loss_mean"])  # the diverged seed is not silently skipped
    assert row["fwd_verdict_last"] == "mixed: stable 1, non-finite 1"
    assert row["flags"] == "diverged 1/2"
    assert row["status"] == "1 ok, 1 diverged at step 3"
    assert (row["n_ok"], row["n_diverged"], row["n_failed"]) == (1, 1, 0)


# --------------------------------------------------------------------------------------
# Layer by layer, bands and step matrices


def test_per_layer_aggregates_each_layer_at_init_and_each_runs_last_step():
    layers = table(
        rows("a", 0, "preact_var", [1.0, 2.0]),
        rows("b", 0, "preact_var", [3.0, 4.0]),
        rows("a", 10, "preact_var", [5.0, 6.0]),
        rows("b", 4, "preact_var", [7.0, math.nan]),  # b diverged at step 4
        rows("a", 5, "preact_var", [100.0, 100.0]),  # neither step 0 nor a's last: unused
    )
    out = analysis.per_layer(layers, {"a": 10, "b": 4}).set_index("layer")
    assert out.loc[1, "preact_var_init_mean"] == pytest.approx(2.0)
    assert out.loc[1, "preact_var_init_std"] == pytest.approx(math.sqrt(2.0))
    assert out.loc[1, "preact_var_last_mean"] == pytest.approx(6.0)
    assert math.isnan(out.loc[2, "preact_var_last_mean"])
    assert out["n"].tolist() == [2, 2]


def test_band_and_step_matrix_propagate_nan():
    layers = table(
        rows("a", 0, "grad_preact_var", [1.0, 2.0]),
        rows("b", 0, "grad_preact_var", [3.0, math.nan]),
        rows("a", 5, "grad_preact_var", [1.0, 1.0]),
    )
    frame, unit = analysis.band(layers, ["a", "b"], "grad_preact_var")
    assert unit == "layer"
    assert (
        frame["mean"].iloc[0] == 2.0 and frame["lo"].iloc[0] == 1.0 and frame["hi"].iloc[0] == 3.0
    )
    assert math.isnan(frame["mean"].iloc[1])
    matrix = analysis.step_matrix(layers, ["a", "b"], "grad_preact_var")
    assert matrix.loc[1, 0] == 2.0 and math.isnan(matrix.loc[2, 0])
    assert math.isnan(matrix.loc[1, 5])  # b has no step 5: not the mean of a alone


def test_a_nan_initial_weight_variance_is_a_mismatch():
    layers = table(rows("n", 0, "w_var", [2 / 784, math.nan, 2 / 16]))
    check = analysis.init_check(run_record("n"), layers, TH)
    assert check["mismatch"].tolist() == [False, True, False]
    assert "is NaN" in check["note"].iloc[1]


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
    expected = theory.predict({"model": model}, q1=2.5).summary()
    assert out["theory_q1"] == 2.5
    assert out["theory_fwd_factor_init"] == pytest.approx(expected["forward_decay"], rel=1e-12)
    assert out["theory_fwd_ratio_init"] == pytest.approx(expected["forward_last_first"], rel=1e-12)
    assert out["theory_bwd_factor_init"] == pytest.approx(expected["backward_decay"], rel=1e-12)
    assert out["theory_bwd_ratio_init"] == pytest.approx(expected["backward_first_last"], rel=1e-12)
    assert out["theory_positions"] == 3 and out["theory_note_init"] == ""
    assert theory.predict({"model": model}, q1=0.1).summary() != expected  # q1 matters for tanh


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


@pytest.mark.parametrize(
    ("where", "text"),
    [
        (
            {"what": "preact_var", "layer": 3.0, "t": 0.0, "name": "fc3", "value": math.inf},
            "preact_var of fc3 (layer 3) = inf",
        ),
        (
            {"what": "grad_preact_var", "layer": 2, "t": 5, "name": "rnn2", "value": math.nan},
            "grad_preact_var of rnn2 (layer 2, time step 5)",
        ),
        ({"what": "loss", "value": math.inf}, "the loss = inf"),
        ({}, ""),
    ],
)
def test_diverged_at_says_where_the_run_went_non_finite(where, text):
    record = run_record("d", status="diverged", diverged_step=12)
    record.update({f"diverged_at.{k}": v for k, v in where.items()})
    out = analyse([record], healthy("d", 0)).loc["d"]
    assert out["diverged_at"] == text
    assert out["status_text"] == "diverged at step 12"
