"""Reading a spec's YAML: strict loading (duplicate keys refused, YAML 1.2 floats) and a
map from dotted keys to line numbers, so that every problem can name its line.

A document is checked as a tree of nodes before any value is built from it: nesting
deeper than MAX_DEPTH, more than MAX_VALUES values once its aliases are expanded (a
"billion laughs" document of 500 bytes expands to billions), an alias that contains
itself, or a list or mapping used as a key are refused with their line, in milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import yaml

from initbench.config.problems import Problem, SpecError, shown

MAX_DEPTH: Final = 50  # nesting levels of mappings and lists; a spec needs about 5
MAX_VALUES: Final = 100_000  # values in a document once its aliases are expanded


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {shown(key)} (first at line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` would be the string '1e-3'.
# Resolve YAML 1.2 floats (exponent without a dot) as floats, as scientists write them.
EXPONENT_FLOAT: Final = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.?[0-9_]*[eE][-+]?[0-9]+$")
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


def _line_map(
    node: yaml.Node | None, prefix: str = "", lines: dict[str, int] | None = None
) -> dict[str, int]:
    """Dotted key -> 1-based line, for every mapping entry and list item in the document.

    Grid entries keep their dotted names: the value of ``grid: {model.depth: [..]}`` is
    found under ``grid.model.depth`` and its items under ``grid.model.depth[i]``.
    """
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            _line_map(value_node, f"{key}.", lines)
    elif isinstance(node, yaml.SequenceNode):
        base = prefix.rstrip(".")
        for i, item in enumerate(node.value):
            lines[f"{base}[{i}]"] = item.start_mark.line + 1
            _line_map(item, f"{base}[{i}].", lines)
    return lines


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


class TreeError(ValueError):
    """A document refused by :func:`check_tree`, at the 1-based line of the node."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1


def _bad_key(node: yaml.Node) -> yaml.Node | None:
    """A mapping's first key that is a list or a mapping (it cannot be a spec key)."""
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((k for k, _ in node.value if not isinstance(k, yaml.ScalarNode)), None)


def check_tree(root: yaml.Node) -> None:
    """Raise TreeError (with the line) for a document that is too deep, too large once
    its aliases are expanded, holds an alias to a value containing it, or has a
    non-scalar key. Iterative and memoised per node, so a shared (aliased) node is
    measured once, however often it is referred to."""
    size: dict[int, int] = {}  # node -> values under it, aliases expanded
    height: dict[int, int] = {}  # node -> levels under it
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key, children = id(node), _children(node)
        if finished:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            height[key] = 1 + max((height[id(c)] for c in children), default=0)
            if size[key] > MAX_VALUES:
                raise TreeError(node, f"expands to more than {MAX_VALUES:,} values (aliases?)")
            if height[key] > MAX_DEPTH:
                raise TreeError(node, f"nested deeper than {MAX_DEPTH} levels")
        elif key in open_nodes:
            raise TreeError(node, "an alias refers to a value that contains it")
        elif key not in size:
            if (bad := _bad_key(node)) is not None:
                raise TreeError(bad, "a mapping key must be a plain value, not a list or mapping")
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children)


def load_checked(text: str, source: str, key: str = "") -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of one YAML document, checked by :func:`check_tree` before any
    value is built; every failure is a SpecError at ``key`` with the YAML line."""
    what = "value is not valid YAML" if key else "invalid YAML"
    loader = None
    try:
        loader = StrictLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is not None:
            check_tree(node)
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem(key, f"{what}: {problem}", line)]) from None
    except RecursionError:  # the composer recurses once per level
        message = f"{what}: nested deeper than {MAX_DEPTH} levels"
        raise SpecError(source, [Problem(key, message)]) from None
    except TreeError as exc:
        raise SpecError(source, [Problem(key, f"{what}: {exc}", exc.line)]) from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML text safely; returns (data, line map) or raises SpecError."""
    data, node = load_checked(text, source)
    return data, _line_map(node)


def read_spec_text(path: Path) -> str:
    """Read a spec file, with a located error for every way that can fail."""
    source = str(path)
    if not path.exists():
        raise SpecError(source, [Problem("", f"no such file (resolved: {path.resolve()})")])
    if path.is_dir():
        raise SpecError(source, [Problem("", "is a directory, expected a YAML file")])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, [Problem("", f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise SpecError(source, [Problem("", f"cannot read: {exc.strerror}")]) from None
    if not text.strip():
        raise SpecError(source, [Problem("", "empty file, expected a YAML mapping")])
    return text
