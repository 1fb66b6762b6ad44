"""The report's figures (matplotlib, Agg), each with a human title and caption: test
accuracy and training loss against the grid's main axis (He 2015, Fig. 3), variance
profiles at initialisation with the mean-field prediction beside them, an rnn's profile
through time, every configuration's gradient heatmap as small multiples on one colour
scale, and the training loss. Built from the same
:class:`~initbench.reporting.experiment.ExperimentReport` as the tables.

Colour follows the compared key and line style the other keys (:func:`roles`), so a
depth x init sweep reads as two hues, not ten unrelated colours."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench import analysis
from initbench.analysis import format_value
from initbench.config.geometry import NUM_CLASSES
from initbench.meanfield.decay import summed_over_positions
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.figure_look import (
    BAND_NOTE,
    FIG_DPI,
    HEADLINE,
    SUMMED,
    THEORY_LABEL,
    THEORY_STYLE,
    TIME_AXIS,
    Drawn,
    Look,
    Plot,
    is_numeric,
    new_figure,
    profile_look,
    roles,
    values_of,
)
from initbench.reporting.spread import spread_figure


def _map_positions(rep: ExperimentReport, run_ids: Sequence[str]) -> dict[int, int]:
    """A cnn configuration's map positions per layer (:func:`analysis.gradient_positions`)."""
    runs = rep.experiment.runs
    record = runs[runs["run_id"].isin(run_ids)]
    return analysis.gradient_positions(record.iloc[0].to_dict()) if len(record) else {}


def _summed(rep: ExperimentReport, positions: np.ndarray, values: np.ndarray, run_ids: list[str]):
    """``values`` of grad_preact_var at layer ``positions`` as the backward verdict reads
    them: times each layer's map positions for a cnn (unchanged otherwise)."""
    return summed_over_positions(positions, values, _map_positions(rep, run_ids))


LONG_PROFILE: Final = 100  # positions beyond which markers are thinned and ticks fewer


def _profile_panel(ax: Any, rep: ExperimentReport, look: Look, metric: str, unit: str) -> bool:
    """Mean over seeds (line) and min..max (band) of one metric at step 0 per configuration
    (grad_preact_var summed over a cnn's map positions); True if a theory line is drawn."""
    from matplotlib.ticker import MaxNLocator

    undrawn, theory, long = [], False, False
    for row, (label, run_ids) in reversed(
        list(zip(rep.config_rows, rep.config_runs(), strict=True))
    ):
        frame, got = analysis.band(rep.experiment.layers, run_ids, metric)
        if frame.empty or got != unit:
            continue
        x = frame["position"].to_numpy(float)
        long = long or len(x) > LONG_PROFILE
        values = frame[["mean", "lo", "hi"]].to_numpy(float)
        if metric == "grad_preact_var" and unit == "layer":
            values = np.column_stack([_summed(rep, x, v, run_ids) for v in values.T])
        style = look.of(row)
        if len(x) > LONG_PROFILE:  # 784 time steps: a marker every 1/20 of the line
            style = {**style, "markevery": len(x) // 20}
        ax.plot(x, values[:, 0], label=label, markersize=4, **style)
        ax.fill_between(x, values[:, 1], values[:, 2], color=style["color"], alpha=0.15, lw=0)
        theory = _theory_line(ax, rep, run_ids, metric, unit, style["color"]) or theory
        if not (np.isfinite(values) & (values > 0)).all():
            undrawn.append(label)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4 if long else "auto", integer=True))
    ax.grid(True, which="major", alpha=0.3)
    if undrawn:
        text = "not drawn where 0 or non-finite: " + "; ".join(undrawn)
        # wrapped to the panel: a longer line collapses a figure's constrained layout
        text = textwrap.fill(text, 60, max_lines=4, placeholder=" ...")
        ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, va="bottom")
    return theory


