"""The results store: atomic run folders, non-finite values, loading, versioning.

RunResult objects are built by hand (no training): the store must round-trip whatever
a run produced, NaN and infinities included.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from initbench.results import schema, store
from initbench.results.store import ResultsError, find_experiments, load_experiment, write_run

CONFIG = {
    "seed": 0,
    "data": {"name": "synthetic", "n_train": 64},
    "model": {"arch": "mlp", "depth": 2, "width": 8, "init": {"name": "he_normal"}},
    "train": {"lr": 0.01, "steps": 4},
}


def make_result(
    run_id: str = "abc123def456",
    status: str = "ok",
    values: list[float] | None = None,
    **summary: Any,
) -> schema.RunResult:
    """A hand-built result: 2 layers x 2 metrics x 2 steps, and a loss curve."""
    values = values if values is not None else [1.0, 0.5, 0.25, 0.125, 2.0, 1.0, 4.0, 8.0]
    config = {**CONFIG, "seed": summary.pop("seed", 0)}
    base = {
        "format_version": schema.FORMAT_VERSION,
        "run_id": run_id,
        "experiment": "exp",
        "status": status,
        "steps_planned": 4,
        "steps_done": 4,
        "diverged_step": None,
        "diverged_at": None,
        "final_loss": 0.7,
        "test_accuracy": 0.5,
        "versions": {"python": "3.x", "torch": "2.x"},
        "config": config,
    }
    layers = {
        "step": np.array([0, 0, 0, 0, 2, 2, 2, 2], dtype=np.int32),
        "layer": np.array([1, 1, 2, 2, 1, 1, 2, 2], dtype=np.int16),
        "t": np.zeros(8, dtype=np.int16),
        "name": np.array(["fc1", "fc1", "fc2", "fc2"] * 2, dtype=object),
        "metric": np.array(["act_var", "grad_preact_var"] * 4, dtype=object),
        "value": np.array(values, dtype=np.float64),
    }
    curves = {
        "step": np.array([0, 2], dtype=np.int32),
        "metric": np.array(["loss", "loss"], dtype=object),
        "value": np.array([2.3, 1.9]),
    }
    return schema.RunResult(run_id, config, {**base, **summary}, layers, curves)


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    return tmp_path / "results" / "exp"


def run_dirs(exp: Path) -> list[str]:
    return sorted(p.name for p in (exp / schema.RUNS_DIR).iterdir())


# --------------------------------------------------------------------------------------
# Writing


def test_write_run_layout(exp: Path) -> None:
    path = write_run(exp, make_result())
    assert path == exp / "runs" / "abc123def456"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [
            schema.CONFIG_FILE,
            schema.LAYERS_FILE,
            schema.CURVES_FILE,
            schema.SPECTRA_FILE,
            schema.SUMMARY_FILE,
        ]
    )
    assert json.loads((path / "config.json").read_text()) == CONFIG
    assert store.is_complete(exp, "abc123def456")
    assert run_dirs(exp) == ["abc123def456"]  # no temporary folder left behind


def test_failed_write_leaves_nothing(exp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies half-way (here: at the curves table) leaves no run folder."""
    real = store._write_table

    def dying(path: Path, *args: Any) -> None:
        if path.name == schema.CURVES_FILE:
            raise OSError("disk full")
        real(path, *args)

    monkeypatch.setattr(store, "_write_table", dying)
    with pytest.raises(OSError, match="disk full"):
        write_run(exp, make_result())
    assert run_dirs(exp) == []
    assert not store.is_complete(exp, "abc123def456")


