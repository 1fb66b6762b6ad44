"""Hand-built long tables and runs rows with known answers, for the tests of
initbench.analysis (test_analysis_*.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from initbench import analysis
from initbench.analysis import Thresholds

TH = Thresholds()

# --------------------------------------------------------------------------------------
# Builders


def rows(
    run_id: str, step: int, metric: str, values: Sequence[float], layer: int | None = None
) -> list[dict[str, Any]]:
    """Long-table rows: one per layer (t = 0), or with ``layer`` one per time step t."""
    out = []
    for i, value in enumerate(values, start=1):
        lay, t = (layer, i) if layer is not None else (i, 0)
        out.append(
            {
                "run_id": run_id,
                "step": step,
                "layer": lay,
                "t": t,
                "name": f"fc{lay}",
                "metric": metric,
                "value": float(value),
            }
        )
    return out


def table(*parts: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([r for part in parts for r in part])


def geometric(first: float, factor: float, n: int) -> list[float]:
    return [first * factor**i for i in range(n)]


def run_record(run_id: str, seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A runs-table row of an mlp (width 16, depth 3, he_normal) run that went ok."""
    record = {
        "run_id": run_id,
        "status": "ok",
        "diverged_step": None,
        "error": None,
        "final_loss": 0.5,
        "test_accuracy": 0.9,
        "steps_planned": 10,
        "config.seed": seed,
        "config.model.arch": "mlp",
        "config.model.depth": 3,
        "config.model.width": 16,
        "config.model.init.name": "he_normal",
        "config.model.init.mode": "fan_in",
        "config.model.init.negative_slope": 0.0,
        "config.model.init.distribution": "normal",
    }
    record.update(extra)
    return record


def he_weights(run_id: str, scale_layer2: float = 1.0) -> list[dict[str, Any]]:
    """w_var at step 0 exactly as he_normal's formula gives it for mlp width 16, depth 3."""
    return rows(run_id, 0, "w_var", [2 / 784, 2 / 16 * scale_layer2, 2 / 16])


def healthy(run_id: str, step: int, forward: float = 1.0, backward: float = 1.0):
    return [
        *rows(run_id, step, "preact_var", geometric(1.0, forward, 3)),
        *rows(run_id, step, "grad_preact_var", geometric(1e-3, 1 / backward, 3)),
    ]


def analyse(records: list[dict[str, Any]], *parts: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return analysis.analyse_runs(pd.DataFrame(records), table(*parts), TH).set_index("run_id")
