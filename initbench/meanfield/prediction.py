"""The mean-field prediction for one configuration (a resolved run config or a model
section): per-layer columns, the fixed point, the decay summary and the notes on what was
assumed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from initbench.config.geometry import map_positions, sequence_shape, time_steps
from initbench.config.runconfig import norm_of
from initbench.meanfield.activations import Array, NumpyActivation, numpy_activation
from initbench.meanfield.decay import end_ratio, fit_factor, profile_rows, summed_over_positions
from initbench.meanfield.fixedpoint import (
    FixedPoint,
    fixed_point,
    fixed_point_at,
    variance_fixed_point,
)
from initbench.meanfield.gaussian import gaussian_moments
from initbench.meanfield.geometry import Geometry, bias_sigma2, geometry_of
from initbench.meanfield.model import TheoryError, model_section, split_ref
from initbench.meanfield.propagation import COLUMNS, propagate_feedforward, propagate_rnn
from initbench.meanfield.residual import residual_stream

if TYPE_CHECKING:
    import pandas as pd


RESIDUAL_CNN_REASON = (
    "residual cnn: the stream's map is not modelled here; its zero padding shrinks each "
    "branch's field (Xiao et al. 2018) and a stride-2 block's 1x1 projection carries the "
    "stream through its own weights, so the mlp's q_{b+1} = q_b + alpha^2 q_F does not apply "
    "as it stands"
)
RNN_NOTE = "rnn: the two inputs' drives need not be correlated, so no correlation map"
BN_NOTE = "batchnorm couples the batch's inputs: its correlation map is not modelled"
LN_NOTE = "layernorm rescales each input by its own q: its correlation map is not modelled"


@dataclass(frozen=True)
class Prediction:
    """The mean-field prediction for one configuration: the per-layer ``columns`` (COLUMNS;
    rnn: a row per layer and step, plus ``sigma_rec2``), the fixed point and the notes on
    what was assumed; ``reason`` says why there is no prediction (columns then empty)."""

    model: dict[str, Any]
    q1: float
    sigma_b2: float | None
    columns: dict[str, Array] = field(default_factory=dict)
    fixed: FixedPoint | None = None
    reason: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether there is a prediction."""
        return self.reason is None

    def frame(self) -> pd.DataFrame:
        """The per-layer columns as a DataFrame (no rows when there is no prediction)."""
        import pandas as pd

        names = [*COLUMNS, "sigma_rec2"] if self.model["arch"] == "rnn" else list(COLUMNS)
        return pd.DataFrame({k: self.columns.get(k, np.array([])) for k in names})

    def summary(self) -> dict[str, Any]:
        """Forward and backward decay, end-to-end ratios (``initbench.meanfield.decay``: a
        cnn's backward one of the gradient's sum over positions; an rnn's across the top
        layer's time steps) and the fixed point; or just the reason."""
        if not self.ok:
            return {"reason": self.reason}
        rows, positions, _ = profile_rows(self.columns["layer"], self.columns["t"])
        q, g = self.columns["q"][rows], self.columns["bwd_ratio"][rows]
        per_layer = map_positions(self.model["arch"], int(self.model["depth"]))
        g = summed_over_positions(positions, g, per_layer)
        return {
            "forward_decay": fit_factor(positions, q),
            "backward_decay": fit_factor(positions, g, backward=True),
            "forward_last_first": end_ratio(q),
            "backward_first_last": end_ratio(g, backward=True),
            **_fixed_summary(self.fixed),
        }


def _fixed_summary(fixed: FixedPoint | None) -> dict[str, Any]:
    """The fixed point's part of :meth:`Prediction.summary`; a residual stream has none."""
    if fixed is None:
        return {**FixedPoint(math.nan, math.nan, math.nan, "ordered").summary(), "regime": ""}
    return fixed.summary()


def _first_q(
    model: Mapping[str, Any],
    geo: Geometry,
    q1: float | Sequence[float] | None,
    sigma_b2: float,
    input_sq: float,
) -> Array:
    """Layer 1's preact second moment (rnn: its input drive at each of the 28 steps), as
    given or q1 = sigma_w1^2 mean(A 1 A^T) E[x^2] + sigma_b^2 with E[x^2] = input_sq."""
    steps = time_steps(model["arch"], model.get("sequence", "rows"))
    if q1 is None:
        q1 = geo.sigma_w2[0] * float(geo.maps[0].sum(axis=1).mean() ** 2) * input_sq + sigma_b2
    first = np.atleast_1d(np.asarray(q1, dtype=float))
    if first.size == 1:
        first = np.full(steps, first[0])
    if first.shape != (steps,) or not np.all(np.isfinite(first)) or np.any(first <= 0):
        raise TheoryError(f"q1 must be a number > 0 (rnn: or {steps} of them), got {q1!r}")
    return first


