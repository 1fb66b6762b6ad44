"""Watched-layer lists, shapes and strides of the three architectures."""

from __future__ import annotations

import pytest
import torch

from initbench.config import geometry
from initbench.nets.models import build_model
from tests.conftest import make_config


@pytest.mark.parametrize(
    ("depth", "strides"),
    [
        (1, [1]),
        (2, [1, 2]),
        (3, [1, 2, 2]),
        (6, [1, 1, 2, 1, 2, 1]),
        (9, [1, 1, 1, 2, 1, 1, 2, 1, 1]),
    ],
)
def test_cnn_downsamples_at_one_and_two_thirds_of_depth(depth: int, strides: list[int]) -> None:
    assert geometry.cnn_strides(depth) == strides


@pytest.mark.parametrize(
    ("arch", "prefix", "recurrent"),
    [("mlp", "fc", False), ("cnn", "conv", False), ("rnn", "rnn", True)],
)
def test_watched_layers_are_the_hidden_layers_in_forward_order(
    arch: str, prefix: str, recurrent: bool
) -> None:
    config = make_config(**{"model.arch": arch, "model.depth": 4, "model.width": 8})
    model = build_model(config.model, torch.Generator().manual_seed(0))
    layers = model.watched_layers()
    assert [layer.index for layer in layers] == [1, 2, 3, 4]
    assert [layer.name for layer in layers] == [f"{prefix}{i}" for i in range(1, 5)]
    assert all((layer.recurrent_weight is not None) == recurrent for layer in layers)
    built = []
    for layer in layers:
        built.append((layer.index, "w", tuple(layer.weight.shape)))
        if layer.recurrent_weight is not None:
            built.append((layer.index, "w_rec", tuple(layer.recurrent_weight.shape)))
    assert built == geometry.weight_shapes(arch, 4, 8)
    assert model(torch.zeros(3, *geometry.IMAGE_SHAPE)).shape == (3, geometry.NUM_CLASSES)


def test_cnn_maps_shrink_28_14_7() -> None:
    config = make_config(**{"model.arch": "cnn", "model.depth": 3, "model.width": 4})
    model = build_model(config.model, torch.Generator().manual_seed(0))
    h = torch.zeros(2, *geometry.IMAGE_SHAPE)
    sizes = []
    for block in model.blocks:
        h = block(h)
        sizes.append(h.shape[-1])
    assert sizes == [28, 14, 7]


def test_every_registered_architecture_has_a_model_class_and_no_other() -> None:
    from initbench.config.architectures import ARCHITECTURES
    from initbench.nets.models import MODEL_CLASSES

    assert set(MODEL_CLASSES) == set(ARCHITECTURES.names())
