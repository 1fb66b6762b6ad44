"""The recurrent models: Elman RNN, LSTM and GRU, unrolled so that every time step of
every layer is watched (cuDNN's fused ``nn.LSTM`` gives no per-step tensors).

Each model reads the (B, 1, 28, 28) batch as the sequence ``data.sequence`` names
(:data:`initbench.config.geometry.SEQUENCES`: 28 rows of 28 pixels, or 784 pixels one at a
time), runs ``depth`` stacked layers of ``width`` units from h_0 = 0 (c_0 = 0), and reads
out the top layer's last hidden state. Watched point (l, t), t = 1..T: the Elman layer
hands the tape its preact W_ih x_t + b + W_hh h_{t-1} and act h_t; a gated layer, which
has no single affine map, hands its hidden state h_t as both, and each gate's
pre-activation and activation and (LSTM) the cell state c_t to ``tape.watch_gates``.

The gated cells compute exactly what torch.nn.LSTM and torch.nn.GRU compute, in torch's
layout (stacked gate blocks, two biases; tests/test_recurrent.py checks outputs and
gradients against torch for copied weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from initbench.config.architectures import gate_names
from initbench.config.geometry import NUM_CLASSES, sequence_shape
from initbench.nets.base import InstrumentedModel, activation_meta, new_activation, new_norm
from initbench.nets.instrument import Tape, WatchedLayer

if TYPE_CHECKING:
    from initbench.config.runconfig import ModelConfig


def _steps(projected: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, T, n) -> T views (B, n). One unbind, not T slices: each slice's backward
    writes a zero-filled (B, T, n) gradient, which costs O(T^2) at T = 784."""
    return projected.unbind(dim=1)


class ElmanLayer(nn.Module):
    """h_t = act(norm?(W_ih x_t + b + W_hh h_{t-1})), h_0 = 0; every step's preact is
    watchable. The norm (LayerNorm, or none) normalises the recurrent pre-activation of
    each example and step (Ba et al. 2016)."""

    def __init__(
        self, index: int, input_size: int, hidden: int, act: nn.Module, norm: nn.Module | None
    ) -> None:
        super().__init__()
        self.index = index
        self.w_ih = nn.Linear(input_size, hidden)
        self.w_hh = nn.Linear(hidden, hidden, bias=False)
        self.act = act
        self.norm = norm

    def forward(self, xs: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        batch = xs.shape[0]  # xs: (B, T, input_size)
        projected = self.w_ih(xs)  # (B, T, hidden): the input part of every step at once
        h = projected.new_zeros(batch, self.w_hh.out_features)
        outputs = []
        for t, x_part in enumerate(_steps(projected)):
            preact = x_part + self.w_hh(h)  # (B, hidden)
            normed = self.norm(preact) if self.norm is not None else None
            h = self.act(preact if normed is None else normed)
            if tape is not None:
                tape.watch(self.index, t + 1, preact, normed, h)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, hidden)


