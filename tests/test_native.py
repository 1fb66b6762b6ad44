"""The probe's C kernel (initbench.measure.native): built once and cached, checked, optional, and
giving the torch path's vector (sums at float32 precision, counts and rests exactly)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from initbench.measure import native
from initbench.measure.probes import PACK_LIMIT, Scratch, _Fraction, _Rows


@pytest.fixture(autouse=True)
def _fresh_kernel() -> Iterator[None]:
    """Each test loads the kernel afresh (kernel() is cached per process)."""
    kernel = native.kernel  # the real one, whatever a test patches in
    kernel.cache_clear()
    yield
    kernel.cache_clear()


def _needs_compiler() -> None:
    try:
        native._compiler()
    except RuntimeError:
        pytest.skip("no C compiler here")


def test_the_kernel_is_built_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_compiler()
    monkeypatch.setenv("INITBENCH_CACHE_DIR", str(tmp_path))
    assert native.kernel() is not None
    (built,) = (tmp_path / "native").glob("probe_rows-*.so")

    def no_compiling(*args: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(native, "_compile", no_compiling)
    native.kernel.cache_clear()
    assert native.kernel() is not None and native._built() == built
    assert [p.name for p in (tmp_path / "native").iterdir()] == [built.name]  # no temporaries


def test_the_environment_variable_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "0")
    assert native.kernel() is None


def test_without_a_compiler_there_is_no_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INITBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert native.kernel() is None
    assert not list((tmp_path / "native").glob("*.so"))  # nothing half-built left behind


def test_a_kernel_giving_wrong_sums_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_compiler()
    monkeypatch.setattr(native, "_agrees", lambda function: False)
    assert native.kernel() is None


def test_the_cache_name_depends_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_compiler()
    monkeypatch.setenv("INITBENCH_CACHE_DIR", str(tmp_path))
    first = native._built()
    monkeypatch.setattr(native, "_cpu", lambda: "another cpu")
    assert native._built() != first  # a shared cache never hands a kernel to another CPU


# --- the kernel's vector against the torch path's ----------------------------------------

DEAD = _Fraction("dead_frac")
SATURATED = _Fraction("sat_frac", (-1.0, 1.0))
SIGMOID = _Fraction("sat_frac", (0.0, 1.0))
ROWS = [  # (shape, fraction): packed rows, alone rows with and without a rest
    ((16, 24), DEAD),
    ((16, 24), DEAD),
    ((16, 3, 5, 5), DEAD),  # units are channels: the maximum is over batch and space
    ((16, 24), SATURATED),
    ((16, 24), SIGMOID),
    ((7,), None),
    ((1,), None),
    ((2048,), None),
    ((PACK_LIMIT + 7,), None),  # alone, no divisor in [512, 1024]: pieces and a rest
    ((2, PACK_LIMIT // 2), SATURATED),  # alone, whole pieces
    ((4, 8, 64, 64), DEAD),  # alone with a dead count over channels
]


def _tensors(generator: torch.Generator) -> list[torch.Tensor]:
    tensors = [torch.randn(shape, generator=generator) for shape, _ in ROWS]
    tensors[0][:, 4] = 0.0  # a unit exactly 0 everywhere is dead (never > 0)
    tensors[1] = tensors[1] - 3.0  # most units dead
    tensors[2][:, 1] = 0.0
    tensors[3] = torch.tanh(tensors[3] * 4)  # many saturated
    tensors[4] = torch.sigmoid(tensors[4] * 8)
    tensors[7] = tensors[7] * 1e-3 + 5.0  # a large mean
    tensors[10][:, 2] = -1.0  # a channel dead everywhere
    return tensors


def test_the_kernel_gives_the_torch_paths_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_compiler()
    tensors = _tensors(torch.Generator().manual_seed(0))
    native.kernel()  # built before the torch path is forced below
    kernel = native.kernel
    monkeypatch.setattr(native, "kernel", lambda: None)
    rows = _Rows([tuple(t.shape) for t in tensors], [f for _, f in ROWS])
    want = rows.launch(tensors, Scratch()).numpy()
    got = rows._launch_native(kernel(), tensors)
    assert got is not None
    got = got.numpy()
    assert got.shape == want.shape
    pieces, rests = rows.pieces, rows.rests
    scale = np.repeat(  # each piece's tolerance: float32 rounding of its row's magnitudes
        [float(t.double().abs().max()) * math.prod(t.shape) for t in _in_order(rows, tensors)],
        [p for c in rows.chunks for p in c.row_pieces],
    )
    np.testing.assert_allclose(got[:pieces], want[:pieces], rtol=0, atol=1e-6 * scale.max())
    np.testing.assert_allclose(got[pieces : 2 * pieces], want[pieces : 2 * pieces], rtol=1e-5)
    np.testing.assert_array_equal(got[2 * pieces :], want[2 * pieces :])  # rests and counts
    assert rests and got[2 * pieces + rests :].tolist() == want[2 * pieces + rests :].tolist()
    (stats_got, fractions_got), (stats_want, fractions_want) = (
        rows.finish(got, tensors),
        rows.finish(want, tensors),
    )
    np.testing.assert_allclose(stats_got[:, 1:], stats_want[:, 1:], rtol=1e-5)
    np.testing.assert_array_equal(fractions_got, fractions_want)


def _in_order(rows: _Rows, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [tensors[row] for row in rows.order]


def test_counts_of_a_row_with_nan_are_masked_like_the_torch_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs_compiler()
    tensors = _tensors(torch.Generator().manual_seed(1))
    tensors[0][3, 5] = math.nan
    tensors[3][0, 0] = math.inf
    rows = _Rows([tuple(t.shape) for t in tensors], [f for _, f in ROWS])
    kernel = native.kernel()
    assert kernel is not None
    got = rows._launch_native(kernel, tensors).numpy()
    monkeypatch.setattr(native, "kernel", lambda: None)
    want = rows.launch(tensors, Scratch()).numpy()
    stats_got, fractions_got = rows.finish(got, tensors)
    stats_want, fractions_want = rows.finish(want, tensors)
    np.testing.assert_array_equal(fractions_got, fractions_want)  # NaN where not finite
    assert np.isnan(fractions_got[rows.fraction_position[0]])
    np.testing.assert_array_equal(np.isnan(stats_got), np.isnan(stats_want))


def test_a_non_contiguous_tensor_is_measured_by_torch() -> None:
    _needs_compiler()
    kernel = native.kernel()
    assert kernel is not None
    tensors = [torch.randn(8, 4), torch.randn(4, 8).t()]  # the second is a transposed view
    rows = _Rows([tuple(t.shape) for t in tensors], [None, None])
    assert rows._launch_native(kernel, tensors) is None
    stats, _ = rows.finish(rows.launch(tensors, Scratch()).numpy(), tensors)
    np.testing.assert_allclose(stats[:, 1], [t.double().var().item() for t in tensors], rtol=1e-5)
