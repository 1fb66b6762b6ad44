"""The terminal format: rich tables, verdicts coloured on a terminal, plain text in a
file or pipe."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Final, TextIO

from initbench.reporting.model import STYLES, Section, Table

PIPE_WIDTH: Final = 200  # written to a file or pipe: wide enough for every column


def _rich_table(table: Table) -> Any:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    rich_table = RichTable(
        title=table.title,
        title_justify="left",
        title_style="bold",
        caption="\n".join(table.notes),
        caption_justify="left",
        caption_style="dim",
        box=box.SIMPLE_HEAD,
    )
    for index, (header, numeric) in enumerate(zip(table.columns, table.numeric, strict=True)):
        # wrap between words only: a number is never cut, folded or ellipsed
        words = [header, *(row[index].text for row in table.rows)]
        widest = max(len(word) for text in words for word in text.split() or [""])
        justify = "right" if numeric else "left"
        rich_table.add_column(header, justify=justify, min_width=widest, overflow="fold")
    for row in table.rows:
        rich_table.add_row(*(Text(c.text, style=_style(c.style)) for c in row))
    return rich_table


def _style(name: str) -> str:
    return STYLES[name].terminal if name in STYLES else ""


def print_terminal(document: Sequence[Section], console: Any) -> None:
    """Draw the report with rich: verdicts coloured, notes under each table; a table wider
    than the console is drawn at its own width (the terminal wraps it) rather than cut."""
    from rich.measure import Measurement
    from rich.text import Text

    for section in document:
        console.rule(Text(section.heading, style="bold"))
        for line in section.lines:
            console.print(Text(line))
        for table in section.tables:
            rich_table = _rich_table(table)
            unbounded = console.options.update(max_width=10**6)
            needed = Measurement.get(console, unbounded, rich_table).minimum
            console.print()
            console.print(rich_table, width=max(console.width, needed), crop=False)


def print_to(document: Sequence[Section], stream: TextIO) -> None:
    """Draw the report on ``stream``: in colour at the terminal's width on a terminal,
    else PIPE_WIDTH wide (rich leaves out the colour when it is not a terminal)."""
    from rich.console import Console

    width = None if stream.isatty() else PIPE_WIDTH
    print_terminal(document, Console(file=stream, width=width))


def render_terminal(document: Sequence[Section]) -> str:
    """The terminal format as plain text (no colour), PIPE_WIDTH wide, for a file."""
    from rich.console import Console

    console = Console(record=True, file=io.StringIO(), width=PIPE_WIDTH, color_system=None)
    print_terminal(document, console)
    return console.export_text()
