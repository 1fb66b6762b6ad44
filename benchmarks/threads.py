"""Workers and threads: the wall time of `initbench run` under the old local defaults
(one worker with a torch thread per core) and the new ones (one thread per run; a worker
per core for a sweep whose estimated serial time repays starting them), on this machine
idle and busy.

"Busy" is other load the sweep does not control: one process per core spinning on the
CPU, as another user's job would. Each configuration runs in turn, in a random order,
``--repeats`` times; the table gives the median wall time and the ratio old / new.

    python benchmarks/threads.py --json threads.json     # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = """
name: threads
data: {{name: synthetic, n_train: 1024, n_test: 256}}
model: {{width: 128}}
train: {{steps: {steps}, log_every: 10, batch_size: 64}}
grid: {{model.depth: {depths}}}
seeds: {seeds}
"""
CASES = {  # name -> (depths, steps, seeds)
    "short sweep: 4 runs, mlp d20 w128, 150 steps": ([20], 150, 4),
    "sweep: 8 runs, mlp d5-30 w128, 300 steps": ([5, 10, 20, 30], 300, 2),
    "one run: mlp d20 w128, 300 steps": ([20], 300, 1),
}
CORES = os.cpu_count() or 1
SETTINGS = {  # name -> initbench run options
    f"old default: 1 worker x {CORES} threads": ["--workers", "1", "--threads", str(CORES)],
    "new default: 1 thread per run, a worker per core for a sweep worth it": [],
}


def _spin() -> None:
    while True:
        pass


def _time(spec: Path, options: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "initbench.cli", "run", str(spec), "--out", out]
        started = time.perf_counter()
        subprocess.run([*command, *options], check=True, capture_output=True)
        return time.perf_counter() - started


def _measure(spec: Path, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(repeats):
        for name in random.sample(list(SETTINGS), len(SETTINGS)):
            times[name].append(_time(spec, SETTINGS[name]))
    return times


def _case(folder: Path, name: str, repeats: int, busy: bool) -> dict[str, list[float]]:
    depths, steps, seeds = CASES[name]
    spec = folder / "threads.yaml"
    spec.write_text(SWEEP.format(depths=depths, steps=steps, seeds=seeds))
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(CORES if busy else 0)]
    for hog in hogs:
        hog.start()
    try:
        return _measure(spec, repeats)
    finally:
        for hog in hogs:
            hog.terminate()


def main() -> None:
    """Time every case, idle and busy, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in CASES:
            for busy in (False, True):
                times = _case(Path(folder), name, args.repeats, busy)
                old, new = (statistics.median(t) for t in times.values())
                rows.append({"case": name, "busy": busy, "old": old, "new": new, "times": times})
                print(
                    f"| {name} | {'busy' if busy else 'idle'} | {old:.1f} s | {new:.1f} s "
                    f"| {old / new:.2f}x |",
                    flush=True,
                )
    if args.json:
        meta = {
            "machine": platform.processor() or platform.machine(),
            "cores": CORES,
            "loadavg": os.getloadavg(),
            "python": platform.python_version(),
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