def test_failed_rewrite_keeps_the_old_complete_run(
    exp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(exp, make_result(final_loss=0.7))
    monkeypatch.setattr(store, "to_json", lambda data: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        write_run(exp, make_result(final_loss=0.1))
    monkeypatch.undo()
    assert run_dirs(exp) == ["abc123def456"]
    assert load_experiment(exp).runs.loc[0, "final_loss"] == 0.7


def test_write_run_twice_replaces_the_run(exp: Path) -> None:
    """--force: the second write replaces the first whole, with no stale files."""
    first = write_run(exp, make_result(final_loss=0.7))
    (first / "stale.txt").write_text("from the first run")
    write_run(exp, make_result(final_loss=0.1, values=[9.0] * 8))
    assert run_dirs(exp) == ["abc123def456"]
    assert not (first / "stale.txt").exists()
    loaded = load_experiment(exp)
    assert loaded.runs["final_loss"].tolist() == [0.1]
    assert loaded.layers["value"].tolist() == [9.0] * 8
    assert loaded.incomplete == []


def test_atomic_write_text(tmp_path: Path) -> None:
    target = tmp_path / "spec.yaml"
    store.atomic_write_text(target, "a: 1\n")
    store.atomic_write_text(target, "a: 2\n")
    assert target.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


def test_write_spec_keeps_text_as_given(exp: Path) -> None:
    text = "name: exp  # a comment\ndata: synthetic\n"
    store.write_spec(exp, text)
    assert (exp / schema.SPEC_FILE).read_text() == text
    assert (exp / schema.RUNS_DIR).is_dir()


# --------------------------------------------------------------------------------------
# Incomplete runs


def test_leftovers_are_incomplete_not_results(exp: Path) -> None:
    write_run(exp, make_result())
    runs = exp / "runs"
    tmp = runs / ".tmp-0123456789ab.deadbeef"  # a writer killed mid-way
    tmp.mkdir()
    (tmp / schema.CONFIG_FILE).write_text("{}")
    old = runs / ".tmp-old-abc123def456.cafe0000"
    old.mkdir()
    (old / schema.SUMMARY_FILE).write_text("{}")  # even with a summary: never read
    half = runs / "fedcba987654"  # a run folder without summary.json
    half.mkdir()
    (half / schema.CONFIG_FILE).write_text("{}")
    loaded = load_experiment(exp)
    assert loaded.runs["run_id"].tolist() == ["abc123def456"]
    assert set(loaded.layers["run_id"]) == {"abc123def456"}
    assert sorted(loaded.incomplete) == sorted([tmp.name, old.name, half.name])
    assert not store.is_complete(exp, "fedcba987654")


def test_empty_experiment_has_typed_empty_tables(exp: Path) -> None:
    (exp / "runs").mkdir(parents=True)
    loaded = load_experiment(exp)
    assert loaded.runs.empty and loaded.layers.empty and loaded.curves.empty
    assert list(loaded.layers.columns) == ["run_id", *schema.LAYER_COLUMNS]
    assert list(loaded.curves.columns) == ["run_id", *schema.CURVE_COLUMNS]


# --------------------------------------------------------------------------------------
# Non-finite values


def test_non_finite_values_round_trip_parquet(exp: Path) -> None:
    values = [1.0, math.nan, math.inf, -math.inf, 1e-300, -0.0, 2.0**-30, 5e-324]
    path = write_run(exp, make_result(status="diverged", values=values))
    table = pq.read_table(path / schema.LAYERS_FILE)
    assert table.column("value").null_count == 0  # NaN stored as NaN, not as a missing value
    got = load_experiment(exp).layers["value"].to_numpy()
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.array(values))  # equal_nan; tiny values exact
    assert math.copysign(1.0, got[5]) == -1.0


def test_layer_table_column_types(exp: Path) -> None:
    path = write_run(exp, make_result())
    table = pq.read_table(path / schema.LAYERS_FILE)
    assert table.column_names == list(schema.LAYER_COLUMNS)
    types = {f.name: str(f.type) for f in table.schema}
    assert types == {
        "step": "int32",
        "layer": "int16",
        "t": "int16",
        "name": "string",
        "metric": "string",
        "value": "double",
    }


def test_non_finite_summary_values_json(exp: Path) -> None:
    """JSON has no NaN: stored as the strings 'nan'/'inf'/'-inf', read back as floats."""
    result = make_result(
        status="diverged",
        final_loss=math.nan,
        test_loss=math.inf,
        final_train_accuracy=np.float32("nan"),  # numpy scalars too
        extra=[-math.inf, np.float64(1.5)],
    )
    path = write_run(exp, result)
    text = (path / schema.SUMMARY_FILE).read_text()

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    raw = json.loads(text, parse_constant=refuse)  # strict JSON: no NaN / Infinity tokens
    assert raw["final_loss"] == "nan" and raw["test_loss"] == "inf"
    assert raw["final_train_accuracy"] == "nan"
    assert raw["extra"] == ["-inf", 1.5]
    summary = store.read_summary(path)
    assert math.isnan(summary["final_loss"]) and summary["test_loss"] == math.inf
    assert summary["extra"] == [-math.inf, 1.5]
    runs = load_experiment(exp).runs
    assert runs["final_loss"].dtype == np.float64  # a numeric column, not strings
    assert math.isnan(runs.loc[0, "final_loss"])


def test_ordinary_strings_are_not_turned_into_floats(exp: Path) -> None:
    path = write_run(exp, make_result(error="ValueError: nan in input", status="failed"))
    assert store.read_summary(path)["error"] == "ValueError: nan in input"


# --------------------------------------------------------------------------------------
# Loading


def test_load_experiment_tables(exp: Path) -> None:
    write_run(exp, make_result("aaaaaaaaaaaa", seed=0))
    write_run(exp, make_result("bbbbbbbbbbbb", status="diverged", seed=1, diverged_step=2))
    loaded = load_experiment(exp)
    assert loaded.name == "exp" and loaded.path == exp
    runs = loaded.runs.set_index("run_id")
    assert list(runs.index) == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert runs["status"].tolist() == ["ok", "diverged"]
    # the config flattened to dotted columns, nested refs included
    assert runs["config.seed"].tolist() == [0, 1]
    assert runs["config.model.depth"].tolist() == [2, 2]
    assert runs["config.model.init.name"].tolist() == ["he_normal"] * 2
    assert runs["config.train.lr"].tolist() == [0.01, 0.01]
    assert "config" not in runs.columns and "versions" not in runs.columns  # nested: not columns
    assert len(loaded.layers) == 16 and len(loaded.curves) == 4
    assert loaded.layers.columns[0] == "run_id"
    assert loaded.layers.groupby("run_id").size().tolist() == [8, 8]
    assert loaded.curves.columns.tolist() == ["run_id", *schema.CURVE_COLUMNS]


def test_flatten() -> None:
    assert store.flatten({"a": {"b": {"c": 1}, "d": None}, "e": [1, 2]}, "x.") == {
        "x.a.b.c": 1,
        "x.a.d": None,
        "x.e": [1, 2],
    }


def test_newer_format_version_refused(exp: Path) -> None:
    write_run(exp, make_result(format_version=schema.FORMAT_VERSION + 1))
    with pytest.raises(ResultsError) as info:
        load_experiment(exp)
    msg = str(info.value)
    assert str(exp / "runs" / "abc123def456" / "summary.json") in msg
    assert f"version {schema.FORMAT_VERSION + 1}" in msg and "newer" in msg
    assert "upgrade initbench" in msg


@pytest.mark.parametrize("version", [None, "1", 1.0, True])
def test_missing_or_invalid_format_version_refused(exp: Path, version: Any) -> None:
    result = make_result()
    if version is None:
        del result.summary["format_version"]
    else:
        result.summary["format_version"] = version
    path = write_run(exp, result)
    with pytest.raises(ResultsError, match="format_version") as info:
        store.read_summary(path)
    assert "newer" not in str(info.value)
    assert str(path / "summary.json") in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"status": "ok",', "cannot read JSON"),
        ("", "cannot read JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ("\udcff", "cannot read JSON"),
    ],
    ids=["truncated", "empty", "list", "not-utf8"],
)
def test_malformed_summary_names_the_file(exp: Path, text: str, match: str) -> None:
    path = write_run(exp, make_result())
    summary = path / schema.SUMMARY_FILE
    summary.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ResultsError, match=match) as info:
        load_experiment(exp)
    assert str(summary) in str(info.value)


