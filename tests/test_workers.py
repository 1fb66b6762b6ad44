"""Local worker processes and signals: a lost worker loses one run, which is retried; no
process outlives the driver; SIGTERM and early Ctrl-C exit as they should; a closed pipe
does not stop the sweep. Every wait is for an event (a file, a process's end), with a
generous deadline only as a safety net."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from initbench.results import schema
from tests.test_faults import _start

SPEC = """
name: workers
data: {name: synthetic, n_train: 128, n_test: 64}
model: {depth: 2, width: 8}
train: {steps: 30, log_every: 10, batch_size: 32}
seeds: 4
"""
DEADLINE = 120.0  # seconds; only a safety net, never reached when things work


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "workers.yaml"
    path.write_text(SPEC)
    return path


def _summaries(out: Path) -> dict[int, dict]:
    runs = out / "workers" / schema.RUNS_DIR
    found = [json.loads(p.read_text()) for p in runs.glob(f"*/{schema.SUMMARY_FILE}")]
    return {s["config"]["seed"]: s for s in found}


def _tickets(tmp_path: Path, count: int) -> str:
    folder = tmp_path / "tickets"
    folder.mkdir()
    for i in range(count):
        (folder / f"kill-{i}").touch()
    return f"1:{folder}"


def _finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=DEADLINE)
    return output


def test_a_killed_worker_loses_only_its_run_which_is_retried(spec, tmp_path) -> None:
    kill = _tickets(tmp_path, 1)
    process = _start(spec, tmp_path / "o", "--workers", "2", INITBENCH_TEST_KILL=kill)
    output = _finish(process)
    assert process.returncode == 0, output
    assert "retry 1/2" in output and "killed by SIGKILL" in output
    summaries = _summaries(tmp_path / "o")
    assert sorted(summaries) == [0, 1, 2, 3]
    assert all(s["status"] == "ok" for s in summaries.values())


def test_a_run_that_always_kills_its_worker_is_failed_and_the_exit_says_so(spec, tmp_path):
    kill = _tickets(tmp_path, 3)  # the first attempt and both retries
    process = _start(spec, tmp_path / "o", "--workers", "2", INITBENCH_TEST_KILL=kill)
    output = _finish(process)
    assert process.returncode == 1, output
    assert "lost their worker at every attempt" in output
    summaries = _summaries(tmp_path / "o")
    assert sorted(summaries) == [0, 1, 2, 3]  # the others ran, none was abandoned
    assert summaries[1]["status"] == "failed"
    assert summaries[1]["error"].startswith("worker lost 3 times (2 retries): WorkerLost: worker")
    assert "killed by SIGKILL" in summaries[1]["error"]
    assert all(summaries[s]["status"] == "ok" for s in (0, 2, 3))


def _session_processes(session: int) -> list[int]:
    """Processes still in the driver's session (its workers, forkserver, tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # session id; not a zombie
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_no_process_outlives_a_killed_driver(spec, tmp_path) -> None:
    ready = tmp_path / "ready"
    # the workers hold the runs at the gate, which never opens
    process = _start(spec, tmp_path / "o", "--workers", "2", INITBENCH_TEST_STALL=str(ready))
    deadline = time.monotonic() + DEADLINE
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate()[0]
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=DEADLINE)  # returns once nothing holds its output open
    while _session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_processes(process.pid) == []


def test_sigterm_keeps_finished_runs_and_exits_143(spec, tmp_path) -> None:
    out = tmp_path / "o"
    process = _start(spec, out)
    deadline = time.monotonic() + DEADLINE
    while len(_summaries(out)) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = _finish(process)
    assert process.returncode == 143, output
    assert "terminated: finished runs are kept" in output
    assert len(_summaries(out)) == 1  # the second run was waiting at the gate


def test_ctrl_c_before_the_sweep_starts_exits_130_with_a_message(spec, tmp_path) -> None:
    ready = tmp_path / "ready"
    process = _start(spec, tmp_path / "o", INITBENCH_TEST_READY=str(ready))
    deadline = time.monotonic() + DEADLINE
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = _finish(process)
    assert process.returncode == 130, output
    assert "interrupted" in output and "Aborted" not in output and "Traceback" not in output


def test_a_closed_pipe_does_not_stop_the_sweep(spec, tmp_path) -> None:
    out = tmp_path / "o"
    (tmp_path / "gate").touch()  # no waiting: this test is about the pipe
    process = _start(spec, out)
    assert process.stdout is not None
    process.stdout.readline()  # like `| head -1`: read a line, then go away
    process.stdout.close()
    assert process.wait(timeout=DEADLINE) == 0
    assert len(_summaries(out)) == 4


def test_ctrl_c_while_the_forkserver_starts_exits_130_without_a_traceback(spec, tmp_path):
    ready = tmp_path / "forkserver-ready"
    out = tmp_path / "o"
    process = _start(spec, out, "--workers", "2", INITBENCH_TEST_FORKSERVER=str(ready))
    deadline = time.monotonic() + DEADLINE
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate()[0]
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
    (tmp_path / "gate").touch()
    output = _finish(process)
    assert process.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output


def test_a_run_whose_process_cannot_start_is_failed_and_the_others_go_on() -> None:
    from initbench.sweep.processes import RunProcesses, context

    class Unstartable:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def Process(self, *args, **kwargs):
            if kwargs["args"][1] == ("bad",):
                raise OSError(24, "Too many open files")
            return self.real.Process(*args, **kwargs)

    pool = RunProcesses(2, str.upper, Unstartable(context()))
    try:
        futures = [pool.submit(word) for word in ("ok", "bad", "fine")]
        assert futures[0].result(timeout=DEADLINE) == "OK"
        with pytest.raises(OSError, match="Too many open files"):
            futures[1].result(timeout=DEADLINE)
        assert futures[2].result(timeout=DEADLINE) == "FINE"
    finally:
        pool.shutdown()
