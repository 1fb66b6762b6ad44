"""Faults and bad input: signals, concurrent writers, disk errors, random spec documents."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initbench.cli import main
from initbench.config.spec import SpecError, build_spec, parse_yaml
from initbench.results import schema, store

SLOW_SPEC = """
name: faults
data: {name: synthetic, n_train: 256, n_test: 64}
model: {depth: 2, width: 8}
train: {steps: 250, log_every: 50, batch_size: 32}
seeds: 4
"""


def _runs(out: Path) -> list[Path]:
    runs = out / "faults" / schema.RUNS_DIR
    return sorted(p for p in runs.iterdir() if not p.name.startswith(".")) if runs.is_dir() else []


HOOKS = Path(__file__).with_name("child_hooks")  # a sitecustomize for the child


def _start(spec: Path, out: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """The CLI in a child process (its own session) whose second run waits for
    ``<out>.gate`` to exist; ``env``: more of the hooks' variables (child_hooks)."""
    args = args or ("--workers", "1")  # one process: the gate counts its runs
    command = [sys.executable, "-m", "initbench.cli", "run", str(spec), "--out", str(out), *args]
    path = os.pathsep.join([str(HOOKS), *sys.path])
    gate = str(out.parent / "gate")
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    environ.update(INITBENCH_TEST_GATE=gate, **env)
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,
        start_new_session=True,
    )


def _wait_for_runs(
    out: Path, count: int, process: subprocess.Popen[str], limit: float = 60
) -> None:
    deadline = time.monotonic() + limit
    while len(_runs(out)) < count:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.05)


@pytest.fixture
def slow_spec(tmp_path: Path) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(SLOW_SPEC)
    return path


def test_sigint_keeps_finished_runs_and_a_rerun_does_only_the_rest(slow_spec, tmp_path) -> None:
    out = tmp_path / "r"
    process = _start(slow_spec, out)
    _wait_for_runs(out, 1, process)
    # a second writer on the same folder is refused while the first holds the lock
    second = CliRunner().invoke(main, ["run", str(slow_spec), "--out", str(out)])
    assert second.exit_code == 2 and "already running a sweep into this folder" in second.output
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "run the same command again" in output
    finished = _runs(out)
    assert len(finished) == 1  # the second run was waiting at the gate
    assert all((run / schema.SUMMARY_FILE).is_file() for run in finished)
    assert not list((out / "faults" / schema.RUNS_DIR).glob(f"{schema.TMP_PREFIX}*"))
    again = CliRunner().invoke(main, ["run", str(slow_spec), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert f"{len(finished)} already complete, {4 - len(finished)} to run" in again.output
    assert len(_runs(out)) == 4


def test_sigkill_leftovers_are_never_results_and_are_cleaned_on_resume(slow_spec, tmp_path) -> None:
    out = tmp_path / "r"
    process = _start(slow_spec, out)
    _wait_for_runs(out, 1, process)
    process.kill()
    process.communicate(timeout=30)
    runs_dir = out / "faults" / schema.RUNS_DIR
    # what a writer killed mid-write leaves: a temporary run folder without its summary
    leftover = runs_dir / f"{schema.TMP_PREFIX}0123456789ab.deadbeef"
    leftover.mkdir()
    (leftover / schema.CONFIG_FILE).write_text("{}")
    experiment = store.load_experiment(out / "faults")
    assert leftover.name in experiment.incomplete
    assert leftover.name not in set(experiment.runs["run_id"])
    killed_with = len(_runs(out))
    again = CliRunner().invoke(main, ["run", str(slow_spec), "--out", str(out)])
    assert again.exit_code == 0, again.output  # the killed holder's lock died with it
    assert f"{killed_with} already complete" in again.output
    assert len(_runs(out)) == 4 and not leftover.exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_write_errors_stop_with_a_clear_message_and_keep_finished_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    spec = tmp_path / "faults.yaml"
    spec.write_text(SLOW_SPEC.replace("steps: 250", "steps: 2"))
    out = tmp_path / "r"
    real_write = store.write_run
    calls = []

    def failing_write(exp_dir: Path, result: schema.RunResult) -> Path:
        calls.append(result.run_id)
        if len(calls) == 3:
            raise OSError(code, os.strerror(code), str(exp_dir))
        return real_write(exp_dir, result)

    monkeypatch.setattr(store, "write_run", failing_write)
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(out)])
    assert result.exit_code == 2
    assert (
        os.strerror(code) in result.output
        and "2 run(s) written before are complete" in result.output
    )
    assert len(_runs(out)) == 2
    monkeypatch.setattr(store, "write_run", real_write)
    again = CliRunner().invoke(main, ["run", str(spec), "--out", str(out)])
    assert "2 already complete, 2 to run" in again.output and len(_runs(out)) == 4


