"""The terminal format: rich tables, verdicts coloured on a terminal, plain text in a
file or pipe."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Final, TextIO

from initbench.reporting.model import STYLES, Section, Table

PIPE_WIDTH: Final = 120  # written to a file or pipe; wider tables are split (split_table)


def _rich_table(table: Table) -> Any:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    rich_table = RichTable(
        title=table.title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        min_width=len(table.title),  # the title on one line
    )
    for index, (header, numeric) in enumerate(zip(table.columns, table.numeric, strict=True)):
        # text wraps between words only, a number ('1.010 ± 0.052') not at all: a number
        # is never cut, folded or ellipsed
        cells = [row[index].text for row in table.rows]
        pieces = [line for text in cells for line in text.split("\n")] if numeric else []
        pieces += [word for text in [header, *cells] for word in text.split()]
        widest = max((len(piece) for piece in pieces), default=0)
        justify = "right" if numeric else "left"
        rich_table.add_column(header, justify=justify, min_width=widest, overflow="fold")
    for row in table.rows:
        rich_table.add_row(*(Text(c.text, style=_style(c.style)) for c in row))
    return rich_table


def _width(table: Table, width: int) -> int:
    """How wide the table comes out when drawn ``width`` wide (wider if it cannot fit)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(_rich_table(table), crop=False)
    return max((len(line) for line in console.export_text().splitlines()), default=0)


def _part(table: Table, columns: list[int], title: str, notes: list[str]) -> Table:
    return Table(
        title,
        [table.columns[i] for i in columns],
        [table.numeric[i] for i in columns],
        [[row[i] for i in columns] for row in table.rows],
        notes,
        table.keys,
    )


def split_table(table: Table, width: int) -> list[Table]:
    """The table as it is if it fits ``width``, else in parts that each repeat its key
    columns and take as many of the others as fit (a part is never narrower than one
    column: a number is never cut); the notes go under the last part."""
    if table.keys == 0 or len(table.columns) <= table.keys + 1 or _width(table, width) <= width:
        return [table]
    keys = list(range(table.keys))
    parts: list[list[int]] = [[]]
    for index in range(table.keys, len(table.columns)):
        trial = _part(table, keys + parts[-1] + [index], "", [])
        if parts[-1] and _width(trial, width) > width:
            parts.append([])
        parts[-1].append(index)
    n = len(parts)
    return [
        _part(table, keys + part, f"{table.title} ({i}/{n})", table.notes if i == n else [])
        for i, part in enumerate(parts, start=1)
    ]


def _style(name: str) -> str:
    return STYLES[name].terminal if name in STYLES else ""


def print_terminal(document: Sequence[Section], console: Any) -> None:
    """Draw the report with rich: verdicts coloured, notes under each table; a table wider
    than the console is split (:func:`split_table`), and a part still wider (one column
    too wide) is drawn at its own width (the terminal wraps it) rather than cut."""
    from rich.text import Text

    for section in document:
        console.rule(Text(section.heading, style="bold"))
        for line in section.lines:
            console.print(Text(line))
        for table in section.tables:
            for part in split_table(table, console.width):
                needed = _width(part, console.width)
                console.print()
                console.print(_rich_table(part), width=max(console.width, needed), crop=False)
                for note in part.notes:
                    console.print(Text(note, style="dim"))


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
