"""One run: seed, build, train with probes, detect divergence -> RunResult.

:func:`execute_run` is the single top-level function every executor calls with a plain
resolved-config dict; it never raises for a problem inside the run (that becomes a
``failed`` result) and never writes files (the driver alone writes results).

Step convention: the measurement at step s is taken on the forward/backward pass of
batch s with the parameters after s updates, *before* update s is applied; step 0 is
the network at initialisation and step ``train.steps`` is the trained network (its
pass is measured but not followed by an update). An init-only run (``train.steps: 0``)
measures step 0 alone: one forward and backward pass of batch 0, the loss's gradient
taken, no update and no test pass (its summary's test metrics are null, its final loss
and accuracy those of batch 0).
"""

from __future__ import annotations

import hashlib
import math
import platform
import statistics
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import initbench
from initbench.config.geometry import sequence_of
from initbench.config.optimizers import build_optimizer
from initbench.config.spec import RunConfig
from initbench.measure.examples import per_example
from initbench.measure.jacobian import JacobianProbe
from initbench.measure.probes import Probe
from initbench.measure.recorder import Recorder, first_non_finite
from initbench.measure.tape import Tape
from initbench.nets.lsuv import apply_lsuv, fits_record
from initbench.nets.models import InstrumentedModel, build_model
from initbench.results import schema
from initbench.results.summary import make_summary

EVAL_CHUNK = 2048  # test examples per forward pass during evaluation


# --- seeding and data order ---------------------------------------------------------------------


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed for one random stream ('init', 'order') of a run."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def batch_indices(
    n: int, batch_size: int, seed: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """Endless seeded batches of indices: a fresh permutation per epoch, last partial
    batch dropped so every step sees exactly ``batch_size`` examples."""
    if batch_size > n:
        raise ValueError(f"train.batch_size ({batch_size}) exceeds the training set ({n} examples)")
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def resolve_device(name: str) -> torch.device:
    """'cpu' | 'cuda' | 'auto' -> a torch device (auto: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked, but torch sees no CUDA device")
    return torch.device(name)


def versions() -> dict[str, str]:
    """Library versions that determine a run's numbers."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "initbench": initbench.__version__,
    }


# --- the training loop ----------------------------------------------------------------------


class Diverged(Exception):
    """A non-finite loss or statistic; carries where it happened."""

    def __init__(self, step: int, where: dict[str, Any]) -> None:
        super().__init__(f"non-finite {where.get('what')} at step {step}")
        self.step = step
        self.where = where


