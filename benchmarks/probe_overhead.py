"""initbench's cost against plain PyTorch: per-step probe overhead, sweep workers, start-up.

1. Per-step time of initbench's training loop (``Trainer.train_step``: probes, the
   per-step loss check, curves; plus building the layer table, where deferred statistics
   are finished) against a textbook loop over the same model, data, optimizer and batches
   (zero_grad, forward, cross-entropy, backward, step). All variants of a configuration
   train side by side in one process, a step of each in turn (in random order), so slow
   spells of a shared machine fall on every variant alike; every block of 50 timed steps
   has the variants built afresh (another memory layout) after 10 untimed steps. The
   ratio is the median, over blocks, of the variant's time over the plain loop's in the
   same block (quartiles kept). Variants: initbench at each logging interval.
2. Wall time of ``initbench run`` with ``--workers 1`` and ``--workers 2`` (fresh
   processes, as a user runs it) on two sweeps of 8 runs: the headline experiment's runs
   (seconds each) and tiny runs shorter than a worker's start-up. The runs' own seconds,
   summed, say what a second torch thread gains one run (``--workers 1`` gives each run
   both cores' threads): 2 workers cannot be faster than 2 / that gain.
3. Wall time of ``initbench --help`` and ``initbench list``.

The machine, versions and load averages are recorded with the results. Not part of the
test suite:

    python benchmarks/probe_overhead.py [--blocks 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from initbench.config.spec import TrainConfig, build_spec, set_dotted
from initbench.sweep.train import Trainer

DEFAULT_LOG_EVERY = TrainConfig.model_fields["log_every"].default  # initbench's default: 10
CASES = [  # (label, dotted overrides): issue 7's mlp depths x widths, a cnn, an rnn
    *(
        (f"mlp d{depth} w{width}", {"model.depth": depth, "model.width": width})
        for width in (64, 256)
        for depth in (5, 10, 30)
    ),
    ("mlp d30 w128", {"model.depth": 30}),  # the headline experiment's deepest-but-one net
    ("cnn d5 w16", {"model.arch": "cnn", "model.depth": 5, "model.width": 16}),
    (
        "rnn d1 w64",
        {"model.arch": "rnn", "model.depth": 1, "model.width": 64, "model.activation": "tanh"},
    ),
]
HEADLINE = {  # configs/relu_he_vs_xavier.yaml's settings
    "name": "bench",
    "data": {"name": "mnist5k"},
    "model": {"arch": "mlp", "width": 128, "activation": "relu", "init": "he_normal"},
    "train": {"optimizer": {"name": "sgd", "momentum": 0.9}, "lr": 0.01, "batch_size": 128},
}
SWEEPS = {  # name -> spec: 8 runs each
    # the headline experiment's runs (configs/relu_he_vs_xavier.yaml at depths 5-30, 1 seed):
    # a few seconds each, the size of run a sweep is made of
    "headline_8": """\
name: bench_headline
data: {name: mnist5k}
model: {arch: mlp, width: 128, activation: relu}
train: {optimizer: {name: sgd, momentum: 0.9}, lr: 0.01, batch_size: 128, steps: 300,
        log_every: 25}
grid:
  model.init: [he_normal, xavier_normal]
  model.depth: [5, 10, 20, 30]
""",
    # runs shorter than a worker's start-up (importing torch): what workers cannot speed up
    "tiny_8": """\
name: bench_tiny
data: {name: mnist5k}
model: {arch: mlp, width: 64, activation: relu}
train: {optimizer: {name: sgd, momentum: 0.9}, lr: 0.01, batch_size: 128, steps: 150}
grid:
  model.init: [he_normal, xavier_normal]
  model.depth: [5, 10]
seeds: 2
""",
}


def _config(overrides: dict[str, Any], steps: int, log_every: int) -> Any:
    raw = json.loads(json.dumps(HEADLINE))
    for key, value in {**overrides, "train.steps": steps, "train.log_every": log_every}.items():
        set_dotted(raw, key, value)
    return build_spec(raw, "<bench>", "").runs[0]


BLOCK = 50  # steps per timed block: a whole number of each interval timed (1, 10, 25)
WARMUP = 10  # untimed steps before each block; the block's steps 10..59 probe 50, 5 and 2


class PlainLoop:
    """A textbook loop (zero_grad, forward, cross-entropy, backward, step) over the model,
    optimizer and batches a Trainer sets up: no tape, no statistics, no loss check."""

    def __init__(self, overrides: dict[str, Any], steps: int) -> None:
        self.trainer = Trainer(_config(overrides, steps, 10**9), torch.device("cpu"))
        self.trainer.setup()

    def step(self, step: int) -> None:
        """One training step."""
        trainer = self.trainer
        index = next(trainer.batches)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(trainer.model(trainer.train_x[index]), trainer.train_y[index])
        loss.backward()
        trainer.optimizer.step()

    def finish(self) -> float:
        """Seconds of work left after the timed steps: none."""
        return 0.0


class InitbenchLoop:
    """initbench's own loop, ``Trainer.train_step``: probes, loss checks, curves."""

    def __init__(self, overrides: dict[str, Any], steps: int, log_every: int) -> None:
        self.trainer = Trainer(_config(overrides, steps, log_every), torch.device("cpu"))
        self.trainer.setup()

    def step(self, step: int) -> None:
        """One training step (probed on logging steps)."""
        self.trainer.train_step(step)

    def finish(self) -> float:
        """Seconds to build the layer table, where deferred statistics are finished."""
        started = time.perf_counter()
        self.trainer.recorder.columns()
        return time.perf_counter() - started


