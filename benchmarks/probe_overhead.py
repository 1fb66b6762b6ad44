"""Per-step time of initbench's training loop against a plain PyTorch loop.

Same model, data, optimizer and batches; the plain loop has no tape, no statistics and
no per-step loss check. Configurations are interleaved and repeated, and the median
per-step time of each is reported with the ratios. Not part of the test suite.

    python benchmarks/probe_overhead.py [--steps 100] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from initbench.spec import build_spec
from initbench.train import Trainer

CASES = [  # (label, dotted overrides) - the headline's model at its depths, plus cnn/rnn
    ("mlp d5 w128", {"model.depth": 5}),
    ("mlp d30 w128", {"model.depth": 30}),
    ("mlp d30 w256", {"model.depth": 30, "model.width": 256}),
    ("cnn d5 w16", {"model.arch": "cnn", "model.depth": 5, "model.width": 16}),
    (
        "rnn d1 w64",
        {"model.arch": "rnn", "model.depth": 1, "model.width": 64, "model.activation": "tanh"},
    ),
]
HEADLINE = {
    "name": "bench",
    "data": {"name": "mnist5k"},
    "model": {"arch": "mlp", "width": 128, "activation": "relu", "init": "he_normal"},
    "train": {"optimizer": {"name": "sgd", "momentum": 0.9}, "lr": 0.01, "batch_size": 128},
}


def _config(overrides: dict[str, Any], steps: int, log_every: int) -> Any:
    from initbench.spec import set_dotted

    raw = json.loads(json.dumps(HEADLINE))
    for key, value in {**overrides, "train.steps": steps, "train.log_every": log_every}.items():
        set_dotted(raw, key, value)
    return build_spec(raw, "<bench>", "").runs[0]


def time_initbench(overrides: dict[str, Any], steps: int, log_every: int) -> float:
    """Seconds per step of Trainer.train() (probes, loss checks, curves included)."""
    trainer = Trainer(_config(overrides, steps, log_every), torch.device("cpu"))
    trainer.setup()
    started = time.perf_counter()
    trainer.train()
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


def main() -> None:
    """Run the interleaved measurements and print/write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--default-log-every", type=int, default=25)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    time_plain(CASES[0][1], 5)  # warm-up: first optimizer creation imports torch._dynamo
    rows = []
    for label, overrides in CASES:
        samples: dict[str, list[float]] = {"plain": [], "every": [], "default": []}
        for _ in range(args.repeats):
            samples["plain"].append(time_plain(overrides, args.steps))
            samples["every"].append(time_initbench(overrides, args.steps, 1))
            samples["default"].append(time_initbench(overrides, args.steps, args.default_log_every))
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        rows.append(
            {
                "case": label,
                "plain_ms": med["plain"],
                "log_every_1_ms": med["every"],
                f"log_every_{args.default_log_every}_ms": med["default"],
                "ratio_every_step": med["every"] / med["plain"],
                "ratio_default": med["default"] / med["plain"],
            }
        )
        print(
            f"{label:14} plain {med['plain']:7.2f} ms  every step {med['every']:7.2f} ms "
            f"(x{med['every'] / med['plain']:.2f})  log_every {args.default_log_every} "
            f"{med['default']:7.2f} ms (x{med['default'] / med['plain']:.2f})",
            flush=True,
        )
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
