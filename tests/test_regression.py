"""Every number unchanged: a fixed set of tiny runs against layer statistics and curves
stored from an earlier version (tests/data/regression.csv.gz), to float32 precision.

A change that moves any stored value on purpose regenerates the file, and says why in
its commit: ``python -m tests.test_regression --write``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from initbench.sweep.train import execute_run
from tests.conftest import make_config

STORED = Path(__file__).with_name("data") / "regression.csv.gz"
RTOL = 2e-5  # float32 precision of sums over up to ~1e5 elements
KEYS = ["case", "table", "step", "layer", "t", "name", "metric"]

# Each case exercises other statistics: dead_frac (relu), batchnorm's normed, sat_frac
# (tanh), the CNN's channels and strides, the RNN's time steps and recurrent weights.
CASES: dict[str, dict[str, Any]] = {
    "mlp_relu_bn": {"model.activation": "relu", "model.batchnorm": True},
    "mlp_tanh_xavier": {"model.activation": "tanh", "model.init": "xavier_normal"},
    "cnn_relu_he": {"model.arch": "cnn", "model.init": "he_normal", "model.width": 4},
    "rnn_tanh": {"model.arch": "rnn", "model.depth": 2, "model.width": 8},
}


def _frame(case: str, overrides: dict[str, Any]) -> pd.DataFrame:
    config = make_config(**{"train.steps": 4, "train.log_every": 2, **overrides})
    result = execute_run(config.as_dict())
    assert result.summary["status"] == "ok"
    layers = pd.DataFrame(result.layers).assign(table="layers")
    curves = pd.DataFrame(result.curves).assign(table="curves", layer=0, t=0, name="")
    frame = pd.concat([layers, curves], ignore_index=True).assign(case=case)
    return frame[[*KEYS, "value"]]


def measured() -> pd.DataFrame:
    """The cases' layer statistics and curves, one long table."""
    return pd.concat([_frame(case, o) for case, o in CASES.items()], ignore_index=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_statistics_and_curves_match_the_stored_values(case: str) -> None:
    stored = pd.read_csv(STORED, keep_default_na=False, na_values=["nan"])
    stored = stored[stored["case"] == case]
    now = _frame(case, CASES[case])
    joined = stored.merge(now, on=KEYS, how="outer", suffixes=("_stored", "_now"), indicator=True)
    unmatched = joined[joined["_merge"] != "both"]
    assert unmatched.empty, f"rows added or lost:\n{unmatched.head(10)}"
    now, then = joined["value_now"].to_numpy(), joined["value_stored"].to_numpy()
    with np.errstate(invalid="ignore"):
        close = np.abs(now - then) <= _mean_atol(joined) + RTOL * np.abs(then)
    same = close | (now == then) | (np.isnan(now) & np.isnan(then))
    assert same.all(), f"values moved:\n{joined[~same].head(10).to_string()}"


def _mean_atol(joined: pd.DataFrame) -> np.ndarray:
    """A mean's precision is relative to its tensor's RMS, not to itself (a batchnorm
    output's mean is 0 up to rounding): RTOL times sqrt of the same tensor's ``_sq``, or of
    its ``_var`` where no ``_sq`` is recorded (weights); 0 for every other metric."""
    spread = joined.set_index([*KEYS[:-1], "metric"])["value_stored"]
    prefix = joined["metric"].str.removesuffix("_mean")
    atol = np.zeros(len(joined))
    for suffix in ("_var", "_sq"):  # _sq wins where both exist
        lookup = pd.MultiIndex.from_arrays([*(joined[k] for k in KEYS[:-1]), prefix + suffix])
        found = spread.reindex(lookup).to_numpy()
        use = joined["metric"].str.endswith("_mean").to_numpy() & np.isfinite(found)
        atol[use] = RTOL * np.sqrt(np.abs(found[use]))
    return atol


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_regression --write")
    measured().to_csv(STORED, index=False, float_format="%.17g")
    print(f"wrote {STORED}")
