"""The features of #18, #20 and #21 together: residual nets with Jacobian spectra, LSUV,
per-example statistics, layernorm, per-layer widths and init-only runs, each run tiny."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from initbench.config.spec import SpecError
from initbench.measure.jacobian import last_act_function
from initbench.nets.models import build_model, init_problems
from initbench.sweep.train import execute_run
from tests.conftest import make_config

COMBINATIONS: list[dict[str, Any]] = [
    {"model.residual": 1.0, "train.jacobian": True, "train.per_example": True},
    {"model.residual": "skipinit", "model.init": "lsuv"},
    {"model.residual": "1/sqrt(L)", "model.norm": "layer", "train.steps": 0},
    {"model.widths": [32, 16, 8], "model.width": 256, "train.jacobian": True, "model.init": "lsuv"},
    {"model.arch": "cnn", "model.residual": 1.0, "model.width": 4, "train.jacobian": True},
    {"model.norm": "layer", "train.jacobian": True, "train.per_example": True},
]


@pytest.mark.parametrize("dotted", COMBINATIONS, ids=lambda d: ",".join(map(str, d.values())))
def test_features_run_together(dotted: dict[str, Any]) -> None:
    result = execute_run(make_config(**dotted).as_dict())
    assert result.summary["status"] == "ok", result.summary.get("error")
    assert np.isfinite(result.layers["value"]).all()
    if dotted.get("train.jacobian"):
        assert len(result.spectra["value"]) > 0


def test_a_residual_nets_jacobian_is_of_its_last_stream() -> None:
    """The output the readout reads is the last block's stream, not its branch's act."""
    config = make_config(**{"model.residual": 1.0, "model.depth": 2})
    model = build_model(config.model, torch.Generator().manual_seed(0))
    x = torch.randn(1, 784)
    streams: list[torch.Tensor] = []

    class Streams:
        def watch(self, *args: Any) -> None:
            pass

        def watch_block(self, layer: int, stream: torch.Tensor, branch: torch.Tensor) -> None:
            streams.append(stream)

    model(x.reshape(1, 1, 28, 28), Streams())
    torch.testing.assert_close(last_act_function(model)(x[0]), streams[-1].flatten())


@pytest.mark.parametrize("dotted", [{"model.batchnorm": True}, {"model.norm": "batch"}])
def test_a_jacobian_with_batchnorm_by_either_key_is_refused(dotted: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="batch statistics couple"):
        make_config(**{**dotted, "train.jacobian": True})


def test_lsuv_with_fixup_is_refused() -> None:
    config = make_config(**{"model.residual": "fixup", "model.init": "lsuv"})
    ((key, reason),) = init_problems(config.model)
    assert key == "model.init" and "Fixup zeroes" in reason


GATED_COMBINATIONS: list[dict[str, Any]] = [
    {"model.arch": "lstm", "train.jacobian": True, "train.per_example": True},
    {"model.arch": "gru", "train.steps": 0, "train.clip_grad_norm": 1.0},
    {"model.arch": "lstm", "model.forget_bias": 1.0, "train.clip_grad_norm": 0.5},
    {"model.arch": "rnn", "model.norm": "layer", "model.init": "lsuv", "train.jacobian": True},
]


@pytest.mark.parametrize("dotted", GATED_COMBINATIONS, ids=lambda d: ",".join(map(str, d.values())))
def test_recurrent_features_run_together(dotted: dict[str, Any]) -> None:
    result = execute_run(make_config(**{"model.width": 8, **dotted}).as_dict())
    assert result.summary["status"] == "ok", result.summary.get("error")
    assert np.isfinite(result.layers["value"]).all()


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_norms_and_lsuv_are_refused_for_gated_cells(arch: str) -> None:
    with pytest.raises(SpecError, match="not built for arch"):
        make_config(**{"model.arch": arch, "model.norm": "layer"})
    config = make_config(**{"model.arch": arch, "model.init": "lsuv"})
    ((key, reason),) = init_problems(config.model)
    assert key == "model.init" and "gated cell" in reason