@dataclass
class Trainer:
    """One run's lifecycle: ``setup()``, ``train()``, then read ``recorder``/``curves``."""

    config: RunConfig
    device: torch.device

    def setup(self) -> None:
        """Load data, build and initialise the model, build the optimizer."""
        from initbench.data import load_dataset

        cfg = self.config
        torch.manual_seed(cfg.seed)  # nothing should use the global RNG; this pins it if it does
        data_ref = dict(cfg.data)
        self.data = load_dataset(data_ref.pop("name"), data_ref, cfg.seed)
        init_generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "init"))
        sequence = sequence_of(cfg.data)  # how a recurrent model reads the images
        self.model: InstrumentedModel = build_model(cfg.model, init_generator, sequence)
        self.model.to(self.device)
        self.model.train()
        self.layers = self.model.watched_layers()
        measured = [*self.layers, self.model.readout_layer()]  # the readout: its weight only
        self.probe = Probe(measured, list(self.model.parameters()), extras=1)
        # an init-only run (steps 0) updates nothing: no optimizer (nor torch.optim's imports)
        self.optimizer = build_optimizer(self.model, cfg) if cfg.train.steps else None
        self.train_x = self.data.train_x.to(self.device)
        self.train_y = self.data.train_y.to(self.device)
        self.batches = self._batches_again()
        # LSUV calibrates on the run's own batch 0: a fresh iterator of the same seed
        self.lsuv_fits = apply_lsuv(self.model, lambda: self.train_x[next(self._batches_again())])
        self.recorder = Recorder()
        self.curves: list[tuple[int, str, float]] = []
        self.window: list[float] = []  # the losses since the last probed step
        self.steps_done = 0
        train = cfg.train
        self.jacobian = (
            JacobianProbe(train.jacobian_examples, train.jacobian_every, train.steps)
            if train.jacobian
            else None
        )

    def _batches_again(self) -> Iterator[torch.Tensor]:
        """The run's batches from the start (the same seed as ``self.batches``)."""
        seed, size = derive_seed(self.config.seed, "order"), self.config.train.batch_size
        return batch_indices(len(self.train_y), size, seed, self.device)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, tape: Tape | None):
        self.model.zero_grad(set_to_none=True)  # the optimizer's parameters are the model's
        logits = self.model(x, tape)  # (B, 10)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return logits, loss

    def _probe(self, step: int, tape: Tape, logits, y, window: list[float]) -> None:
        """Record this step's statistics and curve points with one device-to-host copy."""
        launched = self.probe.launch(tape)
        hits = torch.eq(logits.detach().argmax(dim=1), y)
        # the correct predictions, sent with the statistics
        torch.sum(hits, dim=0, keepdim=True, dtype=torch.float64, out=launched.extras)
        host = launched.to_host()  # the step's one transfer
        loss = window[-1]
        deferred = launched.defer(host) if math.isfinite(loss) else None
        if deferred is not None:  # the common case: finite and precise, finished at the end
            self.recorder.add_deferred(step, deferred)
            grad_norm, where = deferred.grad_norm, None
        else:
            labels, values, grad_norm = launched.finish(host)
            self.recorder.add(step, labels, values)
            where = first_non_finite(labels, values, loss)
        points = (loss, statistics.fmean(window), float(host[-1]) / len(y), grad_norm)
        names = ("loss", "loss_avg", "train_accuracy", "grad_norm")
        for name, value in zip(names, points, strict=True):
            self.curves.append((step, name, float(value)))
        if where is not None:
            raise Diverged(step, where)

    def train(self) -> None:
        """Run the loop; raises Diverged at the first non-finite loss or statistic."""
        for step in range(self.config.train.steps + 1):
            self.train_step(step)

    def train_step(self, step: int) -> None:
        """Step ``step`` of the loop (called in order from 0 to train.steps): forward and
        backward (probed at step 0, every log_every steps and the last), evaluation when
        due, then the update (none after the last)."""
        steps, log_every = self.config.train.steps, self.config.train.log_every
        eval_every = self.config.train.eval_every
        index = next(self.batches)
        x, y = self.train_x[index], self.train_y[index]
        probe = step % log_every == 0 or step == steps
        tape = Tape(store=self.probe.store) if probe else None
        logits, loss = self._forward_backward(x, y, tape)
        self.window.append(loss.item())
        if not probe and not math.isfinite(self.window[-1]):
            # re-measure this very step to locate the first non-finite layer
            tape = Tape(store=self.probe.store)
            logits, loss = self._forward_backward(x, y, tape)
            probe = True
        if probe:
            self._probe(step, tape, logits, y, self.window)
            self.window = []
            if self.config.train.per_example:  # the spread over the batch's examples
                self.recorder.add(step, *per_example(tape, x, self.layers))
        if self.jacobian is not None and self.jacobian.due(step):
            self.jacobian.measure(step, self.model, x)
        if eval_every and step % eval_every == 0 and 0 < step < steps:
            self._evaluate(step)
        if step < steps:
            self._update(step)
            self.steps_done = step + 1

    def _update(self, step: int) -> None:
        """Clip the gradients' global L2 norm to train.clip_grad_norm (if > 0), recording
        its value before clipping and whether it clipped (as device scalars: read once,
        with the curves), then apply the optimizer's update."""
        clip = self.config.train.clip_grad_norm
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).detach()
            self.curves += [(step, "preclip_grad_norm", norm), (step, "clipped", norm > clip)]
        self.optimizer.step()

    def _evaluate(self, step: int) -> tuple[float, float]:
        loss, accuracy = evaluate(self.model, self.data.test_x, self.data.test_y, self.device)
        self.curves += [(step, "test_loss", loss), (step, "test_accuracy", accuracy)]
        return loss, accuracy

    def finish(self) -> tuple[float, float]:
        """Evaluate the trained model on the test split (recorded at the last step)."""
        return self._evaluate(self.config.train.steps)

    def curve_columns(self) -> dict[str, np.ndarray]:
        """The curves as columns (schema.CURVE_COLUMNS)."""
        steps, metrics, values = zip(*self.curves, strict=True) if self.curves else ((), (), ())
        return {
            "step": np.asarray(steps, dtype=np.int32),
            "metric": np.asarray(metrics, dtype=object),
            "value": np.asarray(values, dtype=np.float64),
        }

    def last_curve(self, metric: str) -> float | None:
        """The latest recorded value of a curve metric."""
        values = [v for _, m, v in self.curves if m == metric]
        return values[-1] if values else None


