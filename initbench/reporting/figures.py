"""The report's figures (matplotlib, Agg): variance profiles at initialisation with the
mean-field prediction beside them, the rnn's profile through time, the gradient's
variance over training as a heatmap, and the training loss. Built from the same
:class:`~initbench.reporting.experiment.ExperimentReport` as the tables."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from initbench import analysis
from initbench.reporting.experiment import ExperimentReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIG_SIZE: Final = (10.0, 5.0)  # inches; at FIG_DPI every PNG is 1000 x 500 pixels
FIG_DPI: Final = 100
BAND_NOTE: Final = "line: mean over the seeds; band: their min..max"
THEORY_STYLE: Final = {"linestyle": "--", "linewidth": 1.2}  # the mean-field prediction
THEORY_LABEL: Final = "dashed: mean-field theory"
MARKERS: Final = (".", "x", "+", "^")  # measured lines beyond 10 colours (dashes = theory)
TIME_AXIS: Final = "time step t (top layer)"


def _new_figure(ncols: int = 1) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE, dpi=FIG_DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _style(index: int) -> dict[str, Any]:
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    return {"color": colours[index % 10], "linestyle": ("-", "--", ":", "-.")[index // 10 % 4]}


def _legend(fig: Figure, axes: list[Any], rep: ExperimentReport) -> None:
    """One legend right of the data, entries in table order, titled with the varying keys."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if not entries:
        return
    order = {label: i for i, (label, _) in enumerate(rep.config_runs())}
    pairs = sorted(
        ((h, label) for label, h in entries.items()), key=lambda p: order.get(p[1], len(order))
    )
    title = ", ".join(rep.keys.varying) if rep.keys and rep.keys.varying else None
    fig.legend(*zip(*pairs, strict=True), loc="outside right center", title=title, fontsize="small")


def _profile_panel(ax: Any, rep: ExperimentReport, metric: str, unit: str) -> list[str]:
    """Mean over seeds (line) and min..max (band) of one metric at step 0 per configuration;
    returns the configurations with values a log axis cannot draw (<= 0 or non-finite)."""
    from matplotlib.ticker import MaxNLocator

    undrawn, theory = [], False
    configs = list(enumerate(rep.config_runs()))
    for index, (label, run_ids) in reversed(configs):  # deep first: shallow lines on top
        frame, got = analysis.band(rep.experiment.layers, run_ids, metric)
        if frame.empty or got != unit:
            continue
        colour = _style(index)["color"]
        x = frame["position"].to_numpy(float)
        marker = MARKERS[index // 10 % len(MARKERS)]
        ax.plot(x, frame["mean"], marker=marker, label=label, color=colour, linestyle="-")
        ax.fill_between(x, frame["lo"], frame["hi"], color=colour, alpha=0.2, lw=0)
        theory = _theory_line(ax, rep, run_ids, metric, unit, colour) or theory
        values = frame[["mean", "lo", "hi"]].to_numpy(float)
        if not (np.isfinite(values) & (values > 0)).all():
            undrawn.append(label)
    if theory:  # one legend entry for every dashed line
        ax.plot([], [], color="0.3", label=THEORY_LABEL, **THEORY_STYLE)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    if undrawn:
        text = "not drawn where 0 or non-finite: " + "; ".join(undrawn)
        ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, va="bottom")
    return undrawn


def _theory_line(
    ax: Any, rep: ExperimentReport, run_ids: list[str], metric: str, unit: str, colour: Any
) -> bool:
    """The predicted profile of one configuration (mean over its seeds), dashed in the
    configuration's colour; False where theory predicts nothing for it."""
    x, y, got = analysis.theory_profile(rep.theory_mean(run_ids), metric)
    if got != unit or not np.isfinite(y).any():
        return False
    ax.plot(x, y, color=colour, gid="theory", **THEORY_STYLE)
    return True


def _has_unit(rep: ExperimentReport, metric: str, unit: str) -> bool:
    """Whether some selected run has this metric at step 0 over layers or time steps."""
    layers = rep.experiment.layers
    rows = layers[
        (layers["step"] == 0)
        & (layers["metric"] == metric)
        & layers["run_id"].isin(rep.runs["run_id"])
    ]
    return bool(((rows["t"] > 0) if unit == "time step" else (rows["t"] == 0)).any())


def variance_figure(rep: ExperimentReport, direction: str) -> Figure | None:
    """Per-layer preact (forward) or grad_preact (backward) variance at step 0, log scale;
    with batchnorm a second panel for normed. None if no feed-forward configuration."""
    metric = "preact_var" if direction == "forward" else "grad_preact_var"
    if not _has_unit(rep, metric, "layer"):
        return None
    normed = direction == "forward" and _has_unit(rep, "normed_var", "layer")
    fig, axes = _new_figure(2 if normed else 1)
    panels = [(metric, "before batchnorm" if normed else "")]
    panels += [("normed_var", "after batchnorm")] if normed else []
    for ax, (name, what) in zip(axes, panels, strict=True):
        _profile_panel(ax, rep, name, "layer")
        ax.set_xlabel("layer l (forward order)")
        ax.set_ylabel(f"{name} (all elements){' ' + what if what else ''}")
    what = "forward signal" if direction == "forward" else "backward gradient (dLoss/dpreact)"
    fig.suptitle(f"{rep.name}: {what} at initialisation (step 0)\n{BAND_NOTE}")
    _legend(fig, axes, rep)
    return fig


