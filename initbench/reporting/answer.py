"""The Answer that opens each experiment's section: a compact matrix (rows: the main
axis, e.g. ``model.depth``; columns: the compared axis, e.g. ``model.init``) whose cells
hold trainability, test accuracy and the step-0 forward and backward factors with their
verdicts, then sentences that state the conclusion with its numbers and the theory's.

Everything here is read off :attr:`ExperimentReport.configs` by general rules; nothing
is written for a particular spec. The axes (:func:`choose_axes`): the numeric varying key
with the most values is the rows, the categorical varying key with the most values the
columns (ties: the report's key order); with one varying key it is the rows; other
varying keys get one matrix per combination of their values. ``--rows`` / ``--cols``
override the choice."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from initbench import analysis
from initbench.analysis import format_value
from initbench.config.architectures import ARCHITECTURES, is_recurrent
from initbench.reporting.experiment import ALL_RUNS, ExperimentReport
from initbench.reporting.model import MISSING, Cell, Section, Table, fmt_num
from initbench.reporting.spread import law_sentence

ANSWER_TITLE: Final = "Answer"
TRAINABLE_STYLE: Final = {"yes": "stable", "partly": "mixed", "no": "exploding"}
VERBS: Final = {  # verdict -> what the network does to the signal
    "stable": "preserves",
    "vanishing": "shrinks",
    "exploding": "grows",
    "saturated": "saturates",
    "collapsed": "collapses",
    "non-finite": "loses (non-finite)",
    "undefined": "does not measure",
}
TRAINS: Final = {"yes": "trains", "partly": "trains partly", "no": "does not train"}
INIT_ONLY: Final = "init only"  # a configuration measured at step 0 alone (train.steps 0)
DIRECTIONS: Final = (("fwd", "the forward signal"), ("bwd", "the gradient"))


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def choose_axes(
    rep: ExperimentReport, rows: str | None = None, cols: str | None = None
) -> tuple[str | None, str | None, list[str]]:
    """(rows key, columns key, notes) of the Answer; a requested key this experiment does
    not vary is named in a note and chosen by the rule instead."""
    varying = list(rep.keys.varying) if rep.keys else []
    notes = [
        f"--{flag} {key}: not a varying key of this experiment; chosen by the rule"
        for flag, key in (("rows", rows), ("cols", cols))
        if key and key not in varying
    ]
    rows = rows if rows in varying else None
    cols = cols if cols in varying and cols != rows else None
    count = {k: len(set(rep.configs[k])) for k in varying}
    numeric = {k: _numeric(list(rep.configs[k])) for k in varying}
    if rows is None:
        free = [k for k in varying if k != cols]
        ranked = sorted(free, key=lambda k: (not numeric[k], -count[k]))
        rows = ranked[0] if ranked else None
    if cols is None:
        free = [k for k in varying if k != rows]
        ranked = sorted(free, key=lambda k: (numeric[k], -count[k]))
        cols = ranked[0] if ranked else None
    return rows, cols, notes


def _short(key: str | None) -> str:
    return key.rsplit(".", 1)[-1] if key else ""


def _trainable_text(row: Mapping[str, Any]) -> str:
    """'yes', 'partly', 'no', 'mixed (yes 1, no 1)', 'unknown' or 'init only' (never
    trained: trainability undefined), with diverged / failed seed counts."""
    text = str(row.get("trainable") or "")
    text = f"mixed ({text.removeprefix('mixed: ')})" if text.startswith("mixed") else text
    text = text.replace("none ", "unknown ") or "unknown"
    text = INIT_ONLY if row.get("init_only") else text
    for status in ("diverged", "failed"):
        if row[f"n_{status}"]:
            text += f", {status} {row[f'n_{status}']}/{row['seeds']}"
    return text


def _factor(row: Mapping[str, Any], prefix: str) -> str:
    verdict = str(row[f"{prefix}_verdict_init"] or MISSING).replace("mixed: ", "mixed ")
    return f"{prefix} {fmt_num(row[f'{prefix}_factor_init_mean'])} {verdict}"


def _cell(row: Mapping[str, Any] | None) -> Cell:
    if row is None:
        return Cell(MISSING)
    trainable = _trainable_text(row)
    if row.get("init_only"):  # no test pass: the loss of batch 0 at init instead
        lines = [f"{trainable}, loss@0 {_num(row['final_loss_mean'])}"]
    else:
        lines = [f"{trainable}, acc {_num(row['test_accuracy_mean'])}"]
    lines += [_factor(row, prefix) for prefix, _ in DIRECTIONS]
    return Cell("\n".join(lines), TRAINABLE_STYLE.get(trainable, "mixed"))


def _groups(rep: ExperimentReport, rows: str | None, cols: str | None) -> list[dict[str, Any]]:
    """One {other key: value} per matrix: the combinations of the keys that are neither
    rows nor columns (one empty dict when there are none)."""
    others = [k for k in (rep.keys.varying if rep.keys else ()) if k not in (rows, cols)]
    values = [list(dict.fromkeys(rep.configs[k])) for k in others]
    groups = [dict(zip(others, combo, strict=True)) for combo in itertools.product(*values)]
    # a design that is not a full product (cells with their own keys) has empty ones
    return [g for g in groups if any(_in(r, g) for r in rep.config_rows)]


def _in(row: Mapping[str, Any], fixed: Mapping[str, Any]) -> bool:
    return all(row[k] == v for k, v in fixed.items())


def _matrix(
    rep: ExperimentReport, rows: str | None, cols: str | None, fixed: Mapping[str, Any]
) -> Table:
    chosen = [r for r in rep.config_rows if _in(r, fixed)]
    row_values = list(dict.fromkeys(r[rows] for r in chosen)) if rows else [None]
    col_values = list(dict.fromkeys(r[cols] for r in chosen)) if cols else [None]
    header = _short(rows) or "configuration"
    columns = [header, *(format_value(c) if cols else ALL_RUNS for c in col_values)]
    body = []
    for value in row_values:
        cells = [Cell(format_value(value) if rows else ALL_RUNS)]
        for column in col_values:
            match = [
                r
                for r in chosen
                if (not rows or r[rows] == value) and (not cols or r[cols] == column)
            ]
            cells.append(_cell(match[0] if match else None))
        body.append(cells)
    where = ", ".join(f"{_short(k)}={format_value(v)}" for k, v in fixed.items())
    title = f"{ANSWER_TITLE} ({where})" if where else ANSWER_TITLE
    sentences = [s for c in col_values for s in _sentences(rep, chosen, rows, cols, c)]
    return Table(title, columns, [False] * len(columns), body, sentences, keys=1)


def answer_tables(
    rep: ExperimentReport, rows: str | None = None, cols: str | None = None
) -> list[Table]:
    """The Answer of one experiment: one matrix per combination of the keys that are
    neither rows nor columns, its sentences as the table's notes; none without rows."""
    if not rep.has_rows:
        return []
    rows, cols, notes = choose_axes(rep, rows, cols)
    tables = [_matrix(rep, rows, cols, fixed) for fixed in _groups(rep, rows, cols)]
    if tables and notes:
        tables[0].notes[:0] = notes
    law = law_sentence(rep)
    if tables and law:
        tables[-1].notes.append(law)
    return tables


