"""The report's verdict, flag and trainability thresholds: their defaults, their checks
and their help text, written once. Torch- and pandas-free, so ``initbench report``'s options
are generated from them without loading the analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from initbench.config.geometry import NUM_CLASSES

CHANCE_ACCURACY: Final = 1 / NUM_CLASSES
SAMPLING_SIGMAS: Final = 5.0  # init check: sampling standard deviations always tolerated
START_LOSS: Final = math.log(NUM_CLASSES)  # cross-entropy of a uniform guess: ln(C)


THRESHOLD_HELP: Final[dict[str, str]] = {
    "ratio": "end-to-end change R: vanishing if the ratio is < 1/R, exploding if > R",
    "factor": "per-layer (rnn: per-time-step) factor F: vanishing if < 1/F, exploding if > F",
    "dead": "flag 'dead' when some layer's dead_frac reaches this (step 0 or last step); "
    "relu only (and leaky_relu with negative_slope 0): elu, selu and leaky_relu pass "
    "gradient below 0",
    "saturated": "flag 'saturated' when some layer's sat_frac reaches this (step 0 or last)",
    "chance_margin": f"trainable 'no' (flag 'no-learning') when test accuracy < chance "
    f"({CHANCE_ACCURACY:g}) + this margin",
    "loss_margin": f"trainable 'no' (flag 'no-learning') when the final training loss > ln(C) "
    f"({START_LOSS:.3f}, its value at a uniform guess) - this margin (nats)",
    "trained_fraction": "trainable 'yes' when test accuracy >= chance + this fraction of "
    "the way from chance to 1 (and the loss fell below ln(C) - loss_margin)",
    "init_tolerance": "flag 'init-mismatch' when |w_var / formula - 1| at step 0 exceeds "
    f"this (widened to {SAMPLING_SIGMAS:g} sampling standard deviations for small weights)",
    "theory_tolerance": "flag 'theory-mismatch' only when measurement and mean-field theory "
    "differ by more than this per layer (relative), besides exceeding the seeds' spread",
}


@dataclass(frozen=True)
class Thresholds:
    """Verdict and flag thresholds; every one is an ``initbench report`` option."""

    ratio: float = 100.0  # "an end-to-end change beyond 100x either way" (issue 3)
    factor: float = 1.5  # xavier + relu halves per layer (0.5 < 1/1.5): caught at any depth
    dead: float = 0.5  # half the units of a layer dead (dead_frac)
    saturated: float = 0.5  # half the activation elements in the flat 1% of tanh/sigmoid
    chance_margin: float = 0.05  # "within a few points of chance"
    loss_margin: float = 0.1  # nats: xavier at depth 30 keeps 2.294..2.302 (ln 10 = 2.303)
    trained_fraction: float = 0.5  # 10 classes: test accuracy >= 0.55
    init_tolerance: float = 0.05  # relative; catches e.g. an uncorrected truncated normal (0.77x)
    theory_tolerance: float = 0.05  # per layer, relative: issue 8's "agree to within 0.05"

    def __post_init__(self) -> None:
        problems = [f"{n} must be > 1" for n in ("ratio", "factor") if not getattr(self, n) > 1]
        problems += [
            f"{n} must be in (0, 1]" for n in ("dead", "saturated") if not 0 < getattr(self, n) <= 1
        ]
        if not 0 <= self.chance_margin < 1 - CHANCE_ACCURACY:
            problems.append(f"chance_margin must be in [0, {1 - CHANCE_ACCURACY:g})")
        if not 0 <= self.loss_margin < START_LOSS:
            problems.append(f"loss_margin must be in [0, {START_LOSS:.3f})")
        if not 0 < self.trained_fraction <= 1:
            problems.append("trained_fraction must be in (0, 1]")
        problems += [
            f"{n} must be > 0"
            for n in ("init_tolerance", "theory_tolerance")
            if not getattr(self, n) > 0
        ]
        if problems:
            raise ValueError("; ".join(problems))

    def describe(self) -> list[str]:
        """The thresholds as printed under every table."""
        r, f = self.ratio, self.factor
        return [
            f"vanishing: ratio < 1/{r:g} or factor < 1/{f:g} (= {1 / f:.3g}); "
            f"exploding: ratio > {r:g} or factor > {f:g} (also where the signal overflowed to "
            "inf or NaN after growing: factor fitted on the layers before); otherwise stable, "
            f"or saturated when some layer's sat_frac >= {self.saturated:g}",
            self.describe_trainable(),
            f"flags: dead = worst dead_frac >= {self.dead:g}; saturated = worst sat_frac >= "
            f"{self.saturated:g} (at step 0 or the last step; dead only for relu and leaky_relu "
            "with negative_slope 0, as elu, selu and leaky_relu units with input <= 0 still "
            "pass gradient); no-learning = trainable 'no' on a run that finished (ok); "
            "diverged = a loss or statistic went non-finite",
            f"init-mismatch: |w_var / formula - 1| > max({self.init_tolerance:g}, "
            f"{SAMPLING_SIGMAS:g} sqrt(2/(N-1))) at step 0 for some layer (N = weight elements)",
        ]

    @property
    def trained_accuracy(self) -> float:
        """The test accuracy from which a run counts as trained (trainable 'yes')."""
        return CHANCE_ACCURACY + self.trained_fraction * (1 - CHANCE_ACCURACY)

    def describe_trainable(self) -> str:
        """Trainability's definition with these thresholds."""
        floor, loss = CHANCE_ACCURACY + self.chance_margin, START_LOSS - self.loss_margin
        return (
            f"trainable: yes = test accuracy >= {self.trained_accuracy:.3g} (chance "
            f"{CHANCE_ACCURACY:g} + {self.trained_fraction:g} of the way to 1) and final "
            f"training loss <= {loss:.3g} (ln {NUM_CLASSES} = {START_LOSS:.3f}, the loss of a "
            f"uniform guess, - {self.loss_margin:g}); no = test accuracy < {floor:.3g} (chance "
            f"+ {self.chance_margin:g}) or final loss > {loss:.3g} (it never left its start), "
            "or diverged; partly = between; unknown (blank) for a failed run"
        )
