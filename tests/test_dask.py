"""The Dask executor: same results as the local pool, retries of lost runs, clear errors.

One LocalCluster (2 worker processes, 1 thread each, no dashboard) serves every test that
needs a scheduler. Tests of the errors and of the import-free local path need no Dask.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from initbench.cli import main
from initbench.config.spec import load_spec
from initbench.results import schema
from initbench.sweep import cluster as dask_cluster
from initbench.sweep import executors

SMOKE = Path(__file__).parent.parent / "configs" / "smoke.yaml"
TINY = ["--set", "train.steps=4", "--set", "train.log_every=2"]
TIMINGS = {"train_seconds", "total_seconds", "started_at"}
NO_8787 = {"dashboard_address": "127.0.0.1:0"}  # the scheduler's HTTP port: any free one
SLOW_SPEC = """
name: lost
data: {name: synthetic, n_train: 256, n_test: 64}
model: {depth: 2, width: 8}
train: {steps: 400, log_every: 100, batch_size: 32}
seeds: 1
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A 2-worker LocalCluster, set up as the README advises for a scheduler of one's own
    (dask_cluster.SCHEDULER_CONFIG: a worker's death fails its task at once)."""
    pytest.importorskip("distributed")
    import dask
    from distributed import Client, LocalCluster, fire_and_forget

    env = {"INITBENCH_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    with (
        dask.config.set(dask_cluster.SCHEDULER_CONFIG),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs=NO_8787,
            env=env,
        ) as started,
    ):
        with Client(started, set_as_default=False) as warm:  # import torch there meanwhile
            workers = list(warm.scheduler_info()["workers"])
            load = [
                warm.submit(
                    importlib.import_module, "initbench.sweep.train", workers=[w], pure=False
                )
                for w in workers
            ]
            fire_and_forget(load)
        yield started


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    """The test's own client of the cluster (the CLI opens another)."""
    from distributed import Client

    with Client(cluster, set_as_default=False) as connected:
        yield connected


LOCAL_REFERENCE = """
import sys
from initbench.cli import main

if __name__ == "__main__":
    for args in (["--help"], ["run", "--help"], ["run", *sys.argv[1:]]):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, (args, exc.code)
    dask = ("dask", "distributed", "dask_jobqueue")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in dask)
    assert not loaded, f"imported: {loaded}"
"""


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh process that shows --help, then runs the tiny smoke sweep on the local
    process pool (1 thread per run), and checks it never imported Dask. Returns the results
    folder and the process's output."""
    out = tmp_path_factory.mktemp("local")
    script = out / "reference.py"  # a file: the pool's spawned workers re-import __main__
    script.write_text(LOCAL_REFERENCE)
    args = [str(SMOKE), "--out", str(out), *TINY, "--workers", "2", "--threads", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout + done.stderr


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


def _summaries(runs: Path) -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads((p / schema.SUMMARY_FILE).read_text())
        for p in runs.iterdir()
        if not p.name.startswith(".")
    }


def test_dask_results_equal_the_local_pool_bit_for_bit(
    cluster: Any, local_reference: tuple[Path, str], tmp_path: Path
) -> None:
    local, remote = local_reference[0], tmp_path / "dask"
    address = cluster.scheduler_address
    done = _run(
        str(SMOKE), "--out", str(remote), *TINY, "--executor", "dask", "--scheduler", address
    )
    assert done.exit_code == 0, done.output
    assert f"dask: scheduler {address}, 2 worker(s)" in done.output
    assert "10 to run" in done.output and "ok" in done.output
    ours, theirs = _summaries(local / "smoke" / "runs"), _summaries(remote / "smoke" / "runs")
    assert sorted(ours) == sorted(theirs) and len(ours) == 10
    for run_id, summary in ours.items():
        assert summary["status"] == "ok"
        assert {k: v for k, v in summary.items() if k not in TIMINGS} == {
            k: v for k, v in theirs[run_id].items() if k not in TIMINGS
        }
        for table in (schema.LAYERS_FILE, schema.CURVES_FILE):
            mine = pd.read_parquet(local / "smoke" / "runs" / run_id / table)
            pd.testing.assert_frame_equal(
                mine, pd.read_parquet(remote / "smoke" / "runs" / run_id / table), check_exact=True
            )
    # resume works as locally: only the missing run is done again
    missing = next(iter(theirs))
    for path in (remote / "smoke" / "runs" / missing).iterdir():
        path.unlink()
    (remote / "smoke" / "runs" / missing).rmdir()
    again = _run(
        str(SMOKE), "--out", str(remote), *TINY, "--executor", "dask", "--scheduler", address
    )
    assert again.exit_code == 0 and "9 already complete, 1 to run" in again.output
    redone = _summaries(remote / "smoke" / "runs")[missing]
    assert {k: v for k, v in redone.items() if k not in TIMINGS} == {
        k: v for k, v in theirs[missing].items() if k not in TIMINGS
    }


