"""What `initbench theory` prints: a prediction as terminal text, markdown, csv or json."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from initbench.meanfield.fixedpoint import FixedPoint
from initbench.meanfield.model import TheoryError, split_ref
from initbench.meanfield.prediction import Prediction, predict_for
from initbench.meanfield.propagation import COLUMN_HELP

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("terminal", "markdown", "csv", "json")


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars as Python ones, NaN and infinities as None."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _headline(pred: Prediction) -> list[str]:
    m = pred.model
    line = (
        f"mean-field prediction: {m['arch']}, depth {m['depth']}, width {m['width']}, "
        f"activation {split_ref(m['activation'])[0]}, init {split_ref(m['init'])[0]}"
        + (", batchnorm" if m["batchnorm"] else "")
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
