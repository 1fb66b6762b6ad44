"""A spec's problems: each located by dotted key and, where known, YAML line; raised
together as one SpecError."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

ECHO: Final = reprlib.Repr()  # Python 3.11's takes no keyword arguments
ECHO.maxstring, ECHO.maxother, ECHO.maxlong = 60, 60, 40
ECHO.maxlist = ECHO.maxtuple = ECHO.maxdict = ECHO.maxset = 6
ECHO.maxlevel = 3


def shown(value: Any) -> str:
    """A value as an error message echoes it: its repr, shortened (a 1,000,000-character
    name or a value built from aliases must not become a megabyte-long message)."""
    return ECHO.repr(value)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located by dotted key and, where known, YAML line."""

    key: str
    message: str
    line: int | None = None


class SpecError(Exception):
    """A spec that cannot be run; lists every problem found, each with its location."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems = list(dict.fromkeys(problems))
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        lines = [f"{self.source}: invalid spec ({count} problem{'s' * (count != 1)})"]
        for p in self.problems:
            where = f"{self.source}:{p.line}" if p.line else self.source
            lines.append(
                f"  {where}: {p.key or '<root>'}: {p.message}"
                if p.key
                else f"  {where}: {p.message}"
            )
        return "\n".join(lines)
