"""The finite-width spread: variances over seeds against direct computations, their
chi-square intervals against tabulated quantiles, and Hanin & Nica's 5·Σ 1/n_l."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from initbench import analysis
from initbench.analysis.stats import chi2_quantile, variance_interval
from initbench.cli import main
from initbench.config.spec import load_spec
from initbench.measure.tape import Tape
from initbench.reporting.experiment import build_reports
from initbench.sweep.train import Trainer

SPEC = """
name: spread
data: {name: synthetic, n_train: 128, n_test: 32}
model: {depth: 4, width: 24, activation: relu, init: he_normal}
train: {steps: 0, batch_size: 16, per_example: true}
grid:
  model.init: [he_normal, he_uniform]
seeds: 4
"""


@pytest.mark.parametrize(
    ("p", "dof", "tabulated"),
    [(0.975, 1, 5.0239), (0.025, 2, 0.050636), (0.975, 10, 20.483), (0.025, 10, 3.2470)],
)
def test_chi2_quantile_matches_the_tables(p: float, dof: int, tabulated: float) -> None:
    assert chi2_quantile(p, dof) == pytest.approx(tabulated, rel=1e-4)


def test_variance_interval_is_the_chi_square_interval() -> None:
    low, high = variance_interval(2.0, 10)
    assert low == pytest.approx(10 * 2.0 / 20.483, rel=1e-4)
    assert high == pytest.approx(10 * 2.0 / 3.2470, rel=1e-4)


def test_pooled_spread_is_the_variance_of_every_value() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 8)) + rng.normal(size=(5, 1))  # 5 seeds x 8 examples
    pooled = analysis.pooled_spread(values.mean(axis=1), values.var(axis=1, ddof=1), 8)
    assert pooled.variance == pytest.approx(values.var(ddof=1), rel=1e-12)
    assert (pooled.low, pooled.high) == pytest.approx(variance_interval(pooled.variance, 4))


def test_hanin_nica_applies_to_relu_he_normal_mlps_only() -> None:
    record = {
        "config.model.arch": "mlp",
        "config.model.depth": 10,
        "config.model.width": 50,
        "config.model.activation.name": "relu",
        "config.model.init.name": "he_normal",
        "config.model.init.mode": "fan_in",
        "config.model.init.negative_slope": 0.0,
        "config.model.bias_init.name": "zeros",
        "config.model.batchnorm": False,
    }
    assert analysis.hanin_nica(record) == (pytest.approx(5 * 10 / 50), "")
    for key, value in [
        ("config.model.init.name", "he_uniform"),
        ("config.model.activation.name", "tanh"),
        ("config.model.arch", "cnn"),
        ("config.model.bias_init.name", "normal"),
        ("config.model.init.mode", "fan_out"),
    ]:
        predicted, why = analysis.hanin_nica({**record, key: value})
        assert math.isnan(predicted) and why


def _direct(spec_path: Path, init: str) -> tuple[list[float], list[np.ndarray]]:
    """ln act_sq at layer L and the per-example ln(q_L / q_in) of each seed's batch 0,
    from the network's own tensors (its seeded model and batch, forward only)."""
    lnq, per_input = [], []
    for run in load_spec(spec_path).runs:
        if run.model.init["name"] != init:
            continue
        trainer = Trainer(run, torch.device("cpu"))
        trainer.setup()
        x = trainer.train_x[next(trainer.batches)].double()
        tape = Tape()
        with torch.no_grad():
            trainer.model.double()(x, tape)
        act = tape.tensors["act"][(run.model.depth, 0)]
        lnq.append(math.log(float(act.square().mean())))
        q = act.square().mean(dim=1) / x.flatten(1).square().mean(dim=1)
        per_input.append(np.log(q.numpy()))
    return lnq, per_input


