"""Checking stored runs before they are trusted, and moving broken ones aside.

A run folder with a summary.json is complete by the results format's rule; a resume
checks that it is also readable, cheaply (the JSON, and the Parquet files' footers and
columns, not their data). One that is not, a truncated table, a 0-byte file, a garbage
summary, is moved into ``<experiment>/quarantine/<run_id>/`` with a ``reason.txt`` and
redone, never trusted and never silently deleted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from initbench.results import schema
from initbench.results.store import NewerFormatError, ResultsError, read_summary


def check_run(run_dir: Path) -> tuple[str, str | None]:
    """(stored status, None) of the complete-looking run in ``run_dir``, or ('', why it
    cannot be used). Raises NewerFormatError for a run of a newer results format (not
    broken: upgrade)."""
    try:
        summary = read_summary(run_dir)
    except NewerFormatError:
        raise
    except ResultsError as exc:
        return "", str(exc)
    summary_path = run_dir / schema.SUMMARY_FILE
    status = summary.get("status")
    if not isinstance(summary.get("config"), Mapping):
        return "", f"{summary_path}: no 'config' mapping"
    if status not in schema.STATUSES:
        return "", f"{summary_path}: status {status!r} is none of {schema.STATUSES}"
    tables = [
        (schema.LAYERS_FILE, schema.LAYER_COLUMNS),
        (schema.CURVES_FILE, schema.CURVE_COLUMNS),
    ]
    if summary["format_version"] >= schema.SPECTRA_SINCE:
        tables.append((schema.SPECTRA_FILE, schema.SPECTRA_COLUMNS))
    for name, columns in tables:
        problem = _table_problem(run_dir / name, columns)
        if problem:
            return "", problem
    return str(status), None


def _table_problem(path: Path, columns: Mapping[str, str]) -> str | None:
    """Why the Parquet file at ``path`` cannot be read with ``columns``, or None."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return f"{path}: missing, or not a file"
    try:
        names = pq.read_schema(path).names  # the footer only
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        return f"{path}: cannot read Parquet ({exc})"
    missing = [c for c in columns if c not in names]
    return f"{path}: no column(s) {', '.join(missing)}" if missing else None


def quarantine(exp_dir: Path, run_id: str, reason: str) -> Path:
    """Move the run folder aside into the experiment's quarantine folder, with the reason,
    and return where it went (``<run_id>``, or ``<run_id>.N`` if that is taken)."""
    folder = exp_dir / schema.QUARANTINE_DIR
    folder.mkdir(exist_ok=True)
    target, n = folder / run_id, 1
    while target.exists():
        target, n = folder / f"{run_id}.{n}", n + 1
    os.replace(exp_dir / schema.RUNS_DIR / run_id, target)
    (target / schema.REASON_FILE).write_text(reason + "\n", encoding="utf-8")
    return target
