"""Every per-layer statistic, defined once: its name, the tensor it is taken of, its
reduction and its definition.

The probe's plan (:mod:`initbench.measure.plan`), the results schema
(``schema.LAYER_METRICS``) and ``initbench list metrics`` are generated from
:data:`CATALOG`. A new statistic is one entry here plus, for a new reduction, its
implementation: a moment is a column of the statistics the probe derives from each
tensor's Σx and Σx² (:data:`initbench.measure.reduce.MOMENT_COLUMNS`), a fraction is a
count the device takes (:mod:`initbench.measure.counts`).

"Elements" are batch x units (x spatial positions for a CNN); for a recurrent model (rnn,
lstm, gru) each time step t is measured separately over batch x units. A gated cell's
(lstm, gru) ``preact`` and ``act`` are both its hidden state h_t; its gates and cell state
are tensors of their own. Importing this module imports neither torch
nor numpy: ``initbench list`` reads it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from initbench.config.architectures import ARCHITECTURES

# The tensors a statistic can be taken of, in the long table's order. The first eight are
# watched per (layer, t) by the tape in the forward and backward pass (stream, branch and
# grad_stream at the last layer of each residual block only); the rest are the layer's
# weights (t = 0).
TENSORS: Final[dict[str, str]] = {
    "preact": "output of the affine map, before the norm and activation",
    "normed": "batchnorm or layernorm output (only with a norm), the activation's input",
    "act": "output of the activation",
    "grad_preact": "dLoss/d preact, the back-propagated signal",
    "grad_normed": "dLoss/d normed (only with a norm)",
    "stream": "residual nets: the stream h_{b+1} = h_b + alpha F_b(h_b) after block b, at the "
    "block's last watched layer",
    "branch": "residual nets: what block b adds to the stream, alpha F_b(h_b)",
    "grad_stream": "residual nets: dLoss/d stream h_{b+1}, the gradient the skip path carries "
    "back towards the input",
    "w": "the layer's weight (input-to-hidden for an rnn)",
    "grad_w": "gradient of the layer's weight",
    "w_rec": "the hidden-to-hidden weight (rnn only)",
    "grad_w_rec": "gradient of the hidden-to-hidden weight (rnn only)",
}
LAYER_WATCHED: Final = (  # every layer's (residual blocks': the last three)
    "preact",
    "normed",
    "act",
    "grad_preact",
    "grad_normed",
    "stream",
    "branch",
    "grad_stream",
)
WEIGHTS: Final = ("w", "grad_w", "w_rec", "grad_w_rec")


def gate_tensors(gate: str) -> tuple[str, str]:
    """The tensors of one gate: its pre-activation and its activation."""
    return f"gate_{gate}_pre", f"gate_{gate}"


def _gates() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every gate of the gated architectures: gate -> (its activation, the archs)."""
    gates: dict[str, tuple[str, tuple[str, ...]]] = {}
    for arch, entry in ARCHITECTURES.items():
        for gate, act in entry.gates:
            gates[gate] = (act, (*gates.get(gate, ("", ()))[1], arch))
    return gates


def _gated_tensors() -> dict[str, str]:
    """The gated cells' tensors: each gate's pre-activation and activation, the cell."""
    found = {}
    for gate, (act, archs) in GATES.items():
        pre, out = gate_tensors(gate)
        cells = "/".join(archs)
        found[pre] = (
            f"{cells} gate {gate}'s pre-activation (its input and recurrent blocks and "
            "biases summed; gru n: the input part + r (the recurrent part))"
        )
        found[out] = f"{cells} gate {gate}'s activation, {act}({pre})"
    found["cell"] = "the lstm's cell state c_t = f c_{t-1} + i g"
    found["grad_cell"] = "dLoss/d c_t, the cell state's gradient through time (lstm)"
    return found


GATES: Final = _gates()  # lstm: i, f, g, o; gru: r, z, n
TENSORS.update(_gated_tensors())
# The gated cells' tensors, watched after the layers' own, per (layer, t).
GATED: Final = tuple(_gated_tensors())
WATCHED: Final = (*LAYER_WATCHED, *GATED)