def test_the_spread_columns_match_a_direct_computation(tmp_path: Path) -> None:
    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "results"
    assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out)]).exit_code == 0
    (rep,) = build_reports(out, analysis.Thresholds())
    rows = {r["model.init"]: r for r in rep.spreads}
    lnq, per_input = _direct(spec, "he_normal")
    he = rows["he_normal"]
    assert he["seeds"] == 4
    assert he["lnq"].variance == pytest.approx(np.var(lnq, ddof=1), rel=1e-5)
    assert he["per_input"].variance == pytest.approx(np.var(np.concatenate(per_input), ddof=1))
    layers = rep.experiment.layers
    grads = layers[(layers["metric"] == "grad_preact_var") & (layers["layer"] == 1)]
    ids = rows["he_normal"]["run_ids"].split()
    direct = np.log(grads[grads["run_id"].isin(ids)]["value"].to_numpy())
    assert he["lngrad"].variance == pytest.approx(np.var(direct, ddof=1), rel=1e-12)
    assert he["hn"] == pytest.approx(5 * 4 / 24)
    assert math.isnan(rows["he_uniform"]["hn"]) and rows["he_uniform"]["holds"] == ""


def test_the_report_shows_the_spread_and_the_answer_says_whether_the_law_holds(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "results"
    assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out)]).exit_code == 0
    text = CliRunner().invoke(main, ["report", str(out), "--format", "markdown"]).output
    table = text.split("### Finite-width spread over seeds (step 0)", 1)[1]
    assert "Var ln q_L" in table and "Var y per input" in table and "5Σ1/n (H&N)" in table
    assert "H&N gives no number here: init he_uniform" in table
    answer = text.split("### Answer", 1)[1].split("### Findings", 1)[0]
    assert "Hanin & Nica's Var ln(q_L/q_in) ≈ 5·Σ 1/n_l holds within the 95% interval" in answer
    assert "at 1 of 1 configurations" in answer or "at 0 of 1 configurations; not at" in answer


def test_one_seed_gets_no_spread_table(tmp_path: Path) -> None:
    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC.replace("seeds: 4", "seeds: 1"))
    out = tmp_path / "results"
    assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out)]).exit_code == 0
    text = CliRunner().invoke(main, ["report", str(out), "--format", "markdown"]).output
    assert "Finite-width spread" not in text and "Hanin" not in text


def test_the_spread_figure_is_drawn_where_the_law_applies(tmp_path: Path) -> None:
    from initbench.reporting.figures import figures

    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "results"
    assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out)]).exit_code == 0
    (rep,) = build_reports(out, analysis.Thresholds())
    drawn = figures(rep)
    assert "spread" in drawn and "outcome" not in drawn and "loss" not in drawn  # init only
    (axes,) = drawn["spread"].fig.axes
    assert len(axes.containers) == 2  # the per-input and the batch variances, with bars
    (rep,) = build_reports(out, analysis.Thresholds(), ["model.init=he_uniform"])
    assert "spread" not in figures(rep)  # no prediction for he_uniform


def test_the_json_report_holds_the_spread(tmp_path: Path) -> None:
    import json

    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "results"
    assert CliRunner().invoke(main, ["run", str(spec), "--out", str(out)]).exit_code == 0
    text = CliRunner().invoke(main, ["report", str(out), "--format", "json"]).output
    (experiment,) = json.loads(text)["experiments"]
    rows = {r["model.init"]: r for r in experiment["finite_width"]}
    (rep,) = build_reports(out, analysis.Thresholds())
    he = next(r for r in rep.spreads if r["model.init"] == "he_normal")
    assert rows["he_normal"]["lnq_var"] == pytest.approx(he["lnq"].variance)
    assert rows["he_normal"]["per_input_high"] == pytest.approx(he["per_input"].high)
    assert rows["he_uniform"]["hn"] == "nan" and rows["he_uniform"]["hn_note"]


def test_at_batch_size_1_the_per_input_spread_is_over_the_seeds_values() -> None:
    means = [0.1, -0.3, 0.4, 0.0]
    pooled = analysis.pooled_spread(means, [math.nan] * 4, 1)
    assert pooled == analysis.spread(means)
    assert pooled.variance == pytest.approx(np.var(means, ddof=1))
