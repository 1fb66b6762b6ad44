"""Specs: YAML -> validated, frozen run configs; grid expansion; run ids.

Precedence, stated once: code defaults < the spec's ``data``/``model``/``train``
sections < the spec's ``grid`` < ``--set key=value`` on the command line (a ``--set``
of a key the grid varies replaces that grid axis).

A spec::

    name: relu_he_vs_xavier
    description: ...
    data: {name: mnist5k}
    model: {arch: mlp, width: 256, activation: relu}
    train: {optimizer: {name: sgd, momentum: 0.9}, lr: 0.01, steps: 300}
    grid:
      model.init: [he_normal, xavier_normal]
      model.depth: [5, 10, 30]
    seeds: 3            # or a list: [0, 1, 2]

One run's resolved configuration (named references, the model and train sections, the
run id) is :mod:`initbench.config.runconfig`'s; its names are re-exported here.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from initbench.config.overrides import apply_overrides, parse_override, set_dotted
from initbench.config.problems import Problem, SpecError, shown
from initbench.config.refs import FrozenDict, RefOf, _unknown_key_message
from initbench.config.runconfig import (
    RUN_ID_LENGTH,
    ModelConfig,
    RunConfig,
    TrainConfig,
    run_id_of,
)
from initbench.config.yamlfile import parse_yaml, read_spec_text

MAX_RUNS = 10_000  # grid points x seeds; counted before expanding (a sweep this size takes days)
MAX_SEEDS = 10_000

# --- the spec file -----------------------------------------------------------------------------


def _check_seeds(value: Any) -> int | list[int]:
    """A count n >= 1 (seeds 0..n-1) or a non-empty list of integers >= 0 (a repeated seed
    is the same run, done once)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and 1 <= value <= MAX_SEEDS:
        return value
    if isinstance(value, list) and value and all(_is_seed(v) for v in value):
        return value
    raise PydanticCustomError(
        "seeds",
        "expected a count 1..{most} or a non-empty list of integers >= 0, got {got}",
        {"got": shown(value), "most": MAX_SEEDS},
    )


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


class SpecHeader(BaseModel):
    """Top level of a spec; the data/model/train sections are validated per run."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    description: str = ""
    data: dict[str, Any] | str
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    seeds: Annotated[Any, BeforeValidator(_check_seeds)] = 1

    def seed_list(self) -> list[int]:
        """Seeds as a list (a count n means 0..n-1)."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Spec:
    """A validated spec and the runs it expands to, in grid order (seeds innermost)."""

    name: str
    description: str
    source: str
    text: str
    runs: tuple[RunConfig, ...]
    grid_keys: tuple[str, ...] = field(default=())
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    overrides: tuple[str, ...] = field(default=())  # the --set KEY=VALUE texts, in order

    def run_ids(self) -> list[str]:
        """Run ids in expansion order."""
        return [r.run_id for r in self.runs]

    def problem(self, run: RunConfig, key: str, message: str) -> Problem:
        """A problem that a check outside validation found with ``key`` of ``run``, located
        as validation locates its own: at the grid value that set it, at the ``--set``
        that replaced it, or at the key's line in the file."""
        combo = {k: _dotted_value(run.as_dict(), k) for k in self.grid_keys}
        problem = Problem(key, message, _line_for(key, self.lines))
        located = _grid_problem(problem, combo, self.lines)
        keys = [parse_override(o)[0] for o in self.overrides]
        return _blame_overrides([located], keys)[0]


def _dotted_value(data: Mapping[str, Any], key: str) -> Any:
    """``data['a']['b']`` for key 'a.b'; None where the path does not exist."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# --- validation ----------------------------------------------------------------------------------


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "": RunConfig,
    "model": ModelConfig,
    "train": TrainConfig,
}


def _problem_from_error(err: Mapping[str, Any], lines: Mapping[str, int], origin: str) -> Problem:
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "constrained-"))]
    loc = [p for p in loc if p not in ("str", "dict[str,any]", "int", "list[int]")]
    ctx = err.get("ctx") or {}
    if ctx.get("subloc"):
        loc.append(str(ctx["subloc"]))
    key = ".".join(loc)
    message = err["msg"]
    if err["type"] == "extra_forbidden" and len(loc) >= 1:
        parent = ".".join(loc[:-1])
        known = (
            list(_SECTION_MODELS.get(parent, SpecHeader).model_fields)
            if parent in _SECTION_MODELS or not parent
            else []
        )
        if parent == "" and origin == "header":
            known = list(SpecHeader.model_fields)
        message = _unknown_key_message(loc[-1], known) if known else message
    elif err["type"] not in _ECHOING and "input" in err and not ctx.get("subloc"):
        # a subloc error comes from a section's own check: its input is the whole section,
        # and its message names the value
        message = f"{message} (got {shown(err['input'])})"
    return Problem(key, message, _line_for(key, lines))


# errors whose message already shows the value, or that have none to show
_ECHOING = ("named_ref", "unknown_name", "invalid_params", "missing", "seeds")


def _line_for(key: str, lines: Mapping[str, int]) -> int | None:
    parts = key.split(".")
    while parts:
        if ".".join(parts) in lines:
            return lines[".".join(parts)]
        parts.pop()
    return None


def _grid_problem(problem: Problem, combo: Mapping[str, Any], lines: Mapping[str, int]) -> Problem:
    """Point a run-level problem at the grid value that caused it, when one did."""
    for grid_key, value in combo.items():
        if problem.key == grid_key or problem.key.startswith(f"{grid_key}."):
            return Problem(
                f"grid.{grid_key}",
                f"value {shown(value)}: {problem.key}: {problem.message}",
                lines.get(f"grid.{grid_key}"),
            )
    return problem


def _validate_header(raw: Any, source: str, lines: Mapping[str, int]) -> SpecHeader:
    if not isinstance(raw, dict):
        got = "null" if raw is None else type(raw).__name__
        raise SpecError(source, [Problem("", f"YAML root must be a mapping, got {got}")])
    try:
        return SpecHeader.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem_from_error(e, lines, "header") for e in exc.errors()]
        raise SpecError(source, problems) from None


def _expand(header: SpecHeader) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(grid combination, raw run dict) for every grid point x seed, seeds innermost."""
    base = {"data": header.data, "model": header.model, "train": header.train}
    keys = list(header.grid)
    out = []
    for values in itertools.product(*(header.grid[k] for k in keys)):
        combo = dict(zip(keys, values, strict=True))
        for seed in header.seed_list():
            raw = copy.deepcopy(base)
            for key, value in combo.items():
                set_dotted(raw, key, copy.deepcopy(value))
            raw["seed"] = seed
            out.append((combo, raw))
    return out


