"""A sweep: plan (skip complete runs), execute (in-process, a process pool, Dask), write.

Workers only compute: each calls :func:`initbench.sweep.train.execute_run` on a plain config
dict and returns the RunResult (see :mod:`initbench.sweep.executors`); the driver alone writes
results, atomically, as they arrive. A run that fails or diverges is recorded and the
sweep goes on. Interrupting (Ctrl-C) abandons the runs in flight - nothing of them is
written - and keeps every finished one, so re-running the same command does only what
is missing.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from initbench.config import geometry
from initbench.config.memory import MemoryEstimate, estimate, human
from initbench.config.spec import Problem, RunConfig, Spec, SpecError
from initbench.results import schema, store, verify
from initbench.sweep.executors import (
    Backend,
    ExecutorOptions,
    InProcess,
    OnRetry,
    local_backend,
)


@dataclass(frozen=True)
class Plan:
    """What a sweep will do: the runs to execute and those already complete."""

    spec: Spec
    experiment_dir: Path
    todo: tuple[RunConfig, ...]
    done: tuple[str, ...]
    done_statuses: tuple[str, ...] = ()  # stored status of each run in ``done``
    broken: Mapping[str, str] = field(default_factory=dict)  # run id -> why; redone


@dataclass
class SweepReport:
    """Outcome of a sweep: per-status counts, skipped runs and wall time."""

    counts: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    seconds: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped_counts: Counter[str] = field(default_factory=Counter)  # stored status of skipped

    def record(self, result: schema.RunResult) -> None:
        """Count one finished run."""
        self.counts[result.status] += 1
        self.results.append({k: result.summary.get(k) for k in ("run_id", "status", "error")})

    def unsuccessful(self, skipped: bool = True) -> int:
        """Runs that failed or diverged: those of this sweep, and (``skipped``) the complete
        runs it skipped whose stored status is failed or diverged."""
        counts = self.counts + self.skipped_counts if skipped else self.counts
        return counts["failed"] + counts["diverged"]


def check_initializers(spec: Spec) -> None:
    """Raise SpecError if an initializer cannot apply to a weight of some run's model: one
    problem per spec key (and grid value), located at its line, however many weights fail."""
    from initbench.nets.models import init_problems

    problems: dict[tuple[str, str], Problem] = {}
    seen: set[str] = set()
    for run in spec.runs:
        sequence = geometry.sequence_of(run.data)
        model = run.model.model_dump_json() + sequence
        if model in seen:
            continue
        seen.add(model)
        reasons: dict[str, list[str]] = {}
        for key, reason in init_problems(run.model, sequence):
            reasons.setdefault(key, []).append(reason)
        for key, found in reasons.items():
            more = len(found) - 1
            message = found[0] + (f" (and {more} more weight{'s' * (more != 1)})" if more else "")
            problem = spec.problem(run, key, message)
            value = json.dumps(run.as_dict()["model"][key.removeprefix("model.")], sort_keys=True)
            problems.setdefault((problem.key, value), problem)
    if problems:
        raise SpecError(spec.source, problems.values())


def check_data(spec: Spec) -> None:
    """Load each distinct dataset of the sweep once, so that bad data and batches that do
    not fit stop the command before anything is written, instead of failing every run.

    Raises DataError for missing or corrupt data files, and SpecError (key
    ``train.batch_size``, located) for a run whose batch exceeds its training set.
    """
    from initbench.data import load_dataset

    sizes: dict[str, int] = {}
    problems: list[Problem] = []
    for run in spec.runs:
        ref = dict(run.data)
        key = repr(sorted(ref.items()))
        if key not in sizes:
            sizes[key] = len(load_dataset(ref.pop("name"), ref, run.seed).train_y)
        if run.train.batch_size > sizes[key]:
            problems.append(batch_problem(spec, run, sizes[key]))
    if problems:
        raise SpecError(spec.source, problems)


def available_memory() -> int | None:
    """Bytes of memory this machine can give new processes now (Linux: MemAvailable),
    else its free physical memory; None where neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def largest_run(spec: Spec) -> tuple[RunConfig, MemoryEstimate]:
    """The run of the sweep that needs the most memory, and its estimate."""
    estimates = [(run, estimate(run.as_dict())) for run in spec.runs]
    return max(estimates, key=lambda pair: pair[1].total)


