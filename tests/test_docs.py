"""Pages that restate the code are generated from it and checked in unchanged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_definitions_page_is_what_the_code_generates() -> None:
    page = (DOCS / "definitions.md").read_text(encoding="utf-8")
    assert page == _generator().definitions(), "run: python docs/generate.py"


def test_every_spec_in_the_readme_validates(tmp_path: Path) -> None:
    import re

    from initbench.config.spec import load_spec

    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 3  # an MLP, a CNN and an RNN
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme_{i}.yaml"
        path.write_text(block)
        assert load_spec(path).runs
