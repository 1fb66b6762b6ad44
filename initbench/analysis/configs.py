"""Configurations: the run config behind a runs-table row, the labels of its keys and
values, which keys vary across an experiment and in which order they are shown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from initbench.config.catalogue import REFERENCES, ref_defaults


def run_config(record: Mapping[str, Any]) -> dict[str, Any]:
    """The nested run config rebuilt from a runs row's ``config.*`` columns (cells that
    pandas filled with NaN because other runs have the key are left out)."""
    nested: dict[str, Any] = {}
    for key, value in record.items():
        if not key.startswith("config.") or missing(value):
            continue
        *parents, leaf = key.removeprefix("config.").split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _plain(value)
    return nested


def missing(value: Any) -> bool:
    """Whether a runs-table cell holds no value: None, or the NaN pandas fills in."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python one (pandas hands out numpy scalars), and a whole float
    as an int: pandas turns an int column into floats where another run lacks the key
    (lsuv's max_iter 10 -> 10.0), which a strict int parameter refuses, while a strict
    float parameter takes an int."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def ref_label(kind: str, name: Any, params: Mapping[str, Any]) -> str:
    """'name' plus the parameters that differ from the registry's defaults:
    ``normal(std=0.1)``; every parameter where the defaults are unknown."""
    if missing(name):
        return "none"
    defaults = _dotted(ref_defaults(kind, str(name)) or {})
    shown = [
        f"{k}={format_value(v)}"
        for k, v in params.items()
        if not missing(v) and (k not in defaults or defaults[k] != v)
    ]
    return f"{name}({', '.join(shown)})" if shown else str(name)


def _dotted(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters (lsuv's ``base``) as dotted keys, as the runs table holds them."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def format_value(value: Any) -> str:
    """A config value as written in labels: 0.01, 30, relu, true."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def config_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """One column per config key (without ``config.``; seeds excluded), index run_id:
    scalars as they are, named references as :func:`ref_label` strings."""
    columns = [c for c in runs.columns if c.startswith("config.") and c != "config.seed"]
    refs: list[str] = []
    for ref in sorted({c.removesuffix(".name") for c in columns if c.endswith(".name")}, key=len):
        if not any(ref.startswith(f"{outer}.") for outer in refs):  # not a nested parameter
            refs.append(ref)
    out: dict[str, list[Any]] = {}
    records = runs.to_dict("records")
    for ref in refs:
        kind = ref.rsplit(".", 1)[-1]
        params = [c for c in columns if c.startswith(f"{ref}.") and c != f"{ref}.name"]
        out[ref.removeprefix("config.")] = [
            ref_label(kind, r[f"{ref}.name"], {p.removeprefix(f"{ref}."): r[p] for p in params})
            for r in records
        ]
    for column in columns:
        owned = any(column == ref or column.startswith(f"{ref}.") for ref in refs)
        if not owned:
            out[column.removeprefix("config.")] = [_scalar(r[column]) for r in records]
    return pd.DataFrame(out, index=pd.Index(runs["run_id"], name="run_id"))


def _scalar(value: Any) -> Any:
    if isinstance(value, list | tuple | np.ndarray):  # model.widths: 1024-512-256
        return "-".join(format_value(_plain(v)) for v in value)
    return "none" if missing(value) else _plain(value)


@dataclass(frozen=True)
class ConfigKeys:
    """How the runs of one experiment group into configurations."""

    varying: tuple[str, ...]  # keys whose value differs between runs, outer -> inner
    constant: dict[str, Any]  # key -> the value every run shares
    labels: pd.DataFrame  # index run_id; one column per varying key
    ranks: dict[str, dict[Any, tuple]]  # key -> value -> sort key


def _natural(value: Any) -> tuple:
    if isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_):
        return (0, float(value), "")
    return (1, 0.0, format_value(value))


def _spec_value_label(key: str, value: Any) -> Any:
    """Label of a grid value as the spec wrote it, comparable with :func:`config_labels`."""
    kind = key.rsplit(".", 1)[-1]
    if kind in REFERENCES and isinstance(value, str):
        return ref_label(kind, value, {})
    if kind in REFERENCES and isinstance(value, Mapping):
        params = _dotted({k: v for k, v in value.items() if k != "name"})
        return ref_label(kind, value.get("name"), params)
    return value


def _order_keys(varying: list[str], grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """Table order: the grid's keys after its first, in spec order, then other varying
    keys, then the spec's first grid key innermost so its values sit side by side."""
    owners = [next((k for k in varying if g == k or g.startswith(f"{k}.")), None) for g in grid]
    in_grid = list(dict.fromkeys(o for o in owners if o is not None))
    if not in_grid:
        preferred = [k for k in ("model.init", "model.activation") if k in varying]
        in_grid = preferred[:1]
    first = in_grid[:1]
    middle = in_grid[1:] + sorted(k for k in varying if k not in in_grid)
    return middle + first


def describe_configs(
    runs: pd.DataFrame, grid: Mapping[str, Sequence[Any]] | None = None
) -> ConfigKeys:
    """Varying and constant keys of an experiment, each run's labels and the sort ranks
    (values in the order the spec's grid lists them, else numbers ascending / by name)."""
    grid = grid or {}
    labels = config_labels(runs)
    distinct = {k: list(dict.fromkeys(labels[k].tolist())) for k in labels.columns}
    varying = [k for k, values in distinct.items() if len(values) > 1]
    constant = {k: distinct[k][0] for k in sorted(distinct) if len(distinct[k]) == 1}
    ranks = {}
    for key in varying:
        spec = [_spec_value_label(key, v) for v in grid.get(key, [])]
        ranks[key] = {
            v: (spec.index(v) if v in spec else len(spec), *_natural(v)) for v in distinct[key]
        }
    order = _order_keys(varying, grid)
    return ConfigKeys(tuple(order), constant, labels[order], ranks)
