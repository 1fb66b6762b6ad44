"""Mean-field predictions of per-layer variance at initialisation.

The signal-propagation map of wide random networks (Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos"; Schoenholz et al. 2017,
"Deep information propagation"), with sigma_w^2 = fan_in * Var(W) of the layer's
initializer and sigma_b^2 = Var(b): the fixed point q*, chi_1 and the phase are in
:mod:`~initbench.meanfield.fixedpoint`, the correlation map, its fixed point c* and the
depth scales xi_q and xi_c in :mod:`~initbench.meanfield.depthscale`, the per-layer
propagation (feed-forward, CNN, RNN, batchnorm) in :mod:`~initbench.meanfield.propagation`.

Predictions are made to compare with what initbench measures (the metrics as
``initbench.results.schema.LAYER_METRICS`` defines them):

* ``q`` is the second moment E[h^2] of a pre-activation element, the measured
  ``preact_sq``. With zero-mean weights and biases the all-element mean of a
  pre-activation is 0 up to O(1/width) (even after ReLU, whose outputs have a positive
  mean), so ``preact_var`` = ``preact_sq`` = q. Non-zero-mean weights or biases (uniform
  [0, 1], constant, identity) break the map itself: they get no prediction, and the reason.
* Backward, the measured ``grad_preact_var`` g^l is predicted relative to the last layer's
  (the readout sets its scale).
* The decay summary reads a predicted profile as the report reads a measured one
  (:mod:`~initbench.meanfield.decay`).

Modules, in the order they build on each other: ``model`` (reading a config's model
section), ``activations`` (numpy phi and phi'), ``gaussian`` (Gaussian expectations),
``depthscale``, ``fixedpoint``, ``geometry`` (sigma_w^2, fans, CNN tap matrices),
``propagation``, ``decay``, ``prediction``, ``scales`` (sigma_w^2 from an init reference,
the depth-scale view), ``phase`` (the (sigma_w^2, sigma_b^2) plane) and ``rendering`` (the
text of `initbench theory`).

Only numpy and initbench.config (pydantic, yaml) at import; pandas when a table is asked.
"""

from __future__ import annotations

from initbench.meanfield.activations import (
    SELU_ALPHA,
    SELU_LAMBDA,
    SOFTPLUS_THRESHOLD,
    Array,
    NumpyActivation,
    numpy_activation,
)
from initbench.meanfield.decay import end_ratio, fit_factor, profile_rows, summed_over_positions
from initbench.meanfield.depthscale import (
    correlation_fixed_point,
    correlation_map,
    correlation_moments,
    variance_slope,
)
from initbench.meanfield.fixedpoint import (
    CRITICAL_TOL,
    FixedPoint,
    Regime,
    critical_sigma_w2,
    depth_scale,
    fixed_point,
    iterate_limit,
    variance_fixed_point,
)
from initbench.meanfield.gaussian import (
    Q_CEIL,
    Q_FLOOR,
    Z_MAX,
    Moments,
    field_moments,
    gaussian_moments,
    gaussian_nodes,
    quadrature_moments,
)
from initbench.meanfield.geometry import Geometry, cnn_tap_matrices, tap_matrix
from initbench.meanfield.model import TheoryError, model_section
from initbench.meanfield.prediction import Prediction, predict, predict_for, rnn_input_drive
from initbench.meanfield.propagation import (
    COLUMN_HELP,
    COLUMNS,
    first_field,
    propagate_feedforward,
    propagate_rnn,
)
from initbench.meanfield.rendering import FORMATS, command_text, render, render_scales, theory_text
from initbench.meanfield.scales import DepthScales, depth_scales, parse_reference

__all__ = [
    "COLUMNS",
    "COLUMN_HELP",
    "CRITICAL_TOL",
    "FORMATS",
    "Q_CEIL",
    "Q_FLOOR",
    "SELU_ALPHA",
    "SELU_LAMBDA",
    "SOFTPLUS_THRESHOLD",
    "Z_MAX",
    "Array",
    "DepthScales",
    "FixedPoint",
    "Geometry",
    "Moments",
    "NumpyActivation",
    "Prediction",
    "Regime",
    "TheoryError",
    "cnn_tap_matrices",
    "command_text",
    "correlation_fixed_point",
    "correlation_map",
    "correlation_moments",
    "critical_sigma_w2",
    "depth_scale",
    "depth_scales",
    "end_ratio",
    "field_moments",
    "first_field",
    "fit_factor",
    "fixed_point",
    "gaussian_moments",
    "gaussian_nodes",
    "iterate_limit",
    "model_section",
    "numpy_activation",
    "parse_reference",
    "predict",
    "predict_for",
    "profile_rows",
    "propagate_feedforward",
    "propagate_rnn",
    "quadrature_moments",
    "render",
    "render_scales",
    "rnn_input_drive",
    "summed_over_positions",
    "tap_matrix",
    "theory_text",
    "variance_fixed_point",
    "variance_slope",
]
