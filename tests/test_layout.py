"""The package's layering: each stage imports only from the stages before it.

Every ``import`` counts, at module level, inside functions and under TYPE_CHECKING
alike, and so does a module named in a string (``importlib.import_module``): a backward
import is a cycle waiting to happen, whenever it runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "initbench"

# Stage -> the stages it may import from (besides itself). The data flow of design.md.
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "data": {"config"},
    "nets": {"config"},
    "measure": {"config", "nets"},
    "results": {"config", "measure"},  # the statistics' catalogue (measure.catalog)
    "meanfield": {"config"},
    "sweep": {"config", "data", "nets", "measure", "results"},
    "analysis": {"config", "results", "meanfield"},
    "reporting": {"config", "results", "meanfield", "analysis"},
}
ALLOWED_FRONT = {"api": set(ALLOWED) | {"__init__"}, "ui": set(ALLOWED) | {"__init__", "api"}}


def _stage(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imported_stages(path: Path) -> set[tuple[str, int]]:
    """(stage, line) of every initbench module that ``path`` imports."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "initbench":
                names = [f"initbench.{alias.name}" for alias in node.names]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = re.findall(r"^initbench\.\w+(?:\.\w+)*$", node.value)  # import_module("...")
        for name in names:
            parts = name.split(".")
            if parts[0] == "initbench":
                found.add((parts[1] if len(parts) > 1 else "__init__", node.lineno))
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_from_earlier_stages(path: Path) -> None:
    stage = _stage(path)
    if stage in ("cli", "__init__", "__main__"):
        return
    allowed = ALLOWED.get(stage, ALLOWED_FRONT.get(stage))
    assert allowed is not None, f"{path.name}: stage {stage!r} missing from ALLOWED"
    bad = sorted(
        (line, other)
        for other, line in _imported_stages(path)
        if other != stage and other not in allowed and other != "__init__"
    )
    assert not bad, f"{path.relative_to(PACKAGE)} imports later stages: {bad}"


def test_every_stage_is_a_package_and_listed() -> None:
    stages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert stages == set(ALLOWED)


def test_the_readme_layout_names_every_stage_and_no_other() -> None:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^      (\w+)/", layout, flags=re.M))
    assert named == set(ALLOWED)


FUNCTION_LINES = 50  # a function longer than this cannot be seen whole
MODULE_LINES = 520  # "about 500": a module longer than this has more than one job
DECLARATIVE = {("cli.py", "_executor_options")}  # a list of click options, nothing else


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_and_modules_stay_short(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1 if node.end_lineno else 0
            if (path.name, node.name) not in DECLARATIVE:
                assert length <= FUNCTION_LINES, f"{node.name}: {length} lines"
