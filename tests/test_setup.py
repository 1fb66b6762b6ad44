"""The README's set-up is what CI runs: one install, one test command, the same in both."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    """The indented command lines under the README's '## Set-up' heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ")]


def _pip_install_args(command: str) -> list[str]:
    words = [w for w in shlex.split(command) if w not in ("--quiet", "-q")]
    start = words.index("install") + 1
    return words[start : words.index("&&")] if "&&" in words else words[start:]


def test_readme_set_up_is_two_commands_install_and_test() -> None:
    install, test = _readme_commands()
    assert install.startswith("pip install ") and "initbench run" in install
    assert test == "python -m pytest -q"


def test_ci_installs_and_tests_exactly_as_the_readme_says() -> None:
    install, test = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_install = next(line for line in ci.splitlines() if re.search(r"pip install", line))
    assert _pip_install_args(ci_install) == _pip_install_args(install)
    assert test in ci.splitlines()