def _theory_line(
    ax: Any, rep: ExperimentReport, run_ids: list[str], metric: str, unit: str, colour: Any
) -> bool:
    """The predicted profile of one configuration (mean over its seeds), dashed in the
    configuration's colour, scaled as the measurement is; False where theory predicts
    nothing for it."""
    x, y, got = analysis.theory_profile(rep.theory_mean(run_ids), metric)
    if got != unit or not np.isfinite(y).any():
        return False
    if metric == "grad_preact_var" and unit == "layer":
        y = _summed(rep, x, y, run_ids)
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


def _is_cnn(rep: ExperimentReport) -> bool:
    return any(_map_positions(rep, r) for _, r in rep.config_runs())


def _theory_entry() -> list[tuple[Any, str]]:
    from matplotlib.lines import Line2D

    return [(Line2D([], [], color="0.3", **THEORY_STYLE), THEORY_LABEL)]


def variance_figure(rep: ExperimentReport, direction: str) -> Drawn | None:
    """Per-layer preact (forward) or grad_preact (backward; a cnn's summed over map
    positions) variance at step 0, log scale; with batchnorm a second panel for normed.
    None if no feed-forward configuration."""
    metric = "preact_var" if direction == "forward" else "grad_preact_var"
    if not _has_unit(rep, metric, "layer"):
        return None
    normed = direction == "forward" and _has_unit(rep, "normed_var", "layer")
    fig, axes = new_figure(1, 2 if normed else 1)
    panels = [(metric, "before batchnorm" if normed else "")]
    panels += [("normed_var", "after batchnorm")] if normed else []
    look, theory = profile_look(rep), False
    summed = metric == "grad_preact_var" and _is_cnn(rep)
    for ax, (name, what) in zip(axes[0], panels, strict=True):
        theory = _profile_panel(ax, rep, look, name, "layer") or theory
        ax.set_xlabel("layer l (forward order)")
        over = "× map positions (sum over positions)" if summed else "(all elements)"
        ax.set_ylabel(f"{name} {over}{' ' + what if what else ''}")
    title = "Forward signal" if direction == "forward" else "Backward gradient (dLoss/dpreact)"
    title += " per layer at step 0"
    fig.suptitle(f"{rep.name}: {title}\n{BAND_NOTE}", **HEADLINE)
    look.legends(fig, _theory_entry() if theory else [])
    caption = (
        f"{metric} of every layer at step 0, variance over all elements"
        + (f", times the layer's map positions ({SUMMED})" if summed else "")
        + f"; log scale; one line per configuration ({look.says()}); {BAND_NOTE}"
        + ("; dashed: the mean-field prediction." if theory else ".")
    )
    return Drawn(fig, title, caption)


def time_figure(rep: ExperimentReport) -> Drawn | None:
    """rnn, lstm, gru: preact and grad_preact variance across time steps t of the top
    layer, step 0; below them, where an lstm was run, its cell state's and the cell state
    gradient's variance."""
    if not _has_unit(rep, "preact_var", "time step"):
        return None
    rows = [("preact_var", "grad_preact_var")]
    if _has_unit(rep, "cell_var", "time step"):
        rows.append(("cell_var", "grad_cell_var"))
    fig, axes = new_figure(len(rows), 2)
    look, theory = profile_look(rep), False
    for panels, metrics in zip(axes, rows, strict=True):
        for ax, metric in zip(panels, metrics, strict=True):
            theory = _profile_panel(ax, rep, look, metric, "time step") or theory
            ax.set_xlabel(TIME_AXIS)
            ax.set_ylabel(f"{metric} (all elements)")
    title = "Signal and gradient across time at step 0"
    fig.suptitle(f"{rep.name}: {title}\n{BAND_NOTE}", **HEADLINE)
    look.legends(fig, _theory_entry() if theory else [])
    cell = " (a gated cell's: its hidden state h_t)" if len(rows) > 1 else ""
    caption = (
        f"preact_var (left) and grad_preact_var (right){cell} of the top layer at each "
        "time step t, step 0"
        + ("; below, the lstm's cell_var and grad_cell_var" if len(rows) > 1 else "")
        + f", log scale; one line per configuration ({look.says()}); {BAND_NOTE}."
    )
    return Drawn(fig, title, caption)


