"""The LaTeX format: booktabs tables to ``\\input`` into a paper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from initbench.reporting.model import Section, Table, report_title

_SPECIAL: Final = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",  # the default OT1 font encoding prints < > | as other glyphs
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "—": "---",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≈": r"$\approx$",
    "Σ": r"$\Sigma$",
    "²": r"$^2$",
    "–": "--",
    "·": r"$\cdot$",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular (and the few non-ASCII signs the report uses)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def _table(table: Table) -> list[str]:
    spec = "".join("r" if n else "l" for n in table.numeric)
    out = [r"\begin{table}[htbp]", r"\centering", r"\scriptsize"]
    out += [rf"\caption{{{latex_escape(table.title)}}}", rf"\begin{{tabular}}{{{spec}}}"]
    out += [r"\toprule", " & ".join(latex_escape(c) for c in table.columns) + r" \\"]
    out.append(r"\midrule")
    out += [" & ".join(latex_escape(c.text) for c in row) + r" \\" for row in table.rows]
    out += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip"]
    out += [r"\parbox{\linewidth}{\tiny"]
    out += [latex_escape(note) + r"\\" for note in table.notes] + ["}", r"\end{table}", ""]
    return out


def render_latex(document: Sequence[Section]) -> str:
    """LaTeX fragments (booktabs tables) to \\input into a paper; needs \\usepackage{booktabs}."""
    out = [f"% {report_title()}; needs \\usepackage{{booktabs}}"]
    for section in document:
        out += ["", rf"\subsection*{{{latex_escape(section.heading)}}}", r"\begin{itemize}"]
        out += [rf"\item {latex_escape(line.strip())}" for line in section.lines]
        out += [r"\end{itemize}", ""]
        for table in section.tables:
            out += _table(table)
    return "\n".join(out) + "\n"