# Reduction -> what it computes. Moments come from Σx, Σx² and the element count n;
# fractions from a count the device takes of the tensor.
MOMENTS: Final[dict[str, str]] = {
    "mean": "mean over all elements of the batch tensor",
    "var": "variance over all elements of the batch tensor (unbiased, float64)",
    "sq": "mean of squares over all elements (the mean-field q)",
    "norm": "Frobenius (L2) norm of all elements",
}
FRACTIONS: Final[dict[str, str]] = {
    "dead_frac": "units (channels) whose elements are all <= 0",
    "sat_frac": "elements beyond 99% of the activation's half-range from its centre",
    # not fractions, but taken the same way: a sum over channels on the device / channels
    "chan_sq_mean": "each channel's (unit's) mean over the batch (and positions), squared, "
    "averaged over channels",
    "chan_var": "each channel's (unit's) variance over the batch (and positions), "
    "population, averaged over channels",
    "gate_sat_frac": "elements of a sigmoid gate beyond 99% of its half-range (0, 1) from 1/2",
}


@dataclass(frozen=True)
class Statistic:
    """One per-layer statistic of the long table.

    ``of``: the tensors it may be taken of, the first that the layer has (dead_frac is of
    the activation's input: ``normed``, or ``preact`` without batchnorm). ``reduction``:
    a key of :data:`MOMENTS` or :data:`FRACTIONS` (or of :data:`PER_EXAMPLE_REDUCTIONS`
    for a ``per_example`` statistic). ``kinds``: the activation kinds it is
    recorded for (empty: all). ``definition``: what ``initbench list metrics`` shows.
    """

    name: str
    of: tuple[str, ...]
    reduction: str
    definition: str
    kinds: tuple[str, ...] = ()
    per_example: bool = False  # over the batch's examples (train.per_example), not the probe's

    def source(self, present: frozenset[str] | set[str]) -> str | None:
        """The tensor it is taken of, for a layer that has the tensors ``present``."""
        return next((tensor for tensor in self.of if tensor in present), None)

    @property
    def is_fraction(self) -> bool:
        """Whether it is a count the device takes (else a moment of Σx and Σx²)."""
        return self.reduction in FRACTIONS


def _moments(tensor: str, reductions: tuple[str, ...] = ("mean", "var", "sq")) -> list[Statistic]:
    """``{tensor}_{reduction}`` for each reduction, defined by its tensor and reduction."""
    return [
        Statistic(f"{tensor}_{r}", (tensor,), r, f"{TENSORS[tensor]}: {MOMENTS[r]}")
        for r in reductions
    ]


def _weight(name: str, of: str, reduction: str, definition: str) -> Statistic:
    return Statistic(name, (of,), reduction, definition)


def _brock() -> list[Statistic]:
    """Brock et al. 2021's signal propagation plot: the stream's average channel squared
    mean and average channel variance, and the branch's average channel variance (their
    'residual variance'); stream_sq is the first two's sum."""
    return [
        Statistic(f"{tensor}_{r}", (tensor,), r, f"{TENSORS[tensor]}: {FRACTIONS[r]}")
        for tensor, r in (
            ("stream", "chan_sq_mean"),
            ("stream", "chan_var"),
            ("branch", "chan_var"),
        )
    ]


# Statistics over the batch's examples, recorded only with ``train.per_example: true``
# (:mod:`initbench.measure.examples`): per example n, q_n = the
# mean of squares over units (x positions) of its tensor at this layer (and time step),
# over q_in,n = the mean of squares of its network input; then ln of that ratio, reduced
# over the batch. For relu with zero-mean Gaussian weights the ratio's law does not depend
# on the input (Hanin & Nica 2019), so the examples are draws of one law and the spread
# over inputs is studied without batch size 1.
PER_EXAMPLE_OF: Final = ("preact", "act")
PER_EXAMPLE_REDUCTIONS: Final[dict[str, str]] = {
    "lnq_mean": "mean over the batch's examples",
    "lnq_var": "variance over the batch's examples (unbiased, n-1)",
}


def _per_example() -> list[Statistic]:
    return [
        Statistic(
            f"{tensor}_{reduction}",
            (tensor,),
            reduction,
            f"{TENSORS[tensor]}: per example, ln(q / q_in) with q its mean of squares over "
            f"units (x positions) and q_in its input's mean of squares; {what} "
            "(train.per_example only)",
            per_example=True,
        )
        for tensor in PER_EXAMPLE_OF
        for reduction, what in PER_EXAMPLE_REDUCTIONS.items()
    ]


