"""End-to-end: the real CLI on tiny specs, results read back with pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from initbench.cli import main

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
TINY = """
name: tiny
data: {name: synthetic, n_train: 64, n_test: 32}
model: {depth: 2, width: 8}
train: {steps: 4, log_every: 2, batch_size: 16}
grid:
  model.arch: [mlp, cnn, rnn]
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_run_writes_the_results_format_and_pandas_reads_it(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = _run("run", str(spec_file), "--out", str(out))
    assert result.exit_code == 0, result.output
    runs = sorted((out / "tiny" / "runs").iterdir())
    assert len(runs) == 3 and (out / "tiny" / "spec.yaml").read_text() == TINY
    archs = set()
    for run_dir in runs:
        summary = json.loads((run_dir / "summary.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        assert summary["status"] == "ok" and summary["config"] == config
        archs.add(config["model"]["arch"])
        layers = pd.read_parquet(run_dir / "layers.parquet")
        curves = pd.read_parquet(run_dir / "curves.parquet")
        assert list(layers.columns) == ["step", "layer", "t", "name", "metric", "value"]
        assert list(curves.columns) == ["step", "metric", "value"]
        assert set(layers["step"]) == {0, 2, 4} and set(layers["layer"]) == {1, 2}
        assert pq.read_schema(run_dir / "layers.parquet").field("value").type == "double"
        if config["model"]["arch"] == "rnn":
            assert set(layers.query("metric == 'preact_var'")["t"]) == set(range(1, 29))
        assert {"loss", "train_accuracy", "grad_norm", "test_accuracy"} <= set(curves["metric"])
    assert archs == {"mlp", "cnn", "rnn"}


def test_second_run_skips_complete_runs(spec_file: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    _run("run", str(spec_file), "--out", out, "--set", "grid.model.arch=[mlp]")
    again = _run("run", str(spec_file), "--out", out, "--set", "grid.model.arch=[mlp]")
    assert "1 already complete, 0 to run" in again.output


def test_set_overrides_change_the_run(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = _run(
        "run",
        str(spec_file),
        "--out",
        str(out),
        "--set",
        "model.arch=mlp",
        "--set",
        "train.steps=2",
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "tiny" / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 2


def test_bad_spec_exits_2_with_located_message_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {name: synthetic}\nmodel:\n  widht: 8\n  init: he_nromal\n")
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["run", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert f"{bad}:4: model.widht: unknown key 'widht'; did you mean: width?" in result.output
    assert "model.init: unknown initializer 'he_nromal'; did you mean: he_normal" in result.output
    assert not out.exists()


def test_initializer_that_cannot_apply_is_a_spec_error(tmp_path: Path) -> None:
    spec = tmp_path / "eye.yaml"
    spec.write_text("name: eye\ndata: {name: synthetic}\nmodel: {init: identity}\n")
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert "model.init: identity needs a square matrix, got shape (256, 784)" in result.output


def test_validate_reports_the_run_count(spec_file: Path) -> None:
    result = _run("validate", str(spec_file), "--set", "seeds=2")
    assert result.exit_code == 0 and "6 runs" in result.output


@pytest.mark.parametrize(
    "topic", ["initializers", "activations", "datasets", "architectures", "optimizers", "metrics"]
)
def test_list_shows_every_registry_entry(topic: str) -> None:
    from initbench.activations import ACTIVATIONS
    from initbench.initializers import INITIALIZERS

    result = _run("list", topic)
    assert result.exit_code == 0
    expected = {"initializers": INITIALIZERS.names(), "activations": ACTIVATIONS.names()}
    for name in expected.get(topic, []):
        assert name in result.output


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_validates(config: Path) -> None:
    result = _run("validate", str(config))
    assert result.exit_code == 0, result.output


TINY_OVERRIDES = ["train.steps=2", "train.log_every=1", "seeds=1", "model.depth=2", "model.width=8"]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_runs_at_a_tiny_size(config: Path, tmp_path: Path) -> None:
    args = ["run", str(config), "--out", str(tmp_path)]
    for override in TINY_OVERRIDES:
        args += ["--set", override]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    statuses = [
        json.loads(summary.read_text())["status"]
        for summary in tmp_path.glob("*/runs/*/summary.json")
    ]
    assert statuses and "failed" not in statuses, result.output


def test_help_list_and_report_never_import_torch(spec_file: Path, tmp_path: Path) -> None:
    # issue 7: start-up under 1 s; importing torch alone takes 2 s here
    out = tmp_path / "results"
    assert _run("run", str(spec_file), "--out", str(out)).exit_code == 0
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from initbench.cli import main\n"
        "for args in (['--help'], ['list'], ['report', sys.argv[1], '--format', 'markdown']):\n"
        "    result = CliRunner().invoke(main, args, catch_exceptions=False)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "    assert 'torch' not in sys.modules, args\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_command_freezes_the_heap_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    # interpreter teardown after torch._dynamo spent 1.2 s collecting garbage that dies
    # with the process; gc.freeze at exit skips it
    import atexit
    import gc

    from initbench import cli

    registered: list[object] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    cli._freeze_objects_at_exit.cache_clear()
    _run("list")
    assert registered == [gc.freeze]
