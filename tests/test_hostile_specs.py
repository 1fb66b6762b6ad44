"""Hostile or absurd specs: each is refused at once with exit 2, a short located message
and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from initbench.cli import main
from initbench.config.spec import SpecError, load_spec
from initbench.config.yamlfile import MAX_DEPTH, MAX_VALUES

BASE = "name: hostile\ndata: {name: synthetic, n_train: 64, n_test: 32}\n"

# 509 bytes that expand to 10^9 values: each level repeats the previous one ten times.
LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" if i else 'l0: &l0 "lol"\n'
    for i in range(10)
)

HOSTILE = {
    "billion laughs": (BASE + "x-" + LAUGHS.replace("\nl", "\nx-l"), "expands to more than"),
    "aliases as description": (
        LAUGHS.replace("l", "d") + BASE + "description: *d5\n",
        "expands to more than",
    ),
    "list as a key": (BASE + "model:\n  ? [a, b]\n  : 1\n", "mapping key must be a plain value"),
    "deep nesting": (BASE + "grid: {model.depth: " + "[" * 5000 + "]" * 5000 + "}\n", "nested"),
    "self alias": (BASE + "model: &m {width: [*m]}\n", "refers to a value that contains it"),
}


def _run(spec: Path, out: Path, *args: str):
    return CliRunner().invoke(main, ["run", str(spec), "--out", str(out), *args])


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_refused_short_located_and_nothing_written(case: str, tmp_path: Path):
    text, message = HOSTILE[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    done = _run(spec, tmp_path / "out")
    assert done.exit_code == 2, done.output
    assert message in done.output and str(spec) in done.output
    assert len(done.output) < 2000
    assert not (tmp_path / "out").exists()


def test_the_bounds_are_far_above_any_real_spec() -> None:
    shipped = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))
    assert shipped
    for path in shipped:
        load_spec(path)  # none comes near MAX_DEPTH or MAX_VALUES
    assert MAX_DEPTH >= 20 and MAX_VALUES >= 10_000


def test_an_alias_reused_a_few_times_is_fine(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE + "model: {depth: 2, width: 8}\ngrid:\n  model.width: &w [8, 16]\n")
    assert len(load_spec(spec).runs) == 2


@pytest.mark.parametrize(
    "override",
    ["grid.model.depth=" + "[" * 5000 + "]" * 5000, "model.width=&a [*a]"],
)
def test_hostile_set_values_are_refused(override: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE)
    with pytest.raises(SpecError, match="value is not valid YAML"):
        load_spec(spec, [override])


def test_a_huge_name_is_echoed_short(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE.replace("hostile", "n" * 1_000_000))
    done = _run(spec, tmp_path / "out")
    assert done.exit_code == 2 and "name" in done.output
    assert len(done.output) < 2000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("data: {name: synthetic, n_train: '256'}", "data.n_train: Input should be a valid int"),
        ("data: {name: synthetic, n_train: true}", "data.n_train: Input should be a valid integer"),
        ("data: {name: synthetic}\nmodel: {depth: '3'}", "model.depth: Input should be a valid"),
        ("data: {name: synthetic}\nmodel: {init: {name: normal, std: '0.1'}}", "valid number"),
    ],
)
def test_every_key_refuses_values_of_another_type_alike(body: str, message: str, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: typed\n{body}\n")
    with pytest.raises(SpecError, match=message):
        load_spec(spec)


def test_a_bad_seeds_value_is_echoed_once(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\ndata: {name: synthetic}\nseeds: []\n")
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert str(caught.value).count("got []") == 1


def test_a_grid_too_large_is_refused_before_expanding_and_nothing_written(tmp_path: Path):
    axis = "[" + ", ".join(str(i) for i in range(1, 101)) + "]"
    spec = tmp_path / "spec.yaml"
    grid = f"grid: {{model.depth: {axis}, model.width: {axis}, train.lr: {axis}}}\n"
    spec.write_text(BASE + grid + "seeds: 2\n")  # 2,000,000 runs
    done = _run(spec, tmp_path / "out")
    assert done.exit_code == 2 and "= 2,000,000 runs; at most 10,000" in done.output
    assert not (tmp_path / "out").exists()


def test_a_sweep_refused_at_its_size_leaves_no_folder(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    depths = ", ".join(str(d) for d in range(1, 12))
    widths = ", ".join(str(w) for w in range(1, 92))
    grid = f"grid: {{model.depth: [{depths}], model.width: [{widths}]}}\n"
    spec.write_text(BASE + "train: {batch_size: 16}\n" + grid)  # 11 x 91 = 1,001 runs
    done = _run(spec, tmp_path / "out" / "deeper")
    assert done.exit_code == 2 and "pass --yes to run it" in done.output
    assert not (tmp_path / "out").exists()
