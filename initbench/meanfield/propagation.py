"""Per-layer propagation of the variance (forward) and of the gradient's variance
(backward) through a model at initialisation, in the COLUMNS every prediction has.

* Backward, through W^{l+1} (out x in) the gradient picks up out * Var(W^{l+1}) * E[phi'^2]
  = chi^l * fan_out/fan_in of W^{l+1}. With one width every W^{l+1}, l >= 1, is square,
  so g^l / g^{l+1} = chi^l; with model.widths the fan ratio n_{l+1}/n_l stays (He 2015:
  fan_in init keeps the forward pass and scales the gradient by n_{l+1}/n_l per layer,
  fan_out the reverse). W^1 (784 inputs, 1 channel or 28 pixels) never carries
  grad_preact: it sets q^1 (its sigma_w^2 differs: xavier gives 784/520 for the mlp) and
  grad_w^1 only. The readout sets g^L's scale, so g is predicted relative to g^L.
* CNN: a 3x3 'same' conv averages each position's window, v_out = sigma_w^2 A E[phi^2]
  A^T + sigma_b^2 per map position (Xiao et al. 2018), where the tap matrix A drops the
  taps on the zero padding; a gradient's field goes back as A^T G A. A uniform field
  shrinks by ((3n-2)/3n)^2 on an n x n map (0.95 at 28, 0.82 at 7); once its borders are
  low, later layers lose less. A stride-2 conv scales the gradient by ~1/4 (each input
  position feeds 9/4 outputs instead of 9). The columns are means over positions.
* Batchnorm: the activation's input is normalised, so its variance is predicted 1 in
  every layer and q^{l+1} = sigma_w^2 E[phi(z)^2] + sigma_b^2 at any depth. Backward,
  grad_preact = grad_normed / sigma_unit, sigma_unit^2 being the per-unit batch variance
  sigma_w^2 Var_z[phi(z)]: per layer E[phi'(z)^2] / Var_z[phi(z)], for ReLU
  pi/(pi-1) = 1.47 (the large-batch gradient explosion of Yang et al. 2019).
* LayerNorm: the forward argument is batchnorm's (normed has variance 1, over each
  example's units). Backward it divides by each example's standard deviation over its
  units, whose square is the whole second moment q^l (zero-mean weights: the units of one
  example have mean ~0), not batchnorm's per-unit batch variance, which leaves out the
  part of E[phi^2] shared by the batch: per layer sigma_w^2 E[phi'(z)^2] / q, for ReLU
  with He 1 (no explosion). Both ignore the O(1/width) or O(1/batch) projections.
* RNN (Chen, Pennington & Schoenholz 2018): q_{l,t} = sigma_ih^2 E[phi(h_{l-1,t})^2] +
  sigma_b^2 + sigma_rec^2 E[phi(h_{l,t-1})^2], h_0 = 0; back-propagation through time
  adds the recurrent path sigma_rec^2 E[phi'^2] g_{l,t+1} to the one from the layer above.
"""

from __future__ import annotations

import numpy as np

from initbench.meanfield.activations import Array, NumpyActivation
from initbench.meanfield.gaussian import field_moments, gaussian_moments
from initbench.meanfield.geometry import Geometry

COLUMN_HELP = {
    "layer": "watched layer l (1-based)",
    "t": "rnn time step (1-based); 0 for mlp and cnn",
    "sigma_w2": "fan_in * Var(W) of the layer's (input-to-hidden) weight",
    "sigma_rec2": "rnn only: fan_in * Var(W) of the recurrent weight",
    "q": "predicted preact second moment = preact_var = preact_sq (zero-mean weights and biases)",
    "q_in": "second moment of the activation's input: q, or 1 after a norm (normed_var)",
    "act_mean": "predicted act_mean = E[phi(sqrt(q_in) z)]",
    "act_sq": "predicted act_sq = E[phi(sqrt(q_in) z)^2]",
    "chi": "sigma_w^2 E[phi'(sqrt(q_in) z)^2] with the next layer's sigma_w^2 (rnn: recurrent)",
    "fwd_factor": "q / q of the layer before (rnn: of the step before)",
    "bwd_factor": "predicted grad_preact_var / that of the layer after (rnn: of the step after)",
    "fwd_ratio": "q / q of layer 1 (rnn: of step 1 of the same layer)",
    "bwd_ratio": "grad_preact_var / that of the last layer (rnn: of the last step)",
}
COLUMNS = tuple(k for k in COLUMN_HELP if k != "sigma_rec2")  # every arch's columns, in order


