"""Terminal output of the run and list commands (rich): progress, summaries, catalogs."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from initbench.config.spec import RunConfig
    from initbench.results.schema import RunResult
    from initbench.run.runner import SweepReport

STATUS_STYLE = {"ok": "green", "diverged": "yellow", "failed": "red"}


class SweepProgress:
    """A progress bar over runs with ETA; prints one line per finished run."""

    def __init__(self, console: Console, grid_keys: tuple[str, ...]) -> None:
        self.console = console
        self.grid_keys = grid_keys
        self.progress = Progress(
            TextColumn("[bold]runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> SweepProgress:
        self.progress.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(kind, exc, tb)

    def start(self, total: int) -> None:
        """Begin the bar over ``total`` runs."""
        self.task = self.progress.add_task("runs", total=total)

    def advance(self, run: RunConfig, result: RunResult) -> None:
        """Report one finished run."""
        from initbench.run.runner import describe

        summary = result.summary
        status = summary["status"]
        detail = ""
        if status == "ok":
            detail = f"test acc {summary['test_accuracy']:.3f}  loss {summary['final_loss']:.3f}"
        elif status == "diverged":
            where = summary.get("diverged_at") or {}
            detail = (
                f"at step {summary['diverged_step']} ({where.get('what')} {where.get('name', '')})"
            )
        else:
            detail = str(summary.get("error"))
        seconds = summary.get("total_seconds") or 0.0
        label = describe(run, self.grid_keys)
        self.progress.console.print(
            f"[{STATUS_STYLE[status]}]{status:8}[/] {result.run_id}  {label}"
            f"  {detail}  [dim]{seconds:.1f}s[/]",
            soft_wrap=True,
        )
        self.progress.advance(self.task)


def _skipped_text(report: SweepReport) -> str:
    """Skipped complete runs, with their stored statuses where some did not go ok."""
    bad = [(s, report.skipped_counts[s]) for s in ("diverged", "failed")]
    shown = ", ".join(f"{n} {status}" for status, n in bad if n)
    return f"{report.skipped} ({shown})" if shown else str(report.skipped)


def print_sweep_summary(console: Console, report: SweepReport) -> None:
    """Status counts and wall time of a finished sweep."""
    table = Table(title="sweep summary", show_header=True)
    for column in ("ok", "diverged", "failed", "skipped (complete)", "wall time"):
        table.add_column(column, justify="right")
    table.add_row(
        str(report.counts["ok"]),
        str(report.counts["diverged"]),
        str(report.counts["failed"]),
        _skipped_text(report),
        f"{report.seconds:.1f} s",
    )
    console.print(table)


def _params_text(params: Any) -> str:
    fields = params.model_fields
    return ", ".join(f"{name}={field.default!r}" for name, field in fields.items()) or "-"


def _registry_rows(topic: str) -> tuple[list[str], list[list[str]]]:
    from initbench.config.catalogue import CATALOGUES

    registry = CATALOGUES[topic]
    if topic == "initializers":
        header = ["name", "formula", "parameters (defaults)", "convention"]
        rows = [[n, e.formula, _params_text(e.params), e.convention] for n, e in registry.items()]
    elif topic == "activations":
        header = ["name", "formula", "kind", "parameters", "torch gain"]
        rows = [
            [n, e.formula, e.kind, _params_text(e.params), e.torch_gain]
            for n, e in registry.items()
        ]
    elif topic == "architectures":
        header = ["name", "network", "watched layers"]
        rows = [[n, e.summary, e.watched] for n, e in registry.items()]
    else:
        header = ["name", "description", "parameters (defaults)"]
        rows = [[n, e.summary, _params_text(e.params)] for n, e in registry.items()]
    return header, rows


def print_catalog(console: Console, topic: str) -> None:
    """One table of a registry (or of the recorded metrics: the layer statistics'
    catalogue, then the curves)."""
    from initbench.measure.catalog import CATALOG
    from initbench.results import schema

    if topic == "metrics":
        header = ["metric", "table", "definition"]
        rows = [[s.name, "layers", s.definition] for s in CATALOG]
        rows += [[m, "curves", d] for m, d in schema.CURVE_METRICS.items()]
    else:
        header, rows = _registry_rows(topic)
    table = Table(title=topic, show_lines=False, title_justify="left")
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
