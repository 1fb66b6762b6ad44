"""Probe statistics against a straightforward reference on tiny seeded nets.

The reference captures each affine/batchnorm/activation output with forward hooks and
differentiates the loss with torch.autograd.grad - a path independent of the Tape - and
computes every statistic by its definition (initbench.measure.catalog). The probe computes
in float32 (with compensation), so values agree at float32 precision: relative 1e-5, a
mean to 1e-5 of its tensor's RMS. tests/test_fast_path.py covers every model, metric
and path (fast, two-pass, non-finite) against the same kind of reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from initbench.measure.counts import dead_fraction, saturated_fraction
from initbench.measure.probes import measure, moments
from initbench.measure.recorder import first_non_finite
from initbench.measure.tape import Tape
from initbench.nets.models import build_model
from tests.conftest import make_config

BATCH = 24


def _reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[tuple, float]:
    """(layer, metric) -> value for a feed-forward model, by hooks and autograd.grad."""
    captured: dict[str, list[torch.Tensor]] = {"preact": [], "normed": [], "act": []}
    hooks = []
    for block in model.blocks:
        hooks.append(
            block.affine.register_forward_hook(lambda m, i, o: captured["preact"].append(o))
        )
        if block.norm is not None:
            hooks.append(
                block.norm.register_forward_hook(lambda m, i, o: captured["normed"].append(o))
            )
        hooks.append(block.act.register_forward_hook(lambda m, i, o: captured["act"].append(o)))
    loss = F.cross_entropy(model(x), y)
    for hook in hooks:
        hook.remove()
    grads = torch.autograd.grad(loss, captured["preact"] + captured["normed"], retain_graph=True)
    n = len(captured["preact"])
    grad_of = {"preact": grads[:n], "normed": grads[n:]}
    stats: dict[tuple, float] = {}
    for quantity, tensors in captured.items():
        for layer, tensor in enumerate(tensors, start=1):
            flat = tensor.detach().double().flatten()
            stats[(layer, f"{quantity}_mean")] = flat.mean().item()
            stats[(layer, f"{quantity}_var")] = flat.var().item()
            stats[(layer, f"{quantity}_sq")] = (flat**2).mean().item()
    for quantity, tensors in grad_of.items():
        for layer, tensor in enumerate(tensors, start=1):
            flat = tensor.double().flatten()
            stats[(layer, f"grad_{quantity}_var")] = flat.var().item()
            stats[(layer, f"grad_{quantity}_mean")] = flat.mean().item()
            stats[(layer, f"grad_{quantity}_sq")] = (flat**2).mean().item()
    return stats


def _assert_close(key: tuple, got: dict[tuple, float], want: dict[tuple, float]) -> None:
    """Float32 precision: relative 1e-5; a mean to 1e-5 of the tensor's RMS."""
    layer, metric = key
    if metric.endswith("_mean"):
        rms = want[(layer, metric.replace("_mean", "_sq"))] ** 0.5
        assert abs(got[key] - want[key]) <= 1e-5 * rms, (key, got[key], want[key])
    else:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=0), key


