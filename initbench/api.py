"""initbench from Python: run a sweep, load its results, report them, ask the theory.

Each function does what the command of the same name does, with the same checks and
the same files written, and raises where the command exits: SpecError (a bad spec or
override), DataError (missing or corrupt data), ResultsError (a results folder that cannot
be read or written), ExecutorError (executor options that cannot work), ReportError and
TheoryError (bad report or theory arguments), each importable from here (``api.SpecError``).
Importing this module loads nothing heavy: each function imports what it needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from initbench.analysis import Thresholds
    from initbench.analysis.tidy import Results
    from initbench.config.spec import RunConfig, Spec
    from initbench.results.schema import RunResult
    from initbench.sweep.executors import ExecutorOptions
    from initbench.sweep.runner import Plan

# Exception name -> the module that defines it; each is imported on first use.
# A name exported here -> the module that defines it (and the name there, where another).
_ALIASES: dict[str, tuple[str, str]] = {
    "prediction": ("initbench.meanfield", "predict_for"),
    "depth_scales": ("initbench.meanfield", "depth_scales"),
}
_LAZY: dict[str, str] = {
    "Results": "initbench.analysis.tidy",
    "SpecError": "initbench.config.spec",
    "DataError": "initbench.data",
    "ResultsError": "initbench.results.store",
    "ExecutorError": "initbench.sweep.executors",
    "ReportError": "initbench.reporting",
    "TheoryError": "initbench.meanfield",
}

__all__ = ["Hooks", "Outcome", "load", "phase_diagram", "report", "run", "theory"]
__all__ += ["validate", *_LAZY, *_ALIASES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _ALIASES:
        module, attribute = _ALIASES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# --- run -------------------------------------------------------------------------------------


def _ignore(*args: Any) -> None:
    """A hook that does nothing."""


@dataclass(frozen=True)
class Hooks:
    """How a front end follows :func:`run` (the command line's progress bar); each hook
    does nothing by default.

    planned(plan): the sweep is planned (``plan.todo``, ``plan.done``) and nothing is
        written yet; raise to stop here.
    opened(description): the executor is up; ``description`` says where runs go ('' for
        the local default). Returns the context that the runs execute in (a progress bar).
    started(total): the runs begin. finished(run, result): one run is written.
    retrying(run, attempt, cause): a run lost with its worker is resubmitted.
    """

    planned: Callable[[Plan], None] = _ignore
    opened: Callable[[str], AbstractContextManager[Any]] = lambda _: contextlib.nullcontext()
    started: Callable[[int], None] = _ignore
    finished: Callable[[RunConfig, RunResult], None] = _ignore
    retrying: Callable[[RunConfig, int, str], None] = _ignore


@dataclass(frozen=True, repr=False)
class Outcome:
    """What one sweep did: each run's status by run id, and where the results are.

    ``statuses``: the runs this sweep executed (ok, diverged or failed), in the order they
    finished. ``skipped``: the runs already complete, which it left as they were, with
    their stored status. ``errors``: the failed runs' errors. ``seconds``: wall time.
    """

    experiment: str
    path: Path
    statuses: dict[str, str]
    skipped: dict[str, str]
    errors: dict[str, str]
    seconds: float

    def runs(self, status: str, skipped: bool = False) -> tuple[str, ...]:
        """Run ids with ``status`` in this sweep, and with ``skipped`` among those skipped."""
        found = [r for r, s in self.statuses.items() if s == status]
        return (*found, *(r for r, s in self.skipped.items() if s == status and skipped))

    @property
    def ok(self) -> tuple[str, ...]:
        """Runs of this sweep that trained to the end."""
        return self.runs("ok")

    @property
    def diverged(self) -> tuple[str, ...]:
        """Runs of this sweep whose loss or a statistic went non-finite."""
        return self.runs("diverged")

    @property
    def failed(self) -> tuple[str, ...]:
        """Runs of this sweep that raised (see ``errors``) or whose worker was lost."""
        return self.runs("failed")

    @property
    def lost(self) -> tuple[str, ...]:
        """Runs of this sweep recorded failed because their worker process died at every
        attempt (killed for memory, say), not because training failed."""
        from initbench.sweep.executors import WORKER_LOST

        return tuple(r for r, e in self.errors.items() if e.startswith(WORKER_LOST))

    def counts(self, skipped: bool = False) -> Counter[str]:
        """Runs per status: this sweep's, or (``skipped``) the skipped runs' stored ones."""
        return Counter((self.skipped if skipped else self.statuses).values())

    def unsuccessful(self, skipped: bool = True) -> tuple[str, ...]:
        """Runs that failed or diverged: this sweep's and (``skipped``) the skipped ones."""
        return (*self.runs("failed", skipped), *self.runs("diverged", skipped))

    def __repr__(self) -> str:
        from initbench.results.schema import STATUSES

        counts = self.counts()
        done = ", ".join(f"{counts[s]} {s}" for s in STATUSES)
        return (
            f"Outcome({self.experiment}: {done}, {len(self.skipped)} skipped as complete, "
            f"{self.seconds:.1f} s -> {self.path})"
        )


def run(
    spec: str | Path | Spec,
    out: str | Path = "results",
    overrides: Iterable[str] = (),
    workers: int | None = None,
    *,
    device: str = "cpu",
    force: bool = False,
    hooks: Hooks | None = None,
    **options: Any,
) -> Outcome:
    """Train every run of ``spec`` into ``out/<spec name>/``, as ``initbench run`` does.

    spec: a spec file, or a Spec from :func:`validate`. overrides: ``"KEY=VALUE"`` texts
    as for ``--set``, e.g. ``["train.steps=20", "seeds=1"]``. workers: runs in parallel
    (default: 1 locally, cores / cpus_per_run for Dask). device: 'cpu', 'cuda' or 'auto'.
    force: redo complete runs, which are otherwise skipped (so a sweep resumes). options:
    the other executor options of ``initbench run`` by their Python names (executor,
    threads, scheduler, cpus_per_run, retries, jobs, ...). hooks: see :class:`Hooks`.

    A run that fails or diverges is recorded and the sweep goes on; the :class:`Outcome`
    says which. Raises before anything is written: SpecError, DataError, ExecutorError,
    ResultsError (``out`` unwritable or not an experiment folder, another process writing
    there); later ResultsError if a result cannot be written. Runs finished before an
    error or Ctrl-C stay complete.
    """
    hooks = hooks or Hooks()
    executor = _executor_options(workers, options)
    _check_device(device)
    loaded = _load_spec(spec, overrides)
    executor = _with_default_workers(executor, loaded)
    if executor.executor == "local" and executor.local_workers() > 1:
        from initbench.sweep.executors import prestart_workers

        prestart_workers()  # the workers import torch while this process plans
    sweep = _plan(validate(loaded, parallel=_parallel(executor)), Path(out), force)
    hooks.planned(sweep)
    return _execute(sweep, executor, device, hooks)


def _load_spec(spec: str | Path | Spec, overrides: Iterable[str]) -> Spec:
    """The spec, read and validated as a document (its data and sizes are checked later)."""
    from initbench.config.spec import Spec, load_spec

    if isinstance(spec, Spec):
        if list(overrides):
            raise ValueError(
                "overrides apply to a spec file: pass its path, or validate(path, overrides)"
            )
        return spec
    if not isinstance(spec, str | Path):
        raise TypeError(f"spec: expected a path or a Spec, got {type(spec).__name__}")
    return load_spec(Path(spec), [overrides] if isinstance(overrides, str) else overrides)


def _with_default_workers(executor: ExecutorOptions, spec: Spec) -> ExecutorOptions:
    """Local workers left to their default: one per core for a sweep long enough to repay
    starting them (PARALLEL_WORTH) whose runs are not shorter than their processes'
    start (SHORT_RUN), else this process alone."""
    from initbench.sweep.runner import PARALLEL_WORTH, SHORT_RUN, estimated_seconds

    if executor.executor != "local" or executor.workers is not None:
        return executor
    serial = sum(estimated_seconds(run) for run in spec.runs)
    worth = serial >= PARALLEL_WORTH and serial >= SHORT_RUN * len(spec.runs)
    workers = executor.local_workers() if worth else 1
    return dataclasses.replace(executor, workers=workers)


def validate(
    spec: str | Path | Spec, overrides: Iterable[str] = (), *, parallel: int | None = 1
) -> Spec:
    """Read and check ``spec`` as ``initbench validate`` does, writing nothing: the spec
    itself, each initializer against its weights, the data (loaded once per dataset),
    every batch size, and that ``parallel`` of its largest runs fit in this machine's
    memory (None: the runs go to other machines, not checked). Returns the Spec;
    ``spec.runs`` are the resolved run configs.

    Raises SpecError (every problem, each located at its line, grid value or override)
    or DataError (the data files are missing or corrupt). ``overrides`` apply to a spec
    file only: a Spec passed in is already resolved (ValueError)."""
    from initbench.data import DataError
    from initbench.sweep.runner import check_data, check_initializers, check_memory

    loaded = _load_spec(spec, overrides)
    source = loaded.source
    check_initializers(loaded)
    if parallel is not None:
        check_memory(loaded, parallel)
    try:
        check_data(loaded)
    except DataError as exc:
        raise DataError(f"{source}: data: {exc}") from exc
    return loaded


_COUNTS = {"workers": 1, "threads": 1, "cpus_per_run": 1, "jobs": 1, "retries": 0}  # minimum


def _executor_options(workers: int | None, options: Mapping[str, Any]) -> ExecutorOptions:
    """The executor options given to :func:`run`, checked (ExecutorError, with the fix)."""
    from initbench.sweep.executors import ExecutorError, ExecutorOptions, check_options

    _refuse_unknown(
        "run", options, [f.name for f in fields(ExecutorOptions) if f.name != "workers"]
    )
    given = {**options, **({} if workers is None else {"workers": workers})}
    for name, least in _COUNTS.items():
        value = given.get(name, least)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ExecutorError(f"{name} must be a whole number, got {value!r}")
        if value is not None and value < least:
            raise ExecutorError(f"{name} must be at least {least}, got {value}")
    executor = ExecutorOptions(**given)
    check_options(executor, given)
    return executor


def _parallel(executor: ExecutorOptions) -> int | None:
    """Runs this machine holds at once; None where they run elsewhere (a Dask scheduler
    given by address, Slurm jobs)."""
    if executor.executor == "slurm" or executor.scheduler:
        return None
    if executor.executor == "local":
        return executor.local_workers()
    return executor.fitting_workers()


def _check_device(device: str) -> None:
    """ExecutorError, before anything is written, for a device that is not there."""
    from initbench.sweep.executors import ExecutorError

    if device not in ("cpu", "cuda", "auto"):
        raise ExecutorError(f"--device must be cpu, cuda or auto, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ExecutorError(
                f"--device cuda: torch {torch.__version__} sees no CUDA device here; "
                "use --device cpu, or --device auto (CUDA where there is one, else the CPU)"
            )


def _refuse_unknown(function: str, given: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(
            f"{function}() got unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )


def _check_out(out: Path) -> None:
    """Raise ResultsError unless ``out`` is, or can be made, a folder this process can
    write. Creates nothing: the sweep makes it when it writes its first file, so a sweep
    refused before that leaves nothing behind."""
    from initbench.results.store import ResultsError

    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out}: exists and is not a folder")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ResultsError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ResultsError(f"--out {out}: cannot write there (permission denied)")


def _plan(spec: Spec, out: Path, force: bool) -> Plan:
    from initbench.sweep.runner import plan

    _check_out(out)
    return plan(spec, out, force)


def _execute(sweep: Plan, executor: ExecutorOptions, device: str, hooks: Hooks) -> Outcome:
    from initbench.sweep.executors import open_backend
    from initbench.sweep.runner import execute

    with open_backend(executor, len(sweep.todo)) as backend, hooks.opened(backend.describe()):
        report = execute(
            sweep,
            device=device,
            on_start=hooks.started,
            on_result=hooks.finished,
            backend=backend,
            on_retry=hooks.retrying,
        )
    done = report.results
    return Outcome(
        sweep.spec.name,
        sweep.experiment_dir,
        {r["run_id"]: r["status"] for r in done},
        dict(zip(sweep.done, sweep.done_statuses, strict=True)),
        {r["run_id"]: r["error"] for r in done if r["status"] == "failed"},
        report.seconds,
    )


# --- load ------------------------------------------------------------------------------------


def load(path: str | Path) -> Results:
    """Load the results at ``path``: a results folder (every experiment in it) or one
    experiment folder, as pandas tables (see :class:`Results`).

    Raises ResultsError when ``path`` does not exist, holds no experiment folder, or none
    of its runs is complete, and when a run was written by a newer initbench. A run
    that cannot be read is left out with a warning and listed in ``unreadable``.
    """
    from initbench.analysis.tidy import load_results

    return load_results(path)


# --- report ----------------------------------------------------------------------------------


def report(
    path: str | Path,
    format: str = "markdown",
    *,
    per_layer: bool = False,
    select: Sequence[str] | Mapping[str, Any] = (),
    plots: str | Path | None = None,
    rows: str | None = None,
    cols: str | None = None,
    **thresholds: float,
) -> str:
    """The report of the results at ``path`` (a results folder or one experiment), as
    ``initbench report`` prints it, returned as text.

    format: markdown, terminal (plain text), csv, json, html (figures embedded) or latex.
    per_layer: add the layer-by-layer tables behind each verdict. select: only these
    configurations: ``{"model.depth": 30, "model.init": ["he_normal", "xavier_normal"]}``
    or ``["model.depth=30"]``. plots: also write every figure as PNG into this folder.
    rows, cols: the Answer's axes (config keys; default: chosen from the grid).
    thresholds: any of ratio, factor, dead, saturated, chance_margin, loss_margin,
    trained_fraction, init_tolerance, theory_tolerance (see ``initbench report --help``).

    Raises ResultsError (no results there), ReportError (bad format or select) or
    ValueError (a threshold out of range).
    """
    import io

    from initbench.reporting import generate

    text = io.StringIO()
    generate(
        Path(path),
        fmt=format,
        plots=None if plots is None else Path(plots),
        per_layer=per_layer,
        select=_select_texts(select),
        thresholds=_thresholds(thresholds),
        stream=text,
        rows=rows,
        cols=cols,
    )
    return text.getvalue()


def _thresholds(values: Mapping[str, float]) -> Thresholds:
    from initbench.analysis import Thresholds

    _refuse_unknown("report", values, [f.name for f in fields(Thresholds)])
    return Thresholds(**values)


def _select_texts(select: Sequence[str] | Mapping[str, Any]) -> list[str]:
    """``select`` as ``--select`` texts: a mapping's values (one, or a list of them)
    written as the report writes config values."""
    if not isinstance(select, Mapping):
        return [select] if isinstance(select, str) else list(select)
    from initbench.analysis import format_value

    listed = {k: v if isinstance(v, list | tuple | set) else [v] for k, v in select.items()}
    return [f"{key}={format_value(v)}" for key, values in listed.items() for v in values]


# --- theory ----------------------------------------------------------------------------------


def theory(
    activation: str | Mapping[str, Any],
    init: str | Mapping[str, Any],
    depth: int,
    width: int,
    arch: str = "mlp",
    **options: Any,
) -> pd.DataFrame:
    """The mean-field prediction of per-layer variance at initialisation, as
    ``initbench theory`` prints it: a DataFrame with a row per layer (rnn: per layer and
    time step), whose columns ``theory.COLUMN_HELP`` defines.

    activation, init, recurrent_init: a registry name or ``{"name": ..., **params}``.
    options: q1 (layer 1's preact second moment; default: standardised inputs),
    sigma_b2 (bias variance, 0), batchnorm (False), recurrent_init (rnn; default init),
    padding_correction (cnn zero padding, True).

    ``frame.attrs`` holds the ``summary`` (fixed point q_star, chi_star = chi_1, c_star,
    chi_c, the depth scales xi_q and depth_scale = xi_c, regime, note; forward and backward
    decay per layer), the ``notes`` on what was assumed, ``q1``,
    ``sigma_b2`` and the ``model``. Raises TheoryError for a bad argument, and when the
    theory makes no prediction (non-zero-mean or constant weights), with the reason.
    """
    from initbench.meanfield import TheoryError, predict_for

    pred = predict_for(activation, init, depth, width, arch, **options)
    if not pred.ok:
        raise TheoryError(f"no prediction: {pred.reason}")
    frame = pred.frame()
    frame.attrs.update(summary=pred.summary(), notes=list(pred.notes), model=pred.model)
    frame.attrs.update(q1=pred.q1, sigma_b2=pred.sigma_b2)
    return frame


def phase_diagram(
    activation: str | Mapping[str, Any],
    out: str | Path,
    results: str | Path | None = None,
    resolution: int | None = None,
) -> tuple[list[Path], str | None]:
    """The order-to-chaos phase diagram of ``activation`` over the (sigma_w^2, sigma_b^2)
    plane, as ``initbench theory --phase-diagram`` writes it into ``out``: the plane's
    table (q*, chi_1, c*, chi_c, xi_q, xi_c and the phase at every point), the critical
    line and a figure of xi_c with its contours.

    results: a results folder (or one experiment's) of mlp runs: their trainability
    (``initbench report``'s verdict) is drawn beside depth = 6 xi_c (Schoenholz et al.
    2017) and written to measured.csv. resolution: points per axis (default
    ``meanfield.phase.RESOLUTION``). Returns the paths written and, with results, the
    answer: whether depth ~6 xi_c bounds what trained. Raises TheoryError for a bad
    activation or results without mlp runs, ResultsError for an unreadable folder.
    """
    from initbench.meanfield.phase import RESOLUTION
    from initbench.reporting.phase import write_phase_diagram

    where = Path(results) if results is not None else None
    return write_phase_diagram(activation, Path(out), where, resolution or RESOLUTION)
