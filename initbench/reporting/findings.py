"""The experiment's answer in a few lines, read off its tables: which configurations
vanish, explode or stay stable at step 0 and after training, which are flagged, which
trained best, and how the step-0 measurements compare with theory."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pandas as pd

from initbench import analysis
from initbench.reporting import notes
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.model import Cell, Table, fmt_stat
from initbench.reporting.tables import has_theory

Finding = tuple[str, list[str]]  # (what, the configurations it holds for)


def _grouped(rep: ExperimentReport, column: str) -> Iterator[Finding]:
    """Distinct non-empty values of ``column`` in first-seen order, each with the labels
    of the configurations that have it."""
    groups: dict[str, list[str]] = {}
    for row in rep.config_rows:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            continue
        groups.setdefault(str(value), []).append(rep.short_label(row))
    yield from groups.items()


def _flag_findings(rep: ExperimentReport) -> Iterator[Finding]:
    """(flag, labels) for every flag some configuration has, with its seed count."""
    for flag in analysis.FLAGS:
        labels = []
        for row in rep.config_rows:
            for item in filter(None, (f.strip() for f in str(row["flags"]).split(","))):
                if item == flag or item.startswith(f"{flag} "):
                    count = item[len(flag) :].strip()
                    labels.append(rep.short_label(row) + (f" ({count})" if count else ""))
        if labels:
            yield f"flagged {flag}", labels


def _best_accuracy(rep: ExperimentReport) -> list[Finding]:
    """The configuration with the highest mean test accuracy, with its value."""
    scored = [r for r in rep.config_rows if not pd.isna(r.get("test_accuracy_mean"))]
    if not scored:
        return []
    best = max(scored, key=lambda r: r["test_accuracy_mean"])
    value = fmt_stat(best, "test_accuracy")
    return [(f"highest test accuracy: {value}", [rep.short_label(best)])]


def _verdict_findings(rep: ExperimentReport) -> Iterator[Finding]:
    for tag, when in (("init", "at step 0"), ("last", f"at {notes.trained_at(rep)}")):
        for prefix, name in notes.DIRECTIONS:
            for verdict, labels in _grouped(rep, f"{prefix}_verdict_{tag}"):
                yield f"{name} {verdict} {when}", labels


def _cells(findings: Sequence[Finding], total: int) -> list[list[Cell]]:
    """One row per finding: its configurations, or 'all N' when it holds for all of them."""
    return [
        [Cell(finding), Cell(f"all {total}" if len(labels) == total > 1 else "; ".join(labels))]
        for finding, labels in findings
    ]


def findings_table(rep: ExperimentReport) -> Table | None:
    """The findings of one experiment; None when it has no configuration to report."""
    if not rep.has_rows:
        return None
    lines = [*_verdict_findings(rep), *_flag_findings(rep), *_best_accuracy(rep)]
    if has_theory(rep.configs):
        lines += [(f"vs theory: {c}", labels) for c, labels in _grouped(rep, "theory_check")]
    body = _cells(lines, len(rep.config_rows))
    return Table("Findings", ["finding", "configurations"], [False, False], body, [])