def _fixed_point_of(
    act: NumpyActivation, model: Mapping[str, Any], geo: Geometry, first: Array, sigma_b2: float
) -> FixedPoint:
    """mlp/cnn: the hidden layers' fixed point from q1 (with a norm the activation always
    sees q = 1, and chi* is the per-layer backward factor: batchnorm's E[phi'(z)^2] /
    Var phi(z), layernorm's sigma_w^2 E[phi'(z)^2] / q*); rnn: q* = sigma_rec^2 E[phi^2]
    + mean drive, chi* the stationary per-step BPTT factor."""
    norm = norm_of(model)
    if model["arch"] == "rnn" and norm == "layer":
        _, sq, dsq = gaussian_moments(act, 1.0)
        q_star = geo.sigma_rec2 * sq + float(first.mean())
        return fixed_point_at(q_star, geo.sigma_rec2 * dsq / q_star, RNN_NOTE)
    if model["arch"] == "rnn":
        drive, q0 = float(first.mean()), float(first[0])
        return fixed_point_at(*variance_fixed_point(act, geo.sigma_rec2, drive, q0), RNN_NOTE)
    if norm == "none":
        return fixed_point(act, geo.hidden_sigma2, sigma_b2, q0=float(first[0]))
    mean, sq, dsq = gaussian_moments(act, 1.0)
    q_star = geo.hidden_sigma2 * sq + sigma_b2
    if norm == "layer":  # divided by each example's q*, all of sigma_w^2 E[phi^2] + sigma_b^2
        return fixed_point_at(q_star, geo.hidden_sigma2 * dsq / q_star, LN_NOTE)
    return fixed_point_at(q_star, dsq / (sq - mean**2), BN_NOTE)


def _input_scale(config: Mapping[str, Any]) -> float:
    """data.scale of a run config (1 for a model section, or a dataset without one)."""
    data = config.get("data")
    return float(data.get("scale", 1.0)) if isinstance(data, Mapping) else 1.0


def _notes(
    model: Mapping[str, Any], geo: Geometry, given_q1: bool, padding: bool, input_sq: float
) -> list[str]:
    """What the prediction assumed, in words, for under its table."""
    notes = [
        "q is the preact second moment; with zero-mean weights and biases it is the "
        "predicted preact_var too (the all-element mean is ~0).",
        "q1 as given (the measured layer-1 preact)."
        if given_q1
        else f"q1 = sigma_w1^2 E[x^2] + sigma_b^2 for standardised inputs (E[x^2] = "
        f"{input_sq:.4g}: data.scale^2), layer 1's "
        f"sigma_w^2 = {geo.sigma_w2[0]:.4g}; pass the measured layer-1 preact_sq to compare.",
        "Infinite width: measured values scatter around these by an amount that grows with "
        "depth/width (Hanin & Rolnick 2018); the seeds show how much.",
    ]
    if norm_of(model) == "batch":
        notes.append(
            "batchnorm: the activation's input (normed) has variance 1 in every "
            "layer; backward per layer E[phi'(z)^2] / Var phi(z) (large batch)."
        )
    if norm_of(model) == "layer":
        notes.append(
            "layernorm: normed has variance 1 in every layer, as with batchnorm; backward "
            "it divides by each example's second moment q over its units, not by a "
            "per-unit batch variance: per layer sigma_w^2 E[phi'(z)^2] / q (large width)."
        )
    if model["arch"] == "cnn":
        notes.append(
            f"cnn: 'same' zero padding {'modelled' if padding else 'ignored'} "
            "(((3n-2)/3n)^2 per layer on an n x n map at first); stride-2 convs "
            "scale the per-element gradient variance by ~1/4 and keep its sum over "
            "positions: the backward decay and first/last ratio of the summary are of that "
            "sum (as the report measures them), the table's bwd_factor and bwd_ratio per "
            "element."
        )
    if model["arch"] == "rnn":
        notes.append(
            "rnn: layer 1's input drive is taken equal at every step unless q1 lists "
            f"{sequence_shape(model.get('sequence', 'rows'))[0]}; MNIST's "
            "rows (pixels) differ (the border ones are background)."
        )
    return notes


def predict(
    config: Mapping[str, Any],
    q1: float | Sequence[float] | None = None,
    *,
    sigma_b2: float | None = None,
    input_sq: float | None = None,
    padding_correction: bool = True,
) -> Prediction:
    """The mean-field prediction for a resolved run config (or its ``model`` section).

    q1: layer 1's preact second moment, the measured ``preact_sq`` (or ``preact_var``) at
    step 0; rnn: layer 1's input drive, one number or one per step (28). None derives it
    from E[x^2] = input_sq (None: scale^2 of the config's data.scale, standardised
    inputs: 1 without one). sigma_b2: None reads ``model.bias_init``. padding_correction:
    model the cnn's zero padding (False: an unbounded map)."""
    model = model_section(config)
    if model.get("residual") is not None:
        return _residual(config, model, _input_scale(config) ** 2 if input_sq is None else input_sq)
    act = numpy_activation(*split_ref(model["activation"]))
    geo = geometry_of(model, padding_correction)
    b2 = bias_sigma2(model) if sigma_b2 is None else float(sigma_b2)
    if isinstance(geo, str) or isinstance(b2, str):
        return Prediction(model, math.nan, None, reason=geo if isinstance(geo, str) else str(b2))
    if not b2 >= 0:
        raise TheoryError(f"sigma_b2 must be >= 0, got {b2}")
    if input_sq is None:
        input_sq = _input_scale(config) ** 2
    first = _first_q(model, geo, q1, b2, input_sq)
    if model["arch"] == "rnn":
        columns = propagate_rnn(act, geo, first, b2, layernorm=norm_of(model) == "layer")
    else:
        columns = propagate_feedforward(act, geo, float(first[0]), b2, norm=norm_of(model))
    fixed = _fixed_point_of(act, model, geo, first, b2)
    notes = _notes(model, geo, q1 is not None, padding_correction, input_sq)
    return Prediction(model, float(first[0]), b2, columns, fixed, None, tuple(notes))


