"""delta_orthogonal (Xiao et al. 2018): structure, moments, where it applies, and the
property it is for: a linear conv stack is an isometry at every position.

Why the isometry holds on the shipped CNN, zero padding and strides included: every tap
but the centre is zero, so output position p reads input position stride * p alone and
never the padding; its channel vector is Q times that input's, and an orthogonal Q (or
one with orthonormal columns, out >= in) keeps its norm. So with a linear activation and
zero biases each example's channel norm at each position is carried unchanged to any
depth: a stride-1 layer keeps the per-position norms (and hence the mean of squares q)
exactly; a stride-2 layer keeps those of the positions it samples.
"""

from __future__ import annotations

import math

import pytest
import torch

from initbench.config.geometry import IMAGE_SHAPE, cnn_strides
from initbench.config.initializers import InitError, cannot_apply, expected_moments, initialize
from initbench.nets.models import build_model
from tests.conftest import make_config


def _delta(shape: tuple[int, ...], gain: float = 1.0, seed: int = 0, dtype=torch.float64):
    t = torch.empty(shape, dtype=dtype)
    initialize(t, "delta_orthogonal", {"gain": gain}, torch.Generator().manual_seed(seed))
    return t


@pytest.mark.parametrize("shape", [(8, 8, 3, 3), (16, 4, 3, 3), (4, 16, 5, 5), (6, 6, 3)])
@pytest.mark.parametrize("gain", [1.0, 1.4])
def test_zero_but_an_orthogonal_centre(shape, gain) -> None:
    w = _delta(shape, gain)
    centre = (slice(None), slice(None), *(k // 2 for k in shape[2:]))
    q = w[centre].clone()
    w[centre] = 0
    assert torch.count_nonzero(w) == 0
    out, inp = shape[:2]
    gram = q @ q.T if out <= inp else q.T @ q
    eye = torch.eye(min(out, inp), dtype=torch.float64)
    torch.testing.assert_close(gram, gain**2 * eye, atol=1e-12, rtol=0)


def test_centre_is_torch_orthogonal_of_the_same_generator() -> None:
    w = _delta((8, 5, 3, 3), 1.3, seed=11, dtype=torch.float32)
    q = torch.empty(8, 5)
    torch.nn.init.orthogonal_(q, 1.3, generator=torch.Generator().manual_seed(11))
    assert torch.equal(w[:, :, 1, 1], q)


@pytest.mark.parametrize("shape", [(8, 8, 3, 3), (16, 4, 3, 3), (4, 16, 5, 5)])
def test_moments_are_the_centre_spread_over_every_element(shape) -> None:
    gain = 1.7
    mean, var = expected_moments("delta_orthogonal", {"gain": gain}, shape)
    # written out: gain^2 min(out, in) squared sum over out * in * k1 * k2 elements
    assert mean == 0.0
    assert var == pytest.approx(gain**2 * min(shape[:2]) / math.prod(shape), rel=1e-12)
    w = _delta(shape, gain)
    assert (w**2).mean().item() == pytest.approx(var, rel=1e-12)


@pytest.mark.parametrize("shape", [(10, 256), (7,), (8, 8, 2, 2), (8, 8, 3, 4)])
def test_refused_without_an_odd_kernel_with_the_reason(shape) -> None:
    reason = cannot_apply("delta_orthogonal", {}, shape, bias=False)
    assert reason is not None and str(shape) in reason
    assert ("conv kernels" in reason) == (len(shape) < 3)
    assert ("odd kernel" in reason) == (len(shape) >= 3)
    with pytest.raises(InitError):
        _delta(shape)


def test_a_mlp_with_delta_orthogonal_is_refused_at_its_spec() -> None:
    from initbench.nets.models import init_problems

    config = make_config(**{"model.init": "delta_orthogonal"})
    problems = init_problems(config.model)
    assert problems and all("conv kernels" in reason for _, reason in problems)


def _linear_delta_cnn(depth: int, width: int):
    config = make_config(
        **{
            "model.arch": "cnn",
            "model.depth": depth,
            "model.width": width,
            "model.activation": "linear",
            "model.init": "delta_orthogonal",
            "model.readout_init": "xavier_normal",
        }
    )
    model = build_model(config.model, torch.Generator().manual_seed(0)).double()
    generator = torch.Generator().manual_seed(0)
    for block in model.blocks:  # again in float64: Q orthogonal to float64 precision
        initialize(block.affine.weight, "delta_orthogonal", {}, generator)
    return model


@pytest.mark.parametrize("depth", [3, 40])
def test_linear_conv_stack_is_an_isometry_per_position(depth) -> None:
    width = 8
    model = _linear_delta_cnn(depth, width)
    x = torch.randn(4, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(1)).double()
    norms = x.norm(dim=1)  # (B, H, W): each example's channel norm at each position
    h = x
    with torch.no_grad():
        for block, stride in zip(model.blocks, cnn_strides(depth), strict=True):
            previous, h = h, block(h)
            norms = norms[:, ::stride, ::stride]
            torch.testing.assert_close(h.norm(dim=1), norms, rtol=1e-12, atol=1e-12)
            if stride == 1 and block.index > 1:  # q_l = q_{l-1}: the forward variance kept
                assert (h**2).mean().item() == pytest.approx((previous**2).mean().item(), rel=1e-12)


def test_float32_keeps_the_norms_to_float_precision_at_depth_60() -> None:
    """The run's own dtype: the channel norms' sum over positions kept to float32 rounding."""
    depth = 60
    model = _linear_delta_cnn(depth, 16).float()
    h = torch.randn(8, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for block, stride in zip(model.blocks, cnn_strides(depth), strict=True):
            before = (h**2).sum(1)[:, ::stride, ::stride].mean().item()
            h = block(h)
            assert (h**2).sum(1).mean().item() == pytest.approx(before, rel=1e-5)
