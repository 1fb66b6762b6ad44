"""initbench's cost against plain PyTorch: per-step probe overhead, sweep workers, start-up.

1. Per-step time of ``Trainer.train()`` (probes, per-step loss check, curves) against a
   textbook loop over the same model, data, optimizer and batches (zero_grad, forward,
   cross-entropy, backward, step; no tape, no statistics, no loss check). The variants
   of a configuration run interleaved in one process, in a rotating order. Each ratio
   is the variant's best time over the plain loop's best: noise on a shared machine only
   adds time. The median of the per-repeat ratios is kept beside it in the JSON.
2. Wall time of ``initbench run`` with ``--workers 1`` and ``--workers 2`` (fresh
   processes, as a user runs it) on two sweeps of 8 runs: the headline experiment's runs
   (seconds each) and tiny runs shorter than a worker's start-up. The runs' own seconds,
   summed, say what a second torch thread gains one run (``--workers 1`` gives each run
   both cores' threads): 2 workers cannot be faster than 2 / that gain.
3. Wall time of ``initbench --help`` and ``initbench list``.

The machine, versions and load averages are recorded with the results. Not part of the
test suite:

    python benchmarks/probe_overhead.py [--steps 300] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from initbench.spec import TrainConfig, build_spec, set_dotted
from initbench.train import Trainer

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


def time_initbench(overrides: dict[str, Any], steps: int, log_every: int) -> float:
    """Seconds per step of Trainer.train() and the layer table (probes, loss checks,
    curves, finishing deferred statistics)."""
    trainer = Trainer(_config(overrides, steps, log_every), torch.device("cpu"))
    trainer.setup()
    started = time.perf_counter()
    trainer.train()
    trainer.recorder.columns()  # statistics of deferred steps are finished here
    return (time.perf_counter() - started) / (steps + 1)


def time_plain(overrides: dict[str, Any], steps: int) -> float:
    """Seconds per step of a textbook loop over the same model, data and batches."""
    trainer = Trainer(_config(overrides, steps, 10**9), torch.device("cpu"))
    trainer.setup()  # same model, optimizer and batch order; the loop below is plain
    model, optimizer = trainer.model, trainer.optimizer
    started = time.perf_counter()
    for _ in range(steps + 1):
        index = next(trainer.batches)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(trainer.train_x[index]), trainer.train_y[index])
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / (steps + 1)


def load() -> float:
    """The 1-minute load average (other work on the machine distorts timings); NaN if
    the system does not say."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def measure_case(
    label: str, overrides: dict[str, Any], steps: int, repeats: int, intervals: list[int]
) -> dict[str, Any]:
    """Best (least disturbed) ms per step over the repeats of the plain loop and of
    initbench at each logging interval, each interval's best over the plain loop's best,
    and, for reference, the median over repeats of the paired ratios.

    Noise on a shared machine only ever adds time, so the best of a few repeats is the
    steadiest estimate (as in ``timeit``); the paired median shows how far it moves."""
    variants = ["plain", *(f"log_every_{k}" for k in intervals)]
    times: dict[str, list[float]] = {v: [] for v in variants}
    load_before = load()
    for repeat in range(repeats):
        for variant in variants[repeat % len(variants) :] + variants[: repeat % len(variants)]:
            every = None if variant == "plain" else int(variant.rsplit("_", 1)[1])
            if every is None:
                times[variant].append(time_plain(overrides, steps))
            else:
                times[variant].append(time_initbench(overrides, steps, every))
    row: dict[str, Any] = {"case": label}
    for variant in variants:
        row[f"{variant}_ms"] = min(times[variant]) * 1e3
        if variant != "plain":
            row[f"ratio_{variant}"] = min(times[variant]) / min(times["plain"])
            pairs = zip(times[variant], times["plain"], strict=True)
            row[f"paired_median_ratio_{variant}"] = statistics.median(v / p for v, p in pairs)
    row["load_before"], row["load_after"] = load_before, load()
    return row


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


def markdown(rows: list[dict[str, Any]], intervals: list[int]) -> str:
    """The per-step table as markdown: ms per step, and the ratio to the plain loop."""
    head = "| case | plain ms | " + " | ".join(f"log_every {k}" for k in intervals) + " | load |"
    lines = [head, "|---" * (len(intervals) + 3) + "|"]
    for row in rows:
        cells = [
            f"{row[f'log_every_{k}_ms']:.2f} ({row[f'ratio_log_every_{k}']:.2f}x)"
            for k in intervals
        ]
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
    parser.add_argument("--steps", type=int, default=300, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per case")
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
    words = [w for w in args.cases.split(",") if w]
    info = machine()
    print(json.dumps(info), flush=True)
    time_plain(CASES[0][1], 5)  # warm-up: the first optimizer creation imports torch._dynamo
    rows = []
    for label, overrides in CASES:
        if words and not any(w in label for w in words):
            continue
        rows.append(measure_case(label, overrides, args.steps, args.repeats, intervals))
        print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows, intervals), flush=True)
    sweep = None
    if args.sweep_repeats:
        sweep = [measure_sweep(n, t, args.sweep_repeats) for n, t in SWEEPS.items()]
    startup = measure_startup()
    print(json.dumps({"sweep": sweep, "startup": startup}), flush=True)
    if sweep:
        print(sweep_markdown(sweep), flush=True)
    if args.json:
        settings = {"steps": args.steps, "repeats": args.repeats, "intervals": intervals}
        result = {"machine": info, "settings": settings, "per_step": rows}
        Path(args.json).write_text(json.dumps({**result, "sweep": sweep, "startup": startup}))


if __name__ == "__main__":
    main()
