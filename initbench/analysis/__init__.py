"""Verdicts from stored statistics: decay factors, vanishing / exploding, flags.

Pure functions on the tables :func:`initbench.results.store.load_experiment` returns
(``runs``, ``layers``); no I/O, no printing. Every number comes from the stored
statistics (``initbench.results.schema.LAYER_METRICS`` defines them) by the definitions of
:mod:`initbench.meanfield.decay` (factor, ratio, the positions a profile runs over),
:mod:`~initbench.analysis.verdicts` (verdicts, flags) and
:mod:`~initbench.analysis.theorycheck` (theory beside measurement).

Modules: ``configs`` (a run's config, labels, which keys vary), ``stats`` (over seeds),
``profiles``, ``verdicts`` (with the thresholds), ``initcheck``, ``theorycheck``, ``runs``
(one run analysed, and every run of a table), ``aggregation`` (seeds into
configurations, layer by layer) and ``finitewidth`` (the spread over seeds at step 0,
beside Hanin & Nica).
"""

from __future__ import annotations

from initbench.analysis.aggregation import (
    BRANCH_RATIO,
    BRANCH_RATIO_TEXT,
    SIGNAL_METRICS,
    aggregate,
    combine,
    combine_flags,
    combine_status,
    numeric_columns,
    per_layer,
    verdict_columns,
)
from initbench.analysis.configs import (
    ConfigKeys,
    config_labels,
    describe_configs,
    format_value,
    ref_label,
    run_config,
)
from initbench.analysis.finitewidth import (
    HANIN_NICA_CONSTANT,
    SPREAD_LEVEL,
    SPREADS,
    Spread,
    finite_width,
    hanin_nica,
    pooled_spread,
    spread,
)
from initbench.analysis.initcheck import ZERO_VARIANCE, check_weight, init_check, init_table
from initbench.analysis.profiles import (
    DIRECTIONS,
    TAGS,
    RunStats,
    backward_profile,
    band,
    gradient_positions,
    profile,
    step_matrix,
)
from initbench.analysis.runs import (
    analyse_run,
    analyse_runs,
    diverged_where,
    number,
    signal_at,
    status_text,
)
from initbench.analysis.stats import student_t_quantile
from initbench.analysis.theorycheck import (
    RNN_DRIVE_NOTE,
    THEORY_LEVEL,
    THEORY_QUANTITIES,
    RunTheory,
    run_theory,
    theory_allowed,
    theory_check,
    theory_layers,
    theory_mean,
    theory_profile,
    theory_summary,
)
from initbench.analysis.verdicts import (
    FLAGS,
    TRAINABLE,
    VERDICTS,
    Decay,
    classify,
    dead_units_pass_no_gradient,
    decay,
    init_only,
    run_flags,
    trainability,
    with_saturation,
)
from initbench.config.thresholds import (
    CHANCE_ACCURACY,
    SAMPLING_SIGMAS,
    START_LOSS,
    THRESHOLD_HELP,
    Thresholds,
)
from initbench.meanfield.decay import fit_factor

__all__ = [
    "BRANCH_RATIO",
    "BRANCH_RATIO_TEXT",
    "CHANCE_ACCURACY",
    "DIRECTIONS",
    "FLAGS",
    "HANIN_NICA_CONSTANT",
    "RNN_DRIVE_NOTE",
    "SAMPLING_SIGMAS",
    "SIGNAL_METRICS",
    "SPREADS",
    "SPREAD_LEVEL",
    "START_LOSS",
    "TAGS",
    "THEORY_LEVEL",
    "THEORY_QUANTITIES",
    "THRESHOLD_HELP",
    "TRAINABLE",
    "VERDICTS",
    "ZERO_VARIANCE",
    "ConfigKeys",
    "Decay",
    "RunStats",
    "RunTheory",
    "Spread",
    "Thresholds",
    "aggregate",
    "analyse_run",
    "analyse_runs",
    "backward_profile",
    "band",
    "check_weight",
    "classify",
    "combine",
    "combine_flags",
    "combine_status",
    "config_labels",
    "dead_units_pass_no_gradient",
    "decay",
    "describe_configs",
    "diverged_where",
    "finite_width",
    "fit_factor",
    "format_value",
    "gradient_positions",
    "hanin_nica",
    "init_check",
    "init_only",
    "init_table",
    "number",
    "numeric_columns",
    "per_layer",
    "pooled_spread",
    "profile",
    "ref_label",
    "run_config",
    "run_flags",
    "run_theory",
    "signal_at",
    "spread",
    "status_text",
    "step_matrix",
    "student_t_quantile",
    "theory_allowed",
    "theory_check",
    "theory_layers",
    "theory_mean",
    "theory_profile",
    "theory_summary",
    "trainability",
    "verdict_columns",
    "with_saturation",
]
