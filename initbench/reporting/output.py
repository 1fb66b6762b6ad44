"""``initbench report``'s entry point: build the reports, lay out the document, render it
in the chosen format, and write it (and the figures) to files or a stream."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from initbench.analysis import Thresholds
from initbench.reporting.answer import answer_tables, index_section
from initbench.reporting.experiment import ExperimentReport, ReportError, build_reports
from initbench.reporting.figures import Plot, figure_pngs
from initbench.reporting.findings import findings_table
from initbench.reporting.model import Section
from initbench.reporting.notes import GLOSSARY_TITLE, glossary, header_lines
from initbench.reporting.render.data import render_csv, render_json
from initbench.reporting.render.html import render_html
from initbench.reporting.render.latex import render_latex
from initbench.reporting.render.markdown import render_markdown
from initbench.reporting.render.terminal import print_to, render_terminal
from initbench.reporting.spectra import spectrum_tables
from initbench.reporting.spread import spread_tables
from initbench.reporting.tables import per_layer_tables, summary_tables
from initbench.results import store


def sections(
    reports: Sequence[ExperimentReport],
    th: Thresholds,
    per_layer: bool,
    rows: str | None = None,
    cols: str | None = None,
) -> list[Section]:
    """The format-neutral document: an index of the experiments' answers when there are
    several, one section per experiment (its Answer first), and one glossary at the end."""
    out = []
    for rep in reports:
        findings = findings_table(rep)
        tables = answer_tables(rep, rows, cols) + ([findings] if findings else [])
        tables += summary_tables(rep, th) + spectrum_tables(rep) + spread_tables(rep)
        if per_layer and rep.keys is not None:
            tables += per_layer_tables(rep, th)
        out.append(Section(rep.name, header_lines(rep), tables))
    index = [index_section(out)] if len(out) > 1 else []
    return [*index, *out, Section(GLOSSARY_TITLE, glossary(reports, th, per_layer), [])]


@dataclass(frozen=True)
class _Rendering:
    """What a renderer may draw from: the reports, their document, and the figures."""

    reports: Sequence[ExperimentReport]
    document: Sequence[Section]
    th: Thresholds
    per_layer: bool
    pngs: Mapping[str, Mapping[str, Plot]]


# Format -> its renderer, as text (terminal: plain, no colour).
RENDERERS: Final[dict[str, Callable[[_Rendering], str]]] = {
    "terminal": lambda r: render_terminal(r.document),
    "markdown": lambda r: render_markdown(r.document),
    "csv": lambda r: render_csv(r.reports, r.per_layer),
    "json": lambda r: render_json(r.reports, r.th, r.per_layer),
    "html": lambda r: render_html(r.document, r.pngs),
    "latex": lambda r: render_latex(r.document),
}
FORMATS: Final = tuple(RENDERERS)


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        store.atomic_write_text(path, data)
    return path


def _write_plots(plots: Path, pngs: Mapping[str, Mapping[str, Plot]]) -> list[Path]:
    """Each figure as ``<plots>/<experiment>_<figure>.png``."""
    return [
        _write(Path(plots) / f"{experiment}_{name}.png", plot.png)
        for experiment, figs in pngs.items()
        for name, plot in figs.items()
    ]


def generate(
    results_dir: Path,
    *,
    fmt: str = "terminal",
    out: Path | None = None,
    plots: Path | None = None,
    per_layer: bool = False,
    select: Sequence[str] = (),
    thresholds: Thresholds | None = None,
    stream: TextIO | None = None,
    rows: str | None = None,
    cols: str | None = None,
) -> list[Path]:
    """Report every experiment under ``results_dir`` in ``fmt``: to ``out``, else to
    ``stream`` (stdout; the terminal format in colour). ``plots``: also write each
    figure as ``<plots>/<experiment>_<figure>.png``; html embeds the figures either way.
    ``rows`` / ``cols``: the Answer's axes (config keys), else chosen from the grid.
    Returns the files written. Raises store.ResultsError (no results) or ReportError."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    th = thresholds or Thresholds()
    reports = build_reports(Path(results_dir), th, select)
    pngs = {r.name: figure_pngs(r) for r in reports} if plots or fmt == "html" else {}
    written = _write_plots(plots, pngs) if plots is not None else []
    document = sections(reports, th, per_layer, rows, cols)
    stream = stream or sys.stdout
    if fmt == "terminal" and out is None:
        print_to(document, stream)
        return written
    text = RENDERERS[fmt](_Rendering(reports, document, th, per_layer, pngs))
    if out is None:
        stream.write(text)
        return written
    return [*written, _write(Path(out), text)]
