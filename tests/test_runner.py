"""Sweep planning and scheduling (runner.py); end-to-end behaviour is in test_cli."""

from __future__ import annotations

from initbench.executors import InProcess, ProcessPool
from initbench.runner import _results, estimated_cost, largest_first, plan
from initbench.spec import build_spec

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

    class Recording(ProcessPool):
        def results(self, runs, experiment, device, on_retry):
            seen.extend(runs)
            yield from ()

    sweep = plan(build_spec(SPEC, "order.yaml", ""), tmp_path)
    seen: list = []
    list(_results(sweep, Recording(2, 1), "cpu", lambda *a: None))
    assert [r.run_id for r in seen] == [r.run_id for r in ordered]
    assert [r.run_id for r in ordered] != [r.run_id for r in sweep.todo]  # a real reordering
    seen.clear()

    class InOrder(InProcess):
        def results(self, runs, experiment, device, on_retry):
            seen.extend(runs)
            yield from ()

    list(_results(sweep, InOrder(), "cpu", lambda *a: None))
    assert [r.run_id for r in seen] == [r.run_id for r in sweep.todo]  # the spec order
