"""Name -> entry registries shared by every extension point.

Each extension point (initializers, activations, datasets, architectures,
optimizers) owns one :class:`Registry`, filled where the entries are defined
with the :meth:`Registry.register` decorator. An unknown name is an error that
lists the close matches, so a typo in a spec reads "did you mean ...".
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from initbench.config.problems import shown

T = TypeVar("T")

# A key added to a config section or a parameter model after run ids were pinned is marked
# ``Field(..., json_schema_extra=ADDED)``; at its default it is left out of the run id
# (spec.RunConfig.identity), so runs stored before it existed keep their ids. Its default
# must be a JSON scalar (None, a bool, a number or a string), as it is stored.
ADDED: Final[dict[str, Any]] = {"added_after_run_ids": True}


def is_added(info: FieldInfo) -> bool:
    """Whether a field is marked :data:`ADDED`."""
    extra = info.json_schema_extra
    return isinstance(extra, dict) and extra.get("added_after_run_ids") is True


class Params(BaseModel):
    """Base of every entry's parameter model: unknown keys, NaN and infinities are refused,
    and so are values of another type (``n_train: '256'``, ``n_train: true``), as the run
    config's own keys refuse them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class NoParams(Params):
    """Parameter model of an entry that takes no parameters."""


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists close matches."""

    def __init__(self, kind: str, name: object, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        super().__init__(self.message)

    @property
    def message(self) -> str:
        close = difflib.get_close_matches(str(self.name), self.known, n=3, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        name = shown(self.name)
        return f"unknown {self.kind} {name}{hint} (available: {', '.join(self.known)})"

    def __str__(self) -> str:
        return self.message


class Registry(Generic[T]):
    """An ordered mapping from names to entries of one extension point."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that stores its argument under ``name``; duplicates are refused."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        """Store ``entry`` under ``name``; a name may be registered once only."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def get(self, name: Any) -> T:
        """Return the entry for ``name`` or raise :class:`UnknownNameError`."""
        if not isinstance(name, str) or name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs in registration order."""
        return iter(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries  # a dict/list: False, no TypeError

    def __len__(self) -> int:
        return len(self._entries)