def variant_names(intervals: list[int]) -> list[str]:
    """The initbench variants timed against the plain loop, by name."""
    return [f"log_every_{k}" for k in intervals]


def _variant(name: str, overrides: dict[str, Any], steps: int) -> InitbenchLoop:
    return InitbenchLoop(overrides, steps, int(name.removeprefix("log_every_")))


def load() -> float:
    """The 1-minute load average (other work on the machine distorts timings); NaN if
    the system does not say."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def measure_case(
    label: str, overrides: dict[str, Any], blocks: int, variants: list[str]
) -> dict[str, Any]:
    """ms per step of the plain loop and of initbench's variants (each logging interval),
    and the ratios to the plain loop.

    All variants train side by side in this process, one step of each in turn, so that a
    slow spell of a shared machine (they last from tens of ms to seconds here) falls on
    every variant alike. The order is random at every step: the step before leaves the
    caches to the step after (a fixed order biased ratios by up to 8%). Every block of
    BLOCK timed steps has variants built afresh, after WARMUP untimed steps: where a
    variant's tensors happen to lie in memory changed a small net's step by up to 18% for
    the whole life of the variant (mlp d5 w64 at log_every 10 once read 1.16-1.20x in
    every block, 1.03x in other runs), so each block draws another layout. The ratio is
    the median over blocks of the variant's block time over the plain loop's in the same
    block. Each variant's share of building its layer table, where initbench finishes
    deferred statistics, is added to its block."""
    names = ["plain", *variants]
    per_step: dict[str, list[float]] = {name: [] for name in names}
    load_before = load()
    order = random.Random(0)
    for _ in range(blocks):
        for name, seconds in _time_block(overrides, variants, order).items():
            per_step[name].append(seconds)
    plain = per_step["plain"]
    row: dict[str, Any] = {"case": label, "plain_ms": statistics.median(plain) * 1e3}
    for name in variants:
        row[f"{name}_ms"] = statistics.median(per_step[name]) * 1e3
        ratios = sorted(v / p for v, p in zip(per_step[name], plain, strict=True))
        row[f"ratio_{name}"] = statistics.median(ratios)
        row[f"ratio_{name}_quartiles"] = statistics.quantiles(ratios, n=4)[::2]
    row["load_before"], row["load_after"] = load_before, load()
    return row


def _time_block(
    overrides: dict[str, Any], variants: list[str], order: random.Random
) -> dict[str, float]:
    """Seconds per step of each variant (and the plain loop) over one block: fresh
    variants, WARMUP untimed steps each (the first steps allocate and build the probe's
    plan), then BLOCK timed steps interleaved in random order, plus each variant's layer
    table build divided over its steps."""
    steps = WARMUP + BLOCK
    loops: dict[str, Any] = {"plain": PlainLoop(overrides, steps)}
    loops |= {name: _variant(name, overrides, steps) for name in variants}
    for step in range(WARMUP):
        for loop in loops.values():
            loop.step(step)
    seconds = dict.fromkeys(loops, 0.0)
    for step in range(WARMUP, steps):
        for name in order.sample(list(loops), len(loops)):  # no variant always follows another
            started = time.perf_counter()
            loops[name].step(step)
            seconds[name] += time.perf_counter() - started
    return {name: seconds[name] / BLOCK + loops[name].finish() / steps for name in loops}


def time_sweep(workers: int, spec: Path) -> tuple[float, float]:
    """Wall seconds of ``initbench run SPEC --workers N`` into a fresh folder, and the
    seconds its runs took, summed (each run's ``total_seconds``)."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "initbench.cli", "run", str(spec), "--out", out,
             "--workers", str(workers)],
            check=True, capture_output=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        summaries = [json.loads(p.read_text()) for p in Path(out).rglob("summary.json")]
        return wall, sum(summary["total_seconds"] for summary in summaries)


