"""Sweep planning and scheduling (runner.py); end-to-end behaviour is in test_cli."""

from __future__ import annotations

from collections import Counter

from initbench.config.spec import build_spec
from initbench.sweep.executors import InProcess, LocalProcesses
from initbench.sweep.runner import _results, estimated_cost, largest_first, plan

SPEC = {
    "name": "order",
    "data": {"name": "synthetic", "n_train": 64, "n_test": 32},
    "model": {"arch": "mlp", "width": 8},
    "train": {"steps": 4, "batch_size": 16},
    "grid": {"model.depth": [1, 4, 2], "model.arch": ["mlp", "cnn"]},
}


def _runs():
    return build_spec(SPEC, "order.yaml", "").runs


def test_cost_grows_with_depth_steps_and_batch() -> None:
    by_depth = {(r.model.arch, r.model.depth): estimated_cost(r) for r in _runs()}
    assert by_depth[("mlp", 1)] < by_depth[("mlp", 2)] < by_depth[("mlp", 4)]
    assert by_depth[("cnn", 4)] > by_depth[("mlp", 4)]  # 784 positions per kernel


def test_parallel_backends_get_the_runs_longest_first(tmp_path) -> None:
    runs = _runs()
    ordered = largest_first(runs)
    costs = [estimated_cost(r) for r in ordered]
    assert costs == sorted(costs, reverse=True)
    assert sorted(r.run_id for r in ordered) == sorted(r.run_id for r in runs)

    class Recording(LocalProcesses):
        def results(self, runs, experiment, device, on_retry):
            seen.extend(runs)
            yield from ()

    sweep = plan(build_spec(SPEC, "order.yaml", ""), tmp_path)
    seen: list = []
    list(_results(sweep, Recording(2, 1, 0), "cpu", lambda *a: None))
    assert [r.run_id for r in seen] == [r.run_id for r in ordered]
    assert [r.run_id for r in ordered] != [r.run_id for r in sweep.todo]  # a real reordering
    seen.clear()

    class InOrder(InProcess):
        def results(self, runs, experiment, device, on_retry):
            seen.extend(runs)
            yield from ()

    list(_results(sweep, InOrder(), "cpu", lambda *a: None))
    assert [r.run_id for r in seen] == [r.run_id for r in sweep.todo]  # the spec order


def test_check_data_refuses_a_batch_larger_than_the_training_set() -> None:
    import pytest

    from initbench.config.spec import SpecError
    from initbench.sweep.runner import check_data

    raw = {**SPEC, "train": {"steps": 1}, "grid": {"train.batch_size": [16, 65]}}
    with pytest.raises(SpecError) as caught:
        check_data(build_spec(raw, "order.yaml", "", {"grid.train.batch_size": 7}))
    (problem,) = caught.value.problems
    assert problem.key == "grid.train.batch_size" and problem.line == 7
    assert problem.message.startswith("value 65: train.batch_size: 65 exceeds the training set")
    check_data(build_spec({**raw, "grid": {"train.batch_size": [16, 64]}}, "order.yaml", ""))


def test_plan_keeps_the_stored_status_of_skipped_runs(tmp_path) -> None:
    from initbench.results import store
    from initbench.sweep.runner import SweepReport
    from initbench.sweep.train import execute_run

    train = {"steps": 2, "lr": 1e6, "batch_size": 16}
    spec = build_spec({**SPEC, "grid": {}, "train": train}, "order.yaml", "")
    (run,) = spec.runs
    result = execute_run(run.as_dict(), spec.name, threads=1)
    assert result.status == "diverged"
    store.write_run(tmp_path / spec.name, result)
    sweep = plan(spec, tmp_path)
    assert sweep.done == (run.run_id,) and sweep.done_statuses == ("diverged",)
    report = SweepReport(skipped=1, skipped_counts=Counter(sweep.done_statuses))
    assert report.unsuccessful() == 1 and report.unsuccessful(skipped=False) == 0


def test_local_workers_default_to_one_per_core_only_for_a_sweep_worth_it() -> None:
    from initbench import api
    from initbench.sweep.executors import ExecutorOptions
    from initbench.sweep.runner import PARALLEL_WORTH, estimated_seconds

    short = build_spec({**SPEC, "train": {"steps": 2}}, "order.yaml", "")
    long = build_spec({**SPEC, "train": {"steps": 10**6}}, "order.yaml", "")
    assert sum(map(estimated_seconds, short.runs)) < PARALLEL_WORTH
    assert sum(map(estimated_seconds, long.runs)) > PARALLEL_WORTH
    default = ExecutorOptions()
    assert api._with_default_workers(default, short).workers == 1
    assert api._with_default_workers(default, long).workers == default.local_workers()
    given = ExecutorOptions(workers=3)
    assert api._with_default_workers(given, short).workers == 3  # a choice is kept
