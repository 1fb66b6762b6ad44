"""The probe's fast path against a straightforward float64 reference (issue 7).

The reference captures every watched tensor with forward hooks, differentiates the loss
with ``torch.autograd.grad`` (independent of the Tape and of ``retain_grad``) and computes
each statistic from its definition in float64. The probe computes in float32 with
compensation, so agreement is asserted at float32 precision:

* var, sq, norm and the gradient norm: relative 1e-5;
* mean: 1e-5 of the tensor's RMS (a mean near 0 has no relative precision in float32);
* dead_frac and sat_frac: exactly (the same comparisons on the same float32 elements);
* a non-finite value: the same value (NaN, +inf or -inf).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from initbench.config.activations import ACTIVATIONS, SATURATION_FRACTION
from initbench.config.spec import SpecError
from initbench.measure.counts import Scratch
from initbench.measure.probes import Launched, Probe, moments
from initbench.measure.reduce import (
    CHUNK,
    MAX_KAPPA2,
    PACK_LIMIT,
    PARTIAL,
    Layout,
    Reducer,
    chunks,
    reduction_order,
)
from initbench.measure.tape import Tape
from initbench.nets.models import build_model
from initbench.sweep.train import execute_run
from tests.conftest import make_config

BATCH = 16
RTOL = 1e-5
Key = tuple[int, int, str]  # (layer, t, metric)


# --- the reference -----------------------------------------------------------------------


def _ref_moments(tensor: torch.Tensor) -> dict[str, float]:
    flat = tensor.detach().double().flatten()
    return {
        "mean": flat.mean().item(),
        "var": flat.var().item() if flat.numel() > 1 else math.nan,  # unbiased: n - 1 = 0
        "sq": (flat * flat).mean().item(),
        "norm": torch.linalg.vector_norm(flat).item(),
        "rms": (flat * flat).mean().sqrt().item(),
    }


def _capture(model: torch.nn.Module) -> tuple[dict[str, dict[tuple[int, int], Any]], list]:
    """Forward hooks recording preact, normed and act per (layer, t)."""
    seen: dict[str, dict[tuple[int, int], Any]] = defaultdict(dict)
    hooks = []
    if hasattr(model, "blocks"):
        for block in model.blocks:
            spots = [("preact", block.affine), ("normed", block.norm), ("act", block.act)]
            for quantity, module in spots:
                if module is None:
                    continue

                def hook(m, i, o, q=quantity, layer=block.index):
                    seen[q][(layer, 0)] = o

                hooks.append(module.register_forward_hook(hook))
    else:  # rnn: the activation module runs once per time step, on that step's preact
        for layer in model.layers:

            def step(m, i, o, layer=layer.index):
                t = sum(1 for key in seen["act"] if key[0] == layer) + 1
                seen["preact"][(layer, t)], seen["act"][(layer, t)] = i[0], o

            hooks.append(layer.act.register_forward_hook(step))
    return seen, hooks


def _weights(model: torch.nn.Module) -> list[tuple[int, str, torch.nn.Parameter]]:
    if hasattr(model, "blocks"):
        return [(b.index, "w", b.affine.weight) for b in model.blocks]
    return [
        (r.index, prefix, w)
        for r in model.layers
        for prefix, w in (("w", r.w_ih.weight), ("w_rec", r.w_hh.weight))
    ]


def _fractions(model: Any, seen: dict, out: dict[Key, tuple[float, float]]) -> None:
    entry = ACTIVATIONS.get(model.config.activation["name"])
    source = "normed" if seen.get("normed") else "preact"
    for quantity, kind in ((source, "rectifier"), ("act", "bounded")):
        if entry.kind != kind:
            continue
        for (layer, t), tensor in seen[quantity].items():
            x = tensor.detach()
            if kind == "rectifier":  # units (channels) never > 0 over batch (and space)
                alive = (x > 0).transpose(0, 1).reshape(x.shape[1], -1).any(dim=1)
                value = 1.0 - alive.double().mean().item()
            else:
                low, high = entry.output_range
                beyond = (x - (low + high) / 2).abs() > SATURATION_FRACTION * (high - low) / 2
                value = beyond.double().mean().item()
            value = value if torch.isfinite(x).all() else math.nan
            metric = "dead_frac" if kind == "rectifier" else "sat_frac"
            out[(layer, t, metric)] = (value, 1.0)


def reference(model: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, float]:
    """(layer, t, metric) -> (value, scale) by the definitions, and the global grad norm."""
    seen, hooks = _capture(model)
    loss = F.cross_entropy(model(x), y)
    for hook in hooks:
        hook.remove()
    targets = [(f"grad_{q}", k, seen[q][k]) for q in ("preact", "normed") for k in seen[q]]
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, [t for *_, t in targets] + params)
    out: dict[Key, tuple[float, float]] = {}
    tensors = [(q, k, t) for q in ("preact", "normed", "act") for k, t in seen[q].items()]
    tensors += [(q, k, g) for (q, k, _), g in zip(targets, grads, strict=False)]
    for quantity, (layer, t), tensor in tensors:
        stats = _ref_moments(tensor)
        for m in ("mean", "var", "sq"):
            out[(layer, t, f"{quantity}_{m}")] = (stats[m], stats["rms"])
    grad_of = dict(zip((id(p) for p in params), grads[len(targets) :], strict=True))
    for layer, prefix, weight in _weights(model):
        w, g = _ref_moments(weight), _ref_moments(grad_of[id(weight)])
        for m in ("mean", "var", "norm"):
            out[(layer, 0, f"{prefix}_{m}")] = (w[m], w["rms"])
        for m in ("var", "norm"):
            out[(layer, 0, f"grad_{prefix}_{m}")] = (g[m], g["rms"])
    _fractions(model, seen, out)
    norm = torch.linalg.vector_norm(
        torch.cat([g.double().flatten() for g in grads[len(targets) :]])
    )
    return out, norm.item()


# --- comparison --------------------------------------------------------------------------


def assert_float32_close(key: Any, got: float, want: float, scale: float) -> None:
    """Equal at float32 precision (see the module docstring)."""
    if not math.isfinite(want):
        assert (math.isnan(got) and math.isnan(want)) or got == want, (key, got, want)
    elif str(key[-1]).endswith("_frac"):
        assert got == want, (key, got, want)
    elif str(key[-1]).endswith("_mean"):
        assert abs(got - want) <= RTOL * scale + 1e-300, (key, got, want, scale)
    else:
        assert got == pytest.approx(want, rel=RTOL, abs=1e-300), (key, got, want)


def probe_step(model: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[Key, float], float]:
    """The training path: a Tape, loss.backward(), then one Probe measurement."""
    model.zero_grad(set_to_none=True)
    tape = Tape()
    F.cross_entropy(model(x, tape), y).backward()
    labels, values, grad_norm = Probe(model.watched_layers(), list(model.parameters())).measure(
        tape
    )
    got = {
        (layer, t, metric): v
        for (layer, t, _, metric), v in zip(labels, values.tolist(), strict=True)
    }
    assert len(got) == len(labels), "a (layer, t, metric) appears twice"
    return got, grad_norm


def _model(arch: str, batchnorm: bool, activation: str, **extra: Any) -> Any:
    config = make_config(
        **{
            "model.arch": arch,
            "model.batchnorm": batchnorm,
            "model.activation": activation,
            "model.init": "he_normal",
            **extra,
        }
    )
    return build_model(config.model, torch.Generator().manual_seed(3))


def _batch(seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(BATCH) % 10


CASES = [
    (arch, batchnorm, activation)
    for arch in ("mlp", "cnn")
    for batchnorm in (False, True)
    for activation in ("relu", "tanh", "sigmoid", "linear")
] + [("rnn", False, activation) for activation in ("tanh", "relu", "sigmoid")]


@pytest.mark.parametrize("arch, batchnorm, activation", CASES)
def test_fast_path_matches_the_float64_reference(arch, batchnorm, activation) -> None:
    model = _model(arch, batchnorm, activation, **({"model.depth": 2} if arch == "rnn" else {}))
    x, y = _batch()
    got, grad_norm = probe_step(model, x, y)
    want, want_norm = reference(model, x, y)
    assert set(got) == set(want), set(got) ^ set(want)
    for key, (value, scale) in want.items():
        assert_float32_close(key, got[key], value, scale)
    assert grad_norm == pytest.approx(want_norm, rel=RTOL)


def test_rnn_takes_no_batchnorm() -> None:  # so "with batchnorm" covers mlp and cnn only
    with pytest.raises(SpecError, match="batchnorm is not available for arch rnn"):
        make_config(**{"model.arch": "rnn", "model.batchnorm": True})


@pytest.mark.parametrize("arch", ["mlp", "cnn", "rnn"])
def test_a_diverging_step_gives_the_reference_non_finite_values(arch: str) -> None:
    model = _model(arch, False, "relu", **({"model.depth": 2} if arch == "rnn" else {}))
    with torch.no_grad():  # exploding weights: layer 2's preact overflows, then inf and NaN
        for _, _, weight in _weights(model):
            weight.mul_(1e20)
    x, y = _batch()
    got, _ = probe_step(model, x, y)
    want, _ = reference(model, x, y)
    assert any(not math.isfinite(v) for v, _ in want.values())
    for key, (value, scale) in want.items():
        assert_float32_close(key, got[key], value, scale)


def test_repeated_measurements_reuse_the_plan_and_agree() -> None:
    model = _model("mlp", True, "relu")
    x, y = _batch()
    probe = Probe(model.watched_layers(), list(model.parameters()))
    results = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        tape = Tape()
        F.cross_entropy(model(x, tape), y).backward()
        results.append(probe.measure(tape))
    assert len(probe._plans) == 1
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]


def test_a_weight_without_gradient_has_nan_gradient_statistics() -> None:
    model = _model("mlp", False, "relu")
    tape = Tape()
    F.cross_entropy(model(_batch()[0], tape), _batch()[1]).backward()
    model.blocks[1].affine.weight.grad = None
    labels, values, _ = Probe(model.watched_layers()).measure(tape)
    got = {
        (layer, metric): v for (layer, _, _, metric), v in zip(labels, values.tolist(), strict=True)
    }
    assert math.isnan(got[(2, "grad_w_var")]) and math.isnan(got[(2, "grad_w_norm")])
    assert math.isfinite(got[(2, "w_var")]) and math.isfinite(got[(1, "grad_w_var")])


# --- the two paths on chosen data --------------------------------------------------------


def _rows(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Named rows of n float32 elements that exercise each path."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g)
    rows = {
        "gaussian": z,
        "relu": z.clamp(min=0),
        "kappa2 at the limit": z + math.sqrt(MAX_KAPPA2 - 1.3),  # sq / var just below it
        "large mean": 1000.0 + z,  # sq / var ~ 1e6: Σx² − (Σx)²/n would cancel
        "constant": torch.full((n,), 0.3),
        "zeros": torch.zeros(n),
        "tiny": 1e-20 * z,  # float32 squares underflow
        "huge": 1e30 * z,  # float32 squares overflow
        "one huge element": torch.where(torch.arange(n) == n // 2, 3e38, z),
        "mixed scales": z * torch.logspace(-30, 30, n),
    }
    for name, value in (("+inf", math.inf), ("-inf", -math.inf), ("nan", math.nan)):
        rows[name] = torch.where(torch.arange(n) == n - 1, value, z)
    rows["+inf and -inf"] = torch.where(torch.arange(n) == 0, -math.inf, rows["+inf"])
    return rows


@pytest.mark.parametrize(
    "n", [1, 2, 7, 1000, PARTIAL, PARTIAL + 1, 3 * PARTIAL - 5, 50_000, PACK_LIMIT + 1]
)
def test_moments_match_the_reference_on_every_kind_of_row(n: int) -> None:
    rows = _rows(n)
    stacked = torch.stack(list(rows.values()))  # (G, n)
    got = moments(stacked).tolist()
    for (name, row), (mean, var, sq) in zip(rows.items(), got, strict=True):
        want = _ref_moments(row)
        for metric, value in (("mean", mean), ("var", var), ("sq", sq)):
            assert_float32_close((name, n, metric), value, want[metric], want["rms"])


def fast_path(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(G, n) -> (G, 4) statistics by the fast path alone (no two-pass repair), and
    whether each row is trusted (taken by the fast path)."""
    tensors = list(rows)
    layout = Layout([tuple(t.shape) for t in tensors])
    total, squares = layout.sums(Reducer(layout).launch(tensors, Scratch()).cpu().numpy())
    return layout.stats_from_sums(total, squares), layout.trusted(total, squares)


