"""An init-only sweep (``train.steps: 0``) at scale: 100 seeds of a depth-50 width-256
relu MLP (he_normal) on mnist5k, each run one forward and backward pass of one batch.

Two measurements, each ``--repeats`` times:

* the whole command, ``initbench run`` in a fresh interpreter (start-up, planning, the
  runs, writing), with the local executor's default (and, with ``--workers``, with
  ``--workers 2``: a process per run);
* one run's parts in CPU seconds of this process (one torch thread, the mnist5k memo
  warm, medians over ``--runs`` seeds): the data split, building and initialising the
  model, the probed step, the rest of the run, and writing it.

CPU seconds (the command's, its workers' included) are steadier than wall time on a
machine others load, and are what the sweep takes on an idle core; the load average is
printed before and after each measurement. ::

    python benchmarks/init_only.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPEC = """
name: init_only_bench
data: {name: mnist5k}
model: {arch: mlp, depth: 50, width: 256, activation: relu, init: he_normal}
train: {steps: 0, batch_size: 128}
seeds: 100
"""
SETTINGS = {"default (this process)": [], "--workers 2": ["--workers", "2"]}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command(spec: Path, options: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``initbench run`` command, its workers included."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "initbench.cli", "run", str(spec), "--out", out]
        started, cpu = time.perf_counter(), _children_cpu()
        subprocess.run([*command, *options], check=True, capture_output=True)
        return time.perf_counter() - started, _children_cpu() - cpu


def _cpu(call: Any) -> tuple[float, Any]:
    started = time.process_time()
    value = call()
    return time.process_time() - started, value


def _parts(spec: Path, runs: int) -> dict[str, float]:
    """Median CPU milliseconds of each part of one init-only run, over ``runs`` seeds."""
    import torch

    from initbench.config.spec import load_spec
    from initbench.data import load_dataset
    from initbench.results import store
    from initbench.sweep.train import Trainer, execute_run

    torch.set_num_threads(1)
    configs = load_spec(spec).runs[: runs + 1]
    execute_run(configs[0].as_dict(), "warm-up")
    parts: dict[str, list[float]] = {k: [] for k in ("data", "setup", "step", "run", "write")}
    with tempfile.TemporaryDirectory() as out:
        for i, config in enumerate(configs[1:]):
            data = dict(config.data)
            name = data.pop("name")
            seed = 10**6 + i  # a split not loaded before (loads are memoised per seed)
            parts["data"].append(_cpu(lambda d=data, n=name, s=seed: load_dataset(n, d, s))[0])
            trainer = Trainer(config, torch.device("cpu"))
            parts["setup"].append(_cpu(trainer.setup)[0])  # its data split included
            parts["step"].append(_cpu(trainer.train)[0])
            seconds, result = _cpu(lambda c=config: execute_run(c.as_dict(), "bench", "cpu", 1))
            parts["run"].append(seconds)
            parts["write"].append(_cpu(lambda r=result: store.write_run(Path(out), r))[0])
    return {name: 1000 * statistics.median(values) for name, values in parts.items()}


def main() -> None:
    """Time the command and one run's parts; print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", action="store_true", help="also time --workers 2")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "init_only.yaml"
        spec.write_text(SPEC)
        print("| command | wall s (each repeat) | CPU s | load before -> after |")
        print("|---|---|---|---|")
        for name, options in list(SETTINGS.items())[: 2 if args.workers else 1]:
            before = _load()
            times = [_command(spec, options) for _ in range(args.repeats)]
            wall = ", ".join(f"{w:.1f}" for w, _ in times)
            cpu = ", ".join(f"{c:.1f}" for _, c in times)
            print(f"| initbench run, {name} | {wall} | {cpu} | {before} -> {_load()} |", flush=True)
        before = _load()
        parts = _parts(spec, args.runs)
    print(f"\none run's parts, CPU ms, median of {args.runs} (load {before} -> {_load()}):")
    print(" | ".join(f"{name} {ms:.1f}" for name, ms in parts.items()))


if __name__ == "__main__":
    main()
