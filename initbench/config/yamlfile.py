"""Reading a spec's YAML: strict loading (duplicate keys refused, YAML 1.2 floats) and a
map from dotted keys to line numbers, so that every problem can name its line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from initbench.config.problems import Problem, SpecError


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
                f"duplicate key {key!r} (first at line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# PyYAML follows YAML 1.1, where a float needs a dot: `lr: 1e-3` would be the string '1e-3'.
# Resolve YAML 1.2 floats (exponent without a dot) as floats, as scientists write them.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.?[0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


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


def parse_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML text safely; returns (data, line map) or raises SpecError."""
    try:
        data = yaml.load(text, Loader=StrictLoader)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem("", f"invalid YAML: {problem}", line)]) from None
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