def test_ctrl_c_cancels_pending_runs_and_keeps_finished_ones(
    cluster: Any, client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from initbench.ui import SweepProgress

    shown = SweepProgress.advance

    def interrupt(self: SweepProgress, run: Any, result: Any) -> None:
        shown(self, run, result)
        raise KeyboardInterrupt  # Ctrl-C once the first run is written

    monkeypatch.setattr(SweepProgress, "advance", interrupt)
    args = [str(SMOKE), "--out", str(tmp_path), *TINY, "--executor", "dask"]
    args += ["--scheduler", cluster.scheduler_address]
    done = _run(*args)
    assert done.exit_code == 130 and "run the same command again" in done.output
    assert len(_summaries(tmp_path / "smoke" / "runs")) == 1
    deadline = time.monotonic() + 10
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        assert time.monotonic() < deadline, "tasks left on the scheduler"
        time.sleep(0.05)
    monkeypatch.undo()
    again = _run(*args)
    assert again.exit_code == 0 and "1 already complete, 9 to run" in again.output


def _kill_while_running(client: Any, kills: dict[str, int], stop: threading.Event) -> list[str]:
    """SIGKILL the worker running each run (by run id in the task key), ``kills[run_id]``
    attempts in a row; returns the task keys it killed."""
    killed: list[str] = []
    while any(kills.values()) and not stop.is_set():
        for address, keys in client.processing().items():
            for key in map(str, keys):
                run_id = key.split("-")[1]
                if kills.get(run_id, 0) and key not in killed:
                    try:
                        pid = client.run(os.getpid, workers=[address])[address]
                    except Exception:  # the worker went away meanwhile: look again
                        continue
                    os.kill(pid, signal.SIGKILL)
                    kills[run_id] -= 1
                    killed.append(key)
        time.sleep(0.02)
    return killed


def _sweep_killing(client: Any, address: str, spec: Path, out: Path, kills: int) -> Any:
    """``initbench run`` with --retries 1 while the worker running its one run is killed
    ``kills`` times."""
    (run,) = load_spec(spec).runs
    stop = threading.Event()
    killed: list[str] = []
    watcher = threading.Thread(
        target=lambda: killed.extend(_kill_while_running(client, {run.run_id: kills}, stop)),
        daemon=True,
    )
    watcher.start()
    try:
        args = ["--executor", "dask", "--scheduler", address, "--retries", "1"]
        done = _run(str(spec), "--out", str(out), *args)
    finally:
        stop.set()
        watcher.join(10)
    assert len(killed) == kills, killed
    return done


def test_a_run_lost_with_its_worker_is_retried_then_recorded_failed(
    cluster: Any, client: Any, tmp_path: Path
) -> None:
    spec = tmp_path / "lost.yaml"
    spec.write_text(SLOW_SPEC)
    address = cluster.scheduler_address
    # killed once: retried on the other worker (still warm), and done
    done = _sweep_killing(client, address, spec, tmp_path / "once", kills=1)
    assert done.exit_code == 0, done.output  # the sweep goes on
    assert done.output.count("retry 1/1") == 1
    (summary,) = _summaries(tmp_path / "once" / "lost" / "runs").values()
    assert summary["status"] == "ok" and summary["steps_done"] == 400
    # killed at every attempt (1 + --retries 1): recorded failed with the cause
    done = _sweep_killing(client, address, spec, tmp_path / "always", kills=2)
    assert done.exit_code == 1, done.output  # the sweep went on, and its exit says one was lost
    assert "lost their worker at every attempt" in done.output
    assert done.output.count("retry 1/1") == 1 and "failed" in done.output
    (summary,) = _summaries(tmp_path / "always" / "lost" / "runs").values()
    assert summary["status"] == "failed" and summary["steps_done"] == 0
    assert summary["error"].startswith("worker lost 2 times (1 retries): KilledWorker")


def test_losing_the_scheduler_stops_the_sweep_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT", 1.0)  # also the client's reconnect time
    doomed = LocalCluster(n_workers=0, dashboard_address=None, scheduler_kwargs=NO_8787)

    def close_once_submitted() -> None:  # no workers: the runs wait for ever until then
        deadline = time.monotonic() + 60
        while not doomed.scheduler.tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        doomed.close()

    stopper = threading.Thread(target=close_once_submitted, daemon=True)
    stopper.start()
    args = ["--executor", "dask", "--scheduler", doomed.scheduler_address]
    done = _run(str(SMOKE), "--out", str(tmp_path), *TINY, *args)
    stopper.join()
    assert done.exit_code == 2 and "lost the connection to the Dask scheduler" in done.output
    assert "run the same command again" in done.output
    assert not list((tmp_path / "smoke" / schema.RUNS_DIR).iterdir())  # none recorded failed


@pytest.mark.parametrize(
    ("executor", "module"),
    [("dask", "distributed"), ("slurm", "distributed"), ("slurm", "dask_jobqueue")],
)
def test_missing_extra_is_exit_2_with_the_install_command(
    executor: str, module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    done = _run(str(SMOKE), "--out", str(tmp_path), "--executor", executor)
    assert done.exit_code == 2
    assert 'pip install "initbench[dask]"' in done.output and module in done.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "short"], "--partition applies to --executor slurm"),
        (["--walltime", "2:00:00"], "--walltime applies to --executor slurm"),
        (["--executor", "dask", "--threads", "2"], "--threads applies to --executor local"),
        (["--executor", "slurm", "--scheduler", "tcp://h:8786"], "--scheduler applies to"),
        (["--executor", "slurm", "--workers", "2"], "--workers applies to --executor local or"),
        (["--executor", "dask", "--scheduler", "tcp://h:8786", "--workers", "2"], "own workers"),
        (["--executor", "ray"], "'ray' is not one of"),
    ],
)
def test_options_of_another_executor_are_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = _run(str(SMOKE), "--out", str(tmp_path), *args)
    assert done.exit_code == 2 and message in done.output, done.output
    assert not list(tmp_path.iterdir())


