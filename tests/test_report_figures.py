"""The report's figures on tiny real runs: the main axis chosen from the grid, colour by
the compared key and line style by the other, the heatmaps as small multiples on one
colour scale, a cnn's backward profile as the verdict reads it, and a caption on each."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from initbench import analysis
from initbench.analysis import Thresholds
from initbench.config.spec import build_spec
from initbench.reporting import build_reports
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.figures import (
    figure_pngs,
    figures,
    heatmaps_figure,
    outcome_figure,
    roles,
    variance_figure,
)
from initbench.results import store
from initbench.sweep.train import execute_run

SYNTHETIC = "data: {name: synthetic, n_train: 128, n_test: 64}\n"
SPECS = {
    "mlp": SYNTHETIC
    + """\
model: {arch: mlp, width: 16, activation: relu}
train: {steps: 6, log_every: 2, batch_size: 32, lr: 0.01}
grid: {model.init: [he_normal, xavier_normal], model.depth: [2, 4, 5], model.width: [16, 24]}
seeds: 2
""",
    "cnn": SYNTHETIC
    + """\
model: {arch: cnn, width: 4, depth: 3, activation: tanh}
train: {steps: 2, log_every: 1, batch_size: 16}
grid: {model.init: [he_normal, xavier_normal]}
""",
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExperimentReport]:
    root = tmp_path_factory.mktemp("results")
    for name, text in SPECS.items():
        spec = build_spec({"name": name, **yaml.safe_load(text)}, name, text)
        store.write_spec(root / name, text)
        for run in spec.runs:
            store.write_run(root / name, execute_run(run.as_dict(), name, threads=1))
    return {rep.name: rep for rep in build_reports(root, Thresholds())}


def _measured(ax) -> list:
    return [line for line in ax.get_lines() if line.get_gid() != "theory" and len(line.get_xdata())]


def test_the_main_axis_is_the_numeric_grid_key_with_most_values(reports):
    assert roles(reports["mlp"]) == ("model.depth", ["model.init", "model.width"])
    assert roles(reports["cnn"]) == (None, ["model.init"])


def test_accuracy_and_loss_against_the_main_axis_one_line_per_compared_value(reports):
    rep = reports["mlp"]
    drawn = outcome_figure(rep)
    accuracy, loss = drawn.fig.axes[:2]
    assert (accuracy.get_xlabel(), accuracy.get_ylabel()) == ("model.depth", "test accuracy")
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("model.depth", "final training loss")
    lines = [line for line in _measured(accuracy) if len(line.get_xdata()) > 2]
    assert len(lines) == 4  # 2 inits x 2 widths, each over depths 2, 4, 5
    assert all(list(line.get_xdata()) == [2.0, 4.0, 5.0] for line in lines)
    labels = rep.keys.labels.join(rep.runs.set_index("run_id")["test_accuracy"])
    means = labels.groupby(["model.init", "model.width", "model.depth"])["test_accuracy"].mean()
    drawn_means = sorted(float(y) for line in lines for y in line.get_ydata())
    assert drawn_means == pytest.approx(sorted(means.to_numpy()))
    assert len(accuracy.collections) == 4  # a seed band (min..max) per line
    assert "min..max" in drawn.caption and "model.depth" in drawn.title


def test_variance_colour_follows_the_compared_key_and_style_the_others(reports):
    rep = reports["mlp"]
    fig = variance_figure(rep, "forward").fig
    by_label = {line.get_label(): line for line in _measured(fig.axes[0])}
    assert len(by_label) == len(rep.configs) == 12
    colours: dict[str, set] = {}
    styles: dict[tuple, set] = {}
    for row, (label, _) in zip(rep.config_rows, rep.config_runs(), strict=True):
        line = by_label[label]
        colours.setdefault(row["model.init"], set()).add(line.get_color())
        key = (row["model.depth"], row["model.width"])
        styles.setdefault(key, set()).add((str(line.get_linestyle()), line.get_marker()))
    assert all(len(c) == 1 for c in colours.values()) and len(set.union(*colours.values())) == 2
    assert all(len(s) == 1 for s in styles.values()) and len(set.union(*styles.values())) == 6
    titles = [legend.get_title().get_text() for legend in fig.legends]
    assert titles == ["model.init", "model.width, model.depth"]


def test_all_heatmaps_share_one_colour_scale_with_integer_layer_ticks(reports):
    rep = reports["mlp"]
    drawn = heatmaps_figure(rep)
    panels = [ax for ax in drawn.fig.axes if ax.get_gid() == "panel"]
    assert len(panels) == len(rep.configs)
    meshes = [ax.collections[0] for ax in panels]
    assert all(mesh.norm is meshes[0].norm for mesh in meshes)
    values = np.concatenate([mesh.get_array().compressed() for mesh in meshes])
    assert (meshes[0].norm.vmin, meshes[0].norm.vmax) == (values.min(), values.max())
    colourbars = [ax for ax in drawn.fig.axes if ax.get_gid() != "panel"]
    assert len(colourbars) == 1 and "log10 grad_preact_var" in colourbars[0].get_ylabel()
    for ax in panels:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert "one colour scale" in drawn.caption


def test_cnn_backward_plots_the_gradient_summed_over_positions_as_the_verdict(reports):
    rep = reports["cnn"]
    drawn = variance_figure(rep, "backward")
    ax = drawn.fig.axes[0]
    assert "map positions" in ax.get_ylabel() and "summed over map positions" in drawn.caption
    runs = rep.experiment.runs.set_index("run_id", drop=False)
    for (label, (run_id,)), line in zip(rep.config_runs(), reversed(_measured(ax)), strict=True):
        assert line.get_label() == label
        layers = rep.experiment.layers
        record = runs.loc[run_id].to_dict()
        _, expected, _ = analysis.backward_profile(
            layers[layers["run_id"] == run_id], 0, analysis.gradient_positions(record)
        )
        assert np.asarray(line.get_ydata()) == pytest.approx(expected, rel=1e-12)


def test_every_figure_has_a_human_title_and_caption(reports):
    for rep in reports.values():
        plots = figure_pngs(rep)
        assert {"outcome", "forward_variance", "backward_variance", "heatmaps", "loss"} <= set(
            plots
        )
        for plot in plots.values():
            assert plot.png.startswith(b"\x89PNG")
            assert plot.title and plot.caption.endswith(".") and len(plot.caption) > 60
            assert plot.title[0].isupper() and "=" not in plot.title  # not a file slug


def test_no_figures_without_rows(reports):
    rep = reports["cnn"]
    empty = ExperimentReport(rep.experiment, None, rep.runs.iloc[0:0], rep.configs.iloc[0:0])
    assert figures(empty) == {}


def test_without_a_numeric_key_the_compared_values_are_the_x_axis(reports):
    ax = outcome_figure(reports["cnn"]).fig.axes[0]
    assert ax.get_xlabel() == "model.init"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["he_normal", "xavier_normal"]
