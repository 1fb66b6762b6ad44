"""The html format: one self-contained file a person navigates: a table of contents, an
anchor per experiment, table and figure, tables sorted by a click on a header (a small
inline script), verdicts coloured, figures inlined as base64 PNG with their captions.
Nothing is fetched from the network."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from initbench.reporting.model import STYLES, Section, Table, report_title

if TYPE_CHECKING:
    from initbench.reporting.figures import Plot

SORTABLE: Final = "sortable"  # the class of a table whose header cells sort it
TOC_ID: Final = "contents"


def _css_class(style: str) -> str:
    return f"v-{style.replace('/', '')}" if style else ""


_CSS: Final = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:110em}"
    "table{border-collapse:collapse;margin:1em 0 .3em}"
    "caption{text-align:left;font-weight:bold;padding:.3em 0}"
    "th,td{border-bottom:1px solid #ddd;padding:.2em .6em;font-size:.9em}"
    "td.num,th.num{text-align:right}ul.notes{font-size:.8em;color:#555}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.9em;color:#333;max-width:60em}"
    "table.sortable th{cursor:pointer;user-select:none}"
    "th[aria-sort=ascending]::after{content:' \\25B2'}"
    "th[aria-sort=descending]::after{content:' \\25BC'}"
    "nav#contents{background:#f6f6f6;padding:.5em 1.5em;display:inline-block}"
    "nav#contents>ul{margin:.2em 0;padding-left:1.2em}nav#contents ul ul{display:inline;padding:0}"
    "nav#contents ul ul li{display:inline;font-size:.9em}"
    "nav#contents ul ul li+li::before{content:' \\00b7  '}nav#contents ul ul::before{content:': '}"
    "a.top{font-size:.7em;margin-left:1em}"
    + "".join(f".{_css_class(k)}{{color:{v.html};font-weight:bold}}" for k, v in STYLES.items())
)

# Click a header: sort the body's rows by that column, numbers by value (the mean of
# 'm ± s' and '(m ± s)e-12'), text by locale; a second click reverses; blanks ('—') last.
_SCRIPT: Final = """
function ibNumber(text) {
  var t = text.replace(/[\\s,\\u00d7]/g, "");
  var m = t.match(/^\\(([-+]?[\\d.]+(?:e[-+]?\\d+)?)\\u00b1[^)]*\\)e([-+]?\\d+)/i);
  if (m) return parseFloat(m[1]) * Math.pow(10, +m[2]);
  if (/^[-+]?inf/i.test(t)) return t.charAt(0) === "-" ? -Infinity : Infinity;
  var v = parseFloat(t);
  return isNaN(v) ? null : v;
}
function ibSort(th) {
  var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  var up = th.getAttribute("aria-sort") !== "ascending", num = th.classList.contains("num");
  table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
  th.setAttribute("aria-sort", up ? "ascending" : "descending");
  var rows = Array.prototype.slice.call(body.rows).map(function (row) {
    var text = row.cells[col] ? row.cells[col].textContent : "";
    return {row: row, key: num ? ibNumber(text) : (text === "\\u2014" ? null : text)};
  });
  rows.sort(function (a, b) {
    if (a.key === null || b.key === null) return (a.key === null) - (b.key === null);
    var d = num ? a.key - b.key : a.key.localeCompare(b.key, undefined, {numeric: true});
    return up ? d : -d;
  });
  rows.forEach(function (r) { body.appendChild(r.row); });
}
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.title = "sort by this column";
  th.addEventListener("click", function () { ibSort(th); });
});
"""


class _Ids:
    """Unique, readable element ids ('mlp-relu', 'mlp-relu-2', ...)."""

    def __init__(self) -> None:
        self.used = {TOC_ID}

    def __call__(self, *parts: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:60] or "part"
        candidate, n = base, 1
        while candidate in self.used:
            n += 1
            candidate = f"{base}-{n}"
        self.used.add(candidate)
        return candidate


def _table(table: Table, anchor: str) -> list[str]:
    esc = html.escape
    out = [f'<table id="{anchor}" class="{SORTABLE}">', f"<caption>{esc(table.title)}</caption>"]
    out.append("<thead><tr>")
    for header, numeric in zip(table.columns, table.numeric, strict=True):
        out.append(f'<th class="{"num" if numeric else "txt"}">{esc(header)}</th>')
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for cell, numeric in zip(row, table.numeric, strict=True):
            classes = " ".join(filter(None, ["num" if numeric else "", _css_class(cell.style)]))
            cells.append(f'<td class="{classes}">{esc(cell.text)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody></table>", '<ul class="notes">']
    return out + [f"<li>{esc(note)}</li>" for note in table.notes] + ["</ul>"]


def _figure(plot: Plot, anchor: str) -> list[str]:
    data = base64.b64encode(plot.png).decode("ascii")
    alt = html.escape(plot.title)
    return [
        f'<figure id="{anchor}"><img alt="{alt}" src="data:image/png;base64,{data}">',
        f"<figcaption><b>{alt}.</b> {html.escape(plot.caption)}</figcaption></figure>",
    ]


def _section(section: Section, plots: Mapping[str, Plot], ids: _Ids) -> tuple[list[str], list[str]]:
    """(body, table-of-contents entry) of one experiment: its heading and lines, each
    table and each figure with an anchor the contents link to."""
    esc, anchor = html.escape, ids(section.heading)
    body = [f'<section id="{anchor}">', f"<h2>{esc(section.heading)}"]
    body[-1] += f'<a class="top" href="#{TOC_ID}">contents</a></h2>'
    body += ["<ul>", *(f"<li>{esc(line.strip())}</li>" for line in section.lines), "</ul>"]
    toc = [f'<li><a href="#{anchor}">{esc(section.heading)}</a><ul>']
    for table in section.tables:
        table_id = ids(section.heading, table.title.split("|")[0])
        body += _table(table, table_id)
        toc.append(f'<li><a href="#{table_id}">{esc(table.title)}</a></li>')
    if plots:
        figures_id = ids(section.heading, "figures")
        body.append(f'<h3 id="{figures_id}">Figures</h3>')
        for name, plot in plots.items():
            figure_id = ids(section.heading, name)
            body += _figure(plot, figure_id)
            toc.append(f'<li><a href="#{figure_id}">Figure: {esc(plot.title)}</a></li>')
    return [*body, "</section>"], [*toc, "</ul></li>"]


def render_html(document: Sequence[Section], figures: Mapping[str, Mapping[str, Plot]]) -> str:
    """One self-contained HTML file: a table of contents, sortable tables with coloured
    verdicts, figures inlined (base64 PNG) with captions; ``figures``: experiment
    (section heading) -> figure name -> :class:`~initbench.reporting.figures.Plot`."""
    esc, ids = html.escape, _Ids()
    title = report_title()
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">']
    out += [f"<title>{esc(title)}</title>", f"<style>{_CSS}</style></head><body>"]
    out.append(f"<h1>{esc(title)}</h1>")
    body, toc = [], [f'<nav id="{TOC_ID}"><b>Contents</b><ul>']
    for section in document:
        part, entry = _section(section, figures.get(section.heading, {}), ids)
        body += part
        toc += entry
    out += [*toc, "</ul></nav>", *body, f"<script>{_SCRIPT}</script>"]
    return "\n".join([*out, "</body></html>"]) + "\n"
