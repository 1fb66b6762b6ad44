"""The order-to-chaos phase diagram: the plane's table and critical line
(initbench.meanfield.phase), the files `initbench theory --phase-diagram` writes, the
measured overlay from a results folder and its answer (initbench.reporting.phase)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from initbench import api
from initbench.cli import main
from initbench.meanfield import critical_sigma_w2, fixed_point, numpy_activation
from initbench.meanfield.phase import critical_line, phase_grid
from initbench.reporting.phase import FILES, MEASURED_FILE, answer

ROOT = Path(__file__).resolve().parents[1]
TANH = numpy_activation("tanh")


def test_grid_rows_are_the_fixed_points() -> None:
    grid = phase_grid("tanh", [1.0, 2.0, 4.0], [0.0, 0.05])
    assert len(grid) == 6
    row = grid[(grid["sigma_w2"] == 2.0) & (grid["sigma_b2"] == 0.05)].iloc[0]
    fp = fixed_point(TANH, 2.0, 0.05)
    assert row["depth_scale"] == fp.depth_scale and row["c_star"] == fp.c_star
    assert row["regime"] == "chaotic"
    assert grid[grid["sigma_w2"] == 1.0]["regime"].tolist() == ["critical", "ordered"]


def test_critical_line_is_schoenholz() -> None:
    line = critical_line("tanh", [0.0, 0.05, 0.1])
    assert line["sigma_w2"].to_numpy() == pytest.approx([1.0, 1.761, 1.986], rel=0.005)


def _measured(rows: list[tuple[float, int, str]]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["sigma_w2", "depth", "trainable"])
    xi = [fixed_point(TANH, w, 0.05).depth_scale for w in table["sigma_w2"]]
    return table.assign(sigma_b2=0.05, xi_c=xi, train_depth=[6 * x for x in xi])


def test_answer_says_yes_when_nothing_beyond_six_xi_c_trained() -> None:
    # sigma_w^2 = 1: 6 xi_c = 21.8; 4: 41.9
    text = answer(_measured([(1.0, 10, "yes"), (1.0, 40, "no"), (4.0, 80, "partly")]))
    assert text.startswith("Yes: depth ~6 xi_c bounds trainability here")
    assert (
        "None of the 2 configurations deeper than 6 xi_c trained (1 partly: sigma_w^2 = 4" in text
    )
    assert "1 of 1 within it trained" in text


def test_answer_says_no_and_where_when_a_deep_net_trained() -> None:
    text = answer(_measured([(1.0, 40, "yes"), (4.0, 20, "no")]))
    assert text.startswith("No: 1 of 1 configurations deeper than 6 xi_c trained")
    assert "sigma_w^2 = 1 at depth 40 (6 xi_c = 21.8)" in text
    assert "0 of 1 within it trained (not: sigma_w^2 = 4 at depth 20" in text


def test_phase_diagram_writes_its_table_line_and_figure(tmp_path: Path) -> None:
    paths, text = api.phase_diagram("tanh", tmp_path, resolution=3)
    assert [p.name for p in paths] == list(FILES) and text is None
    grid = pd.read_csv(tmp_path / "phase_diagram.csv")
    assert len(grid) == 9 and set(grid["regime"]) <= {"ordered", "critical", "chaotic"}
    line = pd.read_csv(tmp_path / "critical_line.csv")
    b2 = float(line["sigma_b2"].iloc[-1])
    assert line["sigma_w2"].iloc[-1] == pytest.approx(critical_sigma_w2(TANH, b2))
    assert (tmp_path / "phase_diagram.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """order_to_chaos at a tiny size: two sigma_w^2 and two depths, two steps each."""
    out = tmp_path_factory.mktemp("order_to_chaos")
    sets = ["grid.model.init.scale=[1.0,4.0]", "grid.model.depth=[2,3]", "train.steps=2"]
    sets += ["train.log_every=1", "model.width=8"]
    args = ["run", str(ROOT / "configs" / "order_to_chaos.yaml"), "--out", str(out)]
    result = CliRunner().invoke(main, args + [f"--set={s}" for s in sets])
    assert result.exit_code == 0, result.output
    return out


def test_phase_diagram_overlays_a_sweep(sweep: Path, tmp_path: Path) -> None:
    args = ["theory", "--phase-diagram", "--activation", "tanh", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--results", str(sweep), "--resolution", "3"])
    assert result.exit_code == 0, result.output
    measured = pd.read_csv(tmp_path / MEASURED_FILE)
    assert sorted(measured["sigma_w2"].unique()) == pytest.approx([1.0, 4.0])
    assert measured["sigma_b2"].to_numpy() == pytest.approx(np.full(4, 0.05), rel=1e-6)
    assert sorted(measured["depth"]) == [2, 2, 3, 3]
    xi = fixed_point(TANH, 4.0, 0.05).depth_scale
    assert measured[measured["sigma_w2"] == 4.0]["xi_c"].iloc[0] == pytest.approx(xi, rel=1e-5)
    assert "6 xi_c" in result.output  # the answer
    assert all(v in ("yes", "partly", "no") for v in measured["trainable"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--activation", "tanh"], "needs --out DIR"),
        (["--activation", "tanh", "--sigma-w2", "2", "--out", "x"], "--sigma-w2: not used"),
        (["--activation", "tnah", "--out", "OUT"], "did you mean"),
        (["--activation", "tanh", "--out", "OUT", "--results", "nowhere"], "nowhere"),
    ],
)
def test_phase_diagram_bad_input_exits_2(args: list[str], message: str, tmp_path: Path) -> None:
    args = [str(tmp_path / "o") if a == "OUT" else a for a in args]
    result = CliRunner().invoke(main, ["theory", "--phase-diagram", "--resolution", "2", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_out_without_phase_diagram_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["theory", "--activation", "tanh", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "only with --phase-diagram" in result.output
