"""End-to-end: the real CLI on tiny specs, results read back with pandas."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
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
        assert set(layers["step"]) == {0, 2, 4} and set(layers["layer"]) == {1, 2, 3}
        assert set(layers.query("layer == 3")["name"]) == {"readout"}  # after the watched ones
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


def test_set_overrides_are_recorded_next_to_the_spec(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    sets = ["model.arch=mlp", "train.steps=2", "grid.model.width=[8, 4]"]
    args = ["run", str(spec_file), "--out", str(out)]
    assert _run(*args, *(a for s in sets for a in ("--set", s))).exit_code == 0
    exp = out / "tiny"
    assert (exp / "spec.yaml").read_text() == TINY  # the spec as given
    assert yaml.safe_load((exp / "overrides.yaml").read_text()) == sets
    report = _run("report", str(out), "--format", "markdown")
    assert (
        "spec: spec.yaml with --set model.arch=mlp --set train.steps=2 "
        "--set grid.model.width=[8, 4] (overrides.yaml)"
    ) in report.output
    widths = re.findall(r"^\| (\d) \|", report.output, flags=re.MULTILINE)
    assert widths[:2] == ["8", "4"]  # rows follow the overridden grid's order
    # a later sweep that trains runs records its own overrides (none: the file goes)
    again = _run(*args, "--set", "grid.model.arch=[mlp]")
    assert again.exit_code == 0 and "1 to run" in again.output
    assert yaml.safe_load((exp / "overrides.yaml").read_text()) == ["grid.model.arch=[mlp]"]
    assert _run(*args).exit_code == 0
    assert not (exp / "overrides.yaml").exists()
    assert "spec: spec.yaml with" not in _run("report", str(out), "--format", "markdown").output


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


def test_strict_counts_failed_and_diverged_runs_skipped_as_complete(
    spec_file: Path, tmp_path: Path
) -> None:
    # README: "--strict: exit 1 if any run failed or diverged", on a re-run too
    out = str(tmp_path / "r")
    args = ["run", str(spec_file), "--out", out, "--set", "grid.model.arch=[mlp]"]
    args += ["--set", "train.lr=1e6", "--set", "model.init=he_normal", "--strict"]
    first = _run(*args)
    assert first.exit_code == 1 and "1 run(s) failed or diverged" in first.output
    again = _run(*args)
    assert "1 already complete, 0 to run" in again.output
    assert again.exit_code == 1, again.output
    assert "1 run(s) failed or diverged, 1 of them already complete" in again.output
    assert "1 (1 diverged)" in again.output  # the summary's skipped column
    assert _run(*args[:-1]).exit_code == 0  # without --strict


def test_strict_passes_a_re_run_of_healthy_runs(spec_file: Path, tmp_path: Path) -> None:
    args = ["run", str(spec_file), "--out", str(tmp_path / "r"), "--set", "grid.model.arch=[mlp]"]
    assert _run(*args, "--strict").exit_code == 0
    assert _run(*args, "--strict").exit_code == 0


BIG_BATCH = """\
name: big
data: {name: synthetic, n_train: 64, n_test: 32}
model: {depth: 2, width: 8}
train:
  steps: 2
  batch_size: 100000
"""


@pytest.mark.parametrize("command", ["run", "validate"])
def test_batch_larger_than_the_training_set_is_a_located_spec_error(
    tmp_path: Path, command: str
) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(BIG_BATCH)
    out = tmp_path / "results"
    args = [command, str(spec)] + (["--out", str(out)] if command == "run" else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert (
        f"{spec}:6: train.batch_size: 100000 exceeds the training set of dataset 'synthetic' "
        "(64 examples); use at most 64"
    ) in result.output
    assert not out.exists()


def test_batch_too_large_is_blamed_on_the_grid_value_or_the_set(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(BIG_BATCH.replace("100000", "8") + "grid:\n  train.batch_size: [8, 65]\n")
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert f"{spec}:8: grid.train.batch_size: value 65: train.batch_size: 65 exceeds" in (
        result.output
    )
    assert "value 8" not in result.output
    result = CliRunner().invoke(main, ["validate", str(spec), "--set", "train.batch_size=70"])
    assert result.exit_code == 2
    assert "train.batch_size: 70 exceeds the training set" in result.output
    assert "(from --set train.batch_size)" in result.output


def test_initializer_problem_is_located_and_said_once(tmp_path: Path) -> None:
    spec = tmp_path / "eye.yaml"
    spec.write_text(
        "name: eye\ndata: {name: synthetic}\nmodel: {init: identity, width: 16}\n"
        "grid:\n  model.depth: [2, 3]\n"
    )
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert (
        f"{spec}:3: model.init: identity needs a square matrix, got shape (16, 784) "
        "(and 1 more weight)"
    ) in result.output
    assert result.output.count("identity needs") == 1 and "(1 problem)" in result.output


def test_validate_reports_the_run_count(spec_file: Path) -> None:
    result = _run("validate", str(spec_file), "--set", "seeds=2")
    assert result.exit_code == 0 and "6 runs" in result.output


@pytest.mark.parametrize(
    "topic", ["initializers", "activations", "datasets", "architectures", "optimizers", "metrics"]
)
def test_list_shows_every_registry_entry(topic: str) -> None:
    from initbench.config.activations import ACTIVATIONS
    from initbench.config.initializers import INITIALIZERS

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


def _tiny_sections(config: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """The spec and its tiny overrides; a grid that varies a whole section (a list of
    model sections) gets the section's tiny values in each of its entries instead, as a
    --set of a key inside it is refused."""
    raw = yaml.safe_load(config.read_text())
    sections = [key for key in raw.get("grid", {}) if "." not in key]
    if not sections:
        return config, TINY_OVERRIDES
    tiny = [o.split("=", 1) for o in TINY_OVERRIDES if o.split(".")[0] in sections]
    for section in sections:
        for entry in raw["grid"][section]:
            given = {
                k.split(".", 1)[1]: yaml.safe_load(v) for k, v in tiny if k.startswith(section)
            }
            entry.update(given)
    tmp_path.mkdir()
    copy = tmp_path / config.name
    copy.write_text(yaml.safe_dump(raw))
    return copy, [o for o in TINY_OVERRIDES if o.split(".")[0] not in sections]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_runs_at_a_tiny_size(config: Path, tmp_path: Path) -> None:
    config, overrides = _tiny_sections(config, tmp_path / "spec")
    args = ["run", str(config), "--out", str(tmp_path / "out")]
    for override in overrides:
        args += ["--set", override]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    statuses = [
        json.loads(summary.read_text())["status"]
        for summary in (tmp_path / "out").glob("*/runs/*/summary.json")
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


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_gets_an_answer(config: Path, tmp_path: Path) -> None:
    # issue 16: each experiment's section opens with its Answer, for any spec
    config, overrides = _tiny_sections(config, tmp_path / "spec")
    args = ["run", str(config), "--out", str(tmp_path / "out")]
    for override in overrides:
        args += ["--set", override]
    assert _run(*args).exit_code == 0
    result = _run("report", str(tmp_path / "out"), "--format", "terminal")
    assert result.exit_code == 0, result.output
    section = result.output.split("Answer", 1)
    assert len(section) == 2 and "Findings" in section[1], result.output
    answer = section[1].split("Findings", 1)[0]
    assert ("train" in answer or "unknown" in answer) and answer.rstrip().endswith(".")
    assert "Glossary" in result.output
