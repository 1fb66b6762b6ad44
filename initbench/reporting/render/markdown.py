"""The markdown format: GitHub-flavoured pipe tables."""

from __future__ import annotations

from collections.abc import Sequence

from initbench.reporting.model import Section, Table, report_title


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> list[str]:
    out = [f"### {table.title}", ""]
    out.append("| " + " | ".join(_escape(c) for c in table.columns) + " |")
    out.append("|" + "|".join("---:" if n else ":---" for n in table.numeric) + "|")
    out += ["| " + " | ".join(_escape(c.text) for c in row) + " |" for row in table.rows]
    return out + [""] + [f"- {_escape(note)}" for note in table.notes] + [""]


def render_markdown(document: Sequence[Section]) -> str:
    """GitHub-flavoured markdown: a heading per experiment, pipe tables, notes as lists."""
    out = [f"# {report_title()}", ""]
    for section in document:
        out += [f"## {section.heading}", ""]
        out += [f"- {_escape(line.strip())}" for line in section.lines] + [""]
        for table in section.tables:
            out += _table(table)
    return "\n".join(out)