def evaluate(
    model: InstrumentedModel, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode over the whole split."""
    was_training = model.training
    model.eval()
    total_loss, correct = torch.zeros((), dtype=torch.float64, device=device), 0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_CHUNK):
            xb, yb = (
                x[start : start + EVAL_CHUNK].to(device),
                y[start : start + EVAL_CHUNK].to(device),
            )
            logits = model(xb)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += int((logits.argmax(dim=1) == yb).sum())
    model.train(was_training)
    return float(total_loss) / len(y), correct / len(y)


# --- the one function every executor calls --------------------------------------------------


def _base_summary(config: RunConfig, experiment: str, device: torch.device) -> dict[str, Any]:
    return make_summary(
        config,
        experiment,
        status="ok",
        steps_done=0,
        train_seconds=0.0,
        total_seconds=0.0,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        device=str(device),
        threads=torch.get_num_threads(),
        versions=versions(),
    )


def _train_and_summarise(trainer: Trainer, summary: dict[str, Any]) -> None:
    trainer.setup()
    summary["lsuv"], summary["lsuv_note"] = fits_record(trainer.lsuv_fits)
    started = time.perf_counter()
    try:
        trainer.train()
    except Diverged as exc:
        summary.update(status="diverged", diverged_step=exc.step, diverged_at=exc.where)
    finally:
        summary["train_seconds"] = time.perf_counter() - started
        summary["steps_done"] = trainer.steps_done
        summary["final_loss"] = trainer.last_curve("loss_avg")
        summary["final_train_accuracy"] = trainer.last_curve("train_accuracy")
    if summary["status"] == "ok" and trainer.config.train.steps > 0:  # init-only: no test pass
        summary["test_loss"], summary["test_accuracy"] = trainer.finish()


def execute_run(
    config: dict[str, Any], experiment: str = "", device: str = "cpu", threads: int | None = None
) -> schema.RunResult:
    """Run one resolved config and return everything it produced; never raises for a
    problem inside the run (it is returned as status ``failed`` with the cause)."""
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    run_config = RunConfig.model_validate(config)
    torch_device = resolve_device(device)
    summary = _base_summary(run_config, experiment, torch_device)
    trainer = Trainer(run_config, torch_device)
    try:
        _train_and_summarise(trainer, summary)
    except Exception as exc:  # one failing run must never stop the sweep
        summary.update(
            status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
    summary["total_seconds"] = time.perf_counter() - started
    recorder = getattr(trainer, "recorder", Recorder())
    curves = trainer.curve_columns() if hasattr(trainer, "curves") else {}
    jacobian = getattr(trainer, "jacobian", None)
    spectra = jacobian.columns() if jacobian is not None else {}
    return schema.RunResult(
        run_config.run_id, run_config.as_dict(), summary, recorder.columns(), curves, spectra
    )
