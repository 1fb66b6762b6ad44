"""Singular values of the input-output Jacobian J = d act_L / d x, per example.

act_L is the last watched layer's output (an rnn's at its last time step; a cnn's whole
map, flattened), x one example's 784 input pixels; the readout is not part of J. Pennington,
Schoenholz & Ganguli 2017 ("Resurrecting the sigmoid in deep learning through dynamical
isometry") showed that the whole spectrum of J, not its mean square, predicts how fast a
deep network trains: orthogonal weights with tanh near criticality keep it concentrated
around 1 at any depth, Gaussian weights spread it with depth.

J is computed exactly, by reverse-mode autodiff (``torch.func.jacrev``, vmapped over the
examples), on the network as it is at the step (training mode, which without batchnorm is
the same function as eval mode; batchnorm is refused by the config: its batch statistics
couple the examples). Its singular values are taken in float64.

J (N_out x 784) has min(N_out, 784) singular values. Where N_out > 784, J J^T has N_out - 784
zero eigenvalues more; they are kept as singular values 0, so that every example has N_out
values and the mean of their squares is tr(J J^T) / N_out, which mean-field theory predicts
(the product of the layers' chi).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from initbench.config.geometry import IMAGE_SHAPE
from initbench.nets.instrument import Tape
from initbench.nets.models import InstrumentedModel

# Column -> values of one run's spectra table (initbench.results.schema.SPECTRA_COLUMNS).
SpectraColumns = dict[str, np.ndarray]


class _LastAct(Tape):
    """A tape that keeps only the network's last watched output of a forward pass: the
    act of the last watched (layer, t), or, in a residual net, the last block's stream."""

    def __init__(self) -> None:
        self.key: tuple[int, int] = (-1, -1)
        self.act: torch.Tensor | None = None

    def watch(
        self,
        layer: int,
        t: int,
        preact: torch.Tensor,
        normed: torch.Tensor | None,
        act: torch.Tensor,
    ) -> None:
        """Keep ``act`` if this (layer, t) is the last so far."""
        if (layer, t) >= self.key:
            self.key, self.act = (layer, t), act

    def watch_block(self, layer: int, stream: torch.Tensor, branch: torch.Tensor) -> None:
        """Keep the block's output ``stream``: it, not its branch's act, goes on."""
        if (layer, 0) >= self.key:
            self.key, self.act = (layer, 0), stream


def last_act_function(model: InstrumentedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (one example, 784 pixels) -> the last watched layer's act, flattened (N_out,)."""

    def last_act(x: torch.Tensor) -> torch.Tensor:
        tape = _LastAct()
        model(x.reshape(1, *IMAGE_SHAPE), tape)
        assert tape.act is not None, "the model watched no layer"
        return tape.act[0].reshape(-1)  # (N_out,) of the batch of one

    return last_act


def jacobians(model: InstrumentedModel, x: torch.Tensor) -> torch.Tensor:
    """The input-output Jacobians of the examples ``x`` (k, 1, 28, 28): (k, N_out, 784)."""
    from torch.func import jacrev, vmap

    flat = x.reshape(x.shape[0], -1)  # (k, 784)
    with torch.no_grad():  # the parameters are constants here: no graph, no .grad touched
        return vmap(jacrev(last_act_function(model)))(flat)


def singular_values(jacobian: torch.Tensor) -> np.ndarray:
    """Singular values (k, N_out) of each example's J, descending, in float64; where
    N_out > 784, padded with the zeros of J J^T's null space."""
    k, n_out, _ = jacobian.shape
    jacobian = jacobian.detach().to("cpu", torch.float64)
    if not torch.isfinite(jacobian).all():  # a diverging network: no spectrum, stored as NaN
        return np.full((k, n_out), np.nan)
    values = torch.linalg.svdvals(jacobian).numpy()
    if values.shape[1] < n_out:
        values = np.concatenate([values, np.zeros((k, n_out - values.shape[1]))], axis=1)
    return values


Measured = tuple[int, np.ndarray, np.ndarray]  # (step, singular values (k, N_out), input_sq (k,))


def input_second_moments(x: torch.Tensor) -> np.ndarray:
    """E[x^2] over each example's input elements (k,): the mean-field q0 of the example."""
    return x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64).square().mean(1).numpy()


def spectra_columns(rows: list[Measured]) -> SpectraColumns:
    """The measured steps as the long table's columns: step, example (0-based, the batch's
    order), index (0-based, descending), value, and the example's input_sq on each row."""
    if not rows:
        return {}
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ("step", "example", "index", "value")}
    parts["input_sq"] = []
    for step, sv, input_sq in rows:
        k, n = sv.shape
        parts["step"].append(np.full(k * n, step, dtype=np.int32))
        parts["example"].append(np.repeat(np.arange(k, dtype=np.int16), n))
        parts["index"].append(np.tile(np.arange(n, dtype=np.int32), k))
        parts["value"].append(sv.reshape(-1).astype(np.float64))
        parts["input_sq"].append(np.repeat(input_sq.astype(np.float64), n))
    return {column: np.concatenate(arrays) for column, arrays in parts.items()}


class JacobianProbe:
    """When and on what a run takes its Jacobian spectra: step 0, every ``every`` steps
    (0: never again) and the last step ``steps``, each on the first ``examples`` of the
    step's batch."""

    def __init__(self, examples: int, every: int, steps: int) -> None:
        self.examples, self.every, self.steps = examples, every, steps
        self.rows: list[Measured] = []

    def due(self, step: int) -> bool:
        """Whether step ``step`` is measured."""
        return step == 0 or (self.every > 0 and (step % self.every == 0 or step == self.steps))

    def measure(self, step: int, model: InstrumentedModel, x: torch.Tensor) -> None:
        """Take the spectra of the first examples of batch ``x`` at ``step``."""
        chosen = x[: self.examples]
        sv = singular_values(jacobians(model, chosen))
        self.rows.append((step, sv, input_second_moments(chosen)))

    def columns(self) -> SpectraColumns:
        """Every measured step as the spectra table's columns."""
        return spectra_columns(self.rows)
