"""The finite-width spread: how much one network at initialisation differs from another of
the same configuration, as the variance over seeds of log second moments at step 0, with
a chi-square confidence interval, beside Hanin & Nica's prediction where it applies.

Per run, at step 0 (L = the last watched layer; an rnn's last time step there):

* ``ln q_L``: ln act_sq at layer L, the batch's mean square (a batch statistic);
* ``ln g_1``: ln grad_preact_var at layer 1 (its first time step for an rnn);
* with ``train.per_example``, the per-input y_n = ln(q_L,n / q_in,n) (act_lnq_mean and
  act_lnq_var at layer L, over the batch's B examples).

Per configuration of S >= 2 seeds: Var ln q_L and Var ln g_1 are sample variances over the
seeds (n - 1); the per-input variance is the sample variance (n - 1) of all S x B values
y_n, pooled exactly from each seed's mean and variance. Each interval is the chi-square
interval of a normal variance with S - 1 degrees of freedom: seeds are the independent
draws (a seed's examples share its weights), so for the pooled variance it is wider than
needed where a seed's examples vary independently.

Hanin & Nica (2019, "Products of many large random matrices and gradients in deep neural
networks"): for a relu MLP with He-normal weights (variance 2 / fan_in) and zero biases,
ln(||x_L||² / ||x_0||²) for a fixed input is asymptotically Gaussian with variance
5·β, β = Σ_{l=1..L} 1/n_l over the hidden layers' widths: given layer l - 1, the squared
norm of layer l is that of (2/n_{l-1}) Σ_i ξ_i² 1{ξ_i > 0} over n_l standard normal ξ_i,
whose relative variance is (3/2 - 1/4) n_l / (n_l / 2)² = 5 / n_l, independently per
layer. It is the law of one input, which y_n measures (its distribution does not depend
on the input); the batch's mean square averages inputs whose fluctuations are partly
independent, so Var ln q_L is smaller and theory gives it no number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from initbench.analysis.configs import run_config
from initbench.analysis.stats import variance_interval

SPREAD_LEVEL: Final = 0.95  # confidence of every interval of the finite-width table
HANIN_NICA_CONSTANT: Final = 5.0  # Var ln ||x_L||² ≈ 5 Σ 1/n_l for relu with He-normal weights
# The spread columns: name -> what it is the variance over seeds of
SPREADS: Final[dict[str, str]] = {
    "lnq": "ln act_sq at the last watched layer L (the batch's mean square)",
    "per_input": "y = ln(q_L,n / q_in,n) per input, all examples of all seeds pooled",
    "lngrad": "ln grad_preact_var at layer 1",
}


@dataclass(frozen=True)
class Spread:
    """A variance over seeds with its confidence interval (NaN where not defined)."""

    variance: float
    low: float
    high: float


def _at(frame: pd.DataFrame, metric: str, last: bool) -> float:
    """The metric at the last (layer, t) or the first, of one run's step-0 rows."""
    rows = frame[frame["metric"] == metric]
    if rows.empty:
        return math.nan
    ordered = rows.sort_values(["layer", "t"])
    return float(ordered["value"].iloc[-1 if last else 0])


def run_values(frame: pd.DataFrame) -> dict[str, float]:
    """One run's step-0 values: ln q_L, ln g_1 and, if recorded, y's mean and variance over
    the batch at layer L (``lnq_mean``, ``lnq_var``). NaN where missing; ln of 0 is -inf."""
    at0 = frame[frame["step"] == 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "lnq": float(np.log(_at(at0, "act_sq", last=True))),
            "lngrad": float(np.log(_at(at0, "grad_preact_var", last=False))),
            "lnq_mean": _at(at0, "act_lnq_mean", last=True),
            "lnq_var": _at(at0, "act_lnq_var", last=True),
        }


