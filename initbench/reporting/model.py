"""The report's format-neutral document: cells, columns, tables, sections, and how a
number is written in a cell. Every renderer draws these same objects."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import pandas as pd

import initbench

MISSING: Final = "—"  # NaN cell: not measured, or undefined (the verdict and notes say why)


class Style(NamedTuple):
    """How one cell style is drawn: a rich style (terminal) and a CSS colour (html)."""

    terminal: str
    html: str


# Cell style name (a verdict, 'mixed' or 'flag') -> how each renderer colours it.
STYLES: Final[dict[str, Style]] = {
    "stable": Style("green", "#2e7d32"),
    "vanishing": Style("bold blue", "#1565c0"),
    "exploding": Style("bold red", "#c62828"),
    "saturated": Style("bold magenta", "#6a1b9a"),
    "collapsed": Style("bold magenta", "#8e24aa"),
    "non-finite": Style("bold red", "#c62828"),
    "undefined": Style("dim", "#888888"),
    "mixed": Style("yellow", "#b26a00"),
    "flag": Style("bold yellow", "#b26a00"),
}


def report_title() -> str:
    """The heading of a whole report, with the initbench version that wrote it."""
    return f"initbench report (initbench {initbench.__version__})"


@dataclass(frozen=True)
class Cell:
    """One table cell: its text and a style name (a key of STYLES, or '')."""

    text: str
    style: str = ""


@dataclass
class Table:
    """A format-neutral table: every renderer draws the same cells and notes."""

    title: str
    columns: list[str]
    numeric: list[bool]
    rows: list[list[Cell]]
    notes: list[str]
    keys: int = 0  # leading columns that name a row: repeated where a narrow output splits it


@dataclass
class Section:
    """One experiment in a rendered report."""

    heading: str
    lines: list[str]
    tables: list[Table]


@dataclass(frozen=True)
class Column:
    """A table column: header, cell of one row, right-aligned (numeric) or not."""

    header: str
    cell: Callable[[Mapping[str, Any]], Cell]
    numeric: bool = True


def fmt_num(value: Any) -> str:
    """A number with 3 significant digits; NaN/None as MISSING, infinities as 'inf'."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return MISSING
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}"


PLAIN_EXPONENTS: Final = range(-2, 4)  # 0.01 .. 9999 written plainly; else one shared e-exponent


def fmt_pm(mean: float, std: float) -> str:
    """``mean ± std`` rounded by the uncertainty: the std to 2 significant figures, the
    mean to the same decimal place, one exponent shared by both outside 0.01..9999:
    ``1.010 ± 0.052``, ``(2.5 ± 2.5)e-12``, ``(1.235 ± 0.023)e4``."""
    if std == 0:
        return f"{fmt_num(mean)} ± 0"
    last = math.floor(math.log10(abs(std))) - 1  # the std's second significant digit
    top = math.floor(math.log10(max(abs(mean), abs(std))))
    exponent = 0 if top in PLAIN_EXPONENTS else top
    decimals = max(exponent - last, 0)
    scale = 10.0**exponent
    m, s = round(mean / scale, exponent - last), round(std / scale, exponent - last)
    text = f"{m:.{decimals}f} ± {s:.{decimals}f}"
    return f"({text})e{exponent}" if exponent else text


def fmt_stat(row: Mapping[str, Any], column: str, n_key: str = "seeds") -> str:
    """``mean ± std`` over seeds (:func:`fmt_pm`); the mean alone for one seed (its std is
    undefined) or where mean or std is not finite."""
    mean, std, n = row[f"{column}_mean"], row[f"{column}_std"], int(row[n_key])
    if n <= 1 or fmt_num(mean) in (MISSING, "inf", "-inf") or fmt_num(std) in (MISSING, "inf"):
        return fmt_num(mean)
    return fmt_pm(float(mean), float(std))


def verdict_cell(text: Any) -> Cell:
    """A verdict with its colour ('mixed: ...' in the mixed colour, '' as MISSING)."""
    text = str(text) if text and not pd.isna(text) else ""
    if not text:
        return Cell(MISSING)
    return Cell(text, "mixed" if text.startswith("mixed") else text)


def text_col(header: str, column: str) -> Column:
    """A left-aligned column showing ``row[column]`` as text."""
    return Column(header, lambda r: Cell(str(r[column])), numeric=False)


def num_col(header: str, column: str) -> Column:
    """A number (:func:`fmt_num`) of ``row[column]``."""
    return Column(header, lambda r: Cell(fmt_num(r[column])))


def stat_col(header: str, column: str, n_key: str = "seeds") -> Column:
    """``mean ± std`` (:func:`fmt_stat`) of ``column``'s _mean and _std."""
    return Column(header, lambda r: Cell(fmt_stat(r, column, n_key)))


def verdict_col(header: str, column: str) -> Column:
    """A coloured verdict (:func:`verdict_cell`)."""
    return Column(header, lambda r: verdict_cell(r[column]), numeric=False)


def make_table(
    title: str,
    columns: Sequence[Column],
    rows: pd.DataFrame | list[dict[str, Any]],
    notes: list[str],
    keys: int = 0,
) -> Table:
    """The table of ``rows`` (records or a frame) drawn through ``columns``; ``keys``:
    how many leading columns name a row."""
    records = rows if isinstance(rows, list) else rows.to_dict("records")
    body = [[col.cell(r) for col in columns] for r in records]
    headers, numeric = [c.header for c in columns], [c.numeric for c in columns]
    return Table(title, headers, numeric, body, notes, keys)