# --- sentences --------------------------------------------------------------------------------


def _num(value: float) -> str:
    """A factor or accuracy in a sentence: 2 decimals in 0.01..1000, else 3 significant."""
    if math.isnan(value):
        return MISSING
    return f"{value:.2f}" if 0.01 <= abs(value) < 1000 else fmt_num(value)


def _span(values: Sequence[float]) -> str:
    """'0.50' or '0.48–0.52' over the finite values; '' when there are none."""
    shown = sorted({_num(v) for v in values if not math.isnan(v)}, key=float)
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return ""
    low, high = _num(min(known)), _num(max(known))
    return low if low == high or len(shown) == 1 else f"{low}–{high}"


def _where(rows: str | None, values: Sequence[Any], total: int) -> str:
    if not rows or len(values) == total:
        return "at every " + (_short(rows) or "configuration") if rows else ""
    shown = format_value(values[0])
    if len(values) > 1:
        shown += f" to {format_value(values[-1])}"
    return f"at {_short(rows)} {shown}"


def _runs_of(items: Sequence[Mapping[str, Any]], key: Any) -> list[list[Mapping[str, Any]]]:
    """Consecutive rows sharing ``key(row)``."""
    return [list(g) for _, g in itertools.groupby(items, key=key)]


def _signal(
    rows: str | None, chosen: Sequence[Mapping[str, Any]], prefix: str, thing: str, per: str
) -> str:
    parts = []
    for run in _runs_of(chosen, lambda r: str(r[f"{prefix}_verdict_init"])):
        verdict = str(run[0][f"{prefix}_verdict_init"]) or "undefined"
        verb = VERBS.get(verdict, f"is {verdict} for")
        measured = _span([r[f"{prefix}_factor_init_mean"] for r in run])
        theory = _span([r[f"theory_{prefix}_factor_init_mean"] for r in run])
        numbers = f"{measured} {per}" if measured else "no factor"
        numbers += f", theory {theory}" if theory else ", theory gives no prediction"
        where = _where(rows, [r[rows] for r in run] if rows else [], len(chosen))
        parts.append(f"{verb} {thing}{' ' + where if where else ''} ({numbers})")
    return ", ".join(parts)


