"""train.per_example: the spread of ln(q / q_in) over the batch's examples, against a
direct computation, and changing nothing else a run records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from initbench.measure import catalog
from initbench.measure.examples import per_example
from initbench.measure.tape import Tape
from initbench.nets.instrument import WatchedLayer
from initbench.results import schema
from initbench.sweep.train import execute_run
from tests.conftest import make_config


def _layer(index: int) -> WatchedLayer:
    weight = torch.nn.Parameter(torch.zeros(1))
    return WatchedLayer(index, f"fc{index}", weight, None, "relu", "rectifier", (0.0, 1.0))


def test_per_example_statistics_match_numpy() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(7, 1, 4, 4, generator=generator) * torch.arange(1.0, 8.0).view(7, 1, 1, 1)
    preact = torch.randn(7, 5, generator=generator) * 3
    tape = Tape()
    tape.watch(1, 0, preact, None, torch.relu(preact))
    labels, values = per_example(tape, inputs, [_layer(1)])
    got = dict(zip((label[3] for label in labels), values, strict=True))
    q_in = (inputs.double().numpy().reshape(7, -1) ** 2).mean(axis=1)
    for name, tensor in (("preact", preact), ("act", torch.relu(preact))):
        ratio = np.log((tensor.double().numpy() ** 2).mean(axis=1) / q_in)
        np.testing.assert_allclose(got[f"{name}_lnq_mean"], ratio.mean(), rtol=1e-12)
        np.testing.assert_allclose(got[f"{name}_lnq_var"], ratio.var(ddof=1), rtol=1e-12)
    assert all(label[:3] == (1, 0, "fc1") for label in labels)


def test_per_example_is_recorded_where_asked_and_changes_nothing_else() -> None:
    plain = make_config(**{"train.steps": 2, "train.log_every": 1})
    asked = make_config(**{"train.steps": 2, "train.log_every": 1, "train.per_example": True})
    assert plain.run_id == make_config(**{"train.steps": 2, "train.log_every": 1}).run_id
    assert asked.run_id != plain.run_id
    without, with_ = (pd.DataFrame(execute_run(c.as_dict()).layers) for c in (plain, asked))
    new = with_["metric"].isin([s.name for s in catalog.PER_EXAMPLE])
    pd.testing.assert_frame_equal(with_[~new].reset_index(drop=True), without)
    assert not without["metric"].str.contains("lnq").any()
    found = with_[new]
    assert set(found["step"]) == {0, 1, 2}  # every probed step
    assert set(found["metric"]) == {s.name for s in catalog.PER_EXAMPLE}
    assert len(found) == 3 * 3 * len(catalog.PER_EXAMPLE)  # steps x layers x statistics
    assert set(found["metric"]) <= set(schema.LAYER_METRICS)  # documented


def test_relu_act_lnq_mean_sits_near_he_init_theory() -> None:
    # He normal + relu: E[q_act / q_in] = fan_in scale 2/784 x 784 inputs x 1/2 = 1 at
    # every layer in the mean, so ln(q / q_in) is near 0 (minus half its variance)
    config = make_config(
        **{"model.init": "he_normal", "model.width": 512, "train.steps": 0},
        **{"train.per_example": True, "train.batch_size": 64},
    )
    layers = pd.DataFrame(execute_run(config.as_dict()).layers)
    at = layers[(layers["metric"] == "act_lnq_mean")].sort_values("layer")["value"].to_numpy()
    assert np.all(np.abs(at) < 0.1)
