"""Dask and Slurm: runs as tasks of a Dask cluster (a running scheduler, a local cluster,
or Slurm jobs through dask-jobqueue), through the same loop as local workers
(:func:`initbench.sweep.executors.stream`).

Dask (``distributed``, ``dask-jobqueue``) is an optional extra, imported only inside the
functions that need it: ``initbench --help`` and local runs never import it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from collections.abc import Generator, Iterator
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass
from typing import Any, Final

from initbench.config.spec import RunConfig
from initbench.results import schema
from initbench.sweep.executors import (
    ExecutorError,
    ExecutorOptions,
    OnRetry,
    RunPair,
    cause_of,
    stream,
)

CONNECT_TIMEOUT: float = 10.0  # seconds to reach a --scheduler before giving up

# Scheduler settings of the clusters initbench starts: a worker's death fails its task at
# once (KilledWorker), so --retries alone decides how often a run is resubmitted; and a
# one-thread worker holds one run at a time, so a death loses only the run it was running.
SCHEDULER_CONFIG: Final[dict[str, Any]] = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
}


@dataclass
class DaskBackend:
    """Runs as tasks of a Dask cluster, through ``Client.get_executor()``."""

    client: Any
    threads: int
    retries: int
    description: str
    address: str = ""

    def describe(self) -> str:
        """Where the runs go."""
        return self.description

    def results(
        self, runs: tuple[RunConfig, ...], experiment: str, device: str, on_retry: OnRetry
    ) -> Generator[RunPair, None, None]:
        """Execute ``runs`` on the cluster; Ctrl-C or an early stop cancels what is pending."""
        from initbench.sweep.train import execute_run

        executor: Executor = self.client.get_executor(pure=False, retries=0)
        token = uuid.uuid4().hex[:8]

        def submit(run: RunConfig, attempt: int) -> Future[schema.RunResult]:
            key = f"initbench-{run.run_id}-{token}-{attempt}"
            return executor.submit(
                execute_run, run.as_dict(), experiment, device, self.threads, key=key
            )

        lost = _dask_lost()
        try:
            yield from stream(submit, runs, experiment, self.retries, lost, on_retry, self._check)
        finally:
            with contextlib.suppress(Exception):  # a lost client has nothing left to cancel
                executor.shutdown(wait=False)  # cancels every task still pending

    def _check(self) -> None:
        """Stop the sweep when the scheduler itself is lost: every pending run would be lost
        with it, and a run recorded failed would not be redone by a re-run."""
        if self.client.status != "running":
            raise ExecutorError(
                f"lost the connection to the Dask scheduler at {self.address}; every finished "
                "run is written and complete; once the scheduler is back, run the same command "
                "again to do only what is missing"
            )


def _dask_lost() -> tuple[type[BaseException], ...]:
    """The exceptions of a task lost with its worker or its scheduler connection."""
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    return (KilledWorker, CommClosedError, CancelledError)


def connect(options: ExecutorOptions, runs: int, stack: contextlib.ExitStack) -> tuple[Any, str]:
    """A Dask client for ``options`` (closed by ``stack``) and a line saying where it is."""
    from distributed import Client

    if options.executor == "dask" and options.scheduler:
        client = stack.enter_context(_scheduler_client(options.scheduler))
        workers = len(client.scheduler_info().get("workers", {}))
        return client, f"dask: scheduler {options.scheduler}, {workers} worker(s) now"
    if options.executor == "dask":
        cluster = stack.enter_context(local_cluster(options, runs))
        workers = len(cluster.workers)
        where = f"dask: local cluster, {workers} worker(s) x {options.cpus_per_run} cpu"
    else:
        if shutil.which("sbatch") is None:
            raise ExecutorError(
                "--executor slurm submits Slurm jobs, but sbatch is not on PATH here; run "
                "initbench on a machine that can submit jobs (a login node)"
            )
        cluster = stack.enter_context(slurm_cluster(options))
        cluster.scale(jobs=options.jobs)
        where = _slurm_description(options)
    client = stack.enter_context(Client(cluster, set_as_default=False))
    return client, where


def _slurm_description(options: ExecutorOptions) -> str:
    partition = options.partition or "default partition"
    return (
        f"slurm: {options.jobs} job(s) submitted ({partition}, {options.cpus_per_run} cpu, "
        f"{options.memory}, {options.walltime}), one Dask worker each; runs start as jobs start"
    )


@contextlib.contextmanager
def _scheduler_client(address: str) -> Iterator[Any]:
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ExecutorError(
            f"--scheduler {address}: cannot reach a Dask scheduler there within "
            f"{CONNECT_TIMEOUT:g} s ({cause_of(exc)}); check the address (e.g. tcp://host:8786) "
            "and that the scheduler is running, or leave out --scheduler to start a local cluster"
        ) from None
    with client:
        yield client


def local_cluster(options: ExecutorOptions, runs: int) -> Any:
    """A LocalCluster of worker processes with one thread each: ``--workers``, or as many
    as the cores hold runs of ``--cpus-per-run`` cores (never more than ``runs``)."""
    import dask
    from distributed import LocalCluster

    workers = max(1, min(options.fitting_workers(), runs))
    with dask.config.set(SCHEDULER_CONFIG):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # not 8787: may be taken
            silence_logs=logging.ERROR,
        )


def slurm_cluster(options: ExecutorOptions) -> Any:
    """A dask-jobqueue SLURMCluster whose every job is one Dask worker that runs one run at
    a time with ``--cpus-per-run`` cores, so many runs share a job. Settings without an
    option (network interface, extra #SBATCH lines, prologue lines) come from
    dask-jobqueue's configuration. Submits nothing until scaled; ``job_script()`` shows
    the batch script."""
    import dask
    from dask_jobqueue import SLURMCluster

    cpus = options.cpus_per_run
    prologue = list(dask.config.get("jobqueue.slurm.job-script-prologue", None) or [])
    with dask.config.set(SCHEDULER_CONFIG):
        return SLURMCluster(
            cores=1,  # the worker's task slots: one run at a time ...
            job_cpu=cpus,  # ... holding this many cores (sbatch --cpus-per-task)
            processes=1,
            memory=options.memory,
            walltime=options.walltime,
            queue=options.partition,
            account=options.account,
            job_name="initbench",
            job_script_prologue=[*prologue, f"export OMP_NUM_THREADS={cpus}"],
            scheduler_options={"dashboard": False, "dashboard_address": ":0"},
        )
