"""The results format, in one place: file names, table columns, metrics, summary keys.

Every key that initbench writes is declared and documented here; ``store.py`` writes
and reads it, ``report.py`` and ``analysis.py`` only read it. Bump
:data:`FORMAT_VERSION` on any change that an older reader would misread.

Layout::

    <out>/<experiment>/spec.yaml                  the spec text as given
    <out>/<experiment>/runs/<run_id>/config.json  the fully resolved run config
    <out>/<experiment>/runs/<run_id>/layers.parquet  long table (LAYER_COLUMNS)
    <out>/<experiment>/runs/<run_id>/curves.parquet  long table (CURVE_COLUMNS)
    <out>/<experiment>/runs/<run_id>/spectra.parquet long table (SPECTRA_COLUMNS; from
                                                     format 2, empty unless train.jacobian)
    <out>/<experiment>/runs/<run_id>/summary.json    written last (SUMMARY_KEYS)
    <out>/<experiment>/quarantine/<run_id>/          a run found unreadable on resume, moved
                                                     aside with reason.txt, and redone

A run directory is built under a temporary name and renamed into place, so a
directory named ``<run_id>`` always holds a complete run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from initbench.measure import catalog

# 1: config, layers, curves, summary. 2: adds spectra.parquet (Jacobian singular values);
# a version-1 run reads as one without spectra.
FORMAT_VERSION: Final = 2
SPECTRA_SINCE: Final = 2  # the first format version that writes SPECTRA_FILE

SPEC_FILE: Final = "spec.yaml"
# The --set overrides that went with spec.yaml: a YAML list of "KEY=VALUE" texts, in order;
# absent when that sweep had none.
OVERRIDES_FILE: Final = "overrides.yaml"
RUNS_DIR: Final = "runs"
CONFIG_FILE: Final = "config.json"
LAYERS_FILE: Final = "layers.parquet"
CURVES_FILE: Final = "curves.parquet"
SPECTRA_FILE: Final = "spectra.parquet"
SUMMARY_FILE: Final = "summary.json"
TMP_PREFIX: Final = ".tmp-"
# Complete-looking runs found broken on resume are moved here (with a REASON_FILE) and redone.
QUARANTINE_DIR: Final = "quarantine"
REASON_FILE: Final = "reason.txt"
LOCK_FILE: Final = ".initbench.lock"  # held (flock) by the one process writing the folder

Status = Literal["ok", "diverged", "failed"]
STATUSES: Final = ("ok", "diverged", "failed")

# Column -> numpy dtype of the per-layer long table.
LAYER_COLUMNS: Final[dict[str, str]] = {
    "step": "int32",  # optimizer updates applied before this measurement (0 = at init)
    # watched layer index l, 1-based in forward order; depth + 1 is the readout (name
    # "readout"), of which only the weight's statistics are recorded (w_*, grad_w_*)
    "layer": "int16",
    "t": "int16",  # rnn time step, 1-based; 0 for feed-forward layers and per-layer weights
    "name": "str",  # module name of the layer, e.g. "fc3", "conv2", "rnn1"
    "metric": "str",  # one of LAYER_METRICS
    "value": "float64",  # non-finite values are stored as such
}

# Column -> numpy dtype of the per-step long table.
CURVE_COLUMNS: Final[dict[str, str]] = {
    "step": "int32",
    "metric": "str",  # one of CURVE_METRICS
    "value": "float64",
}

# Column -> numpy dtype of the Jacobian spectra (initbench.measure.jacobian): the singular
# values of J = d act_L / d x (the last watched layer's act against the 784 input pixels)
# of each example, at step 0 and at the steps train.jacobian_every asks for. An example has
# N_out values (the last layer's units), the zeros of J J^T's null space included where
# N_out > 784, so the mean of their squares is tr(J J^T) / N_out.
SPECTRA_COLUMNS: Final[dict[str, str]] = {
    "step": "int32",  # as LAYER_COLUMNS' step
    "example": "int16",  # 0-based position of the example in the step's batch
    "index": "int32",  # 0-based rank of the singular value, largest first
    "value": "float64",  # the singular value (computed in float64)
    "input_sq": "float64",  # E[x^2] over the example's input pixels (its mean-field q0)
}

# What spectra.parquet's values are, for `initbench list metrics` and docs/definitions.md.
SPECTRA_METRICS: Final[dict[str, str]] = {
    "singular_value": "a singular value sigma of one example's input-output Jacobian "
    "J = d act_L / d x (act_L: the last watched layer's act, an rnn's at its last step; x: "
    "the 784 input pixels), in float64, largest first; the N_L - 784 zeros of J J^T's null "
    "space included where N_L > 784 (train.jacobian; a row of SPECTRA_COLUMNS)",
}

# Metric name -> definition, generated from the catalogue that defines each statistic
# once (initbench.measure.catalog: its tensor, reduction and definition). "Elements" are
# batch x units (x spatial positions for a CNN); for an rnn each time step t is measured
# separately over batch x units.
LAYER_METRICS: Final[dict[str, str]] = catalog.definitions()

CURVE_METRICS: Final[dict[str, str]] = {
    "loss": "training loss of the batch at this step (before the update)",
    "loss_avg": "mean training loss over the steps since the previous logging step",
    "train_accuracy": "accuracy on the training batch at this step",
    "grad_norm": "global L2 norm of all parameter gradients at this step",
    "preclip_grad_norm": "train.clip_grad_norm > 0: the global L2 norm of all parameter "
    "gradients before clipping, at every update",
    "clipped": "train.clip_grad_norm > 0: 1 where that update's gradients were scaled down "
    "to norm clip_grad_norm (preclip_grad_norm > clip_grad_norm), else 0",
    "test_loss": "loss on the whole test split (eval mode), when evaluated",
    "test_accuracy": "accuracy on the whole test split (eval mode), when evaluated",
}

# summary.json keys -> meaning. Written last: its presence marks the run complete. Every
# summary has each key (null where it does not apply): results.summary.make_summary builds
# them all (a run lost with its worker has only its identity, status, steps and error).
# Readers take what they find: older summaries may lack a key or hold one no
# longer written (probe_kernel, which said whether a C kernel reduced the probes).
SUMMARY_KEYS: Final[dict[str, str]] = {
    "format_version": "results format version (FORMAT_VERSION)",
    "run_id": "hash of the resolved config",
    "experiment": "spec name",
    "status": "ok | diverged | failed",
    "steps_planned": "train.steps",
    "steps_done": "optimizer updates applied before the run ended",
    "diverged_step": "step whose loss or statistic first went non-finite (null if none)",
    "diverged_at": "where: {'what': 'loss'} or {'what': metric, 'layer', 't', 'name'}",
    "error": "exception type and message for a failed run (null otherwise)",
    "traceback": "traceback text for a failed run (null otherwise)",
    "final_loss": "mean training loss over the last logging interval (steps 0: batch 0's at init)",
    "final_train_accuracy": "training-batch accuracy at the last step (steps 0: batch 0's)",
    "test_loss": "test-split loss after training (null if not reached, or steps 0: no test pass)",
    "test_accuracy": "test-split accuracy after training (null if not reached, or steps 0)",
    "train_seconds": "wall time inside the training loop only",
    "total_seconds": "wall time of the whole run incl. data and model building",
    "started_at": "UTC ISO-8601 start time",
    "device": "torch device the run used",
    "threads": "torch intra-op threads used",
    "versions": "python, torch, numpy, initbench versions",
    "config": "the resolved config (same as config.json)",
    "lsuv": "per watched layer LSUV rescaled (model.init lsuv): layer, name, iterations, its "
    "preact variance after them on the run's batch 0, reached, note (null without LSUV)",
    "lsuv_note": "the layers LSUV left off unit variance, with why ('' if none; null without)",
}


@dataclass
class RunResult:
    """Everything one run produced; picklable, so workers can return it to the driver."""

    run_id: str
    config: dict[str, Any]
    summary: dict[str, Any]
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # LAYER_COLUMNS
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # CURVE_COLUMNS
    spectra: dict[str, np.ndarray] = field(default_factory=dict)  # SPECTRA_COLUMNS

    @property
    def status(self) -> str:
        """The run's status (one of STATUSES)."""
        return str(self.summary["status"])