def _accuracy(values: Sequence[float], word: str) -> str:
    """'test accuracy ≥ 0.89' over rows that train, '≤ 0.10, chance 0.10' over rows that
    do not, the value or range otherwise."""
    known = [a for a in values if not math.isnan(a)]
    if not known:
        return "no test accuracy"
    if len(known) == 1 or word not in ("yes", "no"):
        return f"test accuracy {_span(known)}"
    if word == "yes":
        return f"test accuracy ≥ {_num(min(known))}"
    return f"test accuracy ≤ {_num(max(known))}, chance {_num(analysis.CHANCE_ACCURACY)}"


def _training(rows: str | None, chosen: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for run in _runs_of(chosen, _trainable_text):
        word = str(run[0].get("trainable") or "")
        said = _trainable_text(run[0])
        if said.startswith(INIT_ONLY):
            where = _where(rows, [r[rows] for r in run] if rows else [], len(chosen))
            parts.append(_untrained(where, said, [r["final_loss_mean"] for r in run]))
            continue
        verb = TRAINS.get(said, "is mixed over seeds" if word else "is of unknown trainability")
        mixed = "" if said in TRAINS else f"{said.removeprefix('mixed (').rstrip(')')}; "
        acc = _accuracy([r["test_accuracy_mean"] for r in run], word)
        where = _where(rows, [r[rows] for r in run] if rows else [], len(chosen))
        parts.append(f"{verb}{' ' + where if where else ''} ({mixed}{acc})")
    return ", ".join(parts)


def _untrained(where: str, said: str, losses: Sequence[float]) -> str:
    """The training clause of init-only rows: never trained, so trainability undefined."""
    counts = said.removeprefix(INIT_ONLY).lstrip(", ")
    loss = _span(losses)
    details = "; ".join(x for x in (counts, f"loss at init {loss}" if loss else "") if x)
    return (
        f"is not trained{' ' + where if where else ''} (train.steps 0: trainability "
        f"undefined{'; ' + details if details else ''})"
    )


def _sentences(
    rep: ExperimentReport,
    chosen: Sequence[Mapping[str, Any]],
    rows: str | None,
    cols: str | None,
    column: Any,
) -> list[str]:
    """One sentence for one column value: what it does to the signal and the gradient at
    step 0, with the theory's factor, then where it trains."""
    mine = [r for r in chosen if not cols or r[cols] == column]
    if not mine:
        return []
    subject = format_value(column) if cols else "every run"
    constant = rep.keys.constant.get("model.arch") if rep.keys else None
    archs = {str(r.get("model.arch", constant)) for r in mine}
    timed = all(a in ARCHITECTURES and is_recurrent(a) for a in archs)
    per = "per time step" if timed else "per layer"  # what the factors are across
    signal = ", and ".join(_signal(rows, mine, prefix, thing, per) for prefix, thing in DIRECTIONS)
    return [f"{subject} {signal}; it {_training(rows, mine)}."]


# --- several experiments ----------------------------------------------------------------------

INDEX_TITLE: Final = "Index"


def index_section(document: Sequence[Section]) -> Section:
    """The experiments of one results folder, each with its Answer's sentences."""
    rows = []
    for section in document:
        answers = [t for t in section.tables if t.title.startswith(ANSWER_TITLE)]
        said = " ".join(s for t in answers for s in t.notes) or "no answer: no complete runs"
        rows.append([Cell(section.heading), Cell(said)])
    table = Table(
        "Experiments and their answers", ["experiment", "answer"], [False, False], rows, []
    )
    return Section(INDEX_TITLE, [f"{len(document)} experiments in this results folder"], [table])
