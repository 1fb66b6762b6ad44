"""What `initbench theory` prints: a prediction as terminal text, markdown, csv or json."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from initbench.config.runconfig import norm_of
from initbench.meanfield.fixedpoint import CRITICAL_TOL, FixedPoint
from initbench.meanfield.model import TheoryError, split_ref
from initbench.meanfield.prediction import Prediction, predict_for
from initbench.meanfield.propagation import COLUMN_HELP
from initbench.meanfield.scales import (
    DepthScales,
    depth_scales,
    parse_reference,
    resolve_sigma_w2,
    scaling_init,
)

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("terminal", "markdown", "csv", "json")


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars as Python ones, NaN and infinities as None."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _width(model: dict[str, Any]) -> str:
    widths = model.get("widths")
    return f"width {model['width']}" if widths is None else f"widths {'-'.join(map(str, widths))}"


def _headline(pred: Prediction) -> list[str]:
    m = pred.model
    line = (
        f"mean-field prediction: {m['arch']}, depth {m['depth']}, {_width(m)}, "
        f"activation {split_ref(m['activation'])[0]}, init {split_ref(m['init'])[0]}"
        + ("" if norm_of(m) == "none" else f", {norm_of(m)}norm")
    )
    if not pred.ok:
        return [line, f"no prediction: {pred.reason}"]
    s, unit = pred.summary(), "steps" if m["arch"] == "rnn" else "layers"
    return [
        f"{line}, sigma_b^2 = {pred.sigma_b2:.4g}, q1 = {pred.q1:.4g}",
        fixed_point_line(pred.fixed, unit),
        f"forward decay {s['forward_decay']:.4g} per {unit[:-1]} (last/first "
        f"{s['forward_last_first']:.4g}); backward decay {s['backward_decay']:.4g} "
        f"(first/last {s['backward_first_last']:.4g})",
    ]


def fixed_point_line(fixed: FixedPoint | None, unit: str = "layers") -> str:
    """One line: q*, chi_1, the phase and, where the correlation map is modelled, c*,
    chi_c and the depth scales xi_q and xi_c (else why not)."""
    if fixed is None:
        return "fixed point: none"
    head = f"fixed point: q* = {fixed.q_star:.4g}, chi_1 = {fixed.chi_star:.4g} ({fixed.regime})"
    if fixed.note is not None:
        return f"{head}; no xi_c or xi_q: {fixed.note}"
    return (
        f"{head}, c* = {fixed.c_star:.4g}, chi_c = {fixed.chi_c:.4g}; depth scales "
        f"xi_q = {fixed.xi_q:.4g}, xi_c = {fixed.depth_scale:.4g} {unit}"
    )


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return str(v) if isinstance(v, int | np.integer) else f"{v:.4g}"

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    rows = frame.itertuples(index=False)
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _json(pred: Prediction) -> str:
    rows = [{k: _plain(v) for k, v in r.items()} for r in pred.frame().to_dict("records")]
    doc = {
        "model": pred.model,
        "q1": _plain(pred.q1),
        "sigma_b2": pred.sigma_b2,
        "summary": {k: _plain(v) for k, v in pred.summary().items()},
        "reason": pred.reason,
        "notes": list(pred.notes),
        "columns": COLUMN_HELP,
        "rows": rows,
    }
    return json.dumps(doc, indent=2)


def render(pred: Prediction, fmt: str = "terminal") -> str:
    """The prediction as text: terminal (plain table), markdown, csv (table only) or json
    (non-finite numbers as null)."""
    if fmt not in FORMATS:
        raise TheoryError(f"unknown format {fmt!r} (available: {', '.join(FORMATS)})")
    if fmt == "csv":
        return pred.frame().to_csv(index=False)
    if fmt == "json":
        return _json(pred) + "\n"
    head = _headline(pred)
    if not pred.ok:
        return "\n".join(head) + "\n"
    notes = [f"- {n}" for n in pred.notes]
    if fmt == "markdown":
        title = [f"**{head[0]}**", *head[1:]]
        return "\n\n".join(["  \n".join(title), _markdown_table(pred.frame()), "\n".join(notes)])
    table = pred.frame().to_string(index=False, float_format=lambda v: f"{v:.4g}")
    return "\n".join([*head, "", table, "", "notes:", *notes]) + "\n"


def theory_text(
    activation: str | Mapping[str, Any],
    init: str | Mapping[str, Any],
    depth: int,
    width: int,
    arch: str = "mlp",
    fmt: str = "terminal",
    **options: Any,
) -> str:
    """What `initbench theory` prints: the predicted per-layer table, without training.
    ``options``: those of :func:`predict_for`. Raises TheoryError (with the registries'
    "did you mean") for any bad argument."""
    return render(predict_for(activation, init, depth, width, arch, **options), fmt)


# What each quantity of the depth-scale view means, for its terminal and markdown rows.
SCALE_ROWS = (
    (
        "q_star",
        "q*",
        "fixed point of the variance map q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2",
    ),
    ("chi_star", "chi_1", "gradient factor per layer, sigma_w^2 E[phi'(sqrt(q*) z)^2]"),
    ("c_star", "c*", "stable fixed point of the correlation map"),
    ("chi_c", "chi_c", "slope of the correlation map at c*, sigma_w^2 E[phi'(u1) phi'(u2)]"),
    ("xi_q", "xi_q", "layers over which q approaches q* e-fold"),
    (
        "depth_scale",
        "xi_c",
        "layers over which correlations approach c* e-fold; "
        "networks train to depth ~6 xi_c (Schoenholz et al. 2017)",
    ),
)


def _scales_head(scales: DepthScales) -> str:
    return (
        f"mean-field depth scales: activation {split_ref(scales.activation)[0]}, "
        f"sigma_w^2 = {scales.sigma_w2:.4g} ({scales.source}), sigma_b^2 = {scales.sigma_b2:.4g}"
    )


_PHASE_SIGN = {"ordered": "<", "critical": "=", "chaotic": ">"}


def _phase_line(fixed: FixedPoint) -> str:
    sign = _PHASE_SIGN[fixed.regime]
    return f"phase: {fixed.regime} (chi_1 {sign} 1; critical within {CRITICAL_TOL:g})"


def render_scales(scales: DepthScales, fmt: str = "terminal") -> str:
    """The depth-scale view as text: terminal, markdown (a table), csv (one row) or json
    (non-finite numbers as null)."""
    if fmt not in FORMATS:
        raise TheoryError(f"unknown format {fmt!r} (available: {', '.join(FORMATS)})")
    summary = scales.summary()
    if fmt == "json":
        return json.dumps({k: _plain(v) for k, v in summary.items()}, indent=2) + "\n"
    if fmt == "csv":
        import pandas as pd

        return pd.DataFrame([summary]).to_csv(index=False)
    fixed = scales.fixed
    rows = [(label, summary[key], meaning) for key, label, meaning in SCALE_ROWS]
    note = [f"no xi_c or xi_q: {fixed.note}"] if fixed.note else []
    if fmt == "markdown":
        table = ["| quantity | value | meaning |", "|---|---|---|"]
        table += [f"| {label} | {value:.4g} | {meaning} |" for label, value, meaning in rows]
        blocks = [f"**{_scales_head(scales)}**", "\n".join(table), _phase_line(fixed), *note]
        return "\n\n".join(blocks) + "\n"
    lines = [f"  {label:<6} {value:<10.4g} {meaning}" for label, value, meaning in rows]
    return "\n".join([_scales_head(scales), *lines, _phase_line(fixed), *note]) + "\n"


def command_text(
    activation: str | Mapping[str, Any],
    *,
    init: str | Mapping[str, Any] | None = None,
    params: Sequence[str] = (),
    sigma_w2: float | None = None,
    sigma_b2: float = 0.0,
    depth: int | None = None,
    width: int | None = None,
    arch: str = "mlp",
    fmt: str = "terminal",
    **options: Any,
) -> str:
    """What ``initbench theory`` prints. Without ``depth``: the fixed point and depth
    scales (:func:`~initbench.meanfield.scales.depth_scales`). With it: the per-layer
    prediction (:func:`predict_for`, ``options`` its own), the init as given or, from
    sigma_w2 alone, variance_scaling with that scale. ``init`` is a reference as a spec
    writes it (YAML text or a mapping), ``params`` its extra key=value parameters; so is
    ``activation``."""
    if params and init is None:
        raise TheoryError("--param sets a parameter of --init: give --init")
    ref = parse_reference(init, params) if init is not None else None
    activation = parse_reference(activation, (), "--activation")
    if options.get("recurrent_init") is not None:
        options["recurrent_init"] = parse_reference(
            options["recurrent_init"], (), "--recurrent-init"
        )
    if depth is None:
        defaults = inspect.signature(predict_for).parameters
        asked = [k for k, v in options.items() if v != defaults[k].default]
        if arch != "mlp" or asked:
            what = ", ".join(["arch"] * (arch != "mlp") + asked)
            raise TheoryError(f"{what}: only for the per-layer prediction, which needs --depth")
        scales = depth_scales(
            activation, init=ref, sigma_w2=sigma_w2, sigma_b2=sigma_b2, width=width
        )
        return render_scales(scales, fmt)
    if width is None:
        raise TheoryError("--depth (the per-layer prediction) needs --width")
    if ref is None:
        ref = scaling_init(resolve_sigma_w2(None, sigma_w2, width)[0])
    elif sigma_w2 is not None:
        resolve_sigma_w2(ref, sigma_w2, width)  # they must agree
    return render(
        predict_for(activation, ref, depth, width, arch, sigma_b2=sigma_b2, **options), fmt
    )
