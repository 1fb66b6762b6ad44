"""The order-to-chaos phase diagram as files (``initbench theory --phase-diagram``): the
plane's table and the critical line (CSV) and a figure of xi_c with its contours and the
critical line; with a results folder, each configuration's measured trainability beside
depth = 6 xi_c (Schoenholz et al. 2017, Fig. 5) and a sentence saying whether it bounds
what trained."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis.aggregation import combine
from initbench.analysis.runs import number
from initbench.analysis.verdicts import trainability
from initbench.config.runconfig import norm_of
from initbench.config.thresholds import Thresholds
from initbench.meanfield import TheoryError, fixed_point, numpy_activation
from initbench.meanfield.geometry import bias_sigma2, geometry_of
from initbench.meanfield.model import model_section, split_ref
from initbench.meanfield.phase import (
    RESOLUTION,
    axes,
    checked_activation,
    critical_line,
    phase_grid,
)
from initbench.meanfield.scales import parse_reference
from initbench.reporting.figure_look import FIG_DPI, FIG_SIZE
from initbench.results import store

TRAIN_DEPTH_FACTOR: Final = 6  # networks train to depth ~6 xi_c (Schoenholz et al. 2017)
FILES: Final = ("phase_diagram.csv", "critical_line.csv", "phase_diagram.png")
MEASURED_FILE: Final = "measured.csv"
LINE_POINTS: Final = 41  # the critical line's sigma_b^2 values, at least
XI_CONTOURS: Final = (2, 5, 10, 20, 50, 100)
_MARKS: Final = {"yes": ("o", "trained: yes"), "partly": ("s", "partly"), "no": ("x", "no")}


def _nested(flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The ``prefix``-ed keys of a flattened config, nested again (NaN: absent)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if not key.startswith(prefix) or (isinstance(value, float) and math.isnan(value)):
            continue
        *parents, leaf = key[len(prefix) :].split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _run_point(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A run's activation, sigma_w^2 (hidden layer), sigma_b^2 and depth; None for what the
    plane does not describe (not a plain mlp: a norm or residual blocks; non-zero-mean
    weights)."""
    model = model_section(_nested(record, "config.model."))
    if model["arch"] != "mlp" or norm_of(model) != "none" or model.get("residual") is not None:
        return None
    geo, b2 = geometry_of(model, padding_correction=True), bias_sigma2(model)
    if isinstance(geo, str) or isinstance(b2, str):
        return None
    act = split_ref(model["activation"])[0]
    return {
        "activation": act,
        "sigma_w2": geo.hidden_sigma2,
        "sigma_b2": b2,
        "depth": model["depth"],
    }


def measured_configs(results: Path, th: Thresholds | None = None) -> pd.DataFrame:
    """A row per configuration (activation, sigma_w^2, sigma_b^2, depth) of the mlp runs under
    ``results``: its trainability over the seeds (analysis's verdict), mean test accuracy,
    seeds, and xi_c and 6 xi_c of its point of the plane."""
    th = th or Thresholds()
    rows = []
    for folder in store.find_experiments(results):
        runs = store.load_experiment(folder, skip_unreadable=True).runs
        for record in runs.to_dict("records"):
            point = _run_point(record)
            if point is None:
                continue
            acc, loss = number(record.get("test_accuracy")), number(record.get("final_loss"))
            rows.append(
                {**point, "trainable": trainability(record["status"], acc, loss, th), "acc": acc}
            )
    if not rows:
        raise TheoryError(f"{results}: no mlp run without batchnorm to place on the plane")
    keys = ["activation", "sigma_w2", "sigma_b2", "depth"]
    grouped = pd.DataFrame(rows).groupby(keys, sort=True)
    table = grouped.agg(acc=("acc", "mean"), seeds=("acc", "size")).reset_index()
    table["trainable"] = [combine(g["trainable"]) for _, g in grouped]
    xi = [_xi_c(r.activation, r.sigma_w2, r.sigma_b2) for r in table.itertuples()]
    return table.assign(xi_c=xi, train_depth=[TRAIN_DEPTH_FACTOR * x for x in xi])