def time_figure(rep: ExperimentReport) -> Figure | None:
    """rnn: preact and grad_preact variance across time steps t of the top layer, step 0."""
    if not _has_unit(rep, "preact_var", "time step"):
        return None
    fig, axes = _new_figure(2)
    for ax, metric in zip(axes, ("preact_var", "grad_preact_var"), strict=True):
        _profile_panel(ax, rep, metric, "time step")
        ax.set_xlabel(TIME_AXIS)
        ax.set_ylabel(f"{metric} (all elements)")
    fig.suptitle(f"{rep.name}: variance across time at initialisation (step 0)\n{BAND_NOTE}")
    _legend(fig, axes, rep)
    return fig


def _ticks(labels: list[Any], most: int) -> tuple[np.ndarray, list[str]]:
    """At most ``most`` evenly spread tick positions over ``labels``, and their texts."""
    ticks = np.unique(np.linspace(0, len(labels) - 1, min(len(labels), most)).round().astype(int))
    return ticks, [str(labels[i]) for i in ticks]


def heatmap_figure(rep: ExperimentReport, label: str, run_ids: list[str]) -> Figure | None:
    """log10 grad_preact_var, layers (rnn: top layer's time steps) x logged training steps,
    mean over the configuration's seeds; grey where 0, non-finite or missing."""
    from matplotlib import colormaps

    matrix = analysis.step_matrix(rep.experiment.layers, run_ids, "grad_preact_var")
    if matrix.empty:
        return None
    fig, axes = _new_figure()
    ax = axes[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        data = np.ma.masked_invalid(np.log10(matrix.to_numpy(float)))
    image = ax.imshow(
        data,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap=colormaps["viridis"].with_extremes(bad="lightgrey"),
    )
    ax.set_xticks(*_ticks(matrix.columns.to_list(), 15))
    ax.set_yticks(*_ticks(matrix.index.to_list(), 12))
    layers = rep.experiment.layers
    timed = layers[layers["run_id"].isin(run_ids)]["t"].max() > 0
    ax.set_xlabel("training step")
    ax.set_ylabel(TIME_AXIS if timed else "layer l")
    fig.colorbar(image, ax=ax, label="log10 grad_preact_var (grey: 0 or non-finite)")
    ax.set_title(f"{rep.name}: {label}; mean over {len(run_ids)} seed(s)")
    return fig


def loss_figure(rep: ExperimentReport) -> Figure | None:
    """Training loss (mean over each logging interval) against step: one line per run,
    coloured by configuration."""
    curves = rep.experiment.curves
    if curves.empty or "metric" not in curves:
        return None
    loss = curves[curves["metric"] == "loss_avg"]
    fig, axes = _new_figure()
    ax = axes[0]
    for index, (label, run_ids) in enumerate(rep.config_runs()):
        style = _style(index)
        for n, run_id in enumerate(run_ids):
            run = loss[loss["run_id"] == run_id].sort_values("step")
            ax.plot(run["step"], run["value"], lw=1, label=label if n == 0 else None, **style)
    if not ax.lines:
        return None
    values = loss["value"].to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() > 100 * values.min():  # a diverging run: log scale
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (mean over each logging interval)")
    ax.set_title(f"{rep.name}: training loss, one line per run (seed)")
    ax.grid(True, alpha=0.3)
    _legend(fig, axes, rep)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")[:80] or "all"


def figures(rep: ExperimentReport) -> dict[str, Figure]:
    """Every figure of one experiment, by file stem (without the experiment's name)."""
    if not rep.has_rows:
        return {}
    found: dict[str, Figure | None] = {
        "forward_variance": variance_figure(rep, "forward"),
        "backward_variance": variance_figure(rep, "backward"),
        "time_variance": time_figure(rep),
        "loss": loss_figure(rep),
    }
    for index, row in enumerate(rep.config_rows, start=1):
        label = rep.label(row)
        found[f"heatmap_{index:02d}_{_slug(label)}"] = heatmap_figure(
            rep, label, row["run_ids"].split()
        )
    return {name: fig for name, fig in found.items() if fig is not None}


def figure_pngs(rep: ExperimentReport) -> dict[str, bytes]:
    """PNG bytes of every figure of one experiment (FIG_SIZE at FIG_DPI)."""
    out = {}
    for name, fig in figures(rep).items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIG_DPI)
        out[name] = buffer.getvalue()
    return out
