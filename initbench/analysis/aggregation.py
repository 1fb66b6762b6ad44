"""Seeds aggregated into configurations: numbers as mean and sample std (NaN
propagating), verdicts and flags combined, the theory check; and layer by layer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import pandas as pd

from initbench.analysis.configs import ConfigKeys
from initbench.analysis.profiles import DIRECTIONS, TAGS
from initbench.analysis.stats import mean_std, nan_mean, nan_std
from initbench.analysis.theorycheck import THEORY_QUANTITIES, theory_check
from initbench.analysis.verdicts import FLAGS
from initbench.config.architectures import ARCHITECTURES
from initbench.config.thresholds import Thresholds
from initbench.results import schema

# a gated cell's: each sigmoid gate's mean and saturated fraction, the lstm's cell state and
# its gradient (measure.catalog defines them)
GATE_SIGNAL_METRICS: Final = (
    *(
        f"gate_{gate}_{stat}"
        for _, arch in ARCHITECTURES.items()
        for gate, act in arch.gates
        if act == "sigmoid"
        for stat in ("mean", "sat_frac")
    ),
    "cell_var",
    "grad_cell_var",
)
# a residual block's (at its last layer): the stream's and the branch's variance and their
# ratio, derived per run (BRANCH_RATIO)
BRANCH_RATIO: Final = "branch_ratio"
BRANCH_RATIO_TEXT: Final = (
    "branch_ratio: a residual block's branch_var / stream_var, of the same run, step and "
    "block (the stream after the block: 1/2 where the branch doubles it), then mean ± std "
    "over the seeds"
)
STREAM_SIGNAL_METRICS: Final = ("stream_var", "branch_var", BRANCH_RATIO, "grad_stream_var")
SIGNAL_METRICS: Final = (
    "preact_var",
    "normed_var",
    "grad_preact_var",
    "dead_frac",
    "sat_frac",
    *STREAM_SIGNAL_METRICS,
    *GATE_SIGNAL_METRICS,
)


def numeric_columns() -> list[str]:
    """Per-run numeric columns that configurations aggregate as mean and std."""
    cols = [f"{d}_{k}_{tag}" for tag in TAGS for d in DIRECTIONS for k in ("factor", "ratio")]
    cols += [f"{m}_max_{tag}" for tag in TAGS for m in ("dead", "sat")]
    cols += [f"theory_{q}_init" for q in THEORY_QUANTITIES] + ["theory_q1"]
    return [*cols, "init_worst_ratio", "final_loss", "test_accuracy"]


def verdict_columns() -> list[str]:
    """Per-run verdict columns that configurations combine."""
    return [f"{d}_verdict_{tag}" for tag in TAGS for d in DIRECTIONS]


def combine(values: Iterable[str]) -> str:
    """One word if every seed agrees, else 'mixed: vanishing 2, stable 1'."""
    counts = pd.Series(list(values), dtype=object).value_counts(sort=True)
    if len(counts) == 1:
        return str(counts.index[0])
    return "mixed: " + ", ".join(f"{v or 'none'} {n}" for v, n in counts.items())


def combine_flags(flag_lists: Iterable[str], n: int) -> str:
    """Flags of a configuration: 'dead' when every seed has it, 'diverged 1/3' otherwise."""
    counts = {flag: 0 for flag in FLAGS}
    for flags in flag_lists:
        for flag in filter(None, (f.strip() for f in flags.split(","))):
            counts[flag] += 1
    return ", ".join(f if c == n else f"{f} {c}/{n}" for f, c in counts.items() if c)


def combine_status(texts: Iterable[str]) -> str:
    """'ok' when every seed shares one status, else '2 ok, 1 diverged at step 17'."""
    counts = pd.Series(list(texts), dtype=object).value_counts(sort=True)
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{n} {text}" for text, n in counts.items())


def _config_row(group: pd.DataFrame, th: Thresholds) -> dict[str, Any]:
    """One configuration's seeds combined: counts, status, flags, verdicts, numbers and
    the theory check."""
    row: dict[str, Any] = {"seeds": len(group)}
    row["seed_list"] = " ".join(str(s) for s in sorted(group["seed"].dropna().tolist()))
    row["run_ids"] = " ".join(sorted(group["run_id"]))
    for status in schema.STATUSES:
        row[f"n_{status}"] = int((group["status"] == status).sum())
    row["status"] = combine_status(group["status_text"])
    row["flags"] = combine_flags(group["flags"], len(group))
    row["init_only"] = "init_only" in group and bool(group["init_only"].all())
    row["trainable"] = combine(group["trainable"])
    for column in verdict_columns():
        row[column] = combine(group[column])
    for column in numeric_columns():
        row[f"{column}_mean"], row[f"{column}_std"] = mean_std(group[column].to_numpy(float))
    row.update(theory_check(group, th))
    return row


def aggregate(
    analysed: pd.DataFrame, keys: ConfigKeys, th: Thresholds | None = None
) -> pd.DataFrame:
    """One row per configuration (varying keys first), seeds aggregated: numbers as
    ``<col>_mean`` / ``<col>_std``, verdicts combined, flags counted, measurement checked
    against theory (:func:`theory_check`); sorted by ranks."""
    th = th or Thresholds()
    joined = analysed.join(keys.labels, on="run_id")
    varying = list(keys.varying)
    rows = []
    groups = joined.groupby(varying, sort=False, dropna=False) if varying else [((), joined)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(varying, values, strict=True)), **_config_row(group, th)})
    table = pd.DataFrame(rows)
    if varying and len(table):
        order = sorted(
            range(len(table)),
            key=lambda i: [keys.ranks[k][table.iloc[i][k]] for k in varying],
        )
        table = table.iloc[order].reset_index(drop=True)
    return table


# --- layer by layer -----------------------------------------------------------------------------


def per_layer(layers: pd.DataFrame, last_steps: Mapping[str, int]) -> pd.DataFrame:
    """Layer-by-layer SIGNAL_METRICS of some runs (one configuration's seeds) at step 0
    (``init``) and at each run's last logged step (``last``): columns
    ``<metric>_<tag>_mean`` / ``_std`` over the runs and ``n`` (runs with a value); rows
    are layers (t = 0) or, for an rnn, (layer, t) for t = 1..T."""
    rows = layers[layers["metric"].isin(SIGNAL_METRICS) & layers["run_id"].isin(last_steps)]
    rows = pd.concat([rows, _branch_ratios(rows)], ignore_index=True)
    init = rows[rows["step"] == 0].assign(tag="init")
    last = rows[rows["step"] == rows["run_id"].map(last_steps)].assign(tag="last")
    both = pd.concat([init, last], ignore_index=True)
    if both.empty:
        return pd.DataFrame(columns=["layer", "t", "name", "n"])
    grouped = both.groupby(["layer", "t", "name", "metric", "tag"])["value"]
    stats = grouped.agg(mean=nan_mean, std=nan_std)  # groupby's skipna needs pandas 3
    wide = stats.unstack(["metric", "tag"])
    wide.columns = [f"{metric}_{tag}_{stat}" for stat, metric, tag in wide.columns]
    counts = both[(both["tag"] == "init")].groupby(["layer", "t", "name"])["run_id"].nunique()
    wide["n"] = counts.reindex(wide.index).fillna(0).astype(int)
    ordered = sorted(wide.columns[:-1], key=_per_layer_order)
    return wide[["n", *ordered]].reset_index()


def _branch_ratios(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of BRANCH_RATIO: each residual block's branch_var over its stream_var, of the
    same run, step, layer and t (none without residual blocks)."""
    keys = ["run_id", "step", "layer", "t", "name"]
    branch = rows[rows["metric"] == "branch_var"].set_index(keys)["value"]
    stream = rows[rows["metric"] == "stream_var"].set_index(keys)["value"]
    if branch.empty or stream.empty:
        return rows.iloc[:0]
    ratio = (branch / stream).dropna()
    return ratio.rename("value").reset_index().assign(metric=BRANCH_RATIO)


def _per_layer_order(column: str) -> tuple[int, int, str]:
    tag = 0 if "_init_" in column else 1
    metric = next(i for i, m in enumerate(SIGNAL_METRICS) if column.startswith(f"{m}_"))
    return tag, metric, column