# --- what training reached: accuracy and loss against the main axis ---------------------------


def _positions(rep: ExperimentReport, key: str) -> tuple[dict[Any, float], list[str]]:
    """x of each value of ``key``: the value itself for numbers, else its rank; tick texts."""
    values = values_of(rep, key)
    if is_numeric(values):
        return {v: float(v) for v in values}, [format_value(v) for v in values]
    return {v: float(i) for i, v in enumerate(values)}, [format_value(v) for v in values]


def _outcome_series(ax: Any, group: pd.DataFrame, x_key: str, xs: dict, metric: str, style):
    """One line (mean over the seeds with a finite value) and its min..max band."""
    finite = group[np.isfinite(group[metric].to_numpy(float))]
    stats = finite.groupby(x_key, sort=False)[metric].agg(["mean", "min", "max"])
    stats.index = stats.index.map(xs)
    stats = stats.sort_index()
    if stats.empty:
        return
    ax.plot(stats.index, stats["mean"], markersize=5, **style)
    ax.fill_between(stats.index, stats["min"], stats["max"], color=style["color"], alpha=0.15, lw=0)


def _reference_lines(axes: np.ndarray) -> list[tuple[Any, str]]:
    """Chance accuracy and ln(classes), a uniform guess's loss, dotted grey."""
    chance = {"color": "0.5", "linestyle": (0, (1, 2)), "linewidth": 1.2}
    loss = math.log(NUM_CLASSES)
    return [
        (
            axes[0].axhline(analysis.CHANCE_ACCURACY, **chance),
            f"chance ({analysis.CHANCE_ACCURACY:g})",
        ),
        (axes[1].axhline(loss, **chance), f"ln {NUM_CLASSES} = {loss:.3g} (uniform guess)"),
    ]


def outcome_figure(rep: ExperimentReport) -> Drawn | None:
    """Test accuracy and final training loss against the main axis (:func:`roles`), one
    line per value of the other keys, seed bands: He et al. 2015's Fig. 3 view."""
    main, others = roles(rep)
    keys = [main, *others] if main else others
    if not keys or rep.runs.empty:
        return None
    x_key, series = keys[0], keys[1:]
    look = Look(rep, series[0] if series else None, series[1:])
    xs, ticks = _positions(rep, x_key)
    data = rep.runs[["run_id", "test_accuracy", "final_loss"]].join(rep.keys.labels, on="run_id")
    fig, axes = new_figure(1, 2)
    groups = data.groupby(series, sort=False) if series else [((), data)]
    for values, group in groups:
        row = dict(zip(series, values if isinstance(values, tuple) else (values,), strict=True))
        for ax, metric in zip(axes[0], ("test_accuracy", "final_loss"), strict=True):
            _outcome_series(ax, group, x_key, xs, metric, look.of(row))
    missing = {
        m: int((~np.isfinite(data[m].to_numpy(float))).sum())
        for m in ("test_accuracy", "final_loss")
    }
    for ax, (metric, label) in zip(
        axes[0],
        (("test_accuracy", "test accuracy"), ("final_loss", "final training loss")),
        strict=True,
    ):
        ax.set_xticks(list(xs.values()), ticks)
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if missing[metric]:
            text = f"left out: {missing[metric]} run(s) without a finite value"
            ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, va="bottom")
    loss = data["final_loss"].to_numpy(float)
    loss = loss[np.isfinite(loss) & (loss > 0)]
    if len(loss) and loss.max() > 100 * loss.min():
        axes[0][1].set_yscale("log")
    extra = _reference_lines(axes[0])
    title = f"Accuracy and final loss against {x_key}"
    fig.suptitle(f"{rep.name}: {title}\n{BAND_NOTE}", **HEADLINE)
    look.legends(fig, extra)
    caption = (
        f"Test accuracy (left) and the training loss at the last step (right) against {x_key}"
        + (f", one line per configuration of the other keys ({look.says()})" if series else "")
        + f"; {BAND_NOTE}; dotted: chance and ln {NUM_CLASSES}. Diverged or failed runs have "
        "no finite value and are left out (counted on the panel)."
    )
    return Drawn(fig, title, caption)