def test_corrupt_parquet_names_the_file(exp: Path) -> None:
    path = write_run(exp, make_result())
    (path / schema.LAYERS_FILE).write_bytes(b"PAR1 not really")
    with pytest.raises(ResultsError, match="cannot read Parquet") as info:
        load_experiment(exp)
    assert str(path / schema.LAYERS_FILE) in str(info.value)


# --------------------------------------------------------------------------------------
# Finding experiments


def test_find_experiments_on_root_and_on_experiment(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for name in ("b_exp", "a_exp"):
        write_run(root / name, make_result())
    (root / "notes").mkdir()  # not an experiment: no runs/
    (root / "README.txt").write_text("x")
    assert find_experiments(root) == [root / "a_exp", root / "b_exp"]
    assert find_experiments(root / "b_exp") == [root / "b_exp"]


def test_find_experiments_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such results folder") as info:
        find_experiments(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match=r"no experiment folders.*runs/"):
        find_experiments(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="no such results folder"):
        find_experiments(tmp_path / "file")


def test_skip_unreadable_collects_corrupt_runs_with_their_reason(exp: Path) -> None:
    good = write_run(exp, make_result())
    bad = write_run(exp, make_result(run_id="ffffffffffff"))
    (bad / schema.LAYERS_FILE).write_bytes(b"PAR1 not really")
    experiment = load_experiment(exp, skip_unreadable=True)
    assert list(experiment.runs["run_id"]) == [good.name]
    assert set(experiment.layers["run_id"]) == {good.name}
    assert list(experiment.unreadable) == [bad.name]
    assert "cannot read Parquet" in experiment.unreadable[bad.name]


def test_nested_summary_keys_become_dotted_columns(exp: Path) -> None:
    result = make_result(status="diverged")
    result.summary["diverged_at"] = {"what": "preact_var", "layer": 3, "t": 0, "name": "fc3"}
    write_run(exp, result)
    runs = load_experiment(exp).runs
    assert runs.loc[0, "diverged_at.what"] == "preact_var" and runs.loc[0, "diverged_at.layer"] == 3
    result.summary["versions"] = {"torch": "2.13.0"}
    write_run(exp, result)
    assert load_experiment(exp).runs.loc[0, "versions.torch"] == "2.13.0"


# --------------------------------------------------------------------------------------
# summary.json: one builder, every key


def test_every_way_a_run_ends_gives_exactly_the_summary_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from initbench.sweep import train
    from initbench.sweep.executors import failed_result
    from tests.conftest import make_config

    config = make_config()
    ok = train.execute_run(config.as_dict(), experiment="exp")
    lost = failed_result(config, "exp", "worker lost: KilledWorker")
    monkeypatch.setattr(train.Trainer, "setup", lambda self: 1 / 0)
    raised = train.execute_run(config.as_dict(), experiment="exp")
    assert [ok.status, lost.status, raised.status] == ["ok", "failed", "failed"]
    for result in (ok, lost, raised):
        assert list(result.summary) == list(schema.SUMMARY_KEYS)
        assert result.summary["config"] == config.as_dict() == result.config
        assert result.summary["run_id"] == config.run_id and result.summary["experiment"] == "exp"
    assert lost.summary["error"] == "worker lost: KilledWorker" and lost.summary["steps_done"] == 0
    assert lost.summary["test_accuracy"] is None and lost.summary["versions"] is None
    assert raised.summary["error"] == "ZeroDivisionError: division by zero"


def test_make_summary_refuses_a_key_the_schema_does_not_declare() -> None:
    from initbench.results.summary import make_summary
    from tests.conftest import make_config

    with pytest.raises(KeyError, match="probe_kernel"):
        make_summary(make_config(), "exp", probe_kernel="torch")


def test_summaries_of_older_versions_still_load(exp: Path) -> None:
    """probe_kernel is no longer written; results that have it still load, with the column."""
    write_run(exp, make_result(probe_kernel="native"))
    assert "probe_kernel" not in schema.SUMMARY_KEYS
    assert load_experiment(exp).runs.loc[0, "probe_kernel"] == "native"


# --------------------------------------------------------------------------------------
# Paths given as text, and paths that are not an experiment folder


def test_load_experiment_and_find_experiments_take_a_str(exp: Path) -> None:
    write_run(exp, make_result())
    assert len(load_experiment(str(exp)).runs) == 1
    assert find_experiments(str(exp.parent)) == [exp]


def test_load_experiment_refuses_a_path_that_is_not_one_experiment(exp: Path) -> None:
    with pytest.raises(ResultsError, match="no such folder") as info:
        load_experiment(exp)
    assert str(exp) in str(info.value)
    write_run(exp, make_result())
    with pytest.raises(
        ResultsError, match=r"not an experiment folder; it holds experiment folders \(exp\)"
    ):
        load_experiment(exp.parent)
    with pytest.raises(ResultsError, match="is not a folder"):
        load_experiment(exp / "runs" / "abc123def456" / schema.SUMMARY_FILE)
    (exp.parent / "empty").mkdir()
    with pytest.raises(ResultsError, match="not an experiment folder; it has no 'runs/'"):
        load_experiment(exp.parent / "empty")
