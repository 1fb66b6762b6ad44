"""End-to-end tests of initbench.reporting on real tiny sweeps: every format, plots, --select,
--per-layer, thresholds, and results folders with incomplete or corrupt runs."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from initbench import meanfield
from initbench.analysis import Thresholds
from initbench.config.spec import build_spec
from initbench.reporting import FIG_DPI, FIG_SIZE, ReportError, generate
from initbench.results import store
from initbench.sweep.train import execute_run

SYNTHETIC = "data: {name: synthetic, n_train: 256, n_test: 100}\n"
SPECS = {
    # the headline comparison in miniature: xavier halves per ReLU layer, he preserves
    "mlp_relu": SYNTHETIC
    + """\
model: {arch: mlp, width: 32, activation: relu}
train: {steps: 20, log_every: 5, batch_size: 32, lr: 0.01}
grid: {model.init: [he_normal, xavier_normal], model.depth: [3, 8]}
seeds: 2
""",
    "rnn_tanh": SYNTHETIC
    + """\
model: {arch: rnn, width: 16, depth: 2, init: xavier_normal}
train: {steps: 4, log_every: 2, batch_size: 32}
grid: {model.recurrent_init: [orthogonal, {name: normal, std: 0.01}]}
""",
    "cnn_bn": SYNTHETIC
    + """\
model: {arch: cnn, width: 8, depth: 3, init: he_normal, activation: tanh}
train: {steps: 4, log_every: 2, batch_size: 32, optimizer: adam}
grid: {model.batchnorm: [false, true]}
""",
    # zeros: nothing propagates; he at lr 1e6: diverges; identity on 16x784: fails
    "odd": SYNTHETIC
    + """\
model: {arch: mlp, width: 16, depth: 3}
train: {steps: 10, log_every: 5, batch_size: 32, lr: 1000000.0}
grid: {model.init: [zeros, he_normal, identity]}
""",
    # theory beside measurement: tanh makes the prediction depend on q1; uniform [0, 1]
    # has a non-zero mean, so theory predicts nothing for it
    "theory": SYNTHETIC
    + """\
model: {arch: mlp, width: 32, depth: 4, activation: tanh}
train: {steps: 2, log_every: 1, batch_size: 32}
grid: {model.init: [xavier_normal, uniform]}
seeds: 2
""",
}
PNG_SIZE = (round(FIG_SIZE[0] * FIG_DPI), round(FIG_SIZE[1] * FIG_DPI))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real results of four tiny specs, trained once for the module (a few seconds)."""
    root = tmp_path_factory.mktemp("results")
    for name, text in SPECS.items():
        raw = yaml.safe_load(text)
        spec = build_spec({"name": name, **raw}, name, text)
        exp_dir = root / name
        store.write_spec(exp_dir, text)
        for run in spec.runs:
            store.write_run(exp_dir, execute_run(run.as_dict(), name, threads=1))
    return root


def text_of(results: Path, fmt: str, **options) -> str:
    stream = io.StringIO()
    generate(results, fmt=fmt, stream=stream, **options)
    return stream.getvalue()


@pytest.fixture(scope="module")
def configs(results: Path) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text_of(results, "csv")))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------------------
# The verdicts, and that their numbers trace back to the stored statistics


def test_xavier_vanishes_and_he_is_stable_with_relu(configs: pd.DataFrame):
    mlp = configs[configs["experiment"] == "mlp_relu"].set_index(["model.depth", "model.init"])
    xavier, he = mlp.loc[(8, "xavier_normal")], mlp.loc[(8, "he_normal")]
    assert xavier["fwd_verdict_init"] == "vanishing" and xavier["bwd_verdict_init"] == "vanishing"
    assert he["fwd_verdict_init"] == "stable" and he["bwd_verdict_init"] == "stable"
    assert xavier["fwd_factor_init_mean"] == pytest.approx(0.5, abs=0.1)
    assert he["fwd_factor_init_mean"] == pytest.approx(1.0, abs=0.15)
    assert xavier["seeds"] == 2 and xavier["n_ok"] == 2