def measure_sweep(name: str, text: str, repeats: int) -> dict[str, Any]:
    """One sweep's wall time with 1 and 2 workers (interleaved, median), the speed-up, and
    what bounds it: the runs' summed seconds with 2 threads each (workers 1) and 1 thread
    each (workers 2). Their ratio is what 2 threads gain one run; 2 workers cannot beat
    ``2 / that``, however small the start-up."""
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / f"{name}.yaml"
        spec.write_text(text)
        load_before = load()
        times: dict[int, list[float]] = {1: [], 2: []}
        runs: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(repeats):
            for workers in (1, 2):
                wall, summed = time_sweep(workers, spec)
                times[workers].append(wall)
                runs[workers].append(summed)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    runs_one, runs_two = statistics.median(runs[1]), statistics.median(runs[2])
    thread_gain = runs_two / runs_one
    return {
        "sweep": name,
        "runs": 8,
        "workers_1_s": one,
        "workers_2_s": two,
        "speedup": one / two,
        "runs_summed_2_threads_s": runs_one,
        "runs_summed_1_thread_s": runs_two,
        "two_thread_gain": thread_gain,
        "speedup_bound": 2 / thread_gain,
        "load_before": load_before,
        "load_after": load(),
    }


def measure_startup(repeats: int = 3) -> dict[str, float]:
    """Best wall seconds of ``initbench --help`` and ``initbench list`` (fresh processes)."""
    result = {}
    for name, args in (("help_s", ["--help"]), ("list_s", ["list"])):
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "initbench.cli", *args], check=True, capture_output=True
            )
            samples.append(time.perf_counter() - started)
        result[name] = min(samples)
    return result


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        model = names[0] if names else model
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def markdown(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """The per-step table as markdown: ms per step, the ratio to the plain loop (median
    over blocks) and its quartiles."""
    titles = [name.replace("log_every_", "log_every ") for name in variants]
    head = "| case | plain ms | " + " | ".join(titles) + " | load |"
    lines = [head, "|---" * (len(variants) + 3) + "|"]
    for row in rows:
        cells = []
        for name in variants:
            low, high = row[f"ratio_{name}_quartiles"]
            ratio = row[f"ratio_{name}"]
            cells.append(f"{row[f'{name}_ms']:.2f}: {ratio:.2f}x ({low:.2f}-{high:.2f})")
        loads = f"{row['load_before']:.2f}-{row['load_after']:.2f}"
        lines.append(f"| {row['case']} | {row['plain_ms']:.2f} | {' | '.join(cells)} | {loads} |")
    return "\n".join(lines)


def sweep_markdown(sweeps: list[dict[str, Any]]) -> str:
    """The sweep table as markdown: wall times, speed-up, and its bound."""
    lines = [
        "| sweep | workers 1 | workers 2 | speed-up | runs summed, 2 threads / 1 thread "
        "| bound 2 / gain |",
        "|---|---|---|---|---|---|",
    ]
    for row in sweeps:
        lines.append(
            f"| {row['sweep']} | {row['workers_1_s']:.1f} s | {row['workers_2_s']:.1f} s "
            f"| {row['speedup']:.2f}x | {row['runs_summed_2_threads_s']:.1f} s / "
            f"{row['runs_summed_1_thread_s']:.1f} s | {row['speedup_bound']:.2f}x |"
        )
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--blocks", type=int, default=12, help=f"timed blocks of {BLOCK} steps per variant"
    )
    parser.add_argument(
        "--intervals", default=f"1,{DEFAULT_LOG_EVERY},25", help="logging intervals to time"
    )
    parser.add_argument("--cases", default="", help="only cases whose label contains one of "
                        "these comma-separated words")  # fmt: skip
    parser.add_argument("--sweep-repeats", type=int, default=2, help="0 skips the sweep")
    parser.add_argument("--json", default=None, help="also write everything as JSON here")
    return parser.parse_args()


def main() -> None:
    """Run the measurements, print them, and write the JSON."""
    args = _arguments()
    intervals = [int(k) for k in args.intervals.split(",")]
    variants = variant_names(intervals)
    words = [w for w in args.cases.split(",") if w]
    info = machine()
    print(json.dumps(info), flush=True)
    PlainLoop(CASES[0][1], 1).step(0)  # warm-up: the first optimizer step imports torch._dynamo
    rows = []
    for label, overrides in CASES:
        if words and not any(w in label for w in words):
            continue
        rows.append(measure_case(label, overrides, args.blocks, variants))
        print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows, variants), flush=True)
    sweep = None
    if args.sweep_repeats:
        sweep = [measure_sweep(n, t, args.sweep_repeats) for n, t in SWEEPS.items()]
    startup = measure_startup()
    print(json.dumps({"sweep": sweep, "startup": startup}), flush=True)
    if sweep:
        print(sweep_markdown(sweep), flush=True)
    if args.json:
        settings = {"blocks": args.blocks, "block_steps": BLOCK, "variants": variants}
        result = {"machine": info, "settings": settings, "per_step": rows}
        Path(args.json).write_text(json.dumps({**result, "sweep": sweep, "startup": startup}))


if __name__ == "__main__":
    main()