def _xi_c(activation: str, sigma_w2: float, sigma_b2: float) -> float:
    return fixed_point(numpy_activation(activation), sigma_w2, sigma_b2).depth_scale


def _where(rows: pd.DataFrame) -> str:
    return ", ".join(
        f"sigma_w^2 = {r.sigma_w2:.3g} at depth {r.depth} (6 xi_c = {r.train_depth:.3g})"
        for r in rows.itertuples()
    )


def answer(measured: pd.DataFrame) -> str:
    """Whether depth ~6 xi_c bounds trainability in ``measured``: no configuration deeper
    than 6 xi_c trained ('yes'), and how many within it did."""
    beyond = measured[measured["depth"] > measured["train_depth"]]
    within = measured[measured["depth"] <= measured["train_depth"]]
    trained_beyond = beyond[beyond["trainable"] == "yes"]
    failed_within = within[within["trainable"] != "yes"]
    n_within = f"{len(within) - len(failed_within)} of {len(within)} within it trained"
    if len(beyond) == 0:
        return f"No configuration is deeper than 6 xi_c, so the bound is untested; {n_within}."
    if len(trained_beyond) == 0:
        partly = beyond[beyond["trainable"] != "no"]
        some = f" ({len(partly)} partly: {_where(partly)})" if len(partly) else ""
        head = (
            f"Yes: depth ~6 xi_c bounds trainability here. None of the {len(beyond)} "
            f"configurations deeper than 6 xi_c trained{some}, and {n_within}"
        )
    else:
        head = (
            f"No: {len(trained_beyond)} of {len(beyond)} configurations deeper than 6 xi_c "
            f"trained ({_where(trained_beyond)}); {n_within}"
        )
    tail = f" (not: {_where(failed_within)})" if len(failed_within) else ""
    return head + tail + "."


def _plane(ax: Any, grid: pd.DataFrame, line: pd.DataFrame) -> Any:
    """log10 xi_c over the plane, its contours and the critical line; the colour bar's
    mappable."""
    table = grid.pivot(index="sigma_b2", columns="sigma_w2", values="depth_scale")
    w2, b2 = table.columns.to_numpy(), table.index.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        log_xi = np.log10(np.clip(table.to_numpy(dtype=float), 1e-3, 1e3))
    mesh = ax.pcolormesh(w2, b2, log_xi, shading="gouraud", cmap="viridis", vmin=0, vmax=3)
    levels = np.log10(XI_CONTOURS)
    contours = ax.contour(w2, b2, log_xi, levels=levels, colors="white", linewidths=0.7)
    ax.clabel(
        contours, fontsize=8, fmt={lv: f"{v:g}" for lv, v in zip(levels, XI_CONTOURS, strict=True)}
    )
    ax.plot(
        line["sigma_w2"], line["sigma_b2"], color="red", linewidth=1.5, label="critical: chi_1 = 1"
    )
    ax.set(
        xlabel="sigma_w^2", ylabel="sigma_b^2", xlim=(w2.min(), w2.max()), ylim=(b2.min(), b2.max())
    )
    return mesh