def _residual(config: Mapping[str, Any], model: dict[str, Any], input_sq: float) -> Prediction:
    """A residual mlp's prediction: per block (at its last watched layer) q = the stream's
    second moment and bwd_ratio = the stream gradient's (meanfield.residual); the other
    columns are the branch layers' and are not predicted here (NaN); no fixed point."""
    if model["arch"] != "mlp":
        return Prediction(model, math.nan, None, reason=RESIDUAL_CNN_REASON)
    stream = residual_stream(config, input_sq)
    m = int(model.get("branch_layers", 2))
    blocks = len(stream["block"])
    nan = np.full(blocks, np.nan)
    columns = {key: nan for key in COLUMNS}
    columns.update(layer=stream["block"] * m, t=np.zeros(blocks, dtype=int), q=stream["stream_q"])
    columns.update(
        bwd_ratio=stream["grad_stream_ratio"], fwd_ratio=stream["stream_q"] / stream["stream_q"][0]
    )
    notes = (
        "residual: q is the stream's second moment after each block (stream_sq, at the "
        "block's last layer), q_{b+1} = q_b + alpha^2 q_F (Yang & Schoenholz 2017); "
        f"from the stem with E[x^2] = {input_sq:.4g}, not from a measured q1",
        "bwd_ratio: the stream's gradient variance (grad_stream_var) relative to the last "
        "block's; no fixed point: the stream has no map back to itself",
    )
    return Prediction(model, float(stream["stream_q"][0]), _b2(model), columns, None, None, notes)


def _b2(model: Mapping[str, Any]) -> float | None:
    b2 = bias_sigma2(model)
    return None if isinstance(b2, str) else b2


def rnn_input_drive(config: Mapping[str, Any], q_layer1: Sequence[float]) -> Array:
    """Layer 1's input drive at each step from its measured preact second moments,
    u_t = q_{1,t} - sigma_rec^2 E[phi(sqrt(q_{1,t-1}) z)^2] (u_1 = q_{1,1}), floored just
    above 0. Passed as ``q1`` to :func:`predict`, layer 1 reproduces the measurement and
    the layers above and every gradient stay predictions: MNIST's rows differ too much
    (background rows at the top and bottom) for one drive per step to fit."""
    model = model_section(config)
    geo = geometry_of(model, padding_correction=True)
    if isinstance(geo, str):
        raise TheoryError(geo)
    act = numpy_activation(*split_ref(model["activation"]))
    q = np.asarray(q_layer1, dtype=float)
    drive = q.copy()
    drive[1:] -= geo.sigma_rec2 * np.array([gaussian_moments(act, v)[1] for v in q[:-1]])
    return np.maximum(drive, 1e-12 * q)


def predict_for(
    activation: str | Mapping[str, Any],
    init: str | Mapping[str, Any],
    depth: int,
    width: int,
    arch: str = "mlp",
    *,
    q1: float | Sequence[float] | None = None,
    sigma_b2: float = 0.0,
    batchnorm: bool = False,
    recurrent_init: str | Mapping[str, Any] | None = None,
    padding_correction: bool = True,
) -> Prediction:
    """:func:`predict` from separate arguments (``initbench theory``'s options and
    ``initbench.api.theory``'s); a bad argument is a TheoryError, with the registries'
    "did you mean"."""
    from pydantic import ValidationError

    from initbench.config.registry import UnknownNameError

    if depth < 1 or width < 1:
        raise TheoryError(f"depth and width must be >= 1, got {depth} and {width}")
    if recurrent_init is not None and arch not in ("rnn", "lstm", "gru"):
        raise TheoryError(f"recurrent_init applies only to arch rnn, lstm or gru (this is {arch})")
    model = dict(arch=arch, depth=depth, width=width, activation=activation, init=init)
    model.update(recurrent_init=recurrent_init, batchnorm=batchnorm)
    try:
        return predict(model, q1, sigma_b2=sigma_b2, padding_correction=padding_correction)
    except UnknownNameError as exc:
        raise TheoryError(exc.message) from None
    except ValidationError as exc:
        raise TheoryError(str(exc)) from None