def _measured(model: Any, x: torch.Tensor, y: torch.Tensor) -> dict[tuple, float]:
    tape = Tape()
    loss = F.cross_entropy(model(x, tape), y)
    loss.backward()
    labels, values = measure(tape, model.watched_layers())
    return {
        (layer, metric): v
        for (layer, _t, _n, metric), v in zip(labels, values.tolist(), strict=True)
    }


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_tape_statistics_match_hook_reference(arch: str, batchnorm: bool, activation: str) -> None:
    config = make_config(
        **{
            "model.arch": arch,
            "model.batchnorm": batchnorm,
            "model.activation": activation,
            "model.init": "he_normal",
        }
    )
    model = build_model(config.model, torch.Generator().manual_seed(3))
    x = torch.randn(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    y = torch.arange(BATCH) % 10
    reference = _reference(model, x, y)
    measured = _measured(model, x, y)
    assert reference, "reference captured nothing"
    for key in reference:
        _assert_close(key, measured, reference)
    if batchnorm:
        for layer in range(1, config.model.depth + 1):
            # batchnorm's output has per-channel batch variance ~1 (biased, eps), so ~1 overall
            assert measured[(layer, "normed_var")] == pytest.approx(1.0, rel=0.05)


def test_rnn_statistics_per_time_step_match_reference() -> None:
    config = make_config(**{"model.arch": "rnn", "model.depth": 2, "model.width": 8})
    model = build_model(config.model, torch.Generator().manual_seed(0))
    x = torch.randn(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(BATCH) % 10
    # reference pass: capture the per-step preacts, differentiate with autograd.grad only
    capture = Tape()
    loss = F.cross_entropy(model(x, capture), y)
    preacts = [capture.tensors["preact"][(layer, t)] for layer in (1, 2) for t in range(1, 29)]
    grads = torch.autograd.grad(loss, preacts)
    # measured pass: the training path (tape + backward)
    tape = Tape()
    F.cross_entropy(model(x, tape), y).backward()
    labels, values = measure(tape, model.watched_layers())
    got = {
        (layer, t, metric): v
        for (layer, t, _n, metric), v in zip(labels, values.tolist(), strict=True)
    }
    for index, (preact, grad) in enumerate(zip(preacts, grads, strict=True)):
        layer, t = index // 28 + 1, index % 28 + 1
        assert got[(layer, t, "preact_var")] == pytest.approx(
            preact.detach().double().var().item(), rel=1e-5
        )
        assert got[(layer, t, "grad_preact_var")] == pytest.approx(
            grad.double().var().item(), rel=1e-5
        )
    # h_0 = 0, so the first step's preact is the input projection alone
    w_ih = model.layers[0].w_ih
    first = w_ih(x.reshape(BATCH, 28, 28)[:, 0]).detach().double()
    assert got[(1, 1, "preact_var")] == pytest.approx(first.var().item(), rel=1e-5)
    assert got[(1, 0, "w_rec_var")] == pytest.approx(
        model.layers[0].w_hh.weight.double().var().item(), rel=1e-5
    )


def test_moments_are_over_all_elements_not_per_unit() -> None:
    # Two perfectly correlated samples: per-unit variance over the batch is 0, but the
    # signal's variance over all elements is not (design.md: never average per-unit).
    row = torch.linspace(-1, 1, 50)
    stacked = torch.stack([row, row])[None]  # (G=1, B=2, units=50)
    mean, var, sq = moments(stacked)[0].tolist()
    assert var == pytest.approx(torch.cat([row, row]).double().var().item())
    assert var > 0.3  # while the per-unit variance over the batch is exactly 0
    assert mean == pytest.approx(0.0, abs=1e-6)  # float32 precision of an RMS-0.58 tensor
    assert sq == pytest.approx((row.double() ** 2).mean().item())


def test_moments_keep_their_precision_for_tiny_values() -> None:
    tiny = (
        torch.randn(1, 64, 32, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
        * 1e-20
    )
    var = moments(tiny)[0, 1].item()
    # abs=0: pytest's default abs of 1e-12 would accept any value near 1e-40
    assert var == pytest.approx(tiny.double().var().item(), rel=1e-6, abs=0)
    assert var > 0  # float32 squares of 1e-20 would underflow to 0


def test_dead_fraction_counts_units_never_positive() -> None:
    z = torch.tensor([[1.0, -1.0, 0.0, -2.0], [-1.0, -3.0, 0.0, 5.0]])  # (B=2, units=4)
    # unit 0 alive, unit 1 dead, unit 2 dead (0 is not > 0), unit 3 alive
    assert dead_fraction(z[None]).item() == pytest.approx(0.5)


def test_dead_fraction_of_conv_is_per_channel_over_batch_and_space() -> None:
    z = -torch.ones(1, 2, 3, 4, 4)  # (G=1, B=2, C=3, H, W)
    z[0, 1, 0, 3, 3] = 0.5  # channel 0 fires once, in one example at one position
    assert dead_fraction(z).item() == pytest.approx(2 / 3)


def test_saturated_fraction_uses_the_activation_half_range() -> None:
    tanh_out = torch.tensor([[[0.995, -0.999, 0.5, 0.0]]])
    assert saturated_fraction(tanh_out, -1.0, 1.0).item() == pytest.approx(0.5)
    sigmoid_out = torch.tensor([[[0.996, 0.004, 0.994, 0.5]]])  # beyond 0.995 or below 0.005
    assert saturated_fraction(sigmoid_out, 0.0, 1.0).item() == pytest.approx(0.5)


def test_dead_and_saturated_fractions_recorded_only_where_they_apply() -> None:
    for activation, present, absent in (
        ("relu", "dead_frac", "sat_frac"),
        ("tanh", "sat_frac", "dead_frac"),
    ):
        config = make_config(**{"model.activation": activation})
        model = build_model(config.model, torch.Generator().manual_seed(0))
        tape = Tape()
        model(torch.randn(8, 1, 28, 28), tape).sum().backward()
        metrics = {label[3] for label in measure(tape, model.watched_layers())[0]}
        assert present in metrics and absent not in metrics


def test_weight_statistics_match_the_parameters() -> None:
    config = make_config(**{"model.init": "he_normal", "model.width": 32})
    model = build_model(config.model, torch.Generator().manual_seed(0))
    tape = Tape()
    F.cross_entropy(model(torch.randn(8, 1, 28, 28), tape), torch.arange(8)).backward()
    labels, values = measure(tape, model.watched_layers())
    got = {
        (layer, metric): v
        for (layer, _t, _n, metric), v in zip(labels, values.tolist(), strict=True)
    }
    weight = model.blocks[1].affine.weight
    assert got[(2, "w_var")] == pytest.approx(weight.double().var().item(), rel=1e-5)
    assert got[(2, "w_norm")] == pytest.approx(weight.double().norm().item(), rel=1e-5)
    assert got[(2, "grad_w_norm")] == pytest.approx(weight.grad.double().norm().item(), rel=1e-5)
    assert np.isclose(got[(2, "w_var")] * 32, 2.0, rtol=0.3)  # he_normal: fan_in * Var = 2


def test_first_non_finite_follows_the_computation_order() -> None:
    labels = [
        (1, 0, "fc1", "grad_preact_var"),
        (3, 0, "fc3", "preact_var"),
        (2, 0, "fc2", "grad_preact_var"),
        (3, 0, "fc3", "grad_preact_var"),
    ]
    values = np.array([np.nan, 1.0, np.nan, np.nan])
    assert first_non_finite(labels, values, loss=np.inf) == {"what": "loss", "value": np.inf}
    # with a finite loss, the gradient nearest the output (layer 3) is where it started
    assert first_non_finite(labels, values, loss=1.0)["layer"] == 3
    values[1] = np.inf  # a forward statistic comes before the loss and every gradient
    assert first_non_finite(labels, values, loss=np.inf)["what"] == "preact_var"
    assert first_non_finite(labels, np.ones(4), loss=1.0) is None


def test_fractions_are_undefined_where_the_tensor_is_not_finite() -> None:
    z = torch.tensor([[[-1.0, -2.0], [-1.0, float("nan")]], [[-1.0, -2.0], [-3.0, -4.0]]])
    dead = dead_fraction(z)  # group 0 has a NaN: undefined, not "dead"; group 1 all dead
    assert torch.isnan(dead[0]) and dead[1].item() == 1.0
    sat = saturated_fraction(torch.tensor([[0.999, float("inf")], [0.999, 0.0]]), -1.0, 1.0)
    assert torch.isnan(sat[0]) and sat[1].item() == pytest.approx(0.5)


# --- the catalogue: each statistic defined once ---------------------------------------------


def test_every_statistic_of_the_catalogue_has_its_tensor_and_reduction() -> None:
    from initbench.measure.catalog import CATALOG, FRACTIONS, MOMENTS, TENSORS
    from initbench.measure.counts import COUNTS
    from initbench.measure.reduce import MOMENT_COLUMNS

    assert len({s.name for s in CATALOG}) == len(CATALOG)
    for statistic in CATALOG:
        assert set(statistic.of) <= set(TENSORS), statistic
        implemented = MOMENT_COLUMNS if statistic.reduction in MOMENTS else COUNTS
        assert statistic.reduction in implemented, statistic
    assert set(MOMENTS) == set(MOMENT_COLUMNS) and set(FRACTIONS) == set(COUNTS)


def test_the_results_schema_and_the_probe_take_the_catalogue_in_order() -> None:
    from initbench.measure.catalog import CATALOG, GATED, PER_EXAMPLE, STATISTICS
    from initbench.results import schema

    assert list(schema.LAYER_METRICS) == [s.name for s in (*CATALOG, *PER_EXAMPLE)]
    recorded = {}
    for arch in ("rnn", "lstm", "gru"):
        config = make_config(**{"model.arch": arch, "model.depth": 2, "model.width": 8})
        model = build_model(config.model, torch.Generator().manual_seed(0))
        tape = Tape()
        F.cross_entropy(model(torch.randn(4, 1, 28, 28), tape), torch.arange(4)).backward()
        recorded[arch] = {label[3] for label in measure(tape, model.watched_layers())[0]}
    metrics = recorded["rnn"]
    gated = {s.name for s in CATALOG if s.of[0] in GATED}
    # every statistic of an rnn layer is recorded, and nothing outside the catalogue
    # (residual blocks' stream statistics: tests/test_residual.py)
    assert metrics <= set(schema.LAYER_METRICS)
    residual = {"stream", "branch", "grad_stream"}  # tests/test_residual.py
    expected = {s.name for s in CATALOG if "normed" not in s.name and not s.kinds}
    assert metrics >= {s for s in expected - gated if STATISTICS[s].of[0] not in residual}
    # the gated cells record the rnn's and, between them, every gate statistic
    assert recorded["lstm"] & recorded["gru"] >= metrics
    assert recorded["lstm"] | recorded["gru"] >= gated
    assert not metrics & gated


def test_the_catalogue_imports_neither_torch_nor_numpy() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import initbench.measure.catalog\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