def _overlay(ax: Any, measured: pd.DataFrame, activation: str) -> None:
    """Depth against sigma_w^2 at the sweep's (most common) sigma_b^2: 6 xi_c, xi_c and each
    configuration marked by what trained."""
    b2 = float(measured["sigma_b2"].mode().iloc[0])
    here = measured[np.isclose(measured["sigma_b2"], b2)]
    lo, hi = here["sigma_w2"].min(), here["sigma_w2"].max()
    w2 = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 121)
    xi = np.array([_xi_c(activation, float(w), b2) for w in w2])
    ax.plot(w2, TRAIN_DEPTH_FACTOR * xi, color="black", label="6 xi_c")
    ax.plot(w2, xi, color="black", linestyle=":", label="xi_c")
    for verdict, (marker, label) in _MARKS.items():
        rows = here[here["trainable"] == verdict]
        ax.scatter(rows["sigma_w2"], rows["depth"], marker=marker, s=45, label=label)
    mixed = here[~here["trainable"].isin(list(_MARKS))]
    if len(mixed):
        ax.scatter(mixed["sigma_w2"], mixed["depth"], marker="^", s=45, label="mixed seeds")
    depths = here["depth"]
    ax.set(
        xlabel="sigma_w^2", ylabel="depth", yscale="log", ylim=(depths.min() / 2, depths.max() * 2)
    )
    ax.set_title(f"trained? {activation}, sigma_b^2 = {b2:.3g}, beside 6 xi_c", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def phase_figure(
    activation: str, grid: pd.DataFrame, line: pd.DataFrame, measured: pd.DataFrame | None = None
) -> Any:
    """The figure: the plane (log10 xi_c, contours, critical line, the sweep's points) and,
    with ``measured``, its trainability beside 6 xi_c."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE, dpi=FIG_DPI, layout="constrained")
    axes_ = fig.subplots(1, 2 if measured is not None else 1, squeeze=False)[0]
    mesh = _plane(axes_[0], grid, line)
    fig.colorbar(mesh, ax=axes_[0], label="log10 xi_c (layers)")
    axes_[0].set_title(f"{activation}: correlation depth scale xi_c", fontsize=10)
    if measured is not None:
        axes_[0].scatter(
            measured["sigma_w2"], measured["sigma_b2"], marker="+", color="white", label="sweep"
        )
        _overlay(axes_[1], measured, activation)
    axes_[0].legend(fontsize=8, loc="upper right")
    return fig


def write_phase_diagram(
    activation: str | Mapping[str, Any],
    out: Path,
    results: Path | None = None,
    resolution: int = RESOLUTION,
    th: Thresholds | None = None,
) -> tuple[list[Path], str | None]:
    """Write FILES (and with ``results`` MEASURED_FILE) into ``out``; the paths written and
    the answer (None without results)."""
    name = checked_activation(activation).name
    measured = measured_configs(results, th) if results is not None else None
    if measured is not None and set(measured["activation"]) != {name}:
        raise TheoryError(f"{results}: runs with {sorted(set(measured['activation']))}, not {name}")
    w2, b2 = axes(resolution)
    line_b2 = np.linspace(b2[0], b2[-1], max(resolution, LINE_POINTS))
    grid, line = phase_grid(activation, w2, b2), critical_line(activation, line_b2)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f for f in FILES]
    grid.to_csv(paths[0], index=False)
    line.to_csv(paths[1], index=False)
    phase_figure(name, grid, line, measured).savefig(paths[2], dpi=FIG_DPI)
    if measured is None:
        return paths, None
    paths.append(out / MEASURED_FILE)
    measured.to_csv(paths[-1], index=False)
    return paths, answer(measured)


PHASE_OPTIONS: Final = ("out", "results", "resolution")


def _flags(names: set[str]) -> str:
    return ", ".join(f"--{n.replace('_', '-')}" for n in sorted(names))


def theory_command(
    given: set[str],
    phase_diagram: bool = False,
    out: Path | None = None,
    results: Path | None = None,
    resolution: int | None = None,
    **options: Any,
) -> tuple[str, list[Path]]:
    """What ``initbench theory`` prints and the files it wrote: the phase diagram, or
    :func:`~initbench.meanfield.command_text` of ``options``. ``given``: the options set
    on the command line, for the ones that do not apply."""
    from initbench.meanfield import command_text

    if not phase_diagram:
        if given & set(PHASE_OPTIONS):
            raise TheoryError(f"{_flags(given & set(PHASE_OPTIONS))}: only with --phase-diagram")
        return command_text(**options), []
    unused = given - {"activation", "phase_diagram", *PHASE_OPTIONS}
    if unused:
        raise TheoryError(f"{_flags(unused)}: not used by --phase-diagram (it spans the plane)")
    if out is None:
        raise TheoryError("--phase-diagram needs --out DIR")
    activation = parse_reference(options["activation"], (), "--activation")
    paths, text = write_phase_diagram(activation, out, results, resolution or RESOLUTION)
    return (f"{text}\n" if text else ""), paths
