"""The html format: one self-contained file, verdicts coloured, figures inlined."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Final

from initbench.reporting.model import STYLES, Section, Table, report_title


def _css_class(style: str) -> str:
    return f"v-{style.replace('/', '')}" if style else ""


_CSS: Final = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:110em}"
    "table{border-collapse:collapse;margin:1em 0 .3em}"
    "caption{text-align:left;font-weight:bold;padding:.3em 0}"
    "th,td{border-bottom:1px solid #ddd;padding:.2em .6em;font-size:.9em}"
    "td.num,th.num{text-align:right}ul.notes{font-size:.8em;color:#555}"
    "figure{margin:1em 0}img{max-width:100%}"
    + "".join(f".{_css_class(k)}{{color:{v.html};font-weight:bold}}" for k, v in STYLES.items())
)


def _table(table: Table) -> list[str]:
    esc = html.escape
    out = ["<table>", f"<caption>{esc(table.title)}</caption>", "<thead><tr>"]
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


def _figures(pngs: Mapping[str, bytes]) -> list[str]:
    out = []
    for name, png in pngs.items():
        data = base64.b64encode(png).decode("ascii")
        out.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        out.append(f"<figcaption>{html.escape(name)}</figcaption></figure>")
    return out


def render_html(document: Sequence[Section], figures: Mapping[str, Mapping[str, bytes]]) -> str:
    """One self-contained HTML file: tables with coloured verdicts, PNGs inlined (base64);
    ``figures``: experiment (section heading) -> figure name -> PNG bytes."""
    esc = html.escape
    title = report_title()
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">']
    out += [f"<title>{esc(title)}</title>", f"<style>{_CSS}</style></head><body>"]
    out.append(f"<h1>{esc(title)}</h1>")
    for section in document:
        out += [f"<h2>{esc(section.heading)}</h2>", "<ul>"]
        out += [f"<li>{esc(line.strip())}</li>" for line in section.lines] + ["</ul>"]
        for table in section.tables:
            out += _table(table)
        out += _figures(figures.get(section.heading, {}))
    return "\n".join([*out, "</body></html>"]) + "\n"
