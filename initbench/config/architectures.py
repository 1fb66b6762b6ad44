"""The architectures a spec can name (``model.arch``): what each network is and what it
watches. The classes that build them live in :mod:`initbench.nets.models`
(``MODEL_CLASSES``; the recurrent ones in :mod:`initbench.nets.recurrent`), so validating
a spec or listing the catalog does not import torch."""

from __future__ import annotations

from dataclasses import dataclass

from initbench.config.registry import Registry


@dataclass(frozen=True)
class Architecture:
    """One architecture: what the network is and which of its layers are watched.

    ``recurrent``: reads the image as a sequence, one watched point per layer and time
    step, with hidden-to-hidden weights (``model.recurrent_init``). ``gates``: a gated
    cell's gates in torch's order, each with its activation's name; the weights and biases
    of a gated layer are stacked gate blocks (torch's layout), each initialised alone.
    """

    summary: str
    watched: str
    recurrent: bool = False
    gates: tuple[tuple[str, str], ...] = ()


# How initializers meet a gated cell (shown under `initbench list initializers`).
GATE_BLOCKS_NOTE = (
    "lstm, gru: each initializer applies to each gate block alone, with the block's fans: "
    "every gate's input weight (hidden x inputs), its square recurrent weight (hidden x "
    "hidden: orthogonal is an orthogonal matrix per gate) and its bias blocks, each its own "
    "draw. (Keras draws glorot_uniform and orthogonal for the stacked (inputs, 4 hidden) "
    "and (hidden, 4 hidden) kernels at once: other fans, and no block orthogonal alone.)"
)

ARCHITECTURES: Registry[Architecture] = Registry("architecture")
ARCHITECTURES.add(
    "mlp",
    Architecture(
        "784 -> depth x [Linear(width) -> norm? -> act] -> Linear(10); model.widths per "
        "layer; model.residual: depth pre-activation blocks h + alpha F(h)",
        "each hidden Linear with its norm and activation: fc1..fc<depth> (residual: each "
        "branch layer res<l>)",
    ),
)
ARCHITECTURES.add(
    "cnn",
    Architecture(
        "depth x [Conv2d 3x3 -> norm? -> act], stride 2 at 1/3 and 2/3 of depth, "
        "global average pool -> Linear(10); model.residual: residual blocks, 1x1 projection "
        "shortcuts at stride 2",
        "each conv with its norm and activation: conv1..conv<depth> (residual: each branch "
        "layer res<l> and projection proj<l>)",
    ),
)
ARCHITECTURES.add(
    "rnn",
    Architecture(
        "Elman RNN over 28 rows of 28 pixels, depth stacked layers of width units, "
        "readout from the last state",
        "each layer at each time step t = 1..T: rnn1..rnn<depth>",
        recurrent=True,
    ),
)
ARCHITECTURES.add(
    "lstm",
    Architecture(
        "LSTM (torch.nn.LSTM's cell, unrolled) over the sequence, depth stacked layers of "
        "width units, readout from the top layer's last hidden state: i, f, o = sigmoid, "
        "g = tanh of W_ih x_t + b_ih + W_hh h_{t-1} + b_hh; c_t = f c_{t-1} + i g; "
        "h_t = o tanh(c_t)",
        "each layer at each time step t = 1..T: lstm1..lstm<depth>; preact and act are the "
        "hidden state h_t; each gate, and the cell state c_t",
        recurrent=True,
        gates=(("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid")),
    ),
)
ARCHITECTURES.add(
    "gru",
    Architecture(
        "GRU (torch.nn.GRU's cell, unrolled) over the sequence, depth stacked layers of "
        "width units, readout from the top layer's last hidden state: r, z = sigmoid of "
        "W_ih x_t + b_ih + W_hh h_{t-1} + b_hh; n = tanh(W_in x_t + b_in + r (W_hn h_{t-1} "
        "+ b_hn)); h_t = (1 - z) n + z h_{t-1}",
        "each layer at each time step t = 1..T: gru1..gru<depth>; preact and act are the "
        "hidden state h_t; each gate",
        recurrent=True,
        gates=(("r", "sigmoid"), ("z", "sigmoid"), ("n", "tanh")),
    ),
)


def is_recurrent(arch: str) -> bool:
    """Whether ``arch`` reads a sequence (rnn, lstm, gru)."""
    return ARCHITECTURES.get(arch).recurrent


def gate_names(arch: str) -> tuple[str, ...]:
    """The gates of a gated cell in torch's order (none for the other architectures)."""
    return tuple(name for name, _ in ARCHITECTURES.get(arch).gates)