_LAYER_STATISTICS = (
    *(s for tensor in LAYER_WATCHED for s in _moments(tensor)),
    Statistic(
        "dead_frac",
        ("normed", "preact"),
        "dead_frac",
        "fraction of units (channels for a CNN) whose activation input is <= 0 for every "
        "element of the batch (rectifier-like activations only; NaN if the input has a "
        "non-finite element)",
        kinds=("rectifier",),
    ),
    Statistic(
        "sat_frac",
        ("act",),
        "sat_frac",
        "fraction of activation elements beyond 99% of the activation's half-range from its "
        "centre (bounded activations: tanh, sigmoid; NaN if non-finite)",
        kinds=("bounded",),
    ),
    *_brock(),
    _weight("w_mean", "w", "mean", "mean of the layer's weight (input-to-hidden for an rnn)"),
    _weight("w_var", "w", "var", "variance of the layer's weight elements (unbiased)"),
    _weight("w_norm", "w", "norm", "Frobenius norm of the layer's weight"),
    _weight("grad_w_var", "grad_w", "var", "variance of the weight gradient's elements"),
    _weight("grad_w_norm", "grad_w", "norm", "Frobenius norm of the weight gradient"),
    _weight("w_rec_mean", "w_rec", "mean", "mean of the hidden-to-hidden weight (rnn only)"),
    _weight("w_rec_var", "w_rec", "var", "variance of the hidden-to-hidden weight (rnn only)"),
    _weight(
        "w_rec_norm", "w_rec", "norm", "Frobenius norm of the hidden-to-hidden weight (rnn only)"
    ),
    _weight(
        "grad_w_rec_var",
        "grad_w_rec",
        "var",
        "variance of the hidden-to-hidden weight gradient (rnn only)",
    ),
    _weight(
        "grad_w_rec_norm",
        "grad_w_rec",
        "norm",
        "Frobenius norm of the hidden-to-hidden weight gradient (rnn only)",
    ),
)


def _gate_statistics() -> list[Statistic]:
    """Per gate: its pre-activation's and activation's mean and variance, and a sigmoid
    gate's saturated fraction; the lstm's cell state and its gradient."""
    found: list[Statistic] = []
    for gate, (act, _) in GATES.items():
        pre, out = gate_tensors(gate)
        found += _moments(pre, ("mean", "var")) + _moments(out, ("mean", "var"))
        if act == "sigmoid":
            definition = (
                f"fraction of gate {gate}'s elements below 0.005 or above 0.995 (beyond 99% "
                "of the half-range from 1/2: the gate is shut or open; NaN if non-finite)"
            )
            found.append(Statistic(f"{out}_sat_frac", (out,), "gate_sat_frac", definition))
    return found + _moments("cell", ("mean", "var")) + _moments("grad_cell", ("mean", "var"))


CATALOG: Final[tuple[Statistic, ...]] = (*_LAYER_STATISTICS, *_gate_statistics())

# The per-example statistics: the long table's too, but taken by
# :mod:`initbench.measure.examples`, not by the probe's plan (they are not in CATALOG).
PER_EXAMPLE: Final[tuple[Statistic, ...]] = tuple(_per_example())
STATISTICS: Final[dict[str, Statistic]] = {s.name: s for s in (*CATALOG, *PER_EXAMPLE)}


def definitions() -> dict[str, str]:
    """Metric name -> definition, in the catalogue's order, then the per-example
    statistics (schema.LAYER_METRICS)."""
    return {s.name: s.definition for s in (*CATALOG, *PER_EXAMPLE)}


def taken_of(tensor: str, present: frozenset[str] | set[str], kind: str) -> list[Statistic]:
    """The statistics taken of ``tensor`` for a layer that has the tensors ``present`` and
    an activation of ``kind``, in catalogue order."""
    return list(_taken_of(tensor, frozenset(present), kind))


@functools.cache
def _taken_of(tensor: str, present: frozenset[str], kind: str) -> tuple[Statistic, ...]:
    # cached: a probe's plan asks this for every watched tensor of every layer, and a
    # depth-50 init-only run spent a third of its probe set-up here
    return tuple(
        s
        for s in CATALOG
        if (not s.kinds or kind in s.kinds) and not s.per_example and s.source(present) == tensor
    )
