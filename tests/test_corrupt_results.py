"""Corrupt results: a resume moves broken runs aside and redoes them; a report names each
bad run, leaves it out and goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from initbench.cli import main
from initbench.results import schema

SPEC = """
name: corrupt
data: {name: synthetic, n_train: 64, n_test: 32}
model: {depth: 2, width: 8}
train: {steps: 4, log_every: 2, batch_size: 16}
seeds: 4
"""


@pytest.fixture
def swept(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    spec = tmp_path / "corrupt.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    done = CliRunner().invoke(main, ["run", str(spec), "--out", str(out)])
    assert done.exit_code == 0, done.output
    runs = sorted((out / "corrupt" / schema.RUNS_DIR).iterdir())
    assert len(runs) == 4
    return spec, out, runs


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


BREAKAGES = {
    "truncated layers": lambda run: _truncate(run / schema.LAYERS_FILE),
    "empty curves": lambda run: (run / schema.CURVES_FILE).write_bytes(b""),
    "garbage summary": lambda run: (run / schema.SUMMARY_FILE).write_text("{not json"),
}


def test_a_resume_moves_broken_runs_aside_names_them_once_and_redoes_them(swept) -> None:
    spec, out, runs = swept
    for run, breakage in zip(runs, BREAKAGES.values(), strict=False):
        breakage(run)
    again = CliRunner().invoke(main, ["run", str(spec), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert again.output.count("cannot be read; moving them into") == 1
    assert all(run.name in again.output for run in runs[:3])
    assert "1 already complete, 3 to run" in again.output
    quarantine = out / "corrupt" / schema.QUARANTINE_DIR
    assert sorted(p.name for p in quarantine.iterdir()) == sorted(r.name for r in runs[:3])
    assert all((quarantine / r.name / schema.REASON_FILE).is_file() for r in runs[:3])
    third = CliRunner().invoke(main, ["run", str(spec), "--out", str(out)])
    assert "4 already complete, 0 to run" in third.output  # the redone runs are sound


REPORT_BREAKAGES = {
    "layers is a folder": lambda run: _as_folder(run / schema.LAYERS_FILE),
    "summary without config": lambda run: _drop_config(run / schema.SUMMARY_FILE),
    "deeply nested summary": lambda run: (run / schema.SUMMARY_FILE).write_text("[" * 100_000),
}


def _as_folder(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()
    path.mkdir()
    (path / "part.parquet").write_bytes(data)


def _drop_config(path: Path) -> None:
    summary = json.loads(path.read_text())
    del summary["config"]
    path.write_text(json.dumps(summary))


@pytest.mark.parametrize("breakage", sorted(REPORT_BREAKAGES))
def test_a_report_names_a_bad_run_leaves_it_out_and_goes_on(breakage: str, swept) -> None:
    _, out, runs = swept
    REPORT_BREAKAGES[breakage](runs[0])
    done = CliRunner().invoke(main, ["report", str(out), "--format", "markdown"])
    assert done.exit_code == 0, done.output
    assert runs[0].name in done.output and "Traceback" not in done.output
    assert "unreadable: 1 (not reported)" in done.output  # named, not a phantom row


def test_a_report_goes_on_past_a_deeply_nested_spec(swept) -> None:
    _, out, _ = swept
    (out / "corrupt" / schema.SPEC_FILE).write_text("grid: " + "[" * 100_000)
    done = CliRunner().invoke(main, ["report", str(out), "--format", "markdown"])
    assert done.exit_code == 0, done.output
