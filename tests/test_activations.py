"""The activation registry's entries: gains, output ranges and which units can die."""

from __future__ import annotations

import math

import pytest

from initbench.config.activations import ACTIVATIONS, dead_units_pass_no_gradient


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_every_activation_has_a_torch_gain(name: str) -> None:
    assert ACTIVATIONS.get(name).torch_gain.strip()


def test_silu_gain_is_a_gain_not_an_output_range() -> None:
    silu = ACTIVATIONS.get("silu")
    assert silu.torch_gain.startswith("1")
    assert silu.output_range == (-math.inf, math.inf)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_only_bounded_activations_have_a_finite_output_range(name: str) -> None:
    entry = ACTIVATIONS.get(name)
    low, high = entry.output_range
    assert isinstance(low, float) and isinstance(high, float) and low < high
    if entry.kind == "bounded":
        assert math.isfinite(low) and math.isfinite(high)
    else:
        assert not (math.isfinite(low) and math.isfinite(high))  # softplus: (0, inf)


@pytest.mark.parametrize(
    ("ref", "dead"),
    [
        ({"name": "relu"}, True),
        ({"name": "leaky_relu", "negative_slope": 0.0}, True),
        ({"name": "leaky_relu", "negative_slope": 0.01}, False),
        ({"name": "leaky_relu"}, False),
        ({"name": "elu", "alpha": 1.0}, False),
        ({"name": "selu"}, False),
        ({"name": "tanh"}, False),
        ({"name": "gelu"}, False),
    ],
)
def test_only_a_zero_gradient_below_zero_makes_units_dead(ref: dict, dead: bool) -> None:
    assert dead_units_pass_no_gradient(ref) is dead


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_the_dead_property_matches_the_torch_gradient(name: str) -> None:
    torch = pytest.importorskip("torch")
    from initbench.config.activations import build_activation

    x = torch.linspace(-5.0, -0.01, 50, requires_grad=True)
    build_activation(name, {})(x).sum().backward()
    assert dead_units_pass_no_gradient({"name": name}) == bool((x.grad == 0).all())