def _validate_run(raw: dict[str, Any]) -> tuple[RunConfig | None, list[dict[str, Any]]]:
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        return None, list(exc.errors())
    resolved = config.model_copy(update={"model": config.model.resolved()})
    return resolved, []


def _check_grid_keys(header: SpecHeader, lines: Mapping[str, int]) -> list[Problem]:
    problems = []
    for key in header.grid:
        top = key.split(".")[0]
        if top not in ("data", "model", "train"):
            problems.append(
                Problem(
                    f"grid.{key}",
                    "grid keys start with data., model. or train. (seeds go in 'seeds')",
                    lines.get(f"grid.{key}"),
                )
            )
    return problems


def _blame_overrides(problems: list[Problem], overridden: Iterable[str]) -> list[Problem]:
    """Problems whose key a --set replaced point at the --set, not at the file's line."""
    keys = tuple(overridden)
    out = []
    for p in problems:
        culprit = next((k for k in keys if p.key == k or p.key.startswith(f"{k}.")), None)
        out.append(Problem(p.key, f"{p.message} (from --set {culprit})", None) if culprit else p)
    return out


def build_spec(
    raw: Any,
    source: str,
    text: str,
    lines: Mapping[str, int] | None = None,
    overridden: Iterable[str] = (),
) -> Spec:
    """Validate a parsed spec and expand it into resolved run configs (or raise SpecError)."""
    try:
        return _build_spec(raw, source, text, lines or {})
    except SpecError as exc:
        raise SpecError(source, _blame_overrides(exc.problems, overridden)) from None


def _check_size(header: SpecHeader, lines: Mapping[str, int]) -> list[Problem]:
    """The number of runs, counted before the grid is expanded: over MAX_RUNS is refused."""
    count = len(header.seed_list()) * math.prod(len(values) for values in header.grid.values())
    if count <= MAX_RUNS:
        return []
    axes = " x ".join(f"{len(v)} {k}" for k, v in header.grid.items())
    message = f"{axes} x {len(header.seed_list())} seeds = {count:,} runs; at most {MAX_RUNS:,}"
    return [Problem("grid", message, lines.get("grid"))]


def _build_spec(raw: Any, source: str, text: str, lines: Mapping[str, int]) -> Spec:
    header = _validate_header(raw, source, lines)
    problems = _check_grid_keys(header, lines) + _check_size(header, lines)
    if problems:
        raise SpecError(source, problems)
    runs: dict[str, RunConfig] = {}
    for combo, run_raw in _expand(header):
        config, errors = _validate_run(run_raw)
        for err in errors:
            problems.append(_grid_problem(_problem_from_error(err, lines, "run"), combo, lines))
        if config is not None:
            runs.setdefault(config.run_id, config)  # identical grid points run once
    if problems:
        raise SpecError(source, problems)
    return Spec(
        header.name,
        header.description,
        source,
        text,
        tuple(runs.values()),
        tuple(header.grid),
        lines=dict(lines),
    )


def load_spec(path: Path | str, overrides: Iterable[str] = ()) -> Spec:
    """Read, parse, override and validate a spec file; raises SpecError with every problem."""
    path = Path(path)
    text = read_spec_text(path)
    raw, lines = parse_yaml(text, str(path))
    overrides = list(overrides)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides)
    keys = [parse_override(o)[0] for o in overrides]
    spec = build_spec(raw, str(path), text, lines, overridden=keys)
    return replace(spec, overrides=tuple(overrides))


__all__ = [
    "RUN_ID_LENGTH",
    "FrozenDict",
    "ModelConfig",
    "Problem",
    "RefOf",
    "RunConfig",
    "Spec",
    "SpecError",
    "TrainConfig",
    "apply_overrides",
    "build_spec",
    "load_spec",
    "parse_override",
    "parse_yaml",
    "run_id_of",
    "set_dotted",
]
