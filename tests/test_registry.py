"""The name -> entry registries shared by every extension point."""

from __future__ import annotations

import pytest

from initbench.config.activations import ACTIVATIONS
from initbench.config.architectures import ARCHITECTURES
from initbench.config.datasets import DATASETS
from initbench.config.initializers import INITIALIZERS
from initbench.config.optimizers import OPTIMIZERS
from initbench.config.registry import Registry, UnknownNameError


@pytest.fixture
def colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    reg.add("red", 1)
    reg.add("green", 2)
    reg.add("greenish", 3)
    reg.add("blue", 4)
    return reg


def test_register_decorator_stores_and_returns_entry() -> None:
    reg: Registry[object] = Registry("thing")

    @reg.register("widget")
    def widget() -> str:
        return "w"

    assert widget() == "w"  # the decorator hands the function back unchanged
    assert reg.get("widget") is widget
    assert "widget" in reg and len(reg) == 1


def test_names_and_items_keep_registration_order(colours: Registry[int]) -> None:
    assert colours.names() == ["red", "green", "greenish", "blue"]
    assert list(colours.items()) == [("red", 1), ("green", 2), ("greenish", 3), ("blue", 4)]


def test_duplicate_name_refused_and_first_entry_kept(colours: Registry[int]) -> None:
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        colours.add("red", 99)
    with pytest.raises(ValueError, match="already registered"):
        colours.register("blue")(5)
    assert colours.get("red") == 1 and colours.get("blue") == 4
    assert len(colours) == 4


def test_unknown_name_did_you_mean(colours: Registry[int]) -> None:
    with pytest.raises(UnknownNameError) as info:
        colours.get("gren")
    err = info.value
    assert isinstance(err, KeyError)  # callers may catch it as a lookup failure
    assert err.kind == "colour" and err.name == "gren"
    text = str(err)
    assert text.startswith("unknown colour 'gren'")
    suggested = text.split("did you mean: ")[1].split("?")[0].split(", ")
    assert suggested[0] == "green"  # closest first
    assert "blue" not in suggested  # only close matches
    assert "(available: red, green, greenish, blue)" in text
    assert err.message == text


def test_unknown_name_without_close_match_lists_all(colours: Registry[int]) -> None:
    with pytest.raises(UnknownNameError) as info:
        colours.get("xyzzy")
    assert "did you mean" not in str(info.value)
    assert "available: red, green, greenish, blue" in str(info.value)


@pytest.mark.parametrize("name", [None, 3, ["red"], {"name": "red"}])
def test_non_string_names_are_unknown_not_crashes(colours: Registry[int], name: object) -> None:
    with pytest.raises(UnknownNameError, match="unknown colour"):
        colours.get(name)
    assert name not in colours  # membership of an unhashable value is False, not TypeError


@pytest.mark.parametrize(
    ("registry", "typo", "meant"),
    [
        (INITIALIZERS, "he_normall", "he_normal"),
        (INITIALIZERS, "xavier_uniform_", "xavier_uniform"),
        (ACTIVATIONS, "rleu", "relu"),
        (ACTIVATIONS, "leakyrelu", "leaky_relu"),
        (DATASETS, "synthetc", "synthetic"),
        (ARCHITECTURES, "mpl", "mlp"),
        (OPTIMIZERS, "adamw", "adam"),
    ],
)
def test_project_registries_suggest(registry: Registry, typo: str, meant: str) -> None:
    with pytest.raises(UnknownNameError, match=f"did you mean: ([a-z_]+, )*{meant}\\b"):
        registry.get(typo)


def test_project_registries_are_filled() -> None:
    assert {"mlp", "cnn", "rnn"} <= set(ARCHITECTURES.names())
    assert {"sgd", "adam"} <= set(OPTIMIZERS.names())
    assert "synthetic" in DATASETS
    assert {
        "relu",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "silu",
        "softplus",
        "tanh",
        "sigmoid",
        "linear",
    } <= set(ACTIVATIONS.names())
    assert {
        "zeros",
        "constant",
        "uniform",
        "normal",
        "xavier_uniform",
        "xavier_normal",
        "he_normal",
        "he_uniform",
        "lecun_normal",
        "lecun_uniform",
        "orthogonal",
        "identity",
        "torch_default",
        "variance_scaling",
    } <= set(INITIALIZERS.names())