def test_the_fast_path_is_taken_only_where_it_keeps_float32_precision() -> None:
    rows = _rows(4 * PARTIAL)
    fast = dict(zip(rows, fast_path(torch.stack(list(rows.values())))[1], strict=True))
    kept = ("gaussian", "relu", "kappa2 at the limit")
    assert all(fast[name] for name in kept)
    assert not any(fast[name] for name in rows if name not in kept)


def test_fast_path_alone_keeps_float32_precision() -> None:
    # the rows the fast path keeps, at sizes around the partial-sum length and beyond
    for n in (PARTIAL - 1, PARTIAL, 16 * PARTIAL + 3, 1_605_632):
        for name in ("gaussian", "relu", "kappa2 at the limit"):
            row = _rows(n, seed=n)[name]
            stats, trusted = fast_path(row[None])
            assert trusted[0], (name, n)
            want = _ref_moments(row)
            for metric, value in zip(("mean", "var", "sq", "norm"), stats[0], strict=True):
                assert_float32_close((name, n, metric), value, want[metric], want["rms"])


def test_large_tensors_are_read_alone_and_small_ones_packed_in_order() -> None:
    # regression: a large row's group key (its index) once equalled a small 1-d shape
    big = (1, 2 * PACK_LIMIT)
    shapes = [(3,), (3,), big, big, (2,), (2,), (2,)]
    order = reduction_order([math.prod(shape) for shape in shapes])
    found = chunks([math.prod(shapes[row]) for row in order])
    assert sorted((order[c.start : c.stop], c.alone) for c in found) == [
        ([0, 1, 4, 5, 6], False),
        ([2], True),
        ([3], True),
    ]


