"""Shared fixtures: tiny seeded run configs built through the real spec validation."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

os.environ.setdefault("MPLBACKEND", "Agg")

from initbench.config.spec import RunConfig, build_spec, set_dotted

# The same examples on every run: a property test that fails, fails every time (and CI
# never meets an example a developer's run did not).
settings.register_profile("initbench", derandomize=True)
settings.load_profile("initbench")


def make_config(**dotted: Any) -> RunConfig:
    """One resolved RunConfig: a tiny synthetic mlp, with dotted-key overrides."""
    raw: dict[str, Any] = {
        "name": "test",
        "data": {"name": "synthetic", "n_train": 128, "n_test": 64},
        "model": {"arch": "mlp", "depth": 3, "width": 16},
        "train": {"batch_size": 32, "steps": 6, "log_every": 2},
    }
    seed = dotted.pop("seed", 0)
    raw["seeds"] = [seed]
    for key, value in dotted.items():
        set_dotted(raw, key, value)
    (config,) = build_spec(raw, "<test>", "").runs
    return config


@pytest.fixture
def config_factory() -> Callable[..., RunConfig]:
    """make_config as a fixture: config_factory(**{'model.arch': 'cnn'})."""
    return make_config


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep dataset caches out of the user's home folder."""
    monkeypatch.setenv("INITBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
