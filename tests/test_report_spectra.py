"""The report's Jacobian spectra: the table recomputed from the stored spectra, theory
beside it, the spread-or-mean sentence, the figure, and nothing where no run took spectra."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from initbench.analysis import Thresholds
from initbench.analysis.spectra import spectrum_table
from initbench.config.spec import build_spec
from initbench.reporting import build_reports
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.figures import figures
from initbench.reporting.output import sections
from initbench.reporting.render.data import render_json
from initbench.reporting.spectra import TITLE, spearman, spectrum_tables, spread_or_mean
from initbench.results import store
from initbench.sweep.train import execute_run

SPEC = """\
data: {name: synthetic, n_train: 128, n_test: 64}
model: {arch: mlp, width: 16, depth: 3, activation: tanh}
train: {steps: 4, log_every: 2, batch_size: 32, jacobian: true}
grid: {model.init: [orthogonal, xavier_normal]}
seeds: 2
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for name, text in {"spectra": SPEC, "plain": SPEC.replace(", jacobian: true", "")}.items():
        spec = build_spec({"name": name, **yaml.safe_load(text)}, name, text)
        store.write_spec(root / name, text)
        for run in spec.runs:
            store.write_run(root / name, execute_run(run.as_dict(), name, threads=1))
    return root


@pytest.fixture(scope="module")
def reports(results: Path) -> dict[str, ExperimentReport]:
    return {rep.name: rep for rep in build_reports(results, Thresholds())}


def test_spectrum_table_is_recomputed_from_the_stored_singular_values(reports, results) -> None:
    rep = reports["spectra"]
    (table,) = spectrum_tables(rep)
    assert table.title == TITLE
    mean_col = table.columns.index("mean sigma^2")
    for row, cells in zip(rep.config_rows, table.rows, strict=True):
        per_run = []
        for run_id in row["run_ids"].split():
            sv = pd.read_parquet(results / "spectra" / "runs" / run_id / "spectra.parquet")
            per_run.append(float((sv.query("step == 0")["value"] ** 2).mean()))
        exact = spectrum_table(rep.experiment.runs, rep.experiment.spectra)
        exact = exact.set_index("run_id").query("step == 0")["mean_sq"]
        ids = row["run_ids"].split()
        np.testing.assert_allclose(exact.loc[ids].to_numpy(), per_run, rtol=1e-12)
        mean = cells[mean_col].text.split(" ± ")[0]
        assert float(mean) == pytest.approx(np.mean(per_run), rel=0.06)  # 2-3 shown digits
    theory = table.columns.index("theory")
    assert all(cells[theory].text != "—" for cells in table.rows)  # tanh mlps: predicted


def test_experiment_without_spectra_gets_no_spectrum_table_or_figure(reports) -> None:
    assert spectrum_tables(reports["plain"]) == []
    assert "spectrum" not in figures(reports["plain"])
    assert "spectrum" in figures(reports["spectra"])


def test_spectrum_table_is_in_the_report(reports) -> None:
    document = sections(list(reports.values()), Thresholds(), per_layer=False)
    titles = {s.heading: [t.title for t in s.tables] for s in document}
    assert TITLE in titles["spectra"] and TITLE not in titles["plain"]


def test_spearman_is_pearson_of_the_ranks() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their mean rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    expected = np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    assert spearman([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(expected)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _row(mean: float, spread: float, loss: float) -> dict:
    return {"mean_sq_mean": mean, "spread_mean": spread, "final_loss_mean": loss}


def test_spread_or_mean_names_the_one_that_ranks_the_loss() -> None:
    # the mean is 1 everywhere but one; the loss follows the spread
    rows = [_row(1.0, s, 0.1 * s) for s in (0.1, 1, 5, 20)] + [_row(1e-6, 0.5, 0.3)]
    text = spread_or_mean(rows)
    assert text and "the spread goes with slower training" in text
    assert "Among the 4 whose mean sigma^2 is within a factor 3 of 1" in text
    assert "rho = 1.00." in text
    rows = [_row(10.0**-k, 1.0 + 0.01 * k, 0.5 * k) for k in range(5)]
    rows = [{**r, "spread_mean": 1.0 - 0.01 * i} for i, r in enumerate(rows)]
    text = spread_or_mean(rows)
    assert text and "the mean goes with slower training" in text
    assert spread_or_mean(rows[:3]) is None  # too few configurations to say


def test_json_report_carries_each_runs_spectrum_with_theory(reports) -> None:
    document = json.loads(render_json(list(reports.values()), Thresholds(), per_layer=False))
    by_name = {e["name"]: e for e in document["experiments"]}
    assert "spectrum" not in by_name["plain"]
    rows = by_name["spectra"]["spectrum"]
    assert len(rows) == len(reports["spectra"].runs)  # step 0 only: jacobian_every is 0
    assert all(r["theory_mean_sq"] > 0 and r["mean_sq"] > 0 for r in rows)
