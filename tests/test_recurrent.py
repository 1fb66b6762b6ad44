"""The gated cells (lstm, gru): torch's own nn.LSTM / nn.GRU as the reference for outputs
and gradients, per-gate-block initialisation, the forget bias, and every gate statistic
against a float64 reference written from the definitions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from initbench.config.activations import SATURATION_FRACTION
from initbench.config.spec import SpecError
from initbench.nets.models import build_model
from tests.conftest import make_config
from tests.test_fast_path import probe_step

WIDTH = 8


def _built(arch: str, seed: int = 0, **extra: Any) -> Any:
    config = make_config(
        **{"model.arch": arch, "model.depth": 2, "model.width": WIDTH, **extra, "seed": seed}
    )
    return build_model(config.model, torch.Generator().manual_seed(seed))


def _torch_twin(model: Any, cls: type[torch.nn.RNNBase]) -> torch.nn.RNNBase:
    """torch's fused module with the unrolled model's weights copied in."""
    first = model.layers[0].w_ih.in_features
    twin = cls(first, WIDTH, num_layers=len(model.layers), batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            getattr(twin, f"weight_ih_l{k}").copy_(layer.w_ih.weight)
            getattr(twin, f"bias_ih_l{k}").copy_(layer.w_ih.bias)
            getattr(twin, f"weight_hh_l{k}").copy_(layer.w_hh.weight)
            getattr(twin, f"bias_hh_l{k}").copy_(layer.w_hh.bias)
    return twin


@pytest.mark.parametrize(("arch", "cls"), [("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)])
def test_unrolled_cells_match_torch_outputs_and_gradients(
    arch: str, cls: type[torch.nn.RNNBase]
) -> None:
    # random biases (and a forget bias) so that every term of the cell counts
    model = _built(arch, **{"model.init": "xavier_normal", "model.bias_init": "torch_rnn"})
    twin = _torch_twin(model, cls)
    xs = torch.randn(5, 28, 28, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(5, 28, WIDTH, generator=torch.Generator().manual_seed(2))
    ours_in, theirs_in = xs.clone().requires_grad_(), xs.clone().requires_grad_()
    h = ours_in
    for layer in model.layers:
        h = layer(h)
    theirs, _ = twin(theirs_in)
    torch.testing.assert_close(h, theirs)
    (h * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad)
    for k, layer in enumerate(model.layers):
        for ours, name in ((layer.w_ih, "ih"), (layer.w_hh, "hh")):
            torch.testing.assert_close(ours.weight.grad, getattr(twin, f"weight_{name}_l{k}").grad)
            torch.testing.assert_close(ours.bias.grad, getattr(twin, f"bias_{name}_l{k}").grad)


@pytest.mark.parametrize(("arch", "gates"), [("lstm", 4), ("gru", 3)])
def test_orthogonal_recurrent_init_is_one_orthogonal_matrix_per_gate(arch: str, gates: int) -> None:
    model = _built(arch, **{"model.recurrent_init": {"name": "orthogonal", "gain": 1.5}})
    for layer in model.layers:
        blocks = layer.w_hh.weight.detach().chunk(gates, dim=0)
        assert len(blocks) == gates
        for block in blocks:  # square, and orthogonal times the gain on its own
            torch.testing.assert_close(block @ block.T, 2.25 * torch.eye(WIDTH))
        # distinct draws: one stacked semi-orthogonal draw would give blocks summing to I
        assert not torch.allclose(blocks[0], blocks[1])


def test_gate_blocks_take_their_own_fans() -> None:
    # xavier_uniform on an input block (hidden x 28): bound sqrt(6 / (28 + hidden))
    model = _built("lstm", **{"model.init": "xavier_uniform"})
    weight = model.layers[0].w_ih.weight.detach()
    bound = math.sqrt(6 / (28 + WIDTH))
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.9 * bound  # and not the stacked matrix's sqrt(6/(28+32))


def test_torch_rnn_draws_every_weight_and_bias_from_one_over_sqrt_hidden() -> None:
    model = _built("gru", **{"model.init": "torch_rnn", "model.bias_init": "torch_rnn"})
    bound = 1 / math.sqrt(WIDTH)
    for layer in model.layers:
        for tensor in (layer.w_ih.weight, layer.w_ih.bias, layer.w_hh.weight, layer.w_hh.bias):
            assert tensor.abs().max() <= bound
            assert tensor.abs().max() > 0.8 * bound


def test_forget_bias_is_added_to_the_forget_gate_only() -> None:
    model = _built("lstm", **{"model.forget_bias": 1.0, "model.bias_init": "zeros"})
    for layer in model.layers:
        bias = layer.w_ih.bias.detach()
        want = torch.zeros(4 * WIDTH)
        want[WIDTH : 2 * WIDTH] = 1.0  # gates i, f, g, o: the f block
        torch.testing.assert_close(bias, want)
        assert torch.count_nonzero(layer.w_hh.bias) == 0


def test_forget_bias_default_leaves_the_run_id() -> None:
    plain = make_config(**{"model.arch": "lstm"})
    assert "forget_bias" not in plain.identity()["model"]
    assert make_config(**{"model.arch": "lstm", "model.forget_bias": 1.0}).run_id != plain.run_id


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"model.arch": "gru", "model.forget_bias": 1.0}, "forget_bias", "only to arch lstm"),
        ({"model.arch": "mlp", "model.forget_bias": 1.0}, "forget_bias", "only to arch lstm"),
        ({"model.arch": "lstm", "model.activation": "relu"}, "activation", "own activations"),
        ({"model.arch": "gru", "model.batchnorm": True}, "batchnorm", "not available for arch"),
        ({"model.arch": "mlp", "model.recurrent_init": "orthogonal"}, "recurrent_init", "only"),
    ],
)
def test_gated_keys_refused_where_they_do_not_apply(
    overrides: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message) as info:
        make_config(**overrides)
    assert f"model.{key}" in str(info.value)


# --- the gate statistics against the definitions ---------------------------------------


def _cell_reference(arch: str, model: Any, xs: torch.Tensor, y: torch.Tensor) -> dict:
    """Every gated tensor at each (layer, t), in float64, from torch's equations, and the
    gradients of the hidden and cell states by autograd."""
    seen: dict[tuple[int, int, str], torch.Tensor] = {}
    h_in = xs.double()
    for layer in model.layers:
        w_ih, b_ih = layer.w_ih.weight.double(), layer.w_ih.bias.double()
        w_hh, b_hh = layer.w_hh.weight.double(), layer.w_hh.bias.double()
        h = c = torch.zeros(xs.shape[0], WIDTH, dtype=torch.float64)
        outputs = []
        for t in range(xs.shape[1]):
            x_part = h_in[:, t] @ w_ih.T + b_ih
            h_part = h @ w_hh.T + b_hh
            key = (layer.index, t + 1)
            if arch == "lstm":
                pre = dict(zip("ifgo", (x_part + h_part).chunk(4, dim=1), strict=True))
                act = {g: torch.sigmoid(p) for g, p in pre.items() if g != "g"}
                act["g"] = torch.tanh(pre["g"])
                c = act["f"] * c + act["i"] * act["g"]
                h = act["o"] * torch.tanh(c)
                c.retain_grad()
                seen[(*key, "cell")] = c
            else:
                xr, xz, xn = x_part.chunk(3, dim=1)
                hr, hz, hn = h_part.chunk(3, dim=1)
                pre = {"r": xr + hr, "z": xz + hz}
                act = {g: torch.sigmoid(p) for g, p in pre.items()}
                pre["n"] = xn + act["r"] * hn
                act["n"] = torch.tanh(pre["n"])
                h = (1 - act["z"]) * act["n"] + act["z"] * h
            h.retain_grad()
            seen[(*key, "hidden")] = h
            for gate in pre:
                seen[(*key, f"gate_{gate}_pre")] = pre[gate]
                seen[(*key, f"gate_{gate}")] = act[gate]
            outputs.append(h)
        h_in = torch.stack(outputs, dim=1)
    logits = h_in[:, -1] @ model.readout.weight.double().T + model.readout.bias.double()
    F.cross_entropy(logits, y).backward()
    return seen


def _expected(seen: dict) -> dict[tuple[int, int, str], float]:
    """(layer, t, metric) -> value by the definitions (unbiased var over all elements)."""
    out = {}
    for (layer, t, name), tensor in seen.items():
        values = tensor.detach().flatten()
        if name == "hidden":
            grad = tensor.grad.flatten()
            out[(layer, t, "preact_var")] = values.var().item()
            out[(layer, t, "act_var")] = values.var().item()
            out[(layer, t, "grad_preact_var")] = grad.var().item()
            continue
        out[(layer, t, f"{name}_mean")] = values.mean().item()
        out[(layer, t, f"{name}_var")] = values.var().item()
        if name == "cell":
            out[(layer, t, "grad_cell_mean")] = tensor.grad.mean().item()
            out[(layer, t, "grad_cell_var")] = tensor.grad.var().item()
        elif name in ("gate_i", "gate_f", "gate_o", "gate_r", "gate_z"):
            shut_or_open = (values - 0.5).abs() > SATURATION_FRACTION * 0.5
            out[(layer, t, f"{name}_sat_frac")] = shut_or_open.double().mean().item()
    return out


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_gate_statistics_match_their_definitions(arch: str) -> None:
    # large biases push the sigmoid gates into saturation, so sat_frac is not just 0
    model = _built(arch, 3, **{"model.bias_init": {"name": "normal", "std": 3.0}})
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    y = torch.arange(16) % 10
    got, _ = probe_step(model, x, y)
    want = _expected(_cell_reference(arch, model, x.reshape(16, 28, 28), y))
    assert len(want) > 28 * 2 * 10
    for key, value in want.items():
        if key[2].endswith("_frac"):  # within one element of 16 x 8 (a float32 tie)
            assert abs(got[key] - value) <= 1 / 128 + 1e-12, key
        elif key[2].endswith("_mean"):
            assert got[key] == pytest.approx(value, abs=1e-5 * math.sqrt(1 + value**2)), key
        else:
            assert got[key] == pytest.approx(value, rel=1e-4), key
    fractions = [v for k, v in want.items() if k[2].endswith("_sat_frac")]
    assert 0 < max(fractions) < 1
    gated = {k[2] for k in got} - {k[2] for k in want}
    assert not {m for m in gated if m.startswith(("gate_", "cell", "grad_cell"))}, gated


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU])
def test_torch_rnn_per_gate_block_is_what_torch_draws(cls: type[torch.nn.RNNBase]) -> None:
    """torch.nn.LSTM/GRU draw weight_ih, weight_hh, bias_ih, bias_hh from U(+-1/sqrt(hidden))
    with the global generator; torch_rnn per gate block, in that order, from a Generator
    seeded alike gives the same numbers (a bias takes its weight block's fans)."""
    from initbench.config.initializers import compute_fans, initialize

    with torch.random.fork_rng():
        torch.manual_seed(5)
        module = cls(28, WIDTH)
    generator = torch.Generator().manual_seed(5)
    block = (WIDTH, 28)
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        tensor = getattr(module, name).detach()
        ours = torch.empty_like(tensor)
        fans = compute_fans(block if "ih" in name else (WIDTH, WIDTH))
        for part in ours.chunk(tensor.shape[0] // WIDTH, dim=0):
            initialize(part, "torch_rnn", {}, generator, fans=None if part.dim() == 2 else fans)
        assert torch.equal(ours, tensor), name


# --- gradient clipping -------------------------------------------------------------------


def test_clipping_bounds_the_update_and_records_the_norm_before_it() -> None:
    from initbench.sweep.train import Trainer

    config = make_config(
        **{"model.arch": "lstm", **{"model.width": WIDTH, "model.depth": 1}, "train.steps": 3}
        | {"train.clip_grad_norm": 0.05, "train.log_every": 1, "model.init": "he_normal"}
    )
    trainer = Trainer(config, torch.device("cpu"))
    trainer.setup()
    params = list(trainer.model.parameters())
    for step in range(3):
        trainer.train_step(step)  # probe, clip, update: the clipped gradients are kept
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        assert after <= 0.05 * (1 + 1e-5)
    columns = trainer.curve_columns()
    pre = columns["value"][columns["metric"] == "preclip_grad_norm"]
    clipped = columns["value"][columns["metric"] == "clipped"]
    probed = columns["value"][columns["metric"] == "grad_norm"][:3]  # the probe's, pre-clip
    assert pre.shape == clipped.shape == (3,)
    np.testing.assert_allclose(pre, probed, rtol=1e-5)
    assert list(clipped) == [float(v > 0.05) for v in pre] and clipped.any()


def test_no_clipping_by_default_and_the_run_id_stays() -> None:
    plain = make_config()
    assert plain.train.clip_grad_norm == 0.0
    assert "clip_grad_norm" not in plain.identity()["train"]
    assert make_config(**{"train.clip_grad_norm": 1.0}).run_id != plain.run_id
    with pytest.raises(SpecError, match="greater than or equal to 0"):
        make_config(**{"train.clip_grad_norm": -1.0})


# --- the forget bias over 784 steps ------------------------------------------------------


def _cell_gradient_variance(forget_bias: float) -> torch.Tensor:
    """Var of dLoss/dc_t at t = 1..784 of an LSTM at init reading 784 pixels (float32)."""
    from initbench.measure.tape import Tape

    config = make_config(
        **{"model.arch": "lstm", "model.depth": 1, "model.width": 16}
        | {"model.init": "xavier_normal", "model.recurrent_init": "orthogonal"}
        | {"model.forget_bias": forget_bias, "data.sequence": "pixels"}
    )
    model = build_model(config.model, torch.Generator().manual_seed(0), "pixels")
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    tape = Tape()
    F.cross_entropy(model(x, tape), torch.arange(16) % 10).backward()
    return torch.stack([g.double().var() for g in tape.gradients("cell")])  # (784,)


def test_forget_bias_one_keeps_the_cell_gradient_alive_over_784_steps() -> None:
    # along the cell path dc_T/dc_t is the product of the forget gates: sigmoid(0) = 0.5 a
    # step against sigmoid(1) = 0.73 (Gers et al. 2000; Jozefowicz et al. 2015)
    zero, one = _cell_gradient_variance(0.0), _cell_gradient_variance(1.0)
    assert zero.shape == one.shape == (784,)
    # bias 0: the gradient underflows float32 to exactly 0 hundreds of steps before t = 1
    assert (zero == 0).sum() > 300 and zero[0] == 0
    # bias 1: it reaches t = 1, smaller but alive, and decays far slower per step
    assert (one > 0).all()
    per_step_one = (one[0] / one[-1]) ** (1 / 783)
    alive = zero > 0
    first = int(alive.nonzero()[0])
    per_step_zero = (zero[first] / zero[-1]) ** (1 / (783 - first))
    assert per_step_one > 0.8 > 0.65 > per_step_zero


def test_a_grid_of_whole_model_sections_is_labelled_by_what_each_sets() -> None:
    from pathlib import Path

    from initbench.config.spec import load_spec
    from initbench.sweep.runner import describe

    spec = load_spec(Path(__file__).parents[1] / "configs" / "gated_through_time.yaml")
    labels = [describe(run, spec.grid_keys) for run in spec.runs]
    assert len(set(labels)) == len(labels) == 18  # 9 cells x 2 seeds, each told apart
    assert "arch=rnn depth=1 width=64 activation=relu" in labels[4]
    assert labels[-1].endswith("recurrent_init=orthogonal forget_bias=1.0 seed=1")


# --- the report ----------------------------------------------------------------------------


def test_the_report_shows_the_gates_and_the_cell_state(tmp_path) -> None:
    import yaml

    from initbench.analysis import Thresholds
    from initbench.config.spec import build_spec
    from initbench.reporting import build_reports
    from initbench.reporting.figures import time_figure
    from initbench.results import store
    from initbench.sweep.train import execute_run

    text = """\
data: {name: synthetic, n_train: 64, n_test: 32}
model: {depth: 1, width: 8}
train: {steps: 1, log_every: 1, batch_size: 16}
grid: {model.arch: [rnn, gru, lstm]}
"""
    spec = build_spec({"name": "gated", **yaml.safe_load(text)}, "gated", text)
    store.write_spec(tmp_path / "gated", text)
    for run in spec.runs:
        store.write_run(tmp_path / "gated", execute_run(run.as_dict(), "gated", threads=1))
    (rep,) = build_reports(tmp_path, Thresholds())
    axes = time_figure(rep).fig.axes
    labels = [ax.get_ylabel() for ax in axes if ax.get_ylabel()]
    assert labels == [f"{m} (all elements)" for m in ("preact_var", "grad_preact_var")] + [
        f"{m} (all elements)" for m in ("cell_var", "grad_cell_var")
    ]
    lstm = next(r for r in rep.config_rows if r["model.arch"] == "lstm")
    signal = rep.layer_signal(lstm["run_ids"].split())
    assert len(signal) == 28  # one row per time step of the one layer
    for metric in ("gate_f_mean", "gate_f_sat_frac", "cell_var", "grad_cell_var"):
        assert np.isfinite(signal[f"{metric}_init_mean"]).all(), metric
    from initbench.reporting.answer import answer_tables

    sentences = " ".join(note for table in answer_tables(rep) for note in table.notes)
    assert "per time step" in sentences and "per layer" not in sentences


def test_initbench_list_says_how_initializers_meet_gates_and_names_every_gate_metric() -> None:
    from click.testing import CliRunner

    from initbench.cli import main
    from initbench.measure.catalog import GATED, STATISTICS

    runner = CliRunner()
    listed = " ".join(runner.invoke(main, ["list", "initializers"]).output.split())
    assert "each initializer applies to each gate block alone" in listed
    assert "torch_rnn" in listed
    metrics = runner.invoke(main, ["list", "metrics"], terminal_width=400).output
    gate_metrics = [name for name, s in STATISTICS.items() if s.of[0] in GATED]
    assert len(gate_metrics) == 7 * 4 + 5 + 4  # 7 gates' moments, 5 sigmoid sat, cell
    for name in gate_metrics:
        assert name in metrics, name