def check_memory(spec: Spec, parallel: int = 1, available: int | None = None) -> None:
    """Raise SpecError, with the estimate and the limit, when ``parallel`` of the sweep's
    largest runs would not fit in this machine's available memory (nothing is checked
    where that cannot be read)."""
    available = available_memory() if available is None else available
    if available is None:
        return
    run, needed = largest_run(spec)
    parallel = max(1, min(parallel, len(spec.runs)))
    if needed.total * parallel <= available:
        return
    times = f" x {parallel} runs in parallel" if parallel > 1 else ""
    message = (
        f"needs about {needed.describe()} per run{times}, more than the {human(available)} "
        "of memory this machine has available"
    )
    raise SpecError(spec.source, [spec.problem(run, "model", message)])


def batch_problem(spec: Spec, run: RunConfig, n_train: int) -> Problem:
    """The located problem of a run whose batch is larger than its training set."""
    return spec.problem(
        run,
        "train.batch_size",
        f"{run.train.batch_size} exceeds the training set of dataset {run.data['name']!r} "
        f"({n_train} examples); use at most {n_train}",
    )


def plan(spec: Spec, out: Path, force: bool = False) -> Plan:
    """Decide which runs to execute; complete runs are skipped unless ``force``.

    Reads only. A complete run that cannot be read (a truncated table, a garbage summary)
    is planned to be moved aside (:func:`initbench.results.verify.quarantine`) and redone.
    Raises ResultsError for a folder that is not an initbench experiment, or a run stored
    by a newer version of the results format.
    """
    exp_dir = out / spec.name
    store.check_experiment_folder(exp_dir)
    complete = (
        [] if force else [r.run_id for r in spec.runs if store.is_complete(exp_dir, r.run_id)]
    )
    checked = {run_id: verify.check_run(store.run_path(exp_dir, run_id)) for run_id in complete}
    broken = {run_id: why for run_id, (_, why) in checked.items() if why}
    done = [run_id for run_id in complete if run_id not in broken]
    statuses = [checked[run_id][0] for run_id in done]
    todo = tuple(r for r in spec.runs if r.run_id not in set(done))
    return Plan(spec, exp_dir, todo, tuple(done), tuple(statuses), broken)


def describe(run: RunConfig, keys: tuple[str, ...]) -> str:
    """Short label of a run: the grid values that vary, then the seed."""
    flat = store.flatten(run.as_dict())
    parts = []
    for key in keys:
        if key in ("data", "model", "train"):  # a grid of whole sections: what each sets
            parts.append(_section_label(run, key))
            continue
        value = flat.get(f"{key}.name", flat.get(key))
        parts.append(f"{key.split('.')[-1]}={value}")
    return " ".join([*parts, f"seed={run.seed}"])


def _section_label(run: RunConfig, section: str) -> str:
    """A section's keys that differ from their defaults (a named reference by name)."""
    values = getattr(run, section)
    if isinstance(values, dict):  # data: a named reference
        return f"{section}={values.get('name')}"
    defaults = type(values)()
    return " ".join(
        f"{key}={value['name'] if isinstance(value, dict) else value}"
        for key, value in values
        if value != getattr(defaults, key)
    )


