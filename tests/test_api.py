"""The Python API (initbench.api): what the commands do, as functions that return objects
and raise exceptions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

import initbench
from initbench import api
from initbench.cli import main
from initbench.results import schema

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name: tiny
data: {name: synthetic, n_train: 64, n_test: 32}
model: {depth: 2, width: 8}
train: {steps: 4, log_every: 2, batch_size: 16}
grid:
  model.init: [he_normal, xavier_normal]
"""
ONE_RUN = ["grid.model.init=[he_normal]"]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def swept(spec_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The tiny sweep run once through the API, for the tests that only read it."""
    out = tmp_path_factory.mktemp("results")
    return out, api.run(spec_file, out=out)


# --------------------------------------------------------------------------------------
# run


def _tables(exp: Path) -> dict[str, pd.DataFrame]:
    return {
        f"{run.name}/{name}": pd.read_parquet(run / name)
        for run in sorted((exp / "runs").iterdir())
        for name in (schema.LAYERS_FILE, schema.CURVES_FILE)
    }


def test_run_writes_what_the_command_writes(
    spec_file: Path, swept: tuple[Path, Any], tmp_path: Path
) -> None:
    out, outcome = swept
    result = CliRunner().invoke(main, ["run", str(spec_file), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ours, theirs = out / "tiny", tmp_path / "tiny"
    assert (ours / "spec.yaml").read_text() == (theirs / "spec.yaml").read_text() == TINY
    mine, cli = _tables(ours), _tables(theirs)
    assert mine.keys() == cli.keys() and len(mine) == 4
    for key, frame in mine.items():
        pd.testing.assert_frame_equal(frame, cli[key])
    assert outcome.experiment == "tiny" and outcome.path == ours
    assert set(outcome.ok) == {p.name for p in (theirs / "runs").iterdir()}
    assert outcome.statuses == dict.fromkeys(outcome.ok, "ok") and outcome.seconds > 0
    assert outcome.skipped == {} and outcome.errors == {} and outcome.unsuccessful() == ()
    assert "2 ok, 0 diverged, 0 failed, 0 skipped as complete" in repr(outcome)


def test_run_skips_complete_runs_and_force_redoes_them(spec_file: Path, tmp_path: Path) -> None:
    first = api.run(str(spec_file), str(tmp_path), ONE_RUN)
    again = api.run(spec_file, tmp_path, ONE_RUN)
    assert again.statuses == {} and again.skipped == {first.ok[0]: "ok"}
    assert again.counts(skipped=True) == {"ok": 1}
    forced = api.run(spec_file, tmp_path, ONE_RUN, force=True)
    assert forced.ok == first.ok and forced.skipped == {}


def test_run_takes_a_validated_spec_but_no_overrides_with_it(
    spec_file: Path, tmp_path: Path
) -> None:
    spec = api.validate(spec_file, ONE_RUN)
    assert len(spec.runs) == 1 and spec.overrides == tuple(ONE_RUN)
    assert api.validate(spec_file, ONE_RUN[0]) == spec  # one override as a str
    assert api.run(spec, tmp_path).ok == (spec.runs[0].run_id,)
    with pytest.raises(ValueError, match="overrides apply to a spec file"):
        api.run(spec, tmp_path, ["train.steps=2"])
    with pytest.raises(TypeError, match="a path or a Spec"):
        api.validate({"name": "x"})  # type: ignore[arg-type]


def _raises(kind: str) -> type[Exception]:
    return TypeError if kind == "TypeError" else getattr(api, kind)


@pytest.mark.parametrize(
    ("overrides", "options", "kind", "match"),
    [
        (["model.widht=8"], {}, "SpecError", r"tiny\.yaml: model\.widht: unknown key"),
        (["train.batch_size=100"], {}, "SpecError", r"100 exceeds the training set"),
        (["data.name=kmnist"], {}, "DataError", r"tiny\.yaml: data: "),
        ([], {"scheduler": "tcp://x:1"}, "ExecutorError", "--scheduler applies to --executor dask"),
        ([], {"workers": 0}, "ExecutorError", "workers must be at least 1"),
        ([], {"executor": "ray"}, "ExecutorError", "unknown executor 'ray'"),
        ([], {"threds": 2}, "TypeError", "unknown option.*threds"),
    ],
)
def test_bad_input_raises_and_writes_nothing(
    spec_file: Path,
    tmp_path: Path,
    overrides: list[str],
    options: dict[str, Any],
    kind: str,
    match: str,
) -> None:
    out = tmp_path / "results"
    with pytest.raises(_raises(kind), match=match):
        api.run(spec_file, out, overrides, **options)
    assert not out.exists()


def test_an_unwritable_out_is_a_results_error(spec_file: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(api.ResultsError, match="exists and is not a folder"):
        api.run(spec_file, tmp_path / "file", ONE_RUN)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "notes.txt").write_text("mine")
    with pytest.raises(api.ResultsError, match="not an initbench experiment folder"):
        api.run(spec_file, tmp_path, ONE_RUN)


def test_hooks_follow_the_sweep_and_planned_can_stop_it(spec_file: Path, tmp_path: Path) -> None:
    events: list[tuple[Any, ...]] = []
    hooks = api.Hooks(
        planned=lambda plan: events.append(("planned", len(plan.todo), len(plan.done))),
        opened=lambda description: _recording(events, description),
        started=lambda total: events.append(("started", total)),
        finished=lambda run, result: events.append(("finished", run.run_id, result.status)),
    )
    outcome = api.run(spec_file, tmp_path, hooks=hooks)
    finished = [("finished", r, "ok") for r in outcome.statuses]
    assert events == [("planned", 2, 0), ("open", ""), ("started", 2), *finished, ("close",)]

    def refuse(plan: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.run(spec_file, tmp_path / "other", hooks=api.Hooks(planned=refuse))
    assert not (tmp_path / "other" / "tiny").exists()


class _recording:
    def __init__(self, events: list[tuple[Any, ...]], description: str) -> None:
        self.events = events
        events.append(("open", description))

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.events.append(("close",))


def test_outcome_sorts_runs_by_status_skipped_ones_on_request() -> None:
    outcome = api.Outcome(
        "e", Path("r/e"), {"a": "ok", "b": "failed", "c": "diverged"}, {"d": "failed"}, {}, 1.0
    )
    assert (outcome.ok, outcome.failed, outcome.diverged) == (("a",), ("b",), ("c",))
    assert outcome.unsuccessful() == ("b", "d", "c")
    assert outcome.unsuccessful(skipped=False) == ("b", "c")
    assert outcome.counts() == {"ok": 1, "failed": 1, "diverged": 1}
    assert outcome.counts(skipped=True) == {"failed": 1}


# --------------------------------------------------------------------------------------
# load


def test_load_gives_tidy_tables_from_a_str_or_path(swept: tuple[Path, Any]) -> None:
    out, outcome = swept
    for path in (str(out), out, out / "tiny", str(out / "tiny")):
        results = api.load(path)
        assert results.experiments == ("tiny",) and len(results.runs) == 2
    runs = results.runs
    assert list(runs.columns[:2]) == ["experiment", "run_id"]
    assert set(runs["run_id"]) == set(outcome.ok) and set(runs["status"]) == {"ok"}
    assert sorted(runs["model.init"]) == ["he_normal", "xavier_normal"]
    assert set(runs["model.depth"]) == {2} and set(runs["seed"]) == {0}
    assert runs["test_accuracy"].between(0, 1).all()
    assert not any(c.startswith("config.") for c in runs.columns)
    assert results.config_keys[-1] == "seed" and "model.init" in results.config_keys
    assert results.varying == ("model.init",)
    joined = ["experiment", "run_id", *results.config_keys]
    assert list(results.layers.columns) == [*joined, *schema.LAYER_COLUMNS]
    assert list(results.curves.columns) == [*joined, *schema.CURVE_COLUMNS]
    layers = results.layers
    he = runs.loc[runs["model.init"] == "he_normal", "run_id"].item()
    assert set(layers.loc[layers["run_id"] == he, "model.init"]) == {"he_normal"}
    stored = _tables(out / "tiny")
    assert len(layers) == sum(len(f) for k, f in stored.items() if k.endswith(schema.LAYERS_FILE))


def test_load_joins_several_experiments(swept: tuple[Path, Any], tmp_path: Path) -> None:
    out, _ = swept
    shutil.copytree(out / "tiny", tmp_path / "tiny")
    shutil.copytree(out / "tiny", tmp_path / "copy")
    results = api.load(tmp_path)
    assert results.experiments == ("copy", "tiny") and len(results.runs) == 4
    for table in (results.runs, results.layers, results.curves):
        assert set(table["experiment"]) == {"copy", "tiny"}
    assert len(results.layers) == 2 * len(api.load(out).layers)


def test_load_refuses_a_path_with_nothing_to_load(swept: tuple[Path, Any], tmp_path: Path) -> None:
    with pytest.raises(api.ResultsError, match="no such results folder") as info:
        api.load(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)
    with pytest.raises(api.ResultsError, match="no experiment folders"):
        api.load(str(tmp_path))
    (tmp_path / "exp" / "runs" / "abc").mkdir(parents=True)  # a run without its summary
    with pytest.raises(api.ResultsError, match=r"no complete run .* \(exp\): 1 incomplete"):
        api.load(tmp_path)


def test_load_leaves_out_an_unreadable_run_with_a_warning(
    swept: tuple[Path, Any], tmp_path: Path
) -> None:
    out, outcome = swept
    shutil.copytree(out / "tiny", tmp_path / "tiny")
    bad = outcome.ok[0]
    (tmp_path / "tiny" / "runs" / bad / schema.LAYERS_FILE).write_bytes(b"PAR1 not really")
    with pytest.warns(UserWarning, match="1 run"):
        results = api.load(tmp_path)
    assert list(results.unreadable) == [f"tiny/{bad}"] and len(results.runs) == 1


# --------------------------------------------------------------------------------------
# report


def test_report_returns_the_text_the_command_writes(
    swept: tuple[Path, Any], tmp_path: Path
) -> None:
    out, _ = swept
    text = api.report(str(out))
    written = tmp_path / "report.md"
    result = CliRunner().invoke(
        main, ["report", str(out), "--format", "markdown", "--out", str(written)]
    )
    assert result.exit_code == 0, result.output
    assert text == written.read_text() and "## tiny" in text
    assert json.loads(api.report(out, "json"))["experiments"]


def test_report_select_takes_a_mapping(swept: tuple[Path, Any]) -> None:
    out, _ = swept
    one = api.report(out, select={"model.init": "he_normal"})
    assert one == api.report(out, select=["model.init=he_normal"])
    assert "selected: 1 runs in 1 configuration\n" in one
    both = api.report(out, select={"model.init": ["he_normal", "xavier_normal"]})
    assert both == api.report(out)  # every configuration selected: the whole report


def test_report_errors(swept: tuple[Path, Any], tmp_path: Path) -> None:
    out, _ = swept
    with pytest.raises(api.ResultsError, match="no such results folder"):
        api.report(tmp_path / "missing")
    with pytest.raises(api.ReportError, match="unknown format"):
        api.report(out, "docx")
    with pytest.raises(TypeError, match=r"unknown option.*ratoi"):
        api.report(out, ratoi=10)
    with pytest.raises(ValueError, match="ratio must be > 1"):
        api.report(out, ratio=0.5)


# --------------------------------------------------------------------------------------
# theory


def test_theory_frame_is_the_commands_table() -> None:
    from io import StringIO

    from initbench import meanfield

    frame = api.theory(activation="tanh", init="xavier_normal", depth=6, width=256)
    assert list(frame.columns) == list(meanfield.COLUMNS) and len(frame) == 6
    csv = meanfield.theory_text("tanh", "xavier_normal", 6, 256, fmt="csv")
    pd.testing.assert_frame_equal(frame, pd.read_csv(StringIO(csv)), check_dtype=False)
    summary = frame.attrs["summary"]
    assert summary["regime"] in ("ordered", "critical", "chaotic") and frame.attrs["notes"]
    rnn = api.theory("tanh", "xavier_normal", 2, 16, "rnn", recurrent_init="orthogonal")
    assert "sigma_rec2" in rnn.columns and len(rnn) == 2 * 28


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"activation": "tahn"}, "did you mean: tanh"),
        ({"init": "uniform"}, "no prediction: .*mean"),
        ({"recurrent_init": "orthogonal"}, "recurrent_init applies only to arch rnn"),
        ({"depth": 0}, "depth and width must be >= 1"),
    ],
)
def test_theory_errors(arguments: dict[str, Any], match: str) -> None:
    given = {"activation": "relu", "init": "he_normal", "depth": 3, "width": 8, **arguments}
    with pytest.raises(api.TheoryError, match=match):
        api.theory(**given)


# --------------------------------------------------------------------------------------
# the package's top level


def test_importing_initbench_and_its_api_loads_nothing_heavy() -> None:
    script = (
        "import sys, initbench, initbench.api\n"
        "assert initbench.load is initbench.api.load\n"
        "heavy = {'torch', 'pandas', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_load_is_at_the_top_level() -> None:
    assert initbench.load is api.load
    assert {"load", "run", "report", "theory"} <= set(dir(initbench)) & set(initbench.__all__)
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        initbench.lod  # noqa: B018


@pytest.mark.parametrize("name", ["run", "report", "theory"])
def test_run_report_and_theory_are_at_the_top_level(name: str) -> None:
    import initbench.reporting  # no subpackage shadows a function, once imported

    assert getattr(initbench, name) is getattr(api, name)


def test_help_shows_each_functions_documentation() -> None:
    for function in (api.run, api.load, api.report, api.theory, api.validate):
        assert function.__doc__ and len(function.__doc__.split()) > 20


# --------------------------------------------------------------------------------------
# the README's example


def test_the_readme_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(tempfile, "mkdtemp", lambda: str(tmp_path))  # cleaned up by pytest
    exec(compile(code, "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out
    assert "Outcome(smoke: 2 ok, 0 diverged, 0 failed" in printed
    assert "he_normal" in printed and "xavier_normal" in printed and "## smoke" in printed