def test_a_stored_tape_gives_the_same_statistics_as_a_plain_one() -> None:
    # cnn layer 1 at batch 16: 16 x 16 x 28 x 28 >= PACK_LIMIT, so stored and hooked
    model = _model("cnn", True, "relu")
    x, y = _batch()
    probe = Probe(model.watched_layers(), list(model.parameters()))
    results = []
    for store in (None, probe.store):
        model.zero_grad(set_to_none=True)
        tape = Tape(store=store)
        F.cross_entropy(model(x, tape), y).backward()
        results.append(probe.measure(tape))
    stored = [k for k, t in tape.tensors["preact"].items() if t.numel() >= PACK_LIMIT]
    assert stored and all(tape.grads["preact"].get(k) is not None for k in stored)
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("arch", ["cnn", "rnn"])
def test_probing_every_step_leaves_training_bit_for_bit_unchanged(arch: str) -> None:
    # the cnn's layer-1 tensors are stored and their gradients hooked; the rnn's are not
    def run(log_every: int) -> tuple[dict[int, float], float]:
        config = make_config(**{"model.arch": arch, "train.log_every": log_every})
        result = execute_run(config.as_dict())
        c = result.curves
        curves = zip(c["step"], c["metric"], c["value"], strict=True)
        return {s: v for s, m, v in curves if m == "loss"}, result.summary["test_loss"]

    (every, test_every), (rarely, test_rarely) = run(1), run(1000)
    assert set(rarely) == {0, 6} and all(every[step] == rarely[step] for step in rarely)
    assert test_every == test_rarely


