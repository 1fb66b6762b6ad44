"""The report's renderers on a small hand-built document: every format draws the same
cells, escapes what its syntax needs, and colours verdicts by the one style table."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from initbench import analysis
from initbench.analysis import Thresholds
from initbench.reporting import FORMATS
from initbench.reporting.figures import Plot
from initbench.reporting.model import (
    MISSING,
    STYLES,
    Cell,
    Section,
    Table,
    fmt_num,
    fmt_pm,
    fmt_stat,
)
from initbench.reporting.notes import definitions
from initbench.reporting.render.html import render_html
from initbench.reporting.render.latex import latex_escape, render_latex
from initbench.reporting.render.markdown import render_markdown
from initbench.reporting.render.terminal import print_terminal, render_terminal
from initbench.results import schema

TABLE = Table(
    "Step 0 | a & b",
    ["model.init", "fwd factor", "forward"],
    [False, True, False],
    [
        [Cell("he_normal"), Cell("1.01 ± 0.02"), Cell("stable", "stable")],
        [Cell("xavier_normal"), Cell(MISSING), Cell("vanishing", "vanishing")],
    ],
    ["ratio < 1/100", "50% of_units"],
)
DOCUMENT = [Section("mlp_relu", ["results: /tmp/x", "rows: model.init"], [TABLE])]


def test_markdown_escapes_pipes_and_aligns_numbers_right() -> None:
    out = render_markdown(DOCUMENT)
    assert "### Step 0 | a & b" in out
    assert "| model.init | fwd factor | forward |" in out
    assert "|:---|---:|:---|" in out
    assert "| xavier_normal | — | vanishing |" in out
    assert "- ratio < 1/100" in out


def test_latex_escapes_every_special_character() -> None:
    assert latex_escape("a_b & 50% ± 1 < 2 | {x}") == (
        r"a\_b \& 50\% $\pm$ 1 \textless{} 2 \textbar{} \{x\}"
    )
    out = render_latex(DOCUMENT)
    assert r"\caption{Step 0 \textbar{} a \& b}" in out
    assert r"\begin{tabular}{lrl}" in out
    assert r"he\_normal & 1.01 $\pm$ 0.02 & stable \\" in out


def test_html_colours_each_verdict_by_its_style() -> None:
    out = render_html(DOCUMENT, {"mlp_relu": {"loss": Plot("Loss", "The loss.", b"\x89PNG")}})
    assert '<td class="v-stable">stable</td>' in out
    assert '<td class="num">1.01 ± 0.02</td>' in out
    assert f".v-vanishing{{color:{STYLES['vanishing'].html};font-weight:bold}}" in out
    assert "<caption>Step 0 | a &amp; b</caption>" in out
    assert 'src="data:image/png;base64,iVBORw=="' in out


def test_terminal_text_has_no_colour_and_the_terminal_has_the_verdict_colours() -> None:
    text = render_terminal(DOCUMENT)
    assert "\x1b[" not in text and "xavier_normal" in text and "50% of_units" in text
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system="standard")
    print_terminal(DOCUMENT, console)
    assert "\x1b[" in console.file.getvalue()


def test_every_verdict_has_a_style() -> None:
    assert set(analysis.VERDICTS) <= set(STYLES)


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, MISSING), (float("nan"), MISSING), (float("inf"), "inf"), (-float("inf"), "-inf")],
)
def test_numbers_that_are_not_finite_are_named(value: float | None, text: str) -> None:
    assert fmt_num(value) == text


def test_one_seed_shows_the_mean_alone() -> None:
    row = {"x_mean": 0.123456, "x_std": 0.01, "seeds": 2}
    assert fmt_stat(row, "x") == "0.123 ± 0.010"  # issue 16: rounded by the std
    assert fmt_stat({**row, "seeds": 1}, "x") == "0.123"


@pytest.mark.parametrize(
    ("mean", "std", "text"),
    [
        (2.51e-12, 2.54e-12, "(2.5 ± 2.5)e-12"),
        (1.0103, 0.0524, "1.010 ± 0.052"),
        (1.01, 5.24e-05, "1.010000 ± 0.000052"),
        (0.995, 0.0123, "0.995 ± 0.012"),
        (16400.0, 3000.0, "(1.64 ± 0.30)e4"),
        (123.0, 23.0, "123 ± 23"),
        (1234.0, 230.0, "1230 ± 230"),
        (0.5, 0.0, "0.5 ± 0"),
    ],
)
def test_mean_and_std_are_rounded_by_the_uncertainty(mean: float, std: float, text: str) -> None:
    assert fmt_pm(mean, std) == text


def test_metric_definitions_are_the_schemas() -> None:
    glossary = definitions(Thresholds())
    for metric in ("dead_frac", "sat_frac"):
        assert f"{metric}: {schema.LAYER_METRICS[metric]}" in glossary


def test_the_cli_offers_every_format() -> None:
    from initbench.cli import main

    (option,) = [p for p in main.commands["report"].params if p.name == "fmt"]
    assert tuple(option.type.choices) == FORMATS


def test_json_is_valid_for_no_experiments() -> None:
    from initbench.reporting.render.data import render_json

    data = json.loads(render_json([], Thresholds(), per_layer=False))
    assert data["experiments"] == [] and data["definitions"] == definitions(Thresholds())
