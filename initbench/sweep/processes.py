"""Local parallel runs: each run in a fresh worker process, a few at a time.

A process per run, rather than a pool, so that a lost worker loses exactly one known run:
a run whose process dies (an out-of-memory kill, a segfault) fails its future with
:class:`WorkerLost`, naming the signal, and the shared loop
(:func:`initbench.sweep.executors.stream`) resubmits it up to ``--retries`` times; runs that
never started are untouched, and the sweep goes on. Workers are forked from the
forkserver, which has torch imported already (``prestart_workers``), so a new process
costs milliseconds, not the seconds of an import.

No worker outlives the driver: each holds the read end of a lifeline pipe whose only write
end is the driver's, and exits when it reads end-of-file, which the kernel delivers when
the driver dies, even by SIGKILL. Workers ignore SIGINT: on Ctrl-C the driver, which gets
it too, terminates them.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from typing import Any

from initbench.results.schema import RunResult


class WorkerLost(Exception):
    """The process of a run died before it sent a result."""


def _watch_lifeline(lifeline: Connection) -> None:
    """End this worker when the driver is gone (the lifeline reads end-of-file)."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(1)


def _worker(
    target: Callable[..., RunResult], args: tuple[Any, ...], out: Connection, lifeline: Connection
) -> None:
    """A worker's main: run one task, send its result (or the exception) to the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C for all
    threading.Thread(target=_watch_lifeline, args=(lifeline,), daemon=True).start()
    try:
        result: Any = target(*args)
    except BaseException as exc:  # sent back: the driver records the run as failed
        result = exc
    out.send(result)
    out.close()


def _death(exitcode: int | None) -> str:
    """How a process ended, in words: 'killed by SIGKILL' or 'exited with code 3'."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode} before sending a result"


class _Task:
    """One submitted run: its future, and its process and pipes once started."""

    def __init__(self, future: Future[RunResult], args: tuple[Any, ...]) -> None:
        self.future, self.args = future, args
        self.process: Any = None
        self.results: Connection | None = None
        self.lifeline: Connection | None = None

    def start(self, context: Any, target: Callable[..., RunResult]) -> None:
        """Start the worker process of this task."""
        self.results, child_out = context.Pipe(duplex=False)
        child_lifeline, self.lifeline = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_worker, args=(target, self.args, child_out, child_lifeline), daemon=True
        )
        self.process.start()
        child_out.close()
        child_lifeline.close()

    def settle(self) -> None:
        """Give the future the process's result, its exception, or its death (a result is
        read before the process is joined: a large one fills the pipe, and the worker
        exits only once it is read)."""
        assert self.results is not None and self.lifeline is not None
        try:
            outcome = self.results.recv() if self.results.poll() else None
        except (EOFError, OSError):  # died while sending
            outcome = None
        self.process.join()
        if outcome is None:
            self.future.set_exception(WorkerLost(f"worker {_death(self.process.exitcode)}"))
        elif isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        self.results.close()
        self.lifeline.close()

    def stop(self) -> None:
        """Terminate the worker of a task that is given up."""
        self.process.terminate()
        self.process.join()
        if not self.future.done():
            self.future.set_exception(WorkerLost("worker terminated: the sweep stopped"))


class RunProcesses:
    """An executor of ``target`` calls, each in its own worker process, at most
    ``workers`` at once, in the order submitted (a small ``concurrent.futures`` executor
    whose futures fail with WorkerLost when their process dies)."""

    def __init__(self, workers: int, target: Callable[..., RunResult], context: Any) -> None:
        self.workers, self.target, self.context = workers, target, context
        self.waiting: collections.deque[_Task] = collections.deque()
        self.running: dict[Any, _Task] = {}  # results connection and sentinel -> task
        self.lock = threading.Lock()
        self.wake_read, self.wake_write = context.Pipe(duplex=False)
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="initbench-runs", daemon=True)
        self.thread.start()

    def submit(self, *args: Any) -> Future[RunResult]:
        """Queue ``target(*args)``; it starts when a worker slot is free."""
        future: Future[RunResult] = Future()
        with self.lock:
            self.waiting.append(_Task(future, args))
        self.wake_write.send(None)
        return future

    def _start_waiting(self) -> None:
        with self.lock:
            while self.waiting and len(self.running) < self.workers and not self.closed:
                task = self.waiting.popleft()
                if not task.future.set_running_or_notify_cancel():
                    continue
                try:
                    task.start(self.context, self.target)
                except Exception as exc:  # this run's process could not start (EMFILE ...)
                    task.future.set_exception(exc)
                    continue
                self.running[task.results] = self.running[task.process.sentinel] = task

    def _loop(self) -> None:
        """Start queued tasks and settle finished ones until shut down; should that fail
        (no process can be started, say), every waiting future gets the error, so the
        sweep records it instead of waiting for ever."""
        try:
            self._serve()
        except BaseException as exc:
            with self.lock:
                tasks = [*self.waiting, *self.running.values()]
                self.waiting.clear()
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(exc)

    def _serve(self) -> None:
        while not self.closed:
            self._start_waiting()
            ready = wait([self.wake_read, *self.running])
            if self.wake_read in ready:
                with contextlib.suppress(EOFError, OSError):
                    self.wake_read.recv()
            for handle in ready:
                task = self.running.get(handle)
                if task is not None:  # its result arrived, or its process ended
                    del self.running[task.results], self.running[task.process.sentinel]
                    task.settle()

    def shutdown(self) -> None:
        """Cancel what has not started, terminate what runs, and stop the loop."""
        with self.lock:
            self.closed = True
            for task in self.waiting:
                task.future.cancel()
            self.waiting.clear()
        with contextlib.suppress(OSError):
            self.wake_write.send(None)
        self.thread.join()
        for task in set(self.running.values()):
            task.stop()
        self.running.clear()


def context() -> Any:
    """The start method of local workers: forkserver where there is one, else spawn (never
    fork after torch has run: its thread pools deadlock in the child)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
