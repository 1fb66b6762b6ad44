"""``--set KEY=VALUE`` overrides: dotted keys, YAML values, and how they meet the grid
(setting a key the grid varies replaces that axis)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from initbench.config.problems import Problem, SpecError
from initbench.config.yamlfile import load_checked


def _split_key(key: str) -> list[str]:
    """'grid.model.depth' -> ['grid', 'model.depth'] (grid keys are dotted themselves)."""
    parts = key.split(".")
    return ["grid", ".".join(parts[1:])] if parts[0] == "grid" and len(parts) > 1 else parts


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for key 'a.b.c', creating mappings; a named
    reference given as a bare name becomes ``{name: ...}`` when a parameter is set."""
    parts = _split_key(key)
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.steps=20' -> ('train.steps', 20); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise SpecError(
            "--set", [Problem(text, "expected KEY=VALUE with a dotted key, e.g. train.steps=20")]
        )
    value = load_checked(raw, "--set", key)[0] if raw.strip() else ""
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides; setting a key the grid varies removes that grid axis, and
    setting model.width or model.depth removes model.widths."""
    data = copy.deepcopy(raw)
    for text in overrides:
        key, value = parse_override(text)
        grid = data.get("grid")
        if isinstance(grid, dict):
            if key in grid:
                del grid[key]
            for axis in grid:
                if key.startswith(f"{axis}."):
                    raise SpecError(
                        "--set",
                        [
                            Problem(
                                key,
                                f"the grid varies {axis}, which would replace this value; "
                                f"override the whole axis instead: --set grid.{axis}=[...]",
                            )
                        ],
                    )
        set_dotted(data, key, value)
        _drop_widths(data, key)
    return data


def _drop_widths(data: dict[str, Any], key: str) -> None:
    """A ``--set`` of model.width or model.depth replaces the spec's model.widths (and its
    grid axis), as a ``--set`` of a grid key replaces that axis: the per-layer widths would
    contradict it."""
    if key not in ("model.width", "model.depth"):
        return
    model, grid = data.get("model"), data.get("grid")
    if isinstance(model, dict):
        model.pop("widths", None)
    if isinstance(grid, dict):
        grid.pop("model.widths", None)