# --- steps finished later, together (Recorder.add_deferred) ---------------------------------


def _run_columns(monkeypatch: pytest.MonkeyPatch, defer: bool, **dotted: Any):
    """The layer table and curves of one run, with steps deferred or all finished at once."""
    with monkeypatch.context() as patch:
        if not defer:
            patch.setattr(Launched, "defer", lambda self, host: None)
        result = execute_run(make_config(**dotted).as_dict())
    return result.summary["status"], result.layers, result.curves


@pytest.mark.parametrize(
    "dotted",
    [
        {"model.arch": "mlp", "model.activation": "relu"},
        {"model.arch": "cnn", "model.batchnorm": True, "model.activation": "tanh"},
        {"model.arch": "rnn", "model.activation": "tanh"},
        {"model.init": "zeros"},  # exactly-zero variances: rows the two-pass path measures
        {"train.lr": 10.0},  # diverges at step 5, after deferred steps
    ],
    ids=["mlp", "cnn-bn-tanh", "rnn-tanh", "zeros", "diverging"],
)
def test_deferred_steps_give_the_values_of_steps_finished_at_once(
    monkeypatch: pytest.MonkeyPatch, dotted: dict[str, Any]
) -> None:
    dotted = {"train.log_every": 1, "train.steps": 8, **dotted}
    status, layers, curves = _run_columns(monkeypatch, True, **dotted)
    status_now, layers_now, curves_now = _run_columns(monkeypatch, False, **dotted)
    assert status == status_now and (status == "diverged") == ("train.lr" in dotted)
    for name in layers:
        if layers[name].dtype == object:
            assert list(layers[name]) == list(layers_now[name])
        else:  # bit for bit, NaN where NaN
            np.testing.assert_array_equal(layers[name], layers_now[name], strict=True)
    for name in curves:
        np.testing.assert_array_equal(curves[name], curves_now[name], strict=True)