def execute(
    sweep: Plan,
    workers: int = 1,
    device: str = "cpu",
    threads: int | None = None,
    on_start: Callable[[int], None] = lambda total: None,
    on_result: Callable[[RunConfig, schema.RunResult], None] = lambda run, result: None,
    backend: Backend | None = None,
    on_retry: OnRetry = lambda run, attempt, cause: None,
) -> SweepReport:
    """Run every planned run under the folder's lock, writing each as it finishes.

    ``backend`` is where runs execute (see :mod:`initbench.sweep.executors`; a Dask cluster, ...);
    without one, ``workers`` processes with ``threads`` torch threads each, or this process.
    Whatever the backend, only this process writes. Raises ResultsLockedError if another
    process is writing the folder, and ResultsError if a result cannot be written (disk
    full, permission denied): the runs written before stay complete, and the same command
    resumes.
    """
    report = SweepReport(skipped=len(sweep.done), skipped_counts=Counter(sweep.done_statuses))
    started = time.perf_counter()
    with store.experiment_lock(sweep.experiment_dir):
        store.remove_stale_temporaries(sweep.experiment_dir)
        for run_id, reason in sweep.broken.items():
            verify.quarantine(sweep.experiment_dir, run_id, reason)
        if sweep.todo:
            spec, exp_dir = sweep.spec, sweep.experiment_dir
            _write(report, lambda: store.write_spec(exp_dir, spec.text, spec.overrides))
        on_start(len(sweep.todo))
        if backend is None:
            backend = local_backend(workers, threads, len(sweep.todo), ExecutorOptions.retries)
        results = _results(sweep, backend, device, on_retry)
        try:
            for run, result in results:
                _write(report, lambda r=result: store.write_run(sweep.experiment_dir, r))
                report.record(result)
                on_result(run, result)
        finally:
            results.close()  # stops the workers' runs in flight on any early exit
    report.seconds = time.perf_counter() - started
    return report


def _results(
    sweep: Plan, backend: Backend, device: str, on_retry: OnRetry
) -> Generator[tuple[RunConfig, schema.RunResult], None, None]:
    """The (run, result) pairs of the sweep's runs from ``backend``, as they finish;
    parallel backends get the runs longest first, so no long run starts last and leaves
    the other workers idle (results do not depend on the order)."""
    runs = sweep.todo if isinstance(backend, InProcess) else largest_first(sweep.todo)
    return backend.results(runs, sweep.spec.name, device, on_retry)


def estimated_cost(run: RunConfig) -> int:
    """A run's forward multiply-adds over all its steps: for ordering runs, not a time."""
    model = run.model
    sequence = geometry.sequence_of(run.data)
    per_example = geometry.multiply_adds(model.arch, model.depth, model.layer_widths(), sequence)
    return per_example * run.train.batch_size * (run.train.steps + 1)


# Seconds per forward multiply-add of a probed training step (forward, backward, update),
# measured: a depth-30 width-128 mlp at batch 128 steps in about 15 ms on one core of this
# project's 2-core machine. An estimate for planning, not a measurement of any run.
SECONDS_PER_MULTIPLY_ADD: Final = 0.015 / (geometry.multiply_adds("mlp", 30, 128) * 128)
# Estimated serial seconds of a sweep below which its local workers default to one: extra
# worker processes start in about a second (the forkserver imports torch), which a short
# sweep does not repay (measured: 4 short runs took 4.2 s in one process, 5.2 s in two).
PARALLEL_WORTH: Final = 20.0
# Estimated seconds of a sweep's mean run below which its local workers also default to
# one: each run gets a process of its own, which costs more than such a run (measured on 2
# busy cores: 100 init-only runs of a depth-50 width-256 mlp, about 0.1 s of work each,
# took 18 s in this process and 79-96 s in 2 workers; benchmarks/init_only.py).
SHORT_RUN: Final = 1.0


def estimated_seconds(run: RunConfig) -> float:
    """A rough estimate of a run's training time on one core (see SECONDS_PER_MULTIPLY_ADD)."""
    return estimated_cost(run) * SECONDS_PER_MULTIPLY_ADD


def largest_first(runs: tuple[RunConfig, ...]) -> tuple[RunConfig, ...]:
    """``runs`` by estimated cost, largest first; equal costs keep the spec's order."""
    return tuple(sorted(runs, key=estimated_cost, reverse=True))


def _write(report: SweepReport, write: Callable[[], object]) -> None:
    """Run one write; an OSError becomes a ResultsError that says what is safe."""
    try:
        write()
    except OSError as exc:
        finished = sum(report.counts.values())
        raise store.ResultsError(
            f"cannot write results: {exc.strerror or exc} ({exc.filename or 'results folder'}); "
            f"the {finished} run(s) written before are complete; fix this and run the same "
            "command again to do only what is missing"
        ) from exc
