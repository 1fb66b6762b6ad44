"""Where a sweep's runs execute: in this process, a local process pool, a Dask cluster, Slurm.

Every executor calls the same top-level function, :func:`initbench.sweep.train.execute_run`, on a
plain resolved-config dict, and hands the RunResult back to the driver, which alone writes
results (see :mod:`initbench.sweep.runner`). Local worker processes and Dask share one loop
(:func:`stream`) over standard ``concurrent.futures`` futures (Dask's through
``Client.get_executor()``): results are yielded as they finish, a run lost with its worker
is resubmitted up to ``retries`` times and then yielded as ``failed`` with the cause.

Dask and Slurm live in :mod:`initbench.sweep.cluster`, imported only when asked for.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    wait,
)
from dataclasses import dataclass
from typing import Final, Protocol

from initbench.config.spec import RunConfig
from initbench.results import schema
from initbench.results.summary import make_summary

EXECUTORS: Final = ("local", "dask", "slurm")
INSTALL_EXTRA: Final = 'pip install "initbench[dask]"'
# Torch threads of a local run unless --threads says otherwise. One: on a shared 2-core
# machine a depth-20 run took 29.2 s with two threads and 7.8 s with one (two threads
# spin against the other load), and a sweep gains more from a run per core.
LOCAL_THREADS: Final = 1

# Option name -> the executors it applies to; given with another one it is an error.
OPTION_EXECUTORS: Final[dict[str, tuple[str, ...]]] = {
    "workers": ("local", "dask"),
    "threads": ("local",),
    "scheduler": ("dask",),
    "cpus_per_run": ("dask", "slurm"),
    "retries": ("local", "dask", "slurm"),
    "jobs": ("slurm",),
    "partition": ("slurm",),
    "walltime": ("slurm",),
    "memory": ("slurm",),
    "account": ("slurm",),
}

_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")  # the forms sbatch --time accepts

WORKER_LOST: Final = "worker lost"  # how the error of a run lost with its worker begins
RunPair = tuple[RunConfig, schema.RunResult]
OnRetry = Callable[[RunConfig, int, str], None]  # run, attempt number (1 = first retry), cause


class ExecutorError(Exception):
    """Executor options that cannot work: unknown executor, misplaced option, missing extra,
    unreachable scheduler. The message says how to fix it."""


@dataclass(frozen=True)
class ExecutorOptions:
    """Where and how runs execute (the ``initbench run`` executor options)."""

    executor: str = "local"
    workers: int | None = None  # local: processes; dask without --scheduler: cluster workers
    threads: int | None = None  # local: torch threads per run (None: LOCAL_THREADS)
    scheduler: str | None = None  # dask: address of a running scheduler
    cpus_per_run: int = 1  # dask, slurm: torch threads per run, cores each run holds
    retries: int = 2  # resubmissions of a run lost with its worker (local, dask, slurm)
    jobs: int = 1  # slurm: jobs, one Dask worker each
    partition: str | None = None
    walltime: str = "01:00:00"
    memory: str = "4GB"
    account: str | None = None

    def local_workers(self) -> int:
        """Local runs at once: ``workers``, else one per core (each run one thread, so a
        busy machine slows them evenly instead of thrashing torch's thread pools)."""
        return self.workers or os.cpu_count() or 1

    def fitting_workers(self) -> int:
        """Workers of a local Dask cluster: ``workers``, else as many as the cores hold
        runs of ``cpus_per_run`` cores."""
        return self.workers or max(1, (os.cpu_count() or 1) // self.cpus_per_run)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(options: ExecutorOptions, given: Iterable[str] = ()) -> None:
    """Raise ExecutorError for an unknown executor, an option given (``given``: option
    names set on the command line) that applies only to another executor, a bad Slurm
    value, or a missing Dask extra."""
    kind = options.executor
    if kind not in EXECUTORS:
        raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    misplaced = [n for n in given if n in OPTION_EXECUTORS and kind not in OPTION_EXECUTORS[n]]
    if misplaced:
        details = "; ".join(
            f"{_flag(n)} applies to --executor {' or '.join(OPTION_EXECUTORS[n])}"
            for n in misplaced
        )
        raise ExecutorError(f"not an option of --executor {kind}: {details}")
    if kind == "dask" and options.scheduler and "workers" in given:
        raise ExecutorError(
            "--workers sets the size of the local Dask cluster; with --scheduler the cluster's "
            "own workers run the runs (leave out --workers)"
        )
    if kind != "local":
        require_extra(kind)
    if kind == "slurm":
        _check_slurm_values(options)


def require_extra(kind: str) -> None:
    """Raise ExecutorError, with the install command, if the Dask extra is missing."""
    modules = ["distributed"] + (["dask_jobqueue"] if kind == "slurm" else [])
    missing = []
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            missing.append(f"{module} cannot be imported: {exc}")
    if missing:  # every missing module named at once, so one install fixes all
        raise ExecutorError(
            f"--executor {kind} needs the optional Dask extra ({'; '.join(missing)}); "
            f"install it with: {INSTALL_EXTRA}"
        )


def _check_slurm_values(options: ExecutorOptions) -> None:
    from dask.utils import parse_bytes

    if not _WALLTIME.match(options.walltime):
        raise ExecutorError(
            f"--walltime {options.walltime!r}: use Slurm's forms, e.g. 01:30:00, 90, 2-00:00:00"
        )
    try:
        parse_bytes(options.memory)
    except (ValueError, TypeError):
        raise ExecutorError(
            f"--memory {options.memory!r}: give a size such as 4GB or 500MB"
        ) from None


# --- the shared loop ---------------------------------------------------------------------


def failed_result(run: RunConfig, experiment: str, message: str) -> schema.RunResult:
    """The RunResult recorded for a run that produced none (its worker was lost)."""
    summary = make_summary(run, experiment, status="failed", steps_done=0, error=message)
    return schema.RunResult(run.run_id, run.as_dict(), summary)


def cause_of(exc: BaseException) -> str:
    """'Type: message' of an exception, for a run's recorded error."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def stream(
    submit: Callable[[RunConfig, int], Future[schema.RunResult]],
    runs: Iterable[RunConfig],
    experiment: str,
    retries: int,
    lost: tuple[type[BaseException], ...],
    on_retry: OnRetry,
    check: Callable[[], None] = lambda: None,
) -> Generator[RunPair, None, None]:
    """Submit every run (``submit(run, attempt)``) and yield (run, result) as each finishes.

    A future that raises one of ``lost`` (its worker died) is resubmitted up to ``retries``
    times, then yielded as ``failed`` with the cause; any other exception (the task could
    not run on the worker) is yielded as ``failed`` at once. ``check()`` runs on every
    loss and may raise to stop the sweep (the cluster itself is gone). The caller cancels
    what is still pending when the generator stops early.
    """
    pending: dict[Future[schema.RunResult], tuple[RunConfig, int]] = {
        submit(run, 0): (run, 0) for run in runs
    }
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            run, attempt = pending.pop(future)
            result, cause = _settle(future, run, attempt, experiment, retries, lost)
            if cause:
                check()
            if result is None:
                on_retry(run, attempt + 1, cause)
                result = _resubmit(submit, pending, run, attempt + 1, experiment, cause)
            if result is not None:
                yield run, result


def _resubmit(
    submit: Callable[[RunConfig, int], Future[schema.RunResult]],
    pending: dict[Future[schema.RunResult], tuple[RunConfig, int]],
    run: RunConfig,
    attempt: int,
    experiment: str,
    cause: str,
) -> schema.RunResult | None:
    """Submit ``run`` again into ``pending``; None, or its failed result if that fails."""
    try:
        pending[submit(run, attempt)] = (run, attempt)
    except Exception as exc:  # the cluster is gone: nowhere to resubmit
        return failed_result(run, experiment, f"{cause}; not resubmitted: {cause_of(exc)}")
    return None


def _settle(
    future: Future[schema.RunResult],
    run: RunConfig,
    attempt: int,
    experiment: str,
    retries: int,
    lost: tuple[type[BaseException], ...],
) -> tuple[schema.RunResult | None, str]:
    """A finished future's RunResult, or (None, cause) when the run is to be resubmitted."""
    try:
        return future.result(), ""
    except lost as exc:
        cause = f"{WORKER_LOST}{_times(attempt)}: {cause_of(exc)}"
        return (failed_result(run, experiment, cause) if attempt >= retries else None), cause
    except Exception as exc:  # the task could not run there; retrying would not help
        return failed_result(run, experiment, f"error on the worker: {cause_of(exc)}"), ""


def _times(attempt: int) -> str:
    return "" if attempt == 0 else f" {attempt + 1} times ({attempt} retries)"


# --- backends ------------------------------------------------------------------------------


class Backend(Protocol):
    """Somewhere runs execute; yields (run, result) pairs as they finish."""

    def describe(self) -> str:
        """One line for the terminal ('' for the local default)."""
        ...

    def results(
        self, runs: tuple[RunConfig, ...], experiment: str, device: str, on_retry: OnRetry
    ) -> Generator[RunPair, None, None]:
        """Execute ``runs``; closing the generator early abandons the runs in flight."""
        ...


@dataclass(frozen=True)
class InProcess:
    """Runs one after another in this process."""

    threads: int | None = None

    def describe(self) -> str:
        """Nothing to say: the default."""
        return ""

    def results(
        self, runs: tuple[RunConfig, ...], experiment: str, device: str, on_retry: OnRetry
    ) -> Generator[RunPair, None, None]:
        """Execute ``runs`` in order, here."""
        from initbench.sweep.train import execute_run

        for run in runs:
            yield run, execute_run(run.as_dict(), experiment, device, self.threads)


# Imported once by the forkserver, which forks the pool's workers: torch, initbench and
# torch._dynamo, which torch.optim imports when the first optimizer is built (2 s here).
FORKSERVER_PRELOAD: Final = ["initbench.sweep.train", "torch._dynamo"]


def prestart_workers() -> None:
    """Start the worker processes' forkserver now, importing FORKSERVER_PRELOAD in the
    background while this process plans the sweep, so the workers are forked with
    everything imported instead of each importing it after the plan (about 4 s per
    command on 2 cores). Importing runs no torch computation, so forking after it is
    safe; nothing happens where forkserver is unavailable (workers are spawned).

    The forkserver starts with SIGINT ignored (an ignored signal stays ignored across
    exec): Ctrl-C, which reaches the whole process group, is the driver's to handle, and
    would otherwise print a traceback from the forkserver's preload."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)


@dataclass(frozen=True)
class LocalProcesses:
    """Runs in local worker processes, ``workers`` at a time, each run in a process of its
    own (:mod:`initbench.sweep.processes`): a run lost with its process is resubmitted up to
    ``retries`` times, and the others go on."""

    workers: int
    threads: int
    retries: int

    def describe(self) -> str:
        """Nothing to say: the default."""
        return ""

    def results(
        self, runs: tuple[RunConfig, ...], experiment: str, device: str, on_retry: OnRetry
    ) -> Generator[RunPair, None, None]:
        """Execute ``runs`` in worker processes; closing the generator (Ctrl-C, SIGTERM, an
        early stop) terminates the runs in flight."""
        from initbench.sweep.processes import RunProcesses, WorkerLost, context
        from initbench.sweep.train import execute_run

        pool = RunProcesses(self.workers, execute_run, context())

        def submit(run: RunConfig, attempt: int) -> Future[schema.RunResult]:
            return pool.submit(run.as_dict(), experiment, device, self.threads)

        try:
            yield from stream(submit, runs, experiment, self.retries, (WorkerLost,), on_retry)
        finally:
            pool.shutdown()


def local_backend(workers: int, threads: int | None, runs: int, retries: int) -> Backend:
    """The default: worker processes for several workers and runs, else this process."""
    if workers > 1 and runs > 1:
        return LocalProcesses(min(workers, runs), threads or LOCAL_THREADS, retries)
    return InProcess(threads or LOCAL_THREADS)


# --- opening an executor -----------------------------------------------------------------


@contextlib.contextmanager
def open_backend(options: ExecutorOptions, runs: int) -> Iterator[Backend]:
    """The backend for ``options`` and ``runs`` runs to do, closed (cluster included) on
    exit. Raises ExecutorError if it cannot start (bad options, missing extra, scheduler
    out of reach, no sbatch). Starts no cluster when there is nothing to run."""
    check_options(options)
    if options.executor == "local":
        yield local_backend(options.local_workers(), options.threads, runs, options.retries)
        return
    if runs == 0:
        yield InProcess()
        return
    from initbench.sweep.cluster import DaskBackend, connect

    with contextlib.ExitStack() as stack:
        client, description = connect(options, runs, stack)
        address = client.scheduler.address
        yield DaskBackend(client, options.cpus_per_run, options.retries, description, address)
