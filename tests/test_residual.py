"""Residual MLPs (nets.residual): the branch scalings at init, the stream statistics the
probe records, and the residual mean field (meanfield.residual) against measurement."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from initbench.config.spec import ModelConfig
from initbench.meanfield import predict
from initbench.meanfield.residual import residual_stream
from initbench.measure.probes import Tape, measure
from initbench.nets import models

WIDTH = 256


def _model(residual: Any, depth: int = 6, **more: Any) -> ModelConfig:
    raw = {"depth": depth, "width": WIDTH, "init": "he_normal", "residual": residual, **more}
    return ModelConfig.model_validate(raw).resolved()


def _streams(config: ModelConfig, seed: int, batch: int = 256) -> tuple[torch.Tensor, list]:
    gen = torch.Generator().manual_seed(seed)
    model = models.build_model(config, gen).double()
    x = torch.randn(batch, 1, 28, 28, generator=gen, dtype=torch.float64)  # E[x^2] = 1
    tape = Tape()
    F.cross_entropy(model(x, tape), torch.randint(0, 10, (batch,), generator=gen)).backward()
    h1 = model.stem(x.flatten(1))
    return h1, [tape.tensors["stream"][k] for k in sorted(tape.tensors["stream"])], tape


@pytest.mark.parametrize("residual", ["skipinit", "fixup"])
def test_skipinit_and_fixup_are_the_identity_map_at_step_0(residual: str) -> None:
    h1, streams, _ = _streams(_model(residual, branch_layers=2), seed=0)
    for stream in streams:
        torch.testing.assert_close(stream, h1, rtol=0, atol=0)


def test_fixup_scales_the_first_branch_layers_and_zeroes_the_last() -> None:
    config = _model("fixup", depth=16, branch_layers=2)
    model = models.build_model(config, torch.Generator().manual_seed(0))
    first, last = model.blocks[0].layers
    assert float(last.affine.weight.detach().abs().max()) == 0.0
    # he_normal: Var = 2 / fan_in, times L^(-1/(2m-2))^2 = 16^-1
    assert float(first.affine.weight.detach().var()) == pytest.approx(2 / WIDTH / 16, rel=0.05)


def test_fixup_with_one_layer_branches_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="fixup needs branch_layers >= 2"):
        ModelConfig.model_validate({"residual": "fixup", "branch_layers": 1})


@pytest.mark.parametrize(
    "residual, per_block",
    [(1.0, 2.0), ("1/sqrt(L)", 1 + 1 / 6)],  # ReLU + He: q_F = q, so q grows by 1 + alpha^2
)
def test_theory_alpha_1_doubles_per_block_and_1_over_sqrt_l_stays_within_e(
    residual: Any, per_block: float
) -> None:
    columns = residual_stream({"model": _model(residual).model_dump()})
    q = np.array([2.0, *columns["stream_q"]])  # the stem: sigma_w^2 E[x^2] = 2
    np.testing.assert_allclose(q[1:] / q[:-1], per_block, rtol=1e-9)
    if residual != 1.0:
        assert q[-1] / q[0] < math.e


@pytest.mark.parametrize("residual, branch_layers", [(1.0, 1), (1.0, 2), ("1/sqrt(L)", 2)])
def test_measured_stream_follows_the_residual_mean_field(residual: Any, branch_layers: int) -> None:
    config = _model(residual, branch_layers=branch_layers)
    predicted = residual_stream({"model": config.model_dump()})["stream_q"]
    logs = []
    for seed in range(5):
        _, streams, _ = _streams(config, seed)
        logs.append([math.log(float(s.detach().square().mean())) for s in streams])
    logs = np.array(logs)
    spread = logs.std(axis=0, ddof=1)
    # the mean of 5 seeds within 3 standard errors (plus 2% for the finite width's bias)
    error = np.abs(logs.mean(axis=0) - np.log(predicted))
    np.testing.assert_array_less(error, 3 * spread / math.sqrt(5) + 0.02)


def test_measured_stream_gradient_follows_the_backward_mirror() -> None:
    config = _model(1.0, branch_layers=1)
    predicted = residual_stream({"model": config.model_dump()})["grad_stream_ratio"]
    logs = []
    for seed in range(5):
        _, _, tape = _streams(config, seed)
        grads = tape.gradients("stream")
        logs.append([math.log(float(g.var() / grads[-1].var())) for g in grads])
    error = np.abs(np.mean(logs, axis=0) - np.log(predicted))
    np.testing.assert_array_less(error, 0.25)


def test_the_probe_records_stream_and_branch_at_each_blocks_last_layer() -> None:
    config = _model(1.0, depth=3, branch_layers=2)
    model = models.build_model(config, torch.Generator().manual_seed(0))
    tape = Tape()
    F.cross_entropy(model(torch.randn(8, 1, 28, 28), tape), torch.arange(8)).backward()
    labels, values = measure(tape, model.watched_layers())
    found = {(layer, metric): v for (layer, _, _, metric), v in zip(labels, values, strict=True)}
    assert {layer for layer, metric in found if metric == "stream_var"} == {2, 4, 6}
    stream = tape.tensors["stream"][(4, 0)]
    assert found[(4, "stream_var")] == pytest.approx(
        float(stream.detach().double().var()), rel=1e-6
    )
    assert found[(4, "grad_stream_var")] == pytest.approx(
        float(stream.grad.double().var()), rel=1e-6
    )
    assert found[(4, "branch_sq")] == pytest.approx(
        float(tape.tensors["branch"][(4, 0)].detach().double().square().mean()), rel=1e-6
    )


def test_predict_gives_a_residual_nets_stream_per_block() -> None:
    config = {"model": _model(1.0, depth=4, branch_layers=2).model_dump()}
    pred = predict(config)
    assert pred.ok and pred.columns["layer"].tolist() == [2, 4, 6, 8]
    np.testing.assert_allclose(pred.columns["q"], residual_stream(config)["stream_q"])
    assert pred.summary()["forward_decay"] == pytest.approx(math.sqrt(2))  # 2 per block of 2


def test_brocks_channel_statistics_add_up_to_the_streams_second_moment() -> None:
    config = _model(1.0, depth=2, branch_layers=1)
    model = models.build_model(config, torch.Generator().manual_seed(1))
    tape = Tape()
    x = torch.randn(16, 1, 28, 28) + 0.5  # a mean that every channel keeps part of
    F.cross_entropy(model(x, tape), torch.arange(16) % 10).backward()
    labels, values = measure(tape, model.watched_layers())
    found = {(layer, metric): v for (layer, _, _, metric), v in zip(labels, values, strict=True)}
    stream = tape.tensors["stream"][(2, 0)].detach().double()  # (B, width)
    var, mean = torch.var_mean(stream, dim=0, correction=0)
    assert found[(2, "stream_chan_sq_mean")] == pytest.approx(float(mean.square().mean()))
    assert found[(2, "stream_chan_var")] == pytest.approx(float(var.mean()))
    total = found[(2, "stream_chan_sq_mean")] + found[(2, "stream_chan_var")]
    assert total == pytest.approx(found[(2, "stream_sq")], rel=1e-5)
    branch = tape.tensors["branch"][(2, 0)].detach().double()
    assert found[(2, "branch_chan_var")] == pytest.approx(float(branch.var(0, correction=0).mean()))


# --- the residual cnn: stride-2 blocks with a watched 1x1 projection shortcut -------------------


def _cnn(residual: Any, depth: int = 6) -> ModelConfig:
    raw = {"arch": "cnn", "depth": depth, "width": 8, "init": "he_normal", "residual": residual}
    return ModelConfig.model_validate(raw).resolved()


def test_residual_cnn_watches_its_projections_with_the_shapes_geometry_lists() -> None:
    from initbench.config.geometry import model_weight_shapes
    from initbench.config.memory import parameter_count

    config = _cnn(1.0)
    model = models.build_model(config, torch.Generator().manual_seed(0))
    watched = model.watched_layers()
    names = [layer.name for layer in watched]
    # 6 blocks of 2 layers; stride 2 at blocks 3 and 5, each followed by its projection
    assert names == [
        *("res1", "res2", "res3", "res4", "res5", "res6", "proj7"),
        *("res8", "res9", "res10", "res11", "proj12", "res13", "res14"),
    ]
    shapes = [(layer.index, "w", tuple(layer.weight.shape)) for layer in watched]
    assert shapes == model_weight_shapes(config.model_dump())
    assert parameter_count(config.model_dump()) == sum(p.numel() for p in model.parameters())
    assert watched[6].kind == "linear"
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert models.init_problems(config) == []


def test_residual_cnn_skipinit_is_the_shortcut_path_at_step_0() -> None:
    model = models.build_model(_cnn("skipinit"), torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 28, 28)
    tape = Tape()
    model(x, tape)
    h = model.stem(x)
    for block in model.blocks:
        h = block.shortcut.affine(h) if block.shortcut is not None else h
    last = tape.tensors["stream"][max(tape.tensors["stream"])]
    assert last.shape == (4, 8, 7, 7)
    torch.testing.assert_close(last, h, rtol=0, atol=0)


def test_residual_cnn_probe_records_stream_and_projection_statistics() -> None:
    config = _cnn("1/sqrt(L)", depth=3)
    model = models.build_model(config, torch.Generator().manual_seed(0))
    tape = Tape()
    F.cross_entropy(model(torch.randn(4, 1, 28, 28), tape), torch.arange(4)).backward()
    labels, _ = measure(tape, model.watched_layers())
    found = {(name, metric) for (_, _, name, metric) in labels}
    assert ("proj5", "preact_var") in found and ("proj5", "dead_frac") not in found
    assert ("res7", "stream_chan_var") in found and ("res7", "grad_stream_var") in found
    assert not predict({"model": config.model_dump()}).ok  # says why (residual cnn)


def test_the_per_layer_table_gives_each_blocks_branch_over_stream_ratio() -> None:
    """branch_ratio = branch_var / stream_var of the same run, step and block, averaged
    over the seeds; absent where a net has no residual blocks."""
    from initbench.analysis import per_layer

    rows = []
    for run, (branch, stream) in {"a": (1.0, 2.0), "b": (3.0, 4.0)}.items():
        for metric, value in (("branch_var", branch), ("stream_var", stream), ("preact_var", 5.0)):
            rows.append(
                dict(run_id=run, step=0, layer=2, t=0, name="res2", metric=metric, value=value)
            )
    table = per_layer(pd.DataFrame(rows), {"a": 0, "b": 0})
    assert table["branch_ratio_init_mean"].tolist() == pytest.approx([(0.5 + 0.75) / 2])
    plain = pd.DataFrame([r for r in rows if r["metric"] == "preact_var"])
    assert "branch_ratio_init_mean" not in per_layer(plain, {"a": 0, "b": 0}).columns
