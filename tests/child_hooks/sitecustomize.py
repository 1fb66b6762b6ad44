"""Loaded by the child interpreters of the fault tests (PYTHONPATH), never by initbench
itself: events that make a sweep's timing deterministic, set by environment variables.

INITBENCH_TEST_GATE=PATH   every run after the first waits until PATH exists, so a signal
                           sent once the first run is written finds the sweep mid-way.
INITBENCH_TEST_KILL=N:DIR  the run of seed N kills its own process with SIGKILL, once per
                           file DIR/kill-* that exists (each attempt removes one).
INITBENCH_TEST_READY=PATH  the command creates PATH once its sweep is planned, then waits
                           for INITBENCH_TEST_GATE before running anything.
INITBENCH_TEST_STALL=PATH  every run creates PATH once started, then never ends.
INITBENCH_TEST_FORKSERVER=PATH  the workers' forkserver, as it starts (before its
                           preload), creates PATH, then waits for INITBENCH_TEST_GATE.
"""

import os
import signal
import sys
import time
from pathlib import Path


def _wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.01)


def _kill_if_asked(config: dict) -> None:
    seed, _, folder = os.environ["INITBENCH_TEST_KILL"].partition(":")
    if config["seed"] != int(seed):
        return
    tickets = sorted(Path(folder).glob("kill-*"))
    if tickets:
        tickets[0].unlink()
        os.kill(os.getpid(), signal.SIGKILL)


if {"INITBENCH_TEST_GATE", "INITBENCH_TEST_KILL", "INITBENCH_TEST_STALL"} & set(os.environ):
    import initbench.sweep.train as train

    _execute_run, _calls = train.execute_run, []

    def execute_run(config, *args, **kwargs):
        _calls.append(1)
        if "INITBENCH_TEST_STALL" in os.environ:
            Path(os.environ["INITBENCH_TEST_STALL"]).touch()
            _wait_for(os.environ["INITBENCH_TEST_STALL"] + ".never")
        if "INITBENCH_TEST_KILL" in os.environ:
            _kill_if_asked(config)
        gate = os.environ.get("INITBENCH_TEST_GATE")
        if gate and len(_calls) > 1 and "INITBENCH_TEST_READY" not in os.environ:
            _wait_for(gate)
        return _execute_run(config, *args, **kwargs)

    train.execute_run = execute_run

if "INITBENCH_TEST_READY" in os.environ:
    import initbench.sweep.runner as runner

    _plan = runner.plan

    def plan(*args, **kwargs):
        planned = _plan(*args, **kwargs)
        Path(os.environ["INITBENCH_TEST_READY"]).touch()
        _wait_for(os.environ["INITBENCH_TEST_GATE"])
        return planned

    runner.plan = plan

if "INITBENCH_TEST_FORKSERVER" in os.environ and "multiprocessing.forkserver" in " ".join(
    sys.orig_argv
):
    Path(os.environ["INITBENCH_TEST_FORKSERVER"]).touch()
    _wait_for(os.environ["INITBENCH_TEST_GATE"])