def test_unreachable_scheduler_is_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _run(
        str(SMOKE),
        "--out",
        str(tmp_path),
        "--executor",
        "dask",
        "--scheduler",
        f"tcp://127.0.0.1:{port}",
    )
    assert done.exit_code == 2
    assert "cannot reach a Dask scheduler there" in done.output
    assert "leave out --scheduler" in done.output
    assert not (tmp_path / "smoke" / schema.RUNS_DIR).exists()


def test_slurm_job_script_carries_the_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("dask_jobqueue")
    options = executors.ExecutorOptions(
        executor="slurm",
        cpus_per_run=4,
        partition="short",
        walltime="02:30:00",
        memory="8GB",
        account="lab",
    )
    with dask_cluster.slurm_cluster(options) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p short", "#SBATCH -t 02:30:00", "#SBATCH -A lab"):
        assert line in script, script
    assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH --mem=8G" in script
    assert "--nthreads 1" in script and "export OMP_NUM_THREADS=4" in script
    # without sbatch, or with a bad walltime: exit 2, nothing written
    monkeypatch.setattr(dask_cluster.shutil, "which", lambda name: None)
    done = _run(str(SMOKE), "--out", str(tmp_path), "--executor", "slurm", *TINY)
    assert done.exit_code == 2 and "sbatch is not on PATH" in done.output
    assert not (tmp_path / "smoke" / schema.RUNS_DIR).exists()
    done = _run(str(SMOKE), "--out", str(tmp_path), "--executor", "slurm", "--walltime", "2h")
    assert done.exit_code == 2 and "--walltime '2h'" in done.output


def test_help_and_local_runs_never_import_dask(local_reference: tuple[Path, str]) -> None:
    out, output = local_reference  # the fixture's process asserted that no Dask was imported
    assert "Usage:" in output and "--executor [local|dask|slurm]" in output
    assert len(list((out / "smoke" / schema.RUNS_DIR).iterdir())) == 10