def test_a_deferred_run_defers_its_finite_steps_and_finishes_the_others_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bool] = []
    defer = Launched.defer

    def counting(self: Launched, host: np.ndarray) -> Any:
        deferred = defer(self, host)
        calls.append(deferred is not None)
        return deferred

    monkeypatch.setattr(Launched, "defer", counting)
    execute_run(make_config(**{"train.log_every": 1}).as_dict())
    assert calls and all(calls)  # a healthy he-initialised net: every step deferred
    calls.clear()
    execute_run(make_config(**{"train.log_every": 1, "model.init": "zeros"}).as_dict())
    assert calls and not any(calls)  # exactly-zero variances go to the two-pass path


@pytest.mark.parametrize("seed", range(20))
def test_all_trusted_agrees_with_trusted_row_by_row(seed: int) -> None:
    # rows of every kind the bounds separate: ordinary, large mean, constant, tiny, huge
    generator = torch.Generator().manual_seed(seed)
    kinds = [
        lambda n: torch.randn(n, generator=generator),
        lambda n: torch.randn(n, generator=generator) * 1e-3 + 1.0,
        lambda n: torch.full((n,), 0.1),
        lambda n: torch.randn(n, generator=generator) * 1e-17,
        lambda n: torch.randn(n, generator=generator) * 1e17,
        lambda n: torch.randn(n, generator=generator) * 0.5 + 1.0,  # sq / var near the bound
    ]
    picks = torch.randint(len(kinds), (4,), generator=generator).tolist()
    sizes = torch.randint(1, 3 * PARTIAL, (4,), generator=generator).tolist()
    tensors = [kinds[k](n) for k, n in zip(picks, sizes, strict=True)]
    layout = Layout([tuple(t.shape) for t in tensors])
    host = Reducer(layout).launch(tensors, Scratch()).cpu().numpy()
    total, squares = layout.sums(host)
    assert layout.all_trusted(total, squares) == bool(layout.trusted(total, squares).all())


def test_padding_shared_by_packed_chunks_is_zeroed_again_every_step() -> None:
    # rows that are not whole pieces fill more than one packed chunk; the chunks share a
    # buffer, and the second chunk's longer rows land on the first chunk's padding
    sizes = [3_000] * (CHUNK // 3_072) + [5_000] * 6  # 3,000 elements take 3 pieces (3,072)
    layout = Layout([(n,) for n in sizes])
    assert sum(not chunk.alone for chunk in layout.chunks) == 2
    generator = torch.Generator().manual_seed(0)
    scratch, reducer = Scratch(), Reducer(layout)
    for offset in (0.5, -0.5):  # the second step finds the first step's values in the padding
        tensors = [torch.randn(n, generator=generator) + offset for n in sizes]
        host = reducer.launch(tensors, scratch).cpu().numpy()
        stats, _ = layout.finish(host, tensors)
        reference = [t.double() for t in tensors]
        np.testing.assert_allclose(stats[:, 0], [t.mean().item() for t in reference], rtol=1e-5)
        np.testing.assert_allclose(stats[:, 1], [t.var().item() for t in reference], rtol=1e-5)
