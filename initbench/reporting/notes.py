"""The report's prose: the lines above each experiment's tables, the notes under each
table that say what its columns are, and the known effects worth stating beside the
numbers. Metric definitions come from :mod:`initbench.results.schema`, where they are
written once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import pandas as pd

from initbench import analysis
from initbench.analysis import Thresholds, format_value
from initbench.config.activations import ACTIVATIONS, SATURATION_FRACTION
from initbench.reporting.experiment import ExperimentReport
from initbench.reporting.model import MISSING
from initbench.results import schema, store

# analysis's signal directions (column prefixes), in its order, by the report's word for each
DIRECTIONS: Final = tuple(
    (prefix, {"fwd": "forward", "bwd": "backward"}.get(prefix, prefix))
    for prefix in analysis.DIRECTIONS
)


def metric_definitions(*names: str) -> list[str]:
    """'metric: definition' of stored metrics, as the results schema defines them."""
    defined = {**schema.LAYER_METRICS, **schema.CURVE_METRICS}
    return [f"{name}: {defined[name]}" for name in names]


CELL_NOTE: Final = (
    f"cells: mean ± standard deviation over the seeds (n-1 denominator); one seed: the "
    f"value alone; {MISSING}: not measured or undefined (see the verdict and notes)"
)
INIT_NOTES: Final = [
    "fwd factor: 2^slope of the least-squares fit of log2(preact_var) against layer "
    "l = 1..L (rnn: time step t of the top layer); 1 = preserved, 0.5 = halves per layer",
    "fwd ratio: preact_var[L] / preact_var[1] (end-to-end change)",
    "bwd factor, bwd ratio: the same for grad_preact_var read from layer L back to layer 1 "
    "(2^-slope; grad_preact_var[1] / grad_preact_var[L]): < 1 = the gradient shrinks on its "
    "way to the input; cnn: of grad_preact_var times the layer's map positions",
    "normed: the forward factor and ratio of the batchnorm output (normed_var)",
    "dead, sat: worst dead_frac / sat_frac over layers (the dead flag: relu only, see flags)",
    *metric_definitions("dead_frac", "sat_frac"),
    "w_var/formula: measured weight variance at step 0 over the initializer formula's, "
    "for the weight furthest from 1",
]
THEORY_TABLE_NOTES: Final = [
    "q1: layer 1's measured preact_sq at step 0 (rnn: at time step 1), where the prediction starts",
    "fwd factor, fwd ratio, bwd factor, bwd ratio: measured, as in the step-0 table; beside "
    "each, theory: the predicted value",
]
PER_LAYER_NOTES: Final = [
    "mean ± std over the seeds (n = runs with the value); @0 = step 0, @last = each "
    "run's last logged step (a diverged run: the step it went non-finite)",
    "rows: watched layers l in forward order; rnn: each layer at each time step t",
    analysis.BRANCH_RATIO_TEXT,
]
PER_LAYER_THEORY_NOTE: Final = (
    "preact_var theory, grad_preact_var theory: the mean-field prediction at step 0, mean "
    "over the seeds with one. preact_var: q from the seed's measured layer-1 preact_sq (so "
    "layer 1, and an rnn's layer 1 at every time step, is that measurement); "
    "grad_preact_var: the predicted change from where the gradient enters, times the "
    "seed's measured grad_preact_var there (layer L; rnn: each layer's last time step): "
    "theory predicts the profile, not the readout's scale"
)
WEIGHT_NOTE: Final = (
    "w_var @0: measured at step 0 (w_rec: the rnn's hidden-to-hidden weight); "
    "formula: the initializer's variance for this shape; mismatch: runs flagged"
)
FINDINGS_NOTES: Final = [
    "Findings: each line gathers the configurations of the tables below that share a verdict, flag "
    "or check; nothing here is measured anew",
    "a flag with a count (1/2) holds for that many of the configuration's seeds",
]


ANSWER_NOTES: Final = [
    "Answer: rows = the numeric varying key with the most values, columns = the "
    "categorical varying key with the most values (initbench report --rows KEY --cols KEY "
    "chooses them); one matrix per value of any other varying key. A cell: trainable "
    "(see below) and test accuracy (mean over seeds; init only, train.steps 0: never "
    "trained, so the loss of batch 0 at init, loss@0), then the step-0 fwd and bwd factor "
    "(mean over seeds) with its verdict; the sentences under it are read off the same numbers",
]
GLOSSARY_TITLE: Final = "Glossary"

SPREAD_LEVEL_TEXT: Final = f"{analysis.SPREAD_LEVEL:.0%}"
SPREAD_NOTES: Final = [
    "finite-width spread: per configuration with 2 seeds or more (ok runs), the variance "
    f"over seeds (n-1) and its {SPREAD_LEVEL_TEXT} chi-square interval (n-1 degrees of "
    "freedom, n = seeds, as for a normal population's variance)",
    f"Var ln q_L: of {analysis.SPREADS['lnq']}; Var ln g_1: of {analysis.SPREADS['lngrad']}",
    f"Var y per input (train.per_example only): of {analysis.SPREADS['per_input']}; its "
    "interval counts the seeds alone, a seed's examples sharing its weights",
    "5Σ1/n (H&N): Hanin & Nica 2019, the variance of ln of the squared norm of layer L's "
    "act over the input's, for one input "
    "of a relu mlp with he_normal weights and zero biases, 5 Σ over hidden layers l = 1..L "
    "of 1/n_l (n_l: units of layer l); it predicts the per-input column, not the batch's "
    "Var ln q_L (the batch mean averages partly independent inputs); law: yes where it lies "
    "inside the per-input interval",
]


def definitions(th: Thresholds) -> list[str]:
    """Every definition the tables rely on (the json report's glossary)."""
    return [*INIT_NOTES, CELL_NOTE, *th.describe(), *theory_notes(th)]


def glossary(reports: Sequence[ExperimentReport], th: Thresholds, per_layer: bool) -> list[str]:
    """The definitions behind every table of the report, once, for the end of it."""
    seeds = [n for rep in reports if rep.has_rows for n in rep.configs["seeds"].tolist()]
    lines = [*ANSWER_NOTES, *FINDINGS_NOTES, *INIT_NOTES, CELL_NOTE, *th.describe()]
    lines += [*THEORY_TABLE_NOTES, *theory_notes(th, seeds), *TRAINED_NOTES]
    if any(rep.has_rows and rep.spreads for rep in reports):
        lines += SPREAD_NOTES
    if per_layer:
        lines += [*PER_LAYER_NOTES, PER_LAYER_THEORY_NOTE, WEIGHT_NOTE]
    return list(dict.fromkeys(lines))


# --- known effects --------------------------------------------------------------------------

CNN_EFFECTS: Final = [
    "cnn: 'same' zero padding shrinks the variance by about ((3n-2)/3n)^2 per layer "
    "on an n x n map (0.95 at 28x28, 0.82 at 7x7): a real effect, not a bug",
    "cnn: bwd factor and ratio are of grad_preact_var times the layer's map "
    "positions, the gradient's sum of squares over positions: a stride-2 conv (at "
    "1/3 and 2/3 of the depth) divides the per-element variance by about 4, since "
    "each input position feeds 9/4 outputs instead of 9, and keeps that sum, which "
    "is what reaches the weights",
]
RNN_EFFECT: Final = (
    "rnn, lstm, gru: factors and ratios are across the time steps t = 1..{T} of the top layer "
    "(backward = through time, from t = {T} back to t = 1); --per-layer shows all"
)
GATED_EFFECT: Final = (
    "lstm, gru: preact and act are the hidden state h_t (a gated cell has no single "
    "affine map), so fwd and bwd are of h_t and dLoss/dh_t; the gates and the lstm's cell "
    "state have their own statistics (gate_*, cell_var, grad_cell_var)"
)
ADAM_EFFECT: Final = (
    "adam: per-parameter step sizes hide much of the scale difference between "
    "inits that SGD exposes (after training)"
)
BATCHNORM_EFFECT: Final = (
    "batchnorm: verdicts use preact (before batchnorm); the 'normed' columns are "
    "after it, where batchnorm keeps the variance near 1"
)
SELU_EFFECT: Final = "selu self-normalises with lecun_normal, not with torch's gain 3/4"
SATURATION_EFFECT: Final = (
    f"sat: a unit counts as saturated only within {1 - SATURATION_FRACTION:.0%} of "
    "its activation's asymptote; a layer driven towards one without reaching it "
    "(Glorot & Bengio's sigmoid top layer near 0.03) shows in act_mean "
    "(layers.parquet), not in sat"
)


def known_effects(keys: analysis.ConfigKeys) -> list[str]:
    """Real effects (not bugs) worth stating next to this experiment's numbers."""
    values = {k: {format_value(v)} for k, v in keys.constant.items()}
    values.update({k: {format_value(v) for v in keys.labels[k]} for k in keys.varying})
    archs, activations = values.get("model.arch", set()), values.get("model.activation", set())
    notes = [*CNN_EFFECTS] if "cnn" in archs else []
    if archs & {"rnn", "lstm", "gru"}:
        # data labels name a sequence other than rows: mnist5k(sequence=pixels)
        steps = {784 if "pixels" in label else 28 for label in values.get("data", {"rows"})}
        notes.append(RNN_EFFECT.format(T=" or ".join(map(str, sorted(steps)))))
    notes += [GATED_EFFECT] if archs & {"lstm", "gru"} else []
    notes += [ADAM_EFFECT] if _any_starts(values.get("train.optimizer", set()), "adam") else []
    notes += [BATCHNORM_EFFECT] if "true" in values.get("model.batchnorm", set()) else []
    notes += [SELU_EFFECT] if _any_starts(activations, "selu") else []
    return notes + ([SATURATION_EFFECT] if _bounded(activations) else [])


def _any_starts(labels: Iterable[str], prefix: str) -> bool:
    return any(label.startswith(prefix) for label in labels)


def _bounded(activations: set[str]) -> bool:
    """Whether one of these activation labels names a bounded activation (tanh, sigmoid)."""
    names = {label.split("(", 1)[0] for label in activations}
    return any(name in ACTIVATIONS and ACTIVATIONS.get(name).kind == "bounded" for name in names)


def experiment_notes(rep: ExperimentReport) -> list[str]:
    """Why something is not reported, then the known effects of what is."""
    return [*rep.notes, *(known_effects(rep.keys) if rep.keys is not None else [])]


# --- above the tables -----------------------------------------------------------------------


def header_lines(rep: ExperimentReport) -> list[str]:
    """What a reader needs before the tables: where, what is constant, what was counted."""
    experiment = rep.experiment
    lines = [f"results: {rep.path}"]
    if experiment.overrides:
        given = " ".join(f"--set {o}" for o in experiment.overrides)
        lines.append(f"spec: {schema.SPEC_FILE} with {given} ({schema.OVERRIDES_FILE})")
    if rep.keys is not None:
        constant = ", ".join(
            f"{k}={format_value(v)}" for k, v in rep.keys.constant.items() if v != "none"
        )
        lines.append(f"constant: {constant}")
        if rep.keys.varying:
            lines.append(f"rows: {', '.join(rep.keys.varying)} (the last one side by side)")
    counts = ", ".join(f"{n} {s}" for s, n in rep.status_counts().items())
    lines.append(f"runs: {len(experiment.runs)} complete ({counts})")
    if len(rep.runs) != len(experiment.runs) and rep.keys is not None:
        n = len(rep.configs)
        lines.append(f"selected: {len(rep.runs)} runs in {n} configuration{'s' * (n != 1)}")
    return [*lines, *_unreported_lines(experiment), *(f"note: {n}" for n in experiment_notes(rep))]


def _unreported_lines(experiment: store.Experiment) -> list[str]:
    """The run folders that are not reported: incomplete, and unreadable with the reason."""
    lines = []
    if experiment.incomplete:
        names = ", ".join(experiment.incomplete)
        lines.append(
            f"incomplete: {len(experiment.incomplete)} (no summary.json, not reported): {names}"
        )
    if experiment.unreadable:
        lines.append(f"unreadable: {len(experiment.unreadable)} (not reported):")
        lines += [f"  {run_id}: {why}" for run_id, why in experiment.unreadable.items()]
    return lines


# --- under the summary tables ---------------------------------------------------------------


def run_notes(rep: ExperimentReport, columns: Sequence[tuple[str, str]]) -> list[str]:
    """Distinct per-run notes ('variance exactly 0 ...') with configuration and count;
    ``columns``: (what, column of analysis.analyse_runs)."""
    seeds = {rep.label(row): row["seeds"] for row in rep.config_rows}
    counts: dict[tuple[str, str, str], int] = {}
    for run in rep.run_rows:
        for what, column in columns:
            if run[column]:
                key = (rep.run_labels[run["run_id"]], what, str(run[column]))
                counts[key] = counts.get(key, 0) + 1
    return [
        f"{lab}: {what}: {note} ({n}/{seeds[lab]} seeds)" for (lab, what, note), n in counts.items()
    ]


def direction_notes(rep: ExperimentReport, tag: str) -> list[str]:
    """The per-run notes of every direction's verdict at ``tag`` (init or last)."""
    return run_notes(rep, [(name, f"{prefix}_note_{tag}") for prefix, name in DIRECTIONS])


def theory_notes(th: Thresholds, seeds: Sequence[int] = ()) -> list[str]:
    """The definitions of the theory columns and of the 'vs theory' check; ``seeds``: the
    seed counts of the configurations, whose t quantiles are then printed too."""
    tol = f"{th.theory_tolerance:g}"
    level = analysis.THEORY_LEVEL
    quantiles = [
        f"n = {n}: t = {analysis.student_t_quantile((1 + level) / 2, n - 1):.4g}"
        for n in sorted({int(n) for n in seeds if n >= 2})
    ]
    return [
        "theory: the mean-field prediction at step 0 (initbench theory: infinite width, "
        "i.i.d. zero-mean weights and biases) for each seed, its q1 = that seed's measured "
        "layer-1 preact_sq at step 0 (rnn: at every time step, as layer 1's input drive), "
        "then the mean over the seeds; factor and ratio defined as the measured ones",
        "vs theory: per seed d = ln(measured / theory) of the fwd and bwd factor and ratio; "
        f"theory-mismatch where |mean d| > max(K ln(1 + {tol}), t sd(d) sqrt(1 + 1/n)) for one "
        "of them: K = 1 for a factor, L - 1 for a ratio (L layers; rnn: time steps), sd = "
        "sample std over the n seeds (n - 1), t = the "
        f"{(1 + level) / 2:.1%} quantile of Student's t with n - 1 degrees of freedom"
        + (f" ({'; '.join(quantiles)})" if quantiles else "")
        + f": theory lies outside the {level:.0%} prediction interval of one network of this "
        "configuration (the finite-width spread, estimated from the seeds) and is off by more "
        f"than {tol} per layer; otherwise consistent (few seeds give a wide interval: csv and "
        "json list mean d and the bound as theory_logdev_* and theory_allowed_*). One seed: "
        "not evaluated (no spread). undefined: a d is not finite (a measured 0, inf or NaN, "
        "or a seed without a prediction)",
    ]


def theory_reasons(rep: ExperimentReport) -> list[str]:
    """Why theory predicts nothing (or less) for some configurations: each reason once."""
    by_reason: dict[str, list[str]] = {}
    for row in rep.config_rows:
        if row.get("theory_note"):
            by_reason.setdefault(row["theory_note"], []).append(rep.label(row))
    everywhere = len(rep.config_rows)
    return [
        f"theory, {'every configuration' if len(labels) == everywhere else '; '.join(labels)}: "
        f"{reason}"
        for reason, labels in by_reason.items()
    ]


def diverged_notes(rep: ExperimentReport) -> list[str]:
    """Where each diverged run first went non-finite (summary.json: diverged_at)."""
    return [
        f"{rep.run_labels.get(r['run_id'], 'run')}: run {r['run_id']} (seed {r['seed']}) "
        f"{r['status_text']}: {r['diverged_at'] or 'where is not recorded'}"
        for r in rep.run_rows
        if r["status"] == "diverged"
    ]


def failed_notes(rep: ExperimentReport) -> list[str]:
    """Each failed run with its error."""
    failed = rep.runs[rep.runs["status"] == "failed"]
    return [
        f"failed run {r['run_id']} (seed {r['seed']}): {r['error']}" for _, r in failed.iterrows()
    ]


def trained_at(rep: ExperimentReport) -> str:
    """The step the after-training table is measured at: 'step N', or the last logged one."""
    steps = set(rep.experiment.runs.get("steps_planned", pd.Series(dtype=object)).dropna())
    return f"step {int(next(iter(steps)))}" if len(steps) == 1 else "the last logged step"


TRAINED_NOTES: Final = [
    "after training: measured at the step in the table's title (the trained network); a "
    "diverged run at the step it went non-finite, where dead and sat are undefined; factors "
    "as in the step-0 table",
    f"final loss: {schema.SUMMARY_KEYS['final_loss']}; test acc: accuracy "
    "on the test split (ok runs only); status and flags: per seed when they differ",
]


def init_only_note(rep: ExperimentReport) -> str:
    """Why the after-training table leaves out the init-only configurations (all or some)."""
    untrained = [rep.short_label(r) for r in rep.config_rows if r.get("init_only")]
    why = (
        "measured at step 0 alone (train.steps 0: one batch forward and backward, the "
        "loss's gradient, no update, no test pass): no trained network, trainability undefined"
    )
    if len(untrained) == len(rep.config_rows):
        return f"no after-training table: every configuration is init-only, {why}"
    return f"left out after training, init-only: {'; '.join(untrained)}; {why}"


def per_layer_notes(row: Mapping[str, Any]) -> list[str]:
    """Why theory is missing for this configuration, if it is (the columns are defined in
    the glossary)."""
    notes = []
    if row.get("theory_note"):
        notes.append(f"theory: {row['theory_note']}")
    return notes