def test_table_numbers_are_recomputed_from_the_stored_parquet(results, configs):
    """Independent of analysis.py: numpy.polyfit on the raw files of each seed."""
    row = configs[(configs["experiment"] == "mlp_relu") & (configs["model.depth"] == 8)]
    row = row[row["model.init"] == "xavier_normal"].iloc[0]
    factors, ratios = [], []
    for run_id in row["run_ids"].split():
        layers = pd.read_parquet(results / "mlp_relu" / "runs" / run_id / "layers.parquet")
        v = layers[(layers["step"] == 0) & (layers["metric"] == "preact_var")]
        v = v.sort_values("layer")
        slope = np.polyfit(v["layer"], np.log2(v["value"]), 1)[0]
        factors.append(2**slope)
        ratios.append(v["value"].iloc[-1] / v["value"].iloc[0])
    assert row["fwd_factor_init_mean"] == pytest.approx(np.mean(factors), rel=1e-9)
    assert row["fwd_factor_init_std"] == pytest.approx(np.std(factors, ddof=1), rel=1e-9)
    assert row["fwd_ratio_init_mean"] == pytest.approx(np.mean(ratios), rel=1e-9)


def test_degenerate_runs_are_named_not_dropped(configs: pd.DataFrame):
    odd = configs[configs["experiment"] == "odd"].set_index("model.init")
    assert odd.loc["zeros", "fwd_verdict_init"] == "collapsed"
    assert "dead" in odd.loc["zeros", "flags"]
    assert odd.loc["he_normal", "status"].startswith("diverged at step")
    assert odd.loc["he_normal", "fwd_verdict_last"] in ("non-finite", "exploding")
    assert "diverged" in odd.loc["he_normal", "flags"]
    assert "dead" not in odd.loc["he_normal", "flags"]  # undefined at a non-finite step
    assert odd.loc["identity", "status"] == "failed"
    assert odd.loc["identity", "fwd_verdict_init"] == "undefined"
    assert "init-mismatch" not in str(odd.loc["identity", "flags"])  # never measured


def test_rnn_decay_is_through_time_of_the_top_layer(configs: pd.DataFrame, results: Path):
    rnn = configs[configs["experiment"] == "rnn_tanh"].set_index("model.recurrent_init")
    assert rnn.loc["normal", "bwd_verdict_init"] == "vanishing"  # std 0.01: gone in 27 steps
    assert rnn.loc["normal", "bwd_ratio_init_mean"] < 1e-20
    terminal = text_of(results, "terminal")
    assert "across the time steps t = 1..28 of the top layer" in terminal


# --------------------------------------------------------------------------------------
# Formats


def test_terminal_shows_every_experiment_table_and_threshold(results: Path):
    out = text_of(results, "terminal")
    for name in SPECS:
        assert name in out
    first_parts = re.findall(r"^(?:At initialisation \(step 0\)|After training \().*?$", out, re.M)
    tables = [t for t in first_parts if not re.search(r"\(([2-9])/\d\)\s*$", t)]
    assert len(tables) == 2 * len(SPECS)  # a table too wide for 120 columns comes in parts
    assert out.count("Answer") >= len(SPECS)
    # issue 16: the definitions once, in the glossary at the end (they were under each table)
    assert out.count("vanishing: ratio < 1/100 or factor < 1/1.5") == 1
    assert out.index("Glossary") > out.index("After training (")
    assert max(len(line) for line in out.splitlines()) <= 120
    assert "…" not in out  # never a truncated number
    assert "\x1b[" not in out  # no colour codes when not a terminal


def test_csv_has_one_row_per_configuration_with_keys_as_columns(configs: pd.DataFrame):
    assert len(configs) == 4 + 2 + 2 + 3 + 2
    for column in (
        "experiment",
        "model.init",
        "model.depth",
        "seeds",
        "run_ids",
        "flags",
        "fwd_factor_init_mean",
        "fwd_factor_init_std",
        "bwd_verdict_last",
        "final_loss_mean",
        "test_accuracy_mean",
        "status",
    ):
        assert column in configs.columns
    one_seed = configs[configs["experiment"] == "odd"]
    assert one_seed["fwd_factor_init_std"].isna().all()  # undefined for one seed, not 0