def spread(values: Sequence[float], level: float = SPREAD_LEVEL) -> Spread:
    """Sample variance (n - 1) over seeds and its chi-square interval (n - 1 dof)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or not np.isfinite(x).all():
        return Spread(math.nan, math.nan, math.nan)
    variance = float(np.var(x, ddof=1))
    return Spread(variance, *variance_interval(variance, len(x) - 1, level))


def pooled_spread(
    means: Sequence[float], variances: Sequence[float], size: int, level: float = SPREAD_LEVEL
) -> Spread:
    """The sample variance (n - 1) of every seed's ``size`` values pooled, from each seed's
    mean and sample variance; its interval has (seeds - 1) dof (seeds are independent).
    At batch size 1 a seed's mean is its one value (and its variance undefined)."""
    m, v = np.asarray(means, dtype=float), np.asarray(variances, dtype=float)
    if size == 1:
        return spread(m, level)
    seeds = len(m)
    if seeds < 2 or size < 2 or not (np.isfinite(m).all() and np.isfinite(v).all()):
        return Spread(math.nan, math.nan, math.nan)
    within = (size - 1) * v.sum()
    between = size * ((m - m.mean()) ** 2).sum()
    variance = float((within + between) / (seeds * size - 1))
    return Spread(variance, *variance_interval(variance, seeds - 1, level))


def _he_normal_problem(init: Mapping[str, Any]) -> str:
    if init.get("name") != "he_normal":
        return f"init {init.get('name')}: the law is for He-normal weights"
    changed = {
        key: init.get(key)
        for key, default in (("mode", "fan_in"), ("negative_slope", 0.0), ("gain", 1.0))
        if init.get(key, default) != default
    }
    return f"he_normal with {changed}: not variance 2 / fan_in" if changed else ""


def hanin_nica(record: Mapping[str, Any]) -> tuple[float, str]:
    """(5 β, '') for a relu MLP with He-normal weights, zero biases and no batchnorm
    (β = depth / width: every hidden layer has ``width`` units), else (NaN, why not)."""
    model = run_config(record).get("model", {})
    activation = model.get("activation") or {}
    bias = model.get("bias_init") or {}
    problems = [
        "" if model.get("arch") == "mlp" else f"arch {model.get('arch')}: the law is for an mlp",
        "" if activation.get("name") == "relu" else f"activation {activation.get('name')}",
        _he_normal_problem(model.get("init") or {}),
        "" if bias.get("name") == "zeros" else f"bias_init {bias.get('name')}: not zero",
        "batchnorm" if model.get("batchnorm") else "",
    ]
    found = [p for p in problems if p]
    if found:
        return math.nan, "; ".join(found)
    return HANIN_NICA_CONSTANT * int(model["depth"]) / int(model["width"]), ""


def finite_width(runs: pd.DataFrame, layers: pd.DataFrame, run_ids: Sequence[str]) -> dict:
    """One configuration's spread over its seeds (``run_ids``, ok runs only): a
    :class:`Spread` per :data:`SPREADS` key, Hanin & Nica's 5 β (``hn``, NaN where it does
    not apply, with ``hn_note``), ``holds`` ('yes' when 5 β lies inside the per-input
    interval, 'no' outside, '' when either is missing) and ``seeds``."""
    records = runs[runs["run_id"].isin(run_ids) & (runs["status"] == "ok")]
    ids = list(records["run_id"])
    step0 = layers[layers["run_id"].isin(ids) & (layers["step"] == 0)]
    by_run = {r: run_values(f) for r, f in step0.groupby("run_id", sort=False)}
    values = pd.DataFrame([by_run.get(r, run_values(step0.iloc[0:0])) for r in ids])
    out: dict[str, Any] = {"seeds": len(ids)}
    if values.empty:
        values = pd.DataFrame(columns=["lnq", "lngrad", "lnq_mean", "lnq_var"])
    out["lnq"], out["lngrad"] = spread(values["lnq"]), spread(values["lngrad"])
    size = int(records["config.train.batch_size"].iloc[0]) if len(records) else 0
    out["per_input"] = pooled_spread(values["lnq_mean"], values["lnq_var"], size)
    first = records.iloc[0].to_dict() if len(records) else {}
    out["hn"], out["hn_note"] = hanin_nica(first) if first else (math.nan, "no ok run")
    per_input = out["per_input"]
    known = not (math.isnan(out["hn"]) or math.isnan(per_input.variance))
    inside = known and per_input.low <= out["hn"] <= per_input.high
    out["holds"] = ("yes" if inside else "no") if known else ""
    return out