# --- the gradient over training: small multiples on one colour scale ---------------------------


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres: midway between neighbours, half a gap at the ends."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def _heat(rep: ExperimentReport, run_ids: list[str]) -> tuple[np.ndarray, ...] | None:
    """(step edges, position edges, masked log10 grad_preact_var) of one configuration,
    mean over its seeds, summed over a cnn's map positions as the verdict reads it."""
    matrix = analysis.step_matrix(rep.experiment.layers, run_ids, "grad_preact_var")
    if matrix.empty:
        return None
    rows = matrix.index.to_numpy(float)
    scale = _summed(rep, rows, np.ones(len(rows)), run_ids) if not _timed(rep, run_ids) else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        data = np.log10(matrix.to_numpy(float) * np.reshape(scale, (-1, 1)))
    steps = matrix.columns.to_numpy(float)
    return _edges(steps), _edges(rows), np.ma.masked_invalid(data)


def _timed(rep: ExperimentReport, run_ids: list[str]) -> bool:
    layers = rep.experiment.layers
    return bool(layers[layers["run_id"].isin(run_ids)]["t"].max() > 0)


def _layout(rep: ExperimentReport) -> tuple[int, int, list[tuple[int, int]], list[str]]:
    """(rows, columns, each configuration's panel, row titles): the main axis across and
    one row per value of the other keys where there is a main axis; else wrapped by 5."""
    n = len(rep.config_rows)
    main, others = roles(rep)
    if main is None or not others:
        ncols = min(n, 5)
        return -(-n // ncols), ncols, [(i // ncols, i % ncols) for i in range(n)], []
    columns = {v: j for j, v in enumerate(values_of(rep, main))}
    look = Look(rep, None, others)  # its combos: the other keys' values in rank order
    names = [k.rsplit(".", 1)[-1] for k in others]
    titles = [
        ", ".join(f"{k}={format_value(v)}" for k, v in zip(names, c, strict=True))
        for c in look.combos
    ]
    place = [(look.combos[tuple(r[k] for k in others)], columns[r[main]]) for r in rep.config_rows]
    return len(look.combos), len(columns), place, titles


def _panel(ax: Any, heat: tuple[np.ndarray, ...] | None, norm: Any, cmap: Any, title: str) -> None:
    """One configuration's heatmap on the shared ``norm``, with integer ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.set_gid("panel")
    if heat is not None:
        ax.pcolormesh(*heat, norm=norm, cmap=cmap)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)


def heatmaps_figure(rep: ExperimentReport) -> Drawn | None:
    """log10 grad_preact_var, positions (layers; rnn: top layer's time steps) x training
    steps, one small panel per configuration, all on one colour scale."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    heats = [_heat(rep, run_ids) for _, run_ids in rep.config_runs()]
    if all(h is None for h in heats):
        return None
    finite = np.concatenate([h[2].compressed() for h in heats if h is not None])
    norm = Normalize(*(finite.min(), finite.max()) if len(finite) else (0, 1))
    nrows, ncols, place, row_titles = _layout(rep)
    fig, axes = new_figure(nrows, ncols, sharex=True)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    timed = _timed(rep, list(rep.runs["run_id"]))
    main, _ = roles(rep)
    for row, heat, (i, j) in zip(rep.config_rows, heats, place, strict=True):
        short = f"{main.rsplit('.', 1)[-1]}={format_value(row[main])}" if row_titles else ""
        _panel(axes[i][j], heat, norm, cmap, short or rep.short_label(row))
    for i, j in {(i, j) for i in range(nrows) for j in range(ncols)} - set(place):
        axes[i][j].set_axis_off()
    unit = TIME_AXIS if timed else "layer l"
    for i in range(nrows):
        axes[i][0].set_ylabel(f"{row_titles[i]}\n{unit}" if row_titles else unit, fontsize=8)
    for j in range(ncols):
        axes[-1][j].set_xlabel("training step", fontsize=8)
    summed = _is_cnn(rep) and not timed
    what = "log10 grad_preact_var" + (" × map positions" if summed else "")
    fig.colorbar(
        cmap_mappable(norm, cmap), ax=axes.ravel().tolist(), label=f"{what} (grey: 0 or non-finite)"
    )
    title = "Gradient over training, one colour scale"
    fig.suptitle(f"{rep.name}: {title}", **HEADLINE)
    caption = (
        f"{what} at each {'time step' if timed else 'layer'} (up) and logged training step "
        "(across), mean over each configuration's seeds; one panel per configuration, all "
        f"on one colour scale ({norm.vmin:.3g} to {norm.vmax:.3g})"
        + (f", {SUMMED}" if summed else "")
        + "; grey: 0 or non-finite."
    )
    return Drawn(fig, title, caption)


def cmap_mappable(norm: Any, cmap: Any) -> Any:
    """A ScalarMappable for the one colour bar of panels that share ``norm``."""
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


# --- training loss, the list of figures, PNGs -------------------------------------------------


def loss_figure(rep: ExperimentReport) -> Drawn | None:
    """Training loss (mean over each logging interval) against step: one line per run,
    coloured and styled by configuration as the profiles are."""
    curves = rep.experiment.curves
    if curves.empty or "metric" not in curves:
        return None
    loss = curves[curves["metric"] == "loss_avg"]
    fig, axes = new_figure()
    ax, look = axes[0][0], profile_look(rep)
    for row, (_, run_ids) in zip(rep.config_rows, rep.config_runs(), strict=True):
        for run_id in run_ids:
            run = loss[loss["run_id"] == run_id].sort_values("step")
            ax.plot(run["step"], run["value"], lw=1, markersize=3, **look.of(row))
    if not ax.lines:
        return None
    values = loss["value"].to_numpy(float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() > 100 * values.min():  # a diverging run: log scale
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (mean over each logging interval)")
    title = "Training loss per run"
    ax.set_title(f"{rep.name}: {title}")
    ax.grid(True, alpha=0.3)
    look.legends(fig)
    caption = (
        "Training loss averaged over each logging interval against the training step, one "
        f"line per run ({look.says()})."
    )
    return Drawn(fig, title, caption)


def figures(rep: ExperimentReport) -> dict[str, Drawn]:
    """Every figure of one experiment, by file stem (without the experiment's name),
    the outcome first; those over training steps only where something was trained; the
    finite-width spread where Hanin & Nica's law applies."""
    from initbench.reporting.spectra import spectrum_figure

    if not rep.has_rows:
        return {}
    from initbench.reporting.signal_plot import signal_propagation_figure  # it imports this

    trained = not all(r.get("init_only") for r in rep.config_rows)  # else: over training, 1 point
    found: dict[str, Drawn | None] = {
        "outcome": outcome_figure(rep) if trained else None,
        "forward_variance": variance_figure(rep, "forward"),
        "backward_variance": variance_figure(rep, "backward"),
        "time_variance": time_figure(rep),
        "signal_propagation": signal_propagation_figure(rep),
        "heatmaps": heatmaps_figure(rep) if trained else None,
        "loss": loss_figure(rep) if trained else None,
        "spectrum": spectrum_figure(rep),
        "spread": spread_figure(rep),
    }
    return {name: drawn for name, drawn in found.items() if drawn is not None}


def figure_pngs(rep: ExperimentReport) -> dict[str, Plot]:
    """Every figure of one experiment as a :class:`Plot` (PNG of FIG_SIZE at FIG_DPI)."""
    out = {}
    for name, drawn in figures(rep).items():
        buffer = io.BytesIO()
        drawn.fig.savefig(buffer, format="png", dpi=FIG_DPI)
        out[name] = Plot(drawn.title, drawn.caption, buffer.getvalue())
    return out
