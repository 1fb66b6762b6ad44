"""initbench.analysis: runs analysed (outcome, flags, where a run diverged) and the init
check against the initializers' formulas and the models' shapes."""

from __future__ import annotations

import math

import pytest
from analysis_tables import (
    TH,
    analyse,
    he_weights,
    healthy,
    rows,
    run_record,
    table,
)

from initbench import analysis
from initbench.analysis import Thresholds
from initbench.config import geometry

# --------------------------------------------------------------------------------------
# Runs: outcome, flags, init check


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
        "final_loss": 0.3,
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


def test_a_nan_initial_weight_variance_is_a_mismatch():
    layers = table(rows("n", 0, "w_var", [2 / 784, math.nan, 2 / 16]))
    check = analysis.init_check(run_record("n"), layers, TH)
    assert check["mismatch"].tolist() == [False, True, False]
    assert "is NaN" in check["note"].iloc[1]


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


# Trainability: test accuracy against chance and training loss against ln(C), once


@pytest.mark.parametrize(
    ("status", "accuracy", "loss", "expected"),
    [
        ("ok", 0.95, 0.2, "yes"),
        ("ok", 0.40, 1.5, "partly"),  # learned something, below the trained accuracy
        ("ok", 0.10, 2.3026, "no"),  # at chance, loss at ln 10
        ("ok", 0.24, 2.294, "no"),  # issue 16: above chance + margin, loss never left ln 10
        ("ok", 0.95, 2.294, "no"),
        ("diverged", math.nan, math.nan, "no"),
        ("failed", math.nan, math.nan, ""),
        ("ok", math.nan, 0.2, ""),
    ],
)
def test_trainability_reads_accuracy_and_loss(status, accuracy, loss, expected):
    assert analysis.trainability(status, accuracy, loss, TH) == expected


def test_no_learning_flags_a_loss_that_stayed_at_ln_c():
    row = {
        "dead_max_init": 0.0,
        "dead_max_last": 0.0,
        "sat_max_init": math.nan,
        "sat_max_last": math.nan,
        "test_accuracy": 0.24,
        "final_loss": 2.294,
        "status": "ok",
        "init_mismatch": False,
    }
    assert analysis.run_flags(row, TH) == ["no-learning"]
    assert analysis.run_flags({**row, "final_loss": 1.0}, TH) == []


def test_trainability_thresholds_are_options_and_printed():
    th = Thresholds(loss_margin=0.5, trained_fraction=0.8)
    assert analysis.trainability("ok", 0.70, 1.5, th) == "partly"  # 0.70 < 0.1 + 0.8 * 0.9
    assert analysis.trainability("ok", 0.70, 2.0, th) == "no"  # 2.0 > ln 10 - 0.5
    text = th.describe_trainable()
    assert "test accuracy >= 0.82" in text and "final training loss <= 1.8" in text
    with pytest.raises(ValueError, match="trained_fraction"):
        Thresholds(trained_fraction=0)