class LSTMLayer(nn.Module):
    """torch.nn.LSTM's cell, unrolled: gates (i, f, g, o) stacked in w_ih and w_hh."""

    def __init__(self, index: int, input_size: int, hidden: int) -> None:
        super().__init__()
        self.index, self.hidden = index, hidden
        self.w_ih = nn.Linear(input_size, 4 * hidden)  # weight_ih_l, bias_ih_l
        self.w_hh = nn.Linear(hidden, 4 * hidden)  # weight_hh_l, bias_hh_l

    def forward(self, xs: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        batch = xs.shape[0]  # xs: (B, T, input_size)
        projected = self.w_ih(xs)  # (B, T, 4 hidden)
        h = c = projected.new_zeros(batch, self.hidden)
        outputs = []
        for t, x_part in enumerate(_steps(projected)):
            pre = (x_part + self.w_hh(h)).chunk(4, dim=1)  # 4 x (B, hidden)
            i, f, o = torch.sigmoid(pre[0]), torch.sigmoid(pre[1]), torch.sigmoid(pre[3])
            g = torch.tanh(pre[2])
            c = f * c + i * g
            h = o * torch.tanh(c)
            if tape is not None:
                tape.watch(self.index, t + 1, h, None, h)
                gates = {"i": (pre[0], i), "f": (pre[1], f), "g": (pre[2], g), "o": (pre[3], o)}
                tape.watch_gates(self.index, t + 1, gates, c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, hidden)


class GRULayer(nn.Module):
    """torch.nn.GRU's cell, unrolled: gates (r, z, n) stacked in w_ih and w_hh; the reset
    gate multiplies the whole recurrent part of n, its bias too: r (W_hn h + b_hn)."""

    def __init__(self, index: int, input_size: int, hidden: int) -> None:
        super().__init__()
        self.index, self.hidden = index, hidden
        self.w_ih = nn.Linear(input_size, 3 * hidden)
        self.w_hh = nn.Linear(hidden, 3 * hidden)

    def forward(self, xs: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        batch = xs.shape[0]  # xs: (B, T, input_size)
        projected = self.w_ih(xs)  # (B, T, 3 hidden)
        h = projected.new_zeros(batch, self.hidden)
        outputs = []
        for t, x_part in enumerate(_steps(projected)):
            x_r, x_z, x_n = x_part.chunk(3, dim=1)  # 3 x (B, hidden)
            h_r, h_z, h_n = self.w_hh(h).chunk(3, dim=1)
            r_pre, z_pre = x_r + h_r, x_z + h_z
            r, z = torch.sigmoid(r_pre), torch.sigmoid(z_pre)
            n_pre = x_n + r * h_n
            n = torch.tanh(n_pre)
            h = (1 - z) * n + z * h
            if tape is not None:
                tape.watch(self.index, t + 1, h, None, h)
                gates = {"r": (r_pre, r), "z": (z_pre, z), "n": (n_pre, n)}
                tape.watch_gates(self.index, t + 1, gates, None)
            outputs.append(h)
        return torch.stack(outputs, dim=1)  # (B, T, hidden)


class RecurrentModel(InstrumentedModel):
    """depth stacked recurrent layers reading the image as a sequence, readout from the
    top layer's last state. Subclasses make a layer (:meth:`new_layer`)."""

    prefix = "rnn"

    def __init__(self, config: ModelConfig, sequence: str = "rows") -> None:
        super().__init__()
        self.config = config
        self.steps, size = sequence_shape(sequence)
        layers = []
        for index in range(1, config.depth + 1):
            layers.append(self.new_layer(index, size, config.width))
            size = config.width
        self.layers = nn.ModuleList(layers)
        self.readout = nn.Linear(size, NUM_CLASSES)

    def new_layer(self, index: int, input_size: int, hidden: int) -> nn.Module:
        """Layer ``index`` reading ``input_size`` features per step into ``hidden`` units."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        h = x.reshape(x.shape[0], self.steps, -1)  # (B, T, 28 pixels of a row, or 1)
        for layer in self.layers:
            h = layer(h, tape)  # (B, T, width)
        return self.readout(h[:, -1])  # last state -> (B, 10)

    def time_steps(self) -> int:
        return self.steps

    def watched_layers(self) -> list[WatchedLayer]:
        name, kind, out_range = activation_meta(self.config)
        return [
            WatchedLayer(
                r.index,
                f"{self.prefix}{r.index}",
                r.w_ih.weight,
                r.w_hh.weight,
                name,
                kind,
                out_range,
            )
            for r in self.layers
        ]

    def affine_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for layer in self.layers:
            yield "hidden", layer.w_ih
            yield "recurrent", layer.w_hh
        yield "readout", self.readout


class RNN(RecurrentModel):
    """Vanilla (Elman) RNN: h_t = act(W_ih x_t + b + W_hh h_{t-1})."""

    def new_layer(self, index: int, input_size: int, hidden: int) -> nn.Module:
        norm = new_norm(self.config, hidden, conv=False)
        return ElmanLayer(index, input_size, hidden, new_activation(self.config), norm)


class LSTM(RecurrentModel):
    """LSTM (torch.nn.LSTM's equations); ``model.forget_bias`` is added to b_ih's f block."""

    prefix = "lstm"
    gate_blocks = len(gate_names("lstm"))

    def new_layer(self, index: int, input_size: int, hidden: int) -> nn.Module:
        return LSTMLayer(index, input_size, hidden)

    def initialized(self) -> None:
        """Add ``model.forget_bias`` to every layer's forget-gate block of b_ih (so the
        forget gate's total bias is bias_init's draw plus forget_bias)."""
        if self.config.forget_bias:
            with torch.no_grad():
                for layer in self.layers:
                    layer.w_ih.bias[layer.hidden : 2 * layer.hidden] += self.config.forget_bias


class GRU(RecurrentModel):
    """GRU (torch.nn.GRU's equations)."""

    prefix = "gru"
    gate_blocks = len(gate_names("gru"))

    def new_layer(self, index: int, input_size: int, hidden: int) -> nn.Module:
        return GRULayer(index, input_size, hidden)
