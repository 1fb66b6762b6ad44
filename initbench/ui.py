"""Terminal output of the run and list commands (rich): progress, summaries, catalogs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
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

from initbench.results.schema import QUARANTINE_DIR

if TYPE_CHECKING:
    from initbench.api import Hooks, Outcome
    from initbench.config.spec import RunConfig
    from initbench.results.schema import RunResult
    from initbench.sweep.runner import Plan

STATUS_STYLE = {"ok": "green", "diverged": "yellow", "failed": "red"}


class QuietPipe:
    """Standard output that outlives its reader: once a pipe's reader is gone
    (``initbench run ... | head -1``), the rest of the output is dropped and the sweep
    goes on, instead of stopping at the next line with a BrokenPipeError."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        # the fd itself too, so that the interpreter's final flush at exit is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def console(stderr: bool = False) -> Console:
    """The terminal: standard error, or standard output that outlives its reader."""
    return Console(file=sys.stderr if stderr else QuietPipe(sys.stdout), highlight=False)


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
        from initbench.sweep.runner import describe

        summary = result.summary
        status = summary["status"]
        detail = ""
        if status == "ok" and summary["test_accuracy"] is None:  # init-only (train.steps 0)
            detail = f"at init: loss {summary['final_loss']:.3f}"
        elif status == "ok":
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


class CliSweep:
    """The command line's view of a sweep (:class:`initbench.api.Hooks`): the size check,
    the header line, the executor's description, the progress bar and retries."""

    def __init__(
        self,
        console: Console,
        yes: bool,
        confirm: Callable[[Sequence[Any], bool], None],
        retries: int,
    ) -> None:
        self.console, self.yes, self.confirm, self.retries = console, yes, confirm, retries
        self.folder: Path | None = None  # the experiment folder, once planned
        self.grid_keys: tuple[str, ...] = ()
        self.progress: SweepProgress | None = None

    def hooks(self) -> Hooks:
        """The hooks that make :func:`initbench.api.run` report to this view."""
        from initbench.api import Hooks

        return Hooks(self.planned, self.opened, self.started, self.finished, self.retrying)

    def planned(self, plan: Plan) -> None:
        """Ask before a large sweep, then say what it will do."""
        self.confirm(plan.todo, self.yes)
        self.folder, self.grid_keys = plan.experiment_dir, plan.spec.grid_keys
        if plan.broken:
            where = plan.experiment_dir / QUARANTINE_DIR
            lines = [f"  {run_id}: {why}" for run_id, why in plan.broken.items()]
            self.console.print(
                f"[yellow]{len(plan.broken)} complete run(s) cannot be read; moving them into "
                f"{where} and redoing them:[/]\n" + "\n".join(lines),
                soft_wrap=True,
            )
        self.console.print(
            f"[bold]{plan.spec.name}[/]: {len(plan.spec.runs)} runs, "
            f"{len(plan.done)} already complete, {len(plan.todo)} to run → {self.folder}"
        )

    def opened(self, description: str) -> SweepProgress:
        """Say where the runs go (if not the local default); the progress bar."""
        if description:
            self.console.print(description, soft_wrap=True)
        self.progress = SweepProgress(self.console, self.grid_keys)
        return self.progress

    def started(self, total: int) -> None:
        """Begin the progress bar."""
        assert self.progress is not None
        self.progress.start(total)

    def finished(self, run: RunConfig, result: RunResult) -> None:
        """One line per finished run."""
        assert self.progress is not None
        self.progress.advance(run, result)

    def retrying(self, run: RunConfig, attempt: int, cause: str) -> None:
        """A run lost with its worker is resubmitted."""
        assert self.progress is not None
        self.progress.progress.console.print(
            f"[yellow]retry {attempt}/{self.retries}[/] {run.run_id}  {cause}", soft_wrap=True
        )


def _skipped_text(outcome: Outcome) -> str:
    """Skipped complete runs, with their stored statuses where some did not go ok."""
    stored = outcome.counts(skipped=True)
    shown = ", ".join(f"{stored[s]} {s}" for s in ("diverged", "failed") if stored[s])
    return f"{len(outcome.skipped)} ({shown})" if shown else str(len(outcome.skipped))


def print_sweep_summary(console: Console, outcome: Outcome) -> None:
    """Status counts and wall time of a finished sweep."""
    table = Table(title="sweep summary", show_header=True)
    for column in ("ok", "diverged", "failed", "skipped (complete)", "wall time"):
        table.add_column(column, justify="right")
    counts = outcome.counts()
    table.add_row(
        str(counts["ok"]),
        str(counts["diverged"]),
        str(counts["failed"]),
        _skipped_text(outcome),
        f"{outcome.seconds:.1f} s",
    )
    console.print(table)


def _params_text(params: Any) -> str:
    fields = params.model_fields
    return ", ".join(f"{name}={field.default!r}" for name, field in fields.items()) or "-"


def _init_name(name: str, entry: Any) -> str:
    return f"{name} (data-dependent)" if entry.data_dependent else name


def _registry_rows(topic: str) -> tuple[list[str], list[list[str]]]:
    from initbench.config.catalogue import CATALOGUES

    registry = CATALOGUES[topic]
    if topic == "initializers":
        header = ["name", "formula", "parameters (defaults)", "convention"]
        rows = [
            [_init_name(n, e), e.formula, _params_text(e.params), e.convention]
            for n, e in registry.items()
        ]
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
    from initbench.results import schema

    if topic == "metrics":
        header = ["metric", "table", "definition"]
        rows = [[m, "layers", d] for m, d in schema.LAYER_METRICS.items()]
        rows += [[m, "curves", d] for m, d in schema.CURVE_METRICS.items()]
        rows += [[m, "spectra", d] for m, d in schema.SPECTRA_METRICS.items()]
    else:
        header, rows = _registry_rows(topic)
    from initbench.config.architectures import GATE_BLOCKS_NOTE

    caption = GATE_BLOCKS_NOTE if topic in ("initializers", "architectures") else None
    table = Table(title=topic, caption=caption, show_lines=False, title_justify="left")
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