def test_json_holds_configurations_runs_and_thresholds(results: Path):
    data = json.loads(text_of(results, "json", thresholds=Thresholds(ratio=50)))
    assert data["thresholds"]["ratio"] == 50
    experiments = {e["name"]: e for e in data["experiments"]}
    assert set(experiments) == set(SPECS)
    odd = experiments["odd"]
    assert odd["counts"] == {"complete": 3, "ok": 1, "diverged": 1, "failed": 1}
    assert len(odd["runs"]) == 3 and len(odd["configurations"]) == 3
    assert odd["constant"]["model.width"] == 16
    assert "per_layer" not in odd


def _findings(out: str, experiment: str) -> dict[str, str]:
    """finding -> configurations, from one experiment's Findings table in markdown."""
    section = out.split(f"## {experiment}\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("### Findings\n", 1)[1].strip().split("\n\n", 1)[0]
    rows = [line.strip("|").split(" | ") for line in table.splitlines()[2:]]
    return {finding.strip(): where.strip() for finding, where in rows}


def test_findings_gather_the_configurations_of_each_verdict_and_flag(results: Path):
    out = text_of(results, "markdown")
    mlp = _findings(out, "mlp_relu")
    assert (
        mlp["forward vanishing at step 0"]
        == "depth=3 init=xavier_normal; depth=8 init=xavier_normal"
    )
    assert mlp["forward stable at step 0"] == "depth=3 init=he_normal; depth=8 init=he_normal"
    assert any(f.startswith("highest test accuracy: ") for f in mlp)
    odd = _findings(out, "odd")
    assert odd["flagged diverged"] == "init=he_normal"
    assert odd["forward collapsed at step 0"] == "init=zeros"
    theory_rows = _findings(out, "theory")
    assert theory_rows["vs theory: no prediction"] == "init=uniform"
    assert theory_rows["forward vanishing at step 0"] == "all 2"


def test_markdown_tables_are_well_formed(results: Path):
    out = text_of(results, "markdown")
    tables = re.findall(r"^### .*\n\n(\|.*\|\n)(\|[-:|]+\|\n)((?:\|.*\|\n)+)", out, re.M)
    # the index, then per experiment: answer, findings, step 0, theory beside it, after
    # training; and the finite-width spread of the two experiments with 2 seeds
    assert len(tables) == 1 + 5 * len(SPECS) + 2
    for header, rule, body in tables:
        columns = header.count(" | ") + 1
        assert rule.count("|") - 1 == columns
        for line in body.splitlines():
            assert len(re.split(r"(?<!\\)\|", line)) - 2 == columns
    assert "| 8 | xavier_normal | 2 |" in out


def test_latex_escapes_and_uses_booktabs(results: Path):
    out = text_of(results, "latex")
    # the index; answer, findings, step 0, theory, after training; 2 finite-width spreads
    assert out.count(r"\begin{tabular}") == 1 + 5 * len(SPECS) + 2
    assert r"xavier\_normal" in out and "xavier_normal" not in out
    assert r"$\pm$" in out and "±" not in out
    assert r"\toprule" in out and r"\bottomrule" in out
    assert r"ratio \textless{} 1/" in out and not any(c in out for c in "<>|")  # OT1 text mode


@pytest.fixture(scope="module")
def html_and_plots(results: Path, tmp_path_factory: pytest.TempPathFactory):
    """One html report with figures, of the xavier runs only (figures are the slow part)."""
    out = tmp_path_factory.mktemp("report")
    written = generate(
        results,
        fmt="html",
        out=out / "report.html",
        plots=out / "figures",
        select=["model.init=xavier_normal"],
    )
    return out, written


def test_html_is_one_self_contained_file_with_the_figures(html_and_plots):
    out, written = html_and_plots
    text = (out / "report.html").read_text(encoding="utf-8")
    assert out / "report.html" in written
    assert "http://" not in text and "https://" not in text and "<link" not in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == len(list((out / "figures").glob("*.png")))
    assert all(png_size(base64.b64decode(i)) == PNG_SIZE for i in images)
    assert 'class="v-vanishing"' in text or "v-vanishing" in text


def test_plots_are_non_empty_pngs_of_the_stated_size(html_and_plots):
    out, written = html_and_plots
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    for stem in ("outcome", "forward_variance", "backward_variance", "heatmaps", "loss"):
        assert f"mlp_relu_{stem}.png" in names
    assert "rnn_tanh_time_variance.png" in names
    assert "rnn_tanh_forward_variance.png" not in names  # rnn: across time instead
    heatmaps = [n for n in names if n.startswith("mlp_relu_heatmap")]
    assert heatmaps == ["mlp_relu_heatmaps.png"]  # both configurations, small multiples
    assert not [n for n in names if n.startswith(("cnn_bn", "odd"))]  # no xavier there
    for name in names:
        data = (out / "figures" / name).read_bytes()
        assert png_size(data) == PNG_SIZE
        assert len(data) > 5_000, name
    assert sorted(p.name for p in written if p.suffix == ".png") == names


# --------------------------------------------------------------------------------------
# Options


def test_per_layer_shows_the_layers_behind_a_verdict(results: Path):
    out = text_of(
        results,
        "markdown",
        per_layer=True,
        select=["model.depth=8", "model.init=xavier_normal"],
    )
    section = out.split("### Layer by layer: model.depth=8, model.init=xavier_normal")[1]
    rows = [line for line in section.split("\n\n")[1].splitlines() if line.startswith("| fc")]
    assert [r.split("|")[1].strip() for r in rows] == [f"fc{i}" for i in range(1, 9)]
    assert "### Initial weights: model.depth=8, model.init=xavier_normal" in out
    assert "he_normal" not in section.split("### Initial weights")[0]


def test_per_layer_csv_has_a_row_per_layer(results: Path):
    frame = pd.read_csv(
        io.StringIO(text_of(results, "csv", per_layer=True, select=["model.init=he_normal"]))
    )
    mlp = frame[frame["experiment"] == "mlp_relu"]
    assert len(mlp) == 3 + 8
    assert {"layer", "t", "n", "preact_var_init_mean", "grad_preact_var_last_std"} <= set(mlp)


def test_select_filters_and_refuses_unknown_keys(results: Path):
    out = text_of(results, "csv", select=["model.depth=3"])
    frame = pd.read_csv(io.StringIO(out))
    assert set(frame["experiment"]) == {"mlp_relu", "cnn_bn", "odd"}  # the rnn has depth 2
    assert set(frame.loc[frame["experiment"] == "mlp_relu", "model.depth"]) == {3}
    with pytest.raises(ReportError, match="no experiment has key"):
        text_of(results, "csv", select=["model.dpeth=3"])
    with pytest.raises(ReportError, match="expected KEY=VALUE"):
        text_of(results, "csv", select=["model.depth"])


def test_thresholds_change_the_verdicts_and_are_printed(results: Path):
    lenient = Thresholds(ratio=1e6, factor=3.0)
    out = text_of(results, "csv", thresholds=lenient)
    mlp = pd.read_csv(io.StringIO(out)).set_index(["experiment", "model.depth", "model.init"])
    assert mlp.loc[("mlp_relu", 3, "xavier_normal"), "fwd_verdict_init"] == "stable"
    assert "ratio < 1/1e+06 or factor < 1/3" in text_of(results, "markdown", thresholds=lenient)


def test_unknown_format_and_missing_folder_are_clear_errors(tmp_path: Path, results: Path):
    with pytest.raises(ReportError, match="unknown format 'pdf'"):
        generate(results, fmt="pdf")
    with pytest.raises(store.ResultsError, match="no such results folder"):
        generate(tmp_path / "nothing", fmt="csv")


def test_out_writes_plain_text(results: Path, tmp_path: Path):
    target = tmp_path / "sub" / "report.txt"
    assert generate(results / "odd", fmt="terminal", out=target) == [target]
    text = target.read_text(encoding="utf-8")
    assert "\x1b[" not in text and "collapsed" in text


# --------------------------------------------------------------------------------------
# Incomplete and corrupt results


@pytest.fixture
def damaged(results: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of mlp_relu with a corrupt summary, a corrupt table, a run killed before
    its summary.json and a leftover temporary folder."""
    exp = tmp_path / "mlp_relu"
    shutil.copytree(results / "mlp_relu", exp)
    runs = sorted(p for p in (exp / "runs").iterdir())
    (runs[0] / "summary.json").write_text("{", encoding="utf-8")
    (runs[1] / "layers.parquet").write_bytes(b"not parquet")
    (exp / "runs" / "0123456789ab").mkdir()
    (exp / "runs" / "0123456789ab" / "config.json").write_text("{}", encoding="utf-8")
    (exp / "runs" / ".tmp-abc.1234").mkdir()
    return exp, [runs[0].name, runs[1].name]


def test_corrupt_and_incomplete_runs_are_counted_and_named(damaged):
    exp, (bad_summary, bad_table) = damaged
    out = text_of(exp, "markdown")
    assert "incomplete: 2 (no summary.json, not reported): .tmp-abc.1234, 0123456789ab" in out
    assert "unreadable: 2 (not reported)" in out
    assert re.search(rf"{bad_summary}: .*cannot read JSON", out)
    assert re.search(rf"{bad_table}: .*cannot read Parquet table", out)
    assert "runs: 6 complete (6 ok, 0 diverged, 0 failed)" in out
    frame = pd.read_csv(io.StringIO(text_of(exp, "csv")))
    assert frame["seeds"].sum() == 6


def test_an_experiment_without_complete_runs_is_reported(tmp_path: Path):
    (tmp_path / "empty" / "runs" / "0123456789ab").mkdir(parents=True)
    out = text_of(tmp_path, "markdown")
    assert "no complete runs to report" in out and "incomplete: 1" in out
    assert text_of(tmp_path, "csv") == ""
    assert json.loads(text_of(tmp_path, "json"))["experiments"][0]["configurations"] == []


def test_known_effects_are_stated_where_they_apply(results: Path):
    out = text_of(results, "markdown")
    cnn = out.split("## cnn_bn")[1].split("\n## ")[0]
    assert "'same' zero padding" in cnn and "adam" in cnn and "batchnorm" in cnn
    assert "bwd factor and ratio are of grad_preact_var times the layer's map positions" in cnn
    assert "| normed factor |" in cnn
    mlp = out.split("## mlp_relu")[1].split("\n## ")[0]
    assert "zero padding" not in mlp and "normed factor" not in mlp
    assert "within 1% of its activation's asymptote" in cnn  # tanh: bounded
    assert "asymptote" not in mlp  # relu


def test_one_seed_has_no_plus_minus(results: Path):
    out = text_of(results / "odd", "markdown")
    assert "±" not in out.split("### At initialisation")[1].split("- fwd factor")[0]


# --------------------------------------------------------------------------------------
# Theory beside measurement


def predicted_from_files(run_dir: Path) -> dict[str, float]:
    """theory.predict on one stored run, independently of analysis.py: its config.json and
    its layer-1 preact_sq at step 0 (rnn: per time step, as the input drive)."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    layers = pd.read_parquet(run_dir / "layers.parquet")
    q = layers.query("step == 0 and layer == 1 and metric == 'preact_sq'").sort_values("t")
    q1 = q["value"].to_numpy()
    if config["model"]["arch"] == "rnn":
        prediction = meanfield.predict(config, q1=meanfield.rnn_input_drive(config, q1))
    else:
        prediction = meanfield.predict(config, q1=float(q1[0]))
    return prediction.summary()


SUMMARY_KEYS = {
    "fwd_factor": "forward_decay",
    "fwd_ratio": "forward_last_first",
    "bwd_factor": "backward_decay",
    "bwd_ratio": "backward_first_last",
}


@pytest.mark.parametrize("experiment", ["mlp_relu", "theory", "rnn_tanh", "cnn_bn"])
def test_predicted_columns_equal_theory_predict_for_the_run_configs(results, configs, experiment):
    rows = configs[(configs["experiment"] == experiment) & (configs["model.init"] != "uniform")]
    assert len(rows)
    for row in rows.to_dict("records"):
        runs = [results / experiment / "runs" / r for r in row["run_ids"].split()]
        predicted = [predicted_from_files(run) for run in runs]
        for quantity, key in SUMMARY_KEYS.items():
            expected = np.mean([p[key] for p in predicted])
            assert row[f"theory_{quantity}_init_mean"] == pytest.approx(expected, rel=1e-9)
        assert row["theory_check"] in ("consistent", "not evaluated (1 seed)")


def test_relu_he_and_xavier_are_consistent_with_theory(configs: pd.DataFrame):
    mlp = configs[configs["experiment"] == "mlp_relu"].set_index(["model.depth", "model.init"])
    assert mlp.loc[(8, "xavier_normal"), "theory_fwd_factor_init_mean"] == pytest.approx(0.5)
    assert mlp.loc[(8, "he_normal"), "theory_bwd_ratio_init_mean"] == pytest.approx(1.0)
    assert set(mlp["theory_check"]) == {"consistent"}
    assert mlp["theory_allowed_fwd_factor"].notna().all()


def test_no_prediction_for_uniform_init_with_its_reason_once(results: Path, configs):
    row = configs[(configs["experiment"] == "theory") & (configs["model.init"] == "uniform")]
    assert row["theory_check"].tolist() == ["no prediction"]
    assert row["theory_fwd_factor_init_mean"].isna().all()
    out = text_of(results / "theory", "markdown")
    section = out.split("### Theory beside measurement (step 0)")[1].split("### After")[0]
    assert "| uniform | 2 |" in section and "| no prediction |" in section
    reason = "has mean 0.5 per element, not 0: the mean-field map assumes i.i.d. zero-mean"
    assert out.count(reason) == 1
    assert "- theory, model.init=uniform: model.init 'uniform'" in section
    assert "(n = 2: t = 12.71)" in out  # the quantile the check used (in the glossary)


def test_theory_mismatch_fires_where_theory_is_given_the_wrong_init(results, tmp_path):
    """Xavier runs re-labelled normal(std=0.02): theory then predicts a 150-fold drop per
    layer while the stored statistics halve. he_normal, untouched, stays consistent."""
    exp = tmp_path / "mlp_relu"
    shutil.copytree(results / "mlp_relu", exp)
    for run in (exp / "runs").iterdir():
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        if summary["config"]["model"]["init"]["name"] == "xavier_normal":
            summary["config"]["model"]["init"] = {"name": "normal", "mean": 0.0, "std": 0.02}
            (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    frame = pd.read_csv(io.StringIO(text_of(exp, "csv"))).set_index(["model.depth", "model.init"])
    wrong = frame.loc[(8, "normal(std=0.02)")]
    assert wrong["theory_check"].startswith("theory-mismatch: fwd factor")
    assert "fwd_factor" in wrong["theory_mismatch"]
    assert abs(wrong["theory_logdev_fwd_factor"]) > wrong["theory_allowed_fwd_factor"]
    assert frame.loc[(8, "he_normal"), "theory_check"] == "consistent"
    assert "theory-mismatch: fwd factor" in text_of(exp, "terminal")


def test_per_layer_table_has_the_predicted_columns(results: Path):
    select = ["model.depth=8", "model.init=xavier_normal"]
    frame = pd.read_csv(
        io.StringIO(text_of(results / "mlp_relu", "csv", per_layer=True, select=select))
    )
    assert {"theory_preact_var_init", "theory_grad_preact_var_init"} <= set(frame.columns)
    # xavier on the square 32 x 32 layers with ReLU halves q per layer, from each seed's q1
    q1 = [
        pd.read_parquet(results / "mlp_relu" / "runs" / r / "layers.parquet")
        .query("step == 0 and layer == 1 and metric == 'preact_sq'")["value"]
        .iloc[0]
        for r in frame["run_ids"].iloc[0].split()
    ]
    expected = np.mean(q1) * 0.5 ** (frame["layer"].to_numpy() - 1)
    assert frame["theory_preact_var_init"].to_numpy() == pytest.approx(expected, rel=1e-9)
    out = text_of(results / "mlp_relu", "markdown", per_layer=True, select=select)
    assert "| preact_var theory |" in out and "| grad_preact_var theory |" in out


def test_variance_figures_draw_theory_as_dashed_lines(results: Path):
    from initbench.reporting import build_reports
    from initbench.reporting.figures import variance_figure

    (rep,) = build_reports(results / "theory", Thresholds())
    for direction in ("forward", "backward"):
        fig = variance_figure(rep, direction).fig
        lines = fig.axes[0].get_lines()
        dashed = [line for line in lines if line.get_gid() == "theory"]
        assert len(dashed) == 1  # xavier only: uniform [0, 1] has no prediction
        assert all(line.get_linestyle() == "--" for line in dashed)
        measured = [line for line in lines if line.get_label() in ("uniform", "xavier_normal")]
        assert [line.get_linestyle() for line in measured] == ["-", "-"]
        legend = [text.get_text() for text in fig.legends[0].get_texts()]
        assert legend == ["xavier_normal", "uniform", "dashed: mean-field theory"]
    forward = variance_figure(rep, "forward").fig.axes[0]
    (line,) = [line for line in forward.get_lines() if line.get_gid() == "theory"]
    run_ids = rep.configs.set_index("model.init").loc["xavier_normal", "run_ids"].split()
    expected = rep.theory_mean(run_ids)["theory_preact_var_init"].to_numpy()
    assert np.asarray(line.get_ydata()) == pytest.approx(expected, rel=1e-12)


def test_diverged_runs_say_where_they_went_non_finite(results: Path):
    runs = store.load_experiment(results / "odd").runs.set_index("config.model.init.name")
    diverged = runs.loc["he_normal"]
    assert diverged["status"] == "diverged"
    where = f"{diverged['diverged_at.what']} of {diverged['diverged_at.name']}"
    out = text_of(results / "odd", "markdown")
    note = re.search(
        rf"- model.init=he_normal: run {diverged['run_id']} \(seed 0\) diverged at step "
        rf"{int(diverged['diverged_step'])}: (.*)",
        out,
    )
    assert note and note.group(1).startswith(
        f"{where} (layer {int(diverged['diverged_at.layer'])})"
    )


# --------------------------------------------------------------------------------------
# The Answer (issue 16)


def _answer(out: str, experiment: str) -> str:
    section = out.split(f"## {experiment}\n", 1)[1]
    return section.split("### Answer", 1)[1].split("### Findings", 1)[0]


def test_answer_rows_are_the_numeric_axis_and_columns_the_compared_one(results: Path):
    out = text_of(results, "markdown")
    answer = _answer(out, "mlp_relu")
    assert "| depth | he_normal | xavier_normal |" in answer
    assert "xavier_normal shrinks the forward signal" in answer and "theory 0.50" in answer
    assert "he_normal preserves the forward signal" in answer
    swapped = _answer(
        text_of(results, "markdown", rows="model.init", cols="model.depth"), "mlp_relu"
    )
    assert "| init | 3 | 8 |" in swapped


def test_answer_says_diverged_failed_and_missing_theory(results: Path):
    out = text_of(results, "markdown", rows="model.nope")
    odd = _answer(out, "odd")
    assert "diverged 1/1" in odd and "failed 1/1" in odd
    assert "--rows model.nope: not a varying key" in odd
    assert "theory gives no prediction" in _answer(out, "theory")


def test_several_experiments_get_an_index_of_their_answers_first(results: Path):
    out = text_of(results, "markdown")
    assert out.index("## Index") < min(out.index(f"## {name}\n") for name in SPECS)
    index = out.split("## Index", 1)[1].split("\n## ", 1)[0]
    assert all(f"| {name} |" in index for name in SPECS)
    assert out.rstrip().rsplit("\n## ", 1)[1].startswith("Glossary")