def test_foreign_results_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    spec = tmp_path / "faults.yaml"
    spec.write_text(SLOW_SPEC)
    foreign = tmp_path / "r" / "faults"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("mine")
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not an initbench experiment folder" in result.output
    assert "thesis.tex" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_folder_written_by_a_newer_format_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "faults.yaml"
    spec.write_text(SLOW_SPEC.replace("seeds: 4", "seeds: 1"))
    out = tmp_path / "r"
    assert (
        CliRunner()
        .invoke(main, ["run", str(spec), "--out", str(out), "--set", "train.steps=1"])
        .exit_code
        == 0
    )
    (run,) = _runs(out)
    summary = (
        (run / schema.SUMMARY_FILE)
        .read_text()
        .replace(f'"format_version": {schema.FORMAT_VERSION}', '"format_version": 99')
    )
    (run / schema.SUMMARY_FILE).write_text(summary)
    result = CliRunner().invoke(
        main, ["run", str(spec), "--out", str(out), "--set", "train.steps=1"]
    )
    assert (
        result.exit_code == 2 and "newer" in result.output and "upgrade initbench" in result.output
    )


def test_enormous_sweep_needs_confirmation(tmp_path: Path) -> None:
    spec = tmp_path / "faults.yaml"
    spec.write_text(SLOW_SPEC)
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(out), "--set", "seeds=1001"])
    assert result.exit_code == 2
    assert "1001 runs to do, 250,250 optimizer steps" in result.output and "--yes" in result.output
    assert not (out / "faults").exists()


# --- random documents: a spec loads or fails with SpecError, never anything else -----------

KEYS = [
    "name",
    "data",
    "model",
    "train",
    "grid",
    "seeds",
    "arch",
    "depth",
    "width",
    "init",
    "activation",
    "batchnorm",
    "std",
    "low",
    "high",
    "steps",
    "lr",
    "batch_size",
    "optimizer",
    "momentum",
    "model.depth",
    "model.init",
    "train.lr",
    "recurrent_init",
    "bias_init",
    "log_every",
    "n_train",
    "mode",
    "distribution",
    "gain",
    "description",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "mlp",
            "cnn",
            "rnn",
            "synthetic",
            "he_normal",
            "normal",
            "relu",
            "tanh",
            "identity",
            "orthogonal",
            "sgd",
            "adam",
            "fan_avg",
            "x",
            "",
        ]
    ),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_random_documents_load_or_fail_with_spec_error(document: object) -> None:
    from initbench.sweep.runner import check_initializers

    try:
        check_initializers(build_spec(document, "<random>", ""))
    except SpecError as exc:
        assert str(exc).startswith("<random>: invalid spec")


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_parses_or_fails_with_spec_error(text: str) -> None:
    try:
        parse_yaml(text, "<text>")
    except SpecError as exc:
        assert "<text>" in str(exc)


def test_random_documents_round_trip_through_yaml(tmp_path: Path) -> None:
    # the file path of load_spec, not only build_spec, is exercised on a valid document
    from initbench.config.spec import load_spec

    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"name": "ok", "data": "synthetic", "seeds": [3, 1]}))
    assert [r.seed for r in load_spec(path).runs] == [3, 1]


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "faults.yaml"
    spec.write_text(SLOW_SPEC)
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("")
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(not_a_folder)])
    assert result.exit_code == 2 and "exists and is not a folder" in result.output


def test_orthogonal_bias_is_refused_before_running(tmp_path: Path) -> None:
    spec = tmp_path / "faults.yaml"
    spec.write_text(SLOW_SPEC + "\n")
    result = CliRunner().invoke(
        main, ["validate", str(spec), "--set", "model.bias_init=orthogonal"]
    )
    assert result.exit_code == 2
    assert "model.bias_init: orthogonal cannot initialise a bias vector" in result.output


def test_a_disk_full_before_the_first_run_is_a_clear_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "faults.yaml"
    spec.write_text(SLOW_SPEC.replace("steps: 250", "steps: 2"))
    real_open = Path.open

    def full(path: Path, *args, **kwargs):
        if path.name == schema.LOCK_FILE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full)
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert os.strerror(errno.ENOSPC) in result.output and "Traceback" not in result.output
