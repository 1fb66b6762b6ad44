"""initbench: measure which weight initialisation keeps a network trainable.

From Python: ``initbench.run``, ``load``, ``report`` and ``theory`` (see
:mod:`initbench.api`, imported on first use, so ``import initbench`` stays light).
"""

from typing import Any

__version__ = "0.1.0"

_API = ("load", "report", "run", "theory")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.api"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