def _columns(
    keys: dict[str, Array], q: Array, q_in: Array, mom: Array, chi: Array, g: Array
) -> dict[str, Array]:
    """The COLUMNS of one run of layers (or of time steps) from q, the moments (n, 3), chi
    and the predicted grad_preact variance g (any scale)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        return {
            **keys,
            "q": q,
            "q_in": q_in,
            "act_mean": mom[:, 0],
            "act_sq": mom[:, 1],
            "chi": chi,
            "fwd_factor": np.append(np.nan, q[1:] / q[:-1]),
            "bwd_factor": np.append(g[:-1] / g[1:], np.nan),
            "fwd_ratio": q / q[0],
            "bwd_ratio": g / g[-1],
        }


def _ff_forward(
    act: NumpyActivation, geo: Geometry, v1: Array, sigma_b2: float, normed: bool
) -> tuple[list[Array], list[Array]]:
    """Per layer, the preact variance field v and the moments field (E phi, E phi^2,
    E phi'^2 at each position): v_{l+1} = sigma_w^2 A E[phi(sqrt(v_l) z)^2] A^T + sigma_b^2."""
    fields, moments, v = [], [], v1
    for i in range(len(geo.sigma_w2)):
        fields.append(v)
        moments.append(field_moments(act, np.ones_like(v) if normed else v))
        if i + 1 < len(geo.sigma_w2):
            a = geo.maps[i + 1]
            v = geo.sigma_w2[i + 1] * (a @ moments[i][..., 1] @ a.T) + sigma_b2
    return fields, moments


def _unit_var(
    fields: list[Array], moments: list[Array], i: int, sigma_b2: float, norm: str
) -> float:
    """The variance the norm divides layer i + 1's preact by. Layernorm: each example's
    second moment over its units (and positions), q. Batchnorm: the per-unit variance
    over the batch, q1 at layer 1 (it depends on the data), else the part sigma_w^2 A
    Var[phi] A^T of v = sigma_w^2 A E[phi^2] A^T + sigma_b^2 that varies over the batch
    (phi of the layer before)."""
    if i == 0 or norm == "layer":
        return float(fields[i].mean())
    mean, sq = moments[i - 1][..., 0].mean(), moments[i - 1][..., 1].mean()
    return float((fields[i].mean() - sigma_b2) * (1 - mean**2 / sq))


def _ff_backward(
    geo: Geometry, fields: list[Array], moments: list[Array], sigma_b2: float, norm: str
) -> Array:
    """g^l / g^L of grad_preact_var: G^l = E[phi'^2] sigma_w^2 fan_out/fan_in A^T G^{l+1} A
    (Schoenholz et al. 2017) from a uniform G^L (the readout, or the cnn's average pool);
    with a norm over the variance it divides by (grad_preact = grad_normed / std)."""
    grad, g = np.ones_like(fields[-1]), np.ones(len(fields))
    for i in reversed(range(len(fields) - 1)):
        a = geo.maps[i + 1]
        grad = moments[i][..., 2] * geo.sigma_w2[i + 1] * geo.fan_ratio[i + 1] * (a.T @ grad @ a)
        if norm != "none":
            grad = grad / _unit_var(fields, moments, i, sigma_b2, norm)
        g[i] = grad.mean()
    return g


def first_field(geo: Geometry, q1: float) -> Array:
    """Layer 1's preact variance field, of mean q1: one value for an mlp; for a cnn the
    shape A 1 A^T of a uniform input seen through the zero padding."""
    taps = geo.maps[0].sum(axis=1)  # share of each output row's taps inside the image
    shape = np.outer(taps, taps)
    return q1 * shape / shape.mean()


def propagate_feedforward(
    act: NumpyActivation,
    geo: Geometry,
    q1: float,
    sigma_b2: float,
    batchnorm: bool = False,
    *,
    norm: str | None = None,
) -> dict[str, Array]:
    """Per-layer COLUMNS of an mlp or cnn from layer 1's preact second moment q1; a cnn's
    are means over positions of its fields. norm (none, batch, layer; None: batchnorm's
    batch or none): with a norm phi's input has q_in = 1."""
    norm = norm or ("batch" if batchnorm else "none")
    normed = norm != "none"
    fields, moments = _ff_forward(act, geo, first_field(geo, q1), sigma_b2, normed)
    g = _ff_backward(geo, fields, moments, sigma_b2, norm)
    depth = len(fields)
    q = np.array([v.mean() for v in fields])
    mom = np.array([m.reshape(-1, 3).mean(axis=0) for m in moments])
    chi = np.append(geo.sigma_w2[1:] * mom[:-1, 2], np.nan)
    keys = {
        "layer": np.arange(1, depth + 1),
        "t": np.zeros(depth, dtype=int),
        "sigma_w2": geo.sigma_w2,
    }
    return _columns(keys, q, np.ones(depth) if normed else q, mom, chi, g)


def _rnn_forward(
    act: NumpyActivation, geo: Geometry, drive: Array, sigma_b2: float, layernorm: bool = False
) -> tuple[Array, Array]:
    """q[l, t] = u[l, t] + sigma_rec^2 E[phi(h[l, t-1])^2] (h_0 = 0) with the input drive
    u[0, t] = drive[t], u[l, t] = sigma_ih^2 E[phi(h[l-1, t])^2] + sigma_b^2; and moments
    (of phi's input: q, or 1 after layernorm)."""
    depth, steps = len(geo.sigma_w2), len(drive)
    q, moments = np.zeros((depth, steps)), np.zeros((depth, steps, 3))
    for i in range(depth):
        for t in range(steps):
            q[i, t] = drive[t] if i == 0 else geo.sigma_w2[i] * moments[i - 1, t, 1] + sigma_b2
            if t > 0:
                q[i, t] += geo.sigma_rec2 * moments[i, t - 1, 1]
            moments[i, t] = gaussian_moments(act, 1.0 if layernorm else q[i, t])
    return q, moments


def _rnn_backward(geo: Geometry, dsq: Array) -> Array:
    """g[l, t] = E[phi'^2] (sigma_rec^2 g[l, t+1] + sigma_ih^2 fan_out/fan_in g[l+1, t]),
    the loss entering at the top layer's last step: back-propagation through time under
    the gradient-independence assumption (Chen et al. 2018)."""
    depth, steps = dsq.shape
    g = np.zeros((depth + 1, steps + 1))
    for i in reversed(range(depth)):
        for t in reversed(range(steps)):
            source = 1.0 if (i, t) == (depth - 1, steps - 1) else 0.0
            up = geo.sigma_w2[i + 1] * geo.fan_ratio[i + 1] * g[i + 1, t] if i + 1 < depth else 0.0
            g[i, t] = dsq[i, t] * (source + geo.sigma_rec2 * g[i, t + 1] + up)
    return g[:depth, :steps]


def propagate_rnn(
    act: NumpyActivation, geo: Geometry, drive: Array, sigma_b2: float, layernorm: bool = False
) -> dict[str, Array]:
    """Per-(layer, step) COLUMNS of a stacked Elman rnn (Chen, Pennington & Schoenholz
    2018) from layer 1's input drive per step; factors and ratios run across time within
    each layer, and chi is the recurrent sigma_rec^2 E[phi'^2], the per-step BPTT factor.
    Layernorm of the recurrent pre-activation: phi sees variance 1, and the gradient is
    divided by each step's q, as in the feed-forward case."""
    q, moments = _rnn_forward(act, geo, drive, sigma_b2, layernorm)
    g = _rnn_backward(geo, moments[..., 2] / q if layernorm else moments[..., 2])
    depth, steps = q.shape
    parts = []
    for i in range(depth):
        keys = {
            "layer": np.full(steps, i + 1),
            "t": np.arange(1, steps + 1),
            "sigma_w2": np.full(steps, geo.sigma_w2[i]),
        }
        chi = geo.sigma_rec2 * moments[i, :, 2] / (q[i] if layernorm else 1.0)
        q_in = np.ones(steps) if layernorm else q[i]
        parts.append(_columns(keys, q[i], q_in, moments[i], chi, g[i]))
    out = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
    return {**out, "sigma_rec2": np.full(depth * steps, geo.sigma_rec2)}
