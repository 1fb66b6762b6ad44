"""Per-layer statistics of one probed training step.

A :class:`Tape` is passed through the model's forward pass on logging steps only. It
keeps the watched tensors and asks autograd to retain the gradients of ``preact`` and
``normed``; that changes no value the training computes. After ``loss.backward()``, a
run's :class:`Probe` reduces the tape on the device to a few partial sums per tensor,
which reach the host in the step's one transfer, where the statistics are finished in
float64 and put in the order of their row labels (:class:`Recorder`). A step whose sums
are all finite and precise is only checked then; its statistics are finished with the
run's other such steps, in one batch, when the table is read (:class:`Deferred`).

Definitions (see schema.LAYER_METRICS): ``X_mean``, ``X_var`` (unbiased) and ``X_sq``
are over *all* elements of the batch tensor, never a per-unit variance averaged.

Why it is cheap: a small net's step is a few hundred kernel launches, so launches and
passes over memory are the cost. On a CPU run, one call of a C kernel
(:mod:`initbench.measure.native`, compiled on first use where a C compiler exists) reads every
tensor in place and writes the step's vector: per piece of PARTIAL elements the sum and
the sum of squares (float32 lanes combined in float64), and the dead and saturated
counts. Elsewhere (no compiler, a GPU), all small tensors of a step (preacts,
activations, gradients, weights, whatever their shapes) are packed by one copy call into
a buffer, and the buffer is read once by two torch kernels: float32 sums and L2 norms of
the same pieces, which keep float32 precision; large tensors are read in place the same
way. The host adds the pieces in float64 and derives mean, var = (Σx² − (Σx)²/n)/(n − 1),
sq and norm. Where that formula cannot keep float32 precision
(squares that underflow or overflow, a mean large against the spread, non-finite
values) the tensor is measured again by the two-pass path (:func:`raw_moments`: exact
power-of-two scaling, centring, corrected two-pass formula). tests/test_fast_path.py
checks every statistic of every model, by both paths, against a float64 reference
written from the definitions.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from initbench.config.activations import SATURATION_FRACTION
from initbench.measure import native
from initbench.nets.instrument import WatchedLayer

Label = tuple[int, int, str, str]  # (layer, t, name, metric)

FORWARD_QUANTITIES = ("preact", "normed", "act")
GRAD_QUANTITIES = ("preact", "normed")
PACK_LIMIT = 1 << 17  # elements: smaller tensors are packed together (launches dominate
# them); larger ones are read in place, where packing would only add a copy
CHUNK = 1 << 20  # elements packed at once (4 MB in float32): few launches, still cached
PARTIAL = 1024  # elements per float32 partial sum and norm (measured: within 5e-7 of float64)
TINY_SQ = 2.0**-100  # a smaller mean square may hold float32 squares that underflowed
MAX_KAPPA2 = 4.0  # sq / var beyond this: Σx² − (Σx)²/n cancels more than float32 allows

_EXPONENT_BITS = {  # dtype -> (integer dtype of its width, mask of the exponent field)
    torch.float32: (torch.int32, 0x7F800000),
    torch.float64: (torch.int64, 0x7FF0000000000000),
}


Key = tuple[int, int]  # (layer, t)
Store = Callable[[str, Key, torch.Tensor], torch.Tensor]  # (name, key, tensor) -> a copy


@dataclass
class Tape:
    """The watched tensors of one forward pass, keyed by (layer, t).

    With a ``store`` (a run's :meth:`Probe.store`), each tensor of PACK_LIMIT elements
    or more is copied into a buffer kept across steps, and so is its gradient (by a hook,
    instead of ``retain_grad``). Holding the large tensors themselves would keep the
    allocator from reusing their memory, and the fresh pages cost more than the copy
    (measured: 3,300 page faults per step of a 28x28 CNN without the probe, 10,000 with
    it holding the tensors, and 40% of the step's time).
    """

    tensors: dict[str, dict[Key, torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))
    grads: dict[str, dict[Key, torch.Tensor]] = field(default_factory=lambda: defaultdict(dict))
    store: Store | None = None

    def watch(
        self,
        layer: int,
        t: int,
        preact: torch.Tensor,
        normed: torch.Tensor | None,
        act: torch.Tensor,
    ) -> None:
        """Keep this layer's tensors and the gradients of preact and normed."""
        key = (layer, t)
        for quantity, tensor in (("preact", preact), ("normed", normed), ("act", act)):
            if tensor is None:
                continue
            wants_grad = quantity in GRAD_QUANTITIES and tensor.requires_grad
            if self.store is not None and tensor.numel() >= PACK_LIMIT:
                self.tensors[quantity][key] = self.store(quantity, key, tensor)
                if wants_grad:
                    tensor.register_hook(functools.partial(self._keep_grad, quantity, key))
                continue
            if wants_grad:
                tensor.retain_grad()
            self.tensors[quantity][key] = tensor

    def _keep_grad(self, quantity: str, key: Key, grad: torch.Tensor) -> None:
        assert self.store is not None
        self.grads[quantity][key] = self.store(f"grad_{quantity}", key, grad)

    def grad(self, quantity: str, key: Key) -> torch.Tensor | None:
        """The gradient of a watched tensor after ``backward()`` (None if it got none)."""
        kept = self.grads.get(quantity, {}).get(key)
        return kept if kept is not None else self.tensors[quantity][key].grad


class Scratch:
    """Work buffers reused across probed steps: a large temporary freshly allocated at
    every step costs page faults (measured: as much as the kernel itself for 6 MB)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def take(self, role: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` (``like``'s dtype and device) for ``role``;
        valid until the next ``take`` of the same role."""
        numel, key = math.prod(shape), (role, like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[:numel].view(*shape)


def _flat(stacked: torch.Tensor) -> torch.Tensor:
    """(G, ...) -> (G, n) without autograd history, in float32 or float64."""
    flat = stacked.detach().reshape(stacked.shape[0], -1)
    return flat if flat.dtype in _EXPONENT_BITS else flat.float()


# --- the two-pass path: any data, at float32 precision -------------------------------------


def _power_of_two_floor(peak: torch.Tensor) -> torch.Tensor:
    """2^floor(log2 peak) within the dtype's normal range (the largest for a non-finite
    peak): dividing by it is exact and leaves every |x| / scale below 2."""
    int_dtype, mask = _EXPONENT_BITS[peak.dtype]
    info = torch.finfo(peak.dtype)
    scale = (peak.view(int_dtype) & mask).view(peak.dtype)
    return scale.clamp_(info.tiny, 2.0 ** math.floor(math.log2(info.max)))


def raw_moments(flat: torch.Tensor) -> torch.Tensor:
    """(G, n) -> (G, 5) in the input's dtype: per row the peak |x|, the scale s, the mean
    m of y = x / s, and the sums of d and d^2 where d = y - m (see :func:`finish_moments`).

    Two-pass with a power-of-two scale: y is exact, |y| < 2, so float32 squares of tiny
    (1e-20) or huge values neither underflow nor overflow, and centring on m removes the
    cancellation of a large mean. A row with a non-finite element gives non-finite sums.
    """
    n = flat.shape[1]
    peak = torch.maximum(flat.amax(dim=1), flat.amin(dim=1).neg_())  # (G,); NaN propagates
    scale = _power_of_two_floor(peak)
    y = flat / scale[:, None]
    mean = y.sum(dim=1).div_(n)
    sum_d = y.sub_(mean[:, None]).sum(dim=1)
    return torch.stack([peak, scale, mean, sum_d, y.square_().sum(dim=1)], dim=1)


def finish_moments(raw: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """(R, 5) from :func:`raw_moments` and (R,) element counts -> (R, 4) float64: mean,
    unbiased variance, mean square and L2 norm of each row's tensor.

    Corrected two-pass formula (Chan, Golub & LeVeque 1983): var = (Σd² − (Σd)²/n)/(n−1),
    mean = (m + Σd/n)·s. A tensor with a non-finite element gives what the float64
    reference gives: mean ±inf or NaN, var NaN, sq and norm inf (NaN if it holds a NaN).
    """
    peak, scale, mean_y, sum_d, sum_d2 = raw.double().unbind(dim=1)
    finite = torch.isfinite(peak)
    mean = torch.where(finite, mean_y + sum_d / n, mean_y) * scale
    centred = (sum_d2 - sum_d * sum_d / n).clamp_(min=0.0) * scale.square()  # n·biased var
    sq = torch.where(finite, centred / n + mean.square(), peak)
    return torch.stack([mean, centred / (n - 1), sq, (sq * n).sqrt()], dim=1)


def two_pass_moments(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """(mean, var, sq, norm) of each tensor by the two-pass path, as a (G, 4) host array
    (same-shape tensors measured together)."""
    out = np.empty((len(tensors), 4))
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, tensor in enumerate(tensors):
        by_shape[tuple(tensor.shape)].append(i)
    with torch.no_grad():
        for rows in by_shape.values():
            flat = _flat(torch.stack([tensors[i] for i in rows]))
            n = torch.full((len(rows),), flat.shape[1], dtype=torch.float64, device=flat.device)
            out[rows] = finish_moments(raw_moments(flat), n).cpu().numpy()
    return out


# --- the fast path: partial sums on the device, finished on the host ------------------------


def moments_from_sums(total: np.ndarray, squares: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Σx, Σx² and element counts (..., R) -> (..., R, 4): mean, unbiased variance, mean
    square and L2 norm (at float32 precision where :func:`trusted`). Non-finite sums give
    NaN or inf (callers silence numpy's warnings about them)."""
    mean, var, sq = _mean_var_sq(total, squares, n)
    return np.stack([mean, var, sq, np.sqrt(squares)], axis=-1)


def _mean_var_sq(total: np.ndarray, squares: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, unbiased variance and mean square from Σx, Σx² and element counts."""
    mean = total / n
    return mean, np.maximum(squares - total * mean, 0.0) / (n - 1), squares / n


def _bounded(var: np.ndarray, sq: np.ndarray) -> np.ndarray:
    """No float32 square underflowed, and Σx² − (Σx)²/n did not cancel (see trusted);
    False where either is NaN."""
    return (sq >= TINY_SQ) & (sq <= var * MAX_KAPPA2)


def trusted(stats: np.ndarray) -> np.ndarray:
    """(..., R, 4) -> (..., R) bool: rows whose fast statistics keep float32 precision: finite, no
    float32 square underflowed (sq >= TINY_SQ), and Σx² − (Σx)²/n did not cancel (sq <=
    MAX_KAPPA2 var). The others are measured again by the two-pass path."""
    mean, var, sq = stats[..., 0], stats[..., 1], stats[..., 2]
    with np.errstate(all="ignore"):
        return _bounded(var, sq) & (sq < np.inf) & np.isfinite(mean)


@functools.lru_cache(maxsize=256)
def _piece(n: int) -> int:
    """Elements per partial sum of an n-element row: n itself up to PARTIAL, else the
    largest divisor of n in [PARTIAL / 2, PARTIAL] (no remainder), else PARTIAL."""
    if n <= PARTIAL:
        return n
    return next((k for k in range(PARTIAL, PARTIAL // 2 - 1, -1) if n % k == 0), PARTIAL)


@dataclass(frozen=True)
class _Fraction:
    """A fraction taken of a row's tensor: ``dead_frac``, or ``sat_frac`` with the
    activation's output range."""

    metric: str
    output_range: tuple[float, float] = (0.0, 0.0)

    def count(self, stacked: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
        """(G,) float64 into ``out``: alive units for dead_frac (few: summed in float64),
        saturated elements for sat_frac (counted as integers, exact for any size)."""
        if self.metric == "dead_frac":
            torch.sum(_alive(stacked), dim=1, dtype=torch.float64, out=out)
        else:
            out.copy_(_saturated_count(_flat(stacked), *self.output_range, scratch))

    def divisor(self, shape: Sequence[int]) -> int:
        """What the count is a fraction of: units (channels), or elements."""
        return shape[1] if self.metric == "dead_frac" else math.prod(shape)


@dataclass
class _Out:
    """Where one chunk's device work reads and writes: views built once per plan."""

    rows: list[torch.Tensor]  # packed: each row's place in the shared buffer (row-shaped)
    pads: list[torch.Tensor]  # packed: the zero padding after rows that do not fill a piece
    pieces: torch.Tensor | None  # packed: (pieces, PARTIAL) view of the shared buffer
    runs: list[torch.Tensor]  # packed: (g, *shape) view of each fraction run
    sums: torch.Tensor  # (pieces,) float32 partial sums, in the result buffer
    norms: torch.Tensor  # (pieces,) float32 partial L2 norms, in the result buffer
    rest: torch.Tensor | None  # alone: (rest,) the elements beyond whole pieces
    counts: list[torch.Tensor]  # per fraction run: (g,) float64 counts


class _Chunk:
    """Rows read together. Packed (small rows): copied by one call into a shared buffer,
    each row from a multiple of PARTIAL (the zero padding between rows changes no sum),
    then one sum and one L2 norm per PARTIAL-element piece. Alone (a large row): read in
    place, in pieces of :func:`_piece` elements plus the rest elements, sent as they are."""

    def __init__(self, rows: list[int], shapes: Sequence[tuple[int, ...]], alone: bool) -> None:
        self.rows, self.alone = rows, alone
        sizes = [math.prod(shapes[row]) for row in rows]
        self.piece = _piece(sizes[0]) if alone else PARTIAL
        self.row_pieces = [n // self.piece if alone else -(-n // PARTIAL) for n in sizes]
        self.rest = sizes[0] % self.piece if alone else 0
        self.offsets = [0, *np.cumsum(self.row_pieces[:-1]) * self.piece]  # where rows start
        self.size = sum(self.row_pieces) * self.piece
        self.runs: list[tuple[int, int, _Fraction]] = []  # [start, stop) rows, one view each

    def set_runs(self, shapes: Sequence[tuple[int, ...]], fractions: Sequence[_Fraction | None]):
        """Group consecutive rows asking the same fraction of one shape, unbroken by
        padding, into runs: [start, stop) positions, one view (and count call) each."""
        self.runs = []
        for i, row in enumerate(self.rows):
            fraction = fractions[row]
            if fraction is None:
                continue
            if self.runs and self._joins(self.runs[-1], i, shapes, fraction):
                self.runs[-1] = (self.runs[-1][0], i + 1, fraction)
            else:
                self.runs.append((i, i + 1, fraction))

    def _joins(self, run: tuple, i: int, shapes: Sequence[tuple[int, ...]], fraction) -> bool:
        _, stop, kind = run
        shape = shapes[self.rows[i]]
        unpadded = math.prod(shape) % self.piece == 0
        return stop == i and kind == fraction and shapes[self.rows[i - 1]] == shape and unpadded

    def launch(self, tensors: list[torch.Tensor], out: _Out, scratch: Scratch) -> None:
        """Write this chunk's partial sums, norms, rest elements and counts into ``out``."""
        if self.alone:
            tensor = tensors[self.rows[0]].detach()
            flat = tensor.reshape(-1)
            whole = flat[: self.size].view(-1, self.piece)
            runs = [tensor[None]] * len(self.runs)
            if out.rest is not None:
                out.rest.copy_(flat[self.size :])
        else:
            torch._foreach_copy_(out.rows, [tensors[row] for row in self.rows])
            if out.pads:
                torch._foreach_zero_(out.pads)
            whole, runs = out.pieces, out.runs
        torch.sum(whole, dim=1, out=out.sums)
        torch.linalg.vector_norm(whole, dim=1, out=out.norms)
        for (_, _, fraction), view, counts in zip(self.runs, runs, out.counts, strict=True):
            fraction.count(view, counts, scratch)


def _alive(stacked: torch.Tensor) -> torch.Tensor:
    """(G, B, units[, H, W]) -> (G, units) bool: > 0 somewhere in the batch (and space)."""
    return stacked.detach().amax(dim=[1, *range(3, stacked.dim())]) > 0


def _saturation_bounds(low: float, high: float) -> tuple[float, float]:
    """(centre, threshold) of a saturation count: an element is saturated where its
    distance from the centre exceeds 99% of the half-range (both paths compare so)."""
    centre, half = (low + high) / 2, (high - low) / 2
    return centre, SATURATION_FRACTION * half


def _saturated_count(flat: torch.Tensor, low: float, high: float, scratch: Scratch) -> torch.Tensor:
    """(G, n) -> (G,) int64: elements beyond 99% of the half-range from the centre."""
    centre, threshold = _saturation_bounds(low, high)
    distance = torch.sub(flat, centre, out=scratch.take("distance", flat.shape, flat)).abs_()
    return torch.count_nonzero(distance > threshold, dim=1)


def _count_fields(fraction: _Fraction | None, shape: Sequence[int]) -> tuple:
    """The kernel's (kind, units, inner, centre, threshold) of a row's fraction count:
    units and inner of its (batch, units, inner) view for dead_frac; the saturation
    bounds of :func:`_saturation_bounds`, as the torch path uses them."""
    if fraction is None:
        return native.NO_COUNT, 1, 1, 0.0, 0.0
    if fraction.metric == "dead_frac":
        return native.DEAD, shape[1], math.prod(shape[2:]), 0.0, 0.0
    return native.SATURATED, 1, 1, *_saturation_bounds(*fraction.output_range)


def _finite_rows(flat: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(flat.amax(dim=1)) & torch.isfinite(flat.amin(dim=1))


def dead_fraction(stacked: torch.Tensor) -> torch.Tensor:
    """(G, B, units[, H, W]) -> (G,): fraction of units (channels) never > 0 over the
    batch (and spatial positions); NaN where the input has a non-finite element."""
    with torch.no_grad():
        units = stacked.shape[2]
        fraction = 1.0 - _alive(stacked).sum(dim=1, dtype=torch.float64) / units
        return torch.where(_finite_rows(_flat(stacked)), fraction, torch.nan)


def saturated_fraction(stacked: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(G, ...) -> (G,): fraction of elements beyond 99% of the half-range from the centre;
    NaN where the activation has a non-finite element."""
    with torch.no_grad():
        flat = _flat(stacked)
        fraction = _saturated_count(flat, low, high, Scratch()).double() / flat.shape[1]
        return torch.where(_finite_rows(flat), fraction, torch.nan)


class _Rows:
    """Statistics of a fixed list of tensors (rows). :meth:`launch` runs the device work
    into buffers reused across steps and returns one float64 device vector: all chunks'
    piece sums, then their pieces' sums of squares, rest elements and fraction counts. On the host,
    :meth:`finish` turns it into per-row (mean, var, sq, norm) and the fractions."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], fractions: Sequence[_Fraction | None]):
        self.shapes = [tuple(shape) for shape in shapes]
        self.chunks = _chunks(self.shapes, fractions)
        self.n = np.array([math.prod(shape) for shape in shapes], dtype=np.float64)
        self._layout()
        self.fraction_rows = [
            c.rows[i] for c in self.chunks for start, stop, _ in c.runs for i in range(start, stop)
        ]
        self.fraction_position = {row: i for i, row in enumerate(self.fraction_rows)}
        self.divisors = np.array(
            [fractions[row].divisor(shapes[row]) for row in self.fraction_rows], dtype=np.float64
        )
        self.dead = np.array([fractions[row].metric == "dead_frac" for row in self.fraction_rows])
        self._outs: list[_Out] = []
        self._fields, self._ranges = self._kernel_fields(fractions)

    def _kernel_fields(self, fractions: Sequence[_Fraction | None]) -> tuple[np.ndarray, ...]:
        """Per row in ``order``: the kernel's fields (native.FIELDS) and (centre,
        threshold) of a saturation count, for the same vector as the torch path's."""
        rest_places = (2 * self.pieces + self.rest_starts).tolist()
        rest_at = dict(zip(self.rest_at.tolist(), rest_places[: len(self.rest_at)], strict=True))
        counts_at = 2 * self.pieces + self.rests
        pieces = [(c.piece, n, c.rest) for c in self.chunks for n in c.row_pieces]
        fields, ranges = [], []
        for i, (row, (piece, n_pieces, rest)) in enumerate(zip(self.order, pieces, strict=True)):
            shape, fraction = self.shapes[row], fractions[row]
            kind, units, inner, centre, threshold = _count_fields(fraction, shape)
            count_at = -1 if fraction is None else counts_at + self.fraction_position[row]
            fields.append(
                native.row_fields(
                    math.prod(shape),
                    piece,
                    n_pieces,
                    rest,
                    at=int(self.starts[i]),
                    rest_at=rest_at.get(i, -1),
                    kind=kind,
                    count_at=count_at,
                    units=units,
                    inner=inner,
                )
            )
            ranges.append((centre, threshold))
        return (
            np.array(fields, dtype=np.int64).reshape(-1, len(native.FIELDS)),
            np.array(ranges, dtype=np.float64).reshape(-1, 2),
        )

    def _launch_native(self, kernel: native.Kernel, tensors: list[torch.Tensor]):
        """The vector of :meth:`launch` by the C kernel, reading the tensors in place;
        None unless every one is a contiguous float32 CPU tensor."""
        ordered = [tensors[row] for row in self.order]
        float32 = torch.float32
        if not all(t.dtype is float32 and t.is_cpu and t.is_contiguous() for t in ordered):
            return None
        pointers = np.fromiter((t.data_ptr() for t in ordered), np.int64, len(ordered))
        length = 2 * self.pieces + self.rests + len(self.fraction_rows)
        vector = torch.empty(length, dtype=torch.float64)
        fields, ranges = self._fields.ctypes.data, self._ranges.ctypes.data
        address = vector.data_ptr()
        if kernel(len(ordered), pointers.ctypes.data, fields, ranges, self.pieces, address):
            raise MemoryError("the probe kernel could not allocate its work buffer")
        return vector

    def _layout(self) -> None:
        """Where each row's values are in the vector: its pieces from ``starts`` (rows in
        ``order``), and for an alone row with a rest, the rest from ``rest_starts``."""
        order = [row for chunk in self.chunks for row in chunk.rows]
        self.order, self.inverse = np.array(order, dtype=np.int64), np.argsort(order)
        self.n_in_order = self.n[self.order]
        per_row = [pieces for chunk in self.chunks for pieces in chunk.row_pieces]
        self.starts = np.cumsum([0, *per_row[:-1]])
        self.pieces = sum(per_row)
        rests = [(order.index(c.rows[0]), c.rest) for c in self.chunks if c.rest]
        self.rest_at = np.array([i for i, _ in rests], dtype=np.int64)
        self.rest_starts = np.cumsum([0, *(rest for _, rest in rests[:-1])])
        self.rests = sum(rest for _, rest in rests)

    def _allocate(self, like: torch.Tensor) -> None:
        """The result buffers, the shared packing buffer, and each chunk's views into them."""
        kind = {"dtype": like.dtype, "device": like.device}
        self._result = torch.empty(2 * self.pieces + self.rests, **kind)
        self._counts = torch.empty(len(self.fraction_rows), dtype=torch.float64, device=like.device)
        packed = torch.zeros(max((c.size for c in self.chunks if not c.alone), default=0), **kind)
        at, rest, counted = 0, 2 * self.pieces, 0
        for chunk in self.chunks:
            pieces = sum(chunk.row_pieces)
            sums = self._result[at : at + pieces]
            norms = self._result[self.pieces + at : self.pieces + at + pieces]
            rests = self._result[rest : rest + chunk.rest] if chunk.rest else None
            counts = []
            for start, stop, _ in chunk.runs:
                counts.append(self._counts[counted : counted + stop - start])
                counted += stop - start
            views = ([], [], None, []) if chunk.alone else self._packed_views(chunk, packed)
            self._outs.append(_Out(*views, sums, norms, rests, counts))
            at, rest = at + pieces, rest + chunk.rest
        if sum(not chunk.alone for chunk in self.chunks) == 1:
            for out in self._outs:  # one packed chunk: no other writes its zero padding
                out.pads = []

    def _packed_views(self, chunk: _Chunk, packed: torch.Tensor) -> tuple:
        """(row places, paddings, (pieces, PARTIAL) view, run views) of a packed chunk."""
        places, pads, runs = [], [], []
        for row, offset in zip(chunk.rows, chunk.offsets, strict=True):
            n = math.prod(self.shapes[row])
            places.append(packed[offset : offset + n].view(self.shapes[row]))
            padded = -(-n // PARTIAL) * PARTIAL
            pads += [packed[offset + n : offset + padded]] if padded > n else []
        for start, stop, _ in chunk.runs:
            shape, offset = self.shapes[chunk.rows[start]], chunk.offsets[start]
            runs.append(
                packed[offset : offset + (stop - start) * math.prod(shape)].view(-1, *shape)
            )
        return places, pads, packed[: chunk.size].view(-1, PARTIAL), runs

    def launch(self, tensors: list[torch.Tensor], scratch: Scratch) -> torch.Tensor:
        """The device work of one step: its float64 result vector (see the class), by the
        C kernel where it applies (:mod:`initbench.measure.native`), else by torch."""
        kernel = native.kernel()
        if kernel is not None and (vector := self._launch_native(kernel, tensors)) is not None:
            return vector
        with torch.no_grad():
            if not self._outs:
                self._allocate(tensors[0] if tensors else torch.empty(0))
            for chunk, out in zip(self.chunks, self._outs, strict=True):
                chunk.launch(tensors, out, scratch)
            vector = torch.cat([self._result.double(), self._counts])
            vector[self.pieces : 2 * self.pieces].square_()  # the norms' squares, exact in float64
            return vector

    def fast_sums(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Σx and Σx² of every row, in ``order``, from launched vectors (..., L)."""
        sums, piece_squares = host[..., : self.pieces], host[..., self.pieces : 2 * self.pieces]
        with np.errstate(all="ignore"):  # non-finite tensors give inf and NaN, as they should
            total = np.add.reduceat(sums, self.starts, axis=-1)
            squares = np.add.reduceat(piece_squares, self.starts, axis=-1)
            if self.rests:
                rest = host[..., 2 * self.pieces : 2 * self.pieces + self.rests]
                starts = self.rest_starts
                total[..., self.rest_at] += np.add.reduceat(rest, starts, axis=-1)
                squares[..., self.rest_at] += np.add.reduceat(rest * rest, starts, axis=-1)
        return total, squares

    def stats_from_sums(self, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """(..., R, 4) statistics, in row order, from :meth:`fast_sums`."""
        with np.errstate(all="ignore"):
            return moments_from_sums(total, squares, self.n_in_order)[..., self.inverse, :]

    def fast_stats(self, host: np.ndarray) -> np.ndarray:
        """(..., R, 4) statistics from the partial sums alone (see :func:`trusted`)."""
        if not self.pieces:
            return np.zeros((*host.shape[:-1], 0, 4))
        return self.stats_from_sums(*self.fast_sums(host))

    def all_trusted(self, total: np.ndarray, squares: np.ndarray) -> bool:
        """Whether :func:`trusted` holds for every row of finite sums (:meth:`fast_sums`
        of a vector with no non-finite element), by the same expressions on fewer columns:
        such sums always give a finite mean and sq, so only the two bounds can fail."""
        with np.errstate(all="ignore"):  # a one-element row divides by n - 1 = 0: untrusted
            _, var, sq = _mean_var_sq(total, squares, self.n_in_order)
            return bool(np.all(_bounded(var, sq)))

    def fractions(self, host: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """(..., F) fractions, in ``fraction_rows`` order, from launched vectors (or just
        their counts) and their statistics (NaN where the row's tensor is not finite)."""
        ratio = host[..., host.shape[-1] - len(self.fraction_rows) :] / self.divisors
        fractions = np.where(self.dead, 1.0 - ratio, ratio)
        return np.where(np.isfinite(stats[..., self.fraction_rows, 2]), fractions, np.nan)

    def finish(
        self, host: np.ndarray, tensors: list[torch.Tensor]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(R, 4) statistics and the fractions (in ``fraction_rows`` order) from the
        launched vector; rows the fast sums cannot give at float32 precision are
        measured again by the two-pass path (a second, small transfer)."""
        stats = self.fast_stats(host)
        redo = np.flatnonzero(~trusted(stats))
        if len(redo):
            stats[redo] = two_pass_moments([tensors[row] for row in redo])
        return stats, self.fractions(host, stats)


def _padded(shape: Sequence[int]) -> int:
    """Elements a small row takes in a packed buffer: whole PARTIAL-element pieces."""
    return -(-math.prod(shape) // PARTIAL) * PARTIAL


def _chunks(shapes: Sequence[tuple[int, ...]], fractions: Sequence[_Fraction | None]):
    """Small rows packed in order, at most CHUNK elements per chunk; a large row alone."""
    chunks: list[_Chunk] = []
    pending: list[int] = []
    for row, shape in enumerate(shapes):
        if math.prod(shape) >= PACK_LIMIT:
            chunks.append(_Chunk([row], shapes, alone=True))
            continue
        if pending and sum(_padded(shapes[r]) for r in pending) + _padded(shape) > CHUNK:
            chunks.append(_Chunk(pending, shapes, alone=False))
            pending = []
        pending.append(row)
    if pending:
        chunks.append(_Chunk(pending, shapes, alone=False))
    for chunk in chunks:
        chunk.set_runs(shapes, fractions)
    return chunks


def moments(stacked: torch.Tensor) -> torch.Tensor:
    """(G, ...) -> (G, 3) float64: mean, unbiased variance and mean square of each group
    member over all its elements, as a probed step computes them."""
    tensors = list(stacked.detach())
    rows = _Rows([tuple(t.shape) for t in tensors], [None] * len(tensors))
    host = rows.launch(tensors, Scratch()).cpu().numpy()
    return torch.from_numpy(rows.finish(host, tensors)[0][:, :3].copy())


# --- one probed step: every tensor a row, labelled --------------------------------------

Slot = tuple[str, int, int]  # (quantity, layer, t) of a row: "preact", "grad_w_rec", ...
FRACTION = -1  # pseudo-column of an entry: the row's dead_frac or sat_frac
UNDEFINED = -2  # pseudo-column: NaN (the statistics of a weight gradient that does not exist)
MOMENTS = ("mean", "var", "sq")  # columns 0..2 of the statistics; 3 is the norm
WEIGHT_COLUMNS = (("mean", 0), ("var", 1), ("norm", 3))
GRAD_WEIGHT_COLUMNS = (("var", 1), ("norm", 3))
NORMED = ("grad_w", "grad_w_rec", "grad_other")  # the rows of the global gradient norm


def _tape_slots(tape: Tape) -> Iterator[tuple[Slot, torch.Tensor]]:
    """The tape's forward tensors, then its retained gradients, by quantity and key."""
    for quantity in FORWARD_QUANTITIES:
        for (layer, t), tensor in sorted(tape.tensors.get(quantity, {}).items()):
            yield (quantity, layer, t), tensor
    for quantity in GRAD_QUANTITIES:
        for layer, t in sorted(tape.tensors.get(quantity, {})):
            grad = tape.grad(quantity, (layer, t))
            if grad is not None:
                yield (f"grad_{quantity}", layer, t), grad


def _slots(
    tape: Tape, layers: Sequence[WatchedLayer], others: Sequence[torch.Tensor]
) -> Iterator[tuple[Slot, torch.Tensor]]:
    """Every tensor a probed step measures, in a fixed order (rows); ``others``: the
    parameters whose gradients count only in the global gradient norm."""
    yield from _tape_slots(tape)
    for layer in layers:
        for prefix, weight in (("w", layer.weight), ("w_rec", layer.recurrent_weight)):
            if weight is None:
                continue
            yield (prefix, layer.index, 0), weight
            if weight.grad is not None:
                yield (f"grad_{prefix}", layer.index, 0), weight.grad
    for i, parameter in enumerate(others):
        if parameter.grad is not None:
            yield ("grad_other", i, 0), parameter.grad


def _fraction_of(quantity: str, layer: WatchedLayer, batchnorm: bool) -> _Fraction | None:
    """dead_frac of the activation's input (rectifiers); sat_frac of its output (bounded)."""
    is_input = quantity == "normed" or (quantity == "preact" and not batchnorm)
    if layer.kind == "rectifier" and is_input:
        return _Fraction("dead_frac")
    if layer.kind == "bounded" and quantity == "act":
        return _Fraction("sat_frac", layer.output_range)
    return None


Entry = tuple[int, int, str, int | None, int]  # (layer, t, metric, row, column)


def _moment_entries(
    slots: list[tuple[Slot, torch.Tensor]], fractions: list[_Fraction | None], quantity: str
) -> list[Entry]:
    """One quantity's entries in the long table's order: per shape group, the moments of
    every (layer, t), then its fractions."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for row, ((name, _, _), tensor) in enumerate(slots):
        if name == quantity:
            by_shape[tuple(tensor.shape)].append(row)
    entries: list[Entry] = []
    for rows in by_shape.values():
        for row in rows:
            _, layer, t = slots[row][0]
            entries += [(layer, t, f"{quantity}_{m}", row, c) for c, m in enumerate(MOMENTS)]
        for row in rows:
            fraction, (_, layer, t) = fractions[row], slots[row][0]
            entries += [] if fraction is None else [(layer, t, fraction.metric, row, FRACTION)]
    return entries


def _weight_entries(slots: list[tuple[Slot, torch.Tensor]], layers: Sequence[WatchedLayer]):
    """Per layer: its weight's statistics and its gradient's (UNDEFINED if it has none)."""
    row_of = {slot: row for row, (slot, _) in enumerate(slots)}
    entries: list[Entry] = []
    for layer in layers:
        for prefix in ("w", "w_rec"):
            row = row_of.get((prefix, layer.index, 0))
            if row is None:
                continue
            grad = row_of.get((f"grad_{prefix}", layer.index, 0))
            entries += [(layer.index, 0, f"{prefix}_{m}", row, c) for m, c in WEIGHT_COLUMNS]
            entries += [
                (layer.index, 0, f"grad_{prefix}_{m}", grad, UNDEFINED if grad is None else c)
                for m, c in GRAD_WEIGHT_COLUMNS
            ]
    return entries


class _Plan:
    """What a probed step computes and where each labelled value comes from. It depends
    only on the step's structure (which tensors, their shapes), so a run builds it once
    and every later probed step costs only its kernels and a few host array operations."""

    def __init__(self, slots: list[tuple[Slot, torch.Tensor]], layers: Sequence[WatchedLayer]):
        batchnorm = any(name == "normed" for (name, _, _), _ in slots)
        fractions = [
            _fraction_of(name, layers[0], batchnorm) if layers else None
            for (name, _, _), _ in slots
        ]
        self.rows = _Rows([tuple(tensor.shape) for _, tensor in slots], fractions)
        entries = [e for q in FORWARD_QUANTITIES for e in _moment_entries(slots, fractions, q)]
        entries += [
            e for q in GRAD_QUANTITIES for e in _moment_entries(slots, fractions, f"grad_{q}")
        ]
        entries += _weight_entries(slots, layers)
        names = {layer.index: layer.name for layer in layers}
        self.labels: list[Label] = [(ly, t, names[ly], m) for ly, t, m, _, _ in entries]
        self.index = np.array([self._at(row, c) for *_, row, c in entries], dtype=np.int64)
        self.grad_rows = [row for row, ((name, _, _), _) in enumerate(slots) if name in NORMED]
        self._grad_in_order = self.rows.inverse[self.grad_rows]  # their places in ``order``
        self.undefined = any(c == UNDEFINED for *_, c in entries)

    def _at(self, row: int | None, column: int) -> int:
        """Where row's statistic ``column`` (0..3, FRACTION, UNDEFINED) is in the vector
        of :meth:`finish`: the (R, 4) statistics, then the fractions, then a NaN."""
        stats = len(self.rows.n) * 4
        if row is None or column == UNDEFINED:
            return stats + len(self.rows.fraction_rows)
        if column == FRACTION:
            return stats + self.rows.fraction_position[row]
        return row * 4 + column

    def values(self, stats: np.ndarray, fractions: np.ndarray) -> np.ndarray:
        """(..., labels) float64 values from (..., R, 4) statistics and (..., F) fractions."""
        lead = stats.shape[:-2]
        nan = np.full((*lead, 1), np.nan)
        vector = np.concatenate([stats.reshape(*lead, -1), fractions, nan], axis=-1)
        return vector[..., self.index]

    def finish(
        self, host: np.ndarray, tensors: list[torch.Tensor]
    ) -> tuple[list[Label], np.ndarray, float]:
        """(labels, float64 values, global gradient norm) from the launched vector."""
        stats, fractions = self.rows.finish(host, tensors)
        squares = stats[self.grad_rows, 2] @ self.rows.n[self.grad_rows]  # Σ over rows of n·sq
        return self.labels, self.values(stats, fractions), float(np.sqrt(squares))

    def defer(self, host: np.ndarray) -> Deferred | None:
        """The step's sums, to be finished later with other steps' (:class:`Recorder`),
        when they alone give :meth:`finish`'s values and every value is finite; None
        when the step must be finished now (a non-finite or imprecise row: the two-pass
        path needs the step's tensors; or a weight without gradient)."""
        if self.undefined or not self.rows.pieces or not np.isfinite(host).all():
            return None
        total, squares = self.rows.fast_sums(host)
        if not self.rows.all_trusted(total, squares):
            return None
        grad = self._grad_in_order  # as in finish: Σ over rows of n·sq, in row order
        n = self.rows.n_in_order[grad]
        grad_norm = float(np.sqrt((squares[grad] / n) @ n))
        counts = host[len(host) - len(self.rows.fraction_rows) :].copy()
        return Deferred(self, total, squares, counts, grad_norm)

    def finish_deferred(self, deferred: Sequence[Deferred]) -> np.ndarray:
        """(steps, labels) values of deferred steps, finished together: the same values
        :meth:`finish` gives each step."""
        stats = self.rows.stats_from_sums(
            np.stack([d.total for d in deferred]), np.stack([d.squares for d in deferred])
        )
        counts = np.stack([d.counts for d in deferred])
        return self.values(stats, self.rows.fractions(counts, stats))


@dataclass(frozen=True)
class Deferred:
    """A probed step's per-row sums (in the plan's row ``order``) and fraction counts,
    all finite and precise, kept to be finished with other steps' (one batch of host
    array operations per run instead of one per step)."""

    plan: _Plan
    total: np.ndarray
    squares: np.ndarray
    counts: np.ndarray
    grad_norm: float


@dataclass(frozen=True)
class Launched:
    """A probed step whose device work is queued: ``vector`` goes to the host (with
    anything else the step sends, in one transfer), then :meth:`finish` labels it."""

    plan: _Plan
    tensors: list[torch.Tensor]
    vector: torch.Tensor  # (length,) float64, on the device

    def finish(self, host: np.ndarray) -> tuple[list[Label], np.ndarray, float]:
        """(row labels, their float64 values, global gradient norm) from ``vector`` on the
        host."""
        return self.plan.finish(host, self.tensors)

    def defer(self, host: np.ndarray) -> Deferred | None:
        """The step's sums to finish later, or None if it must be finished now (see
        :meth:`_Plan.defer`)."""
        return self.plan.defer(host)


class Probe:
    """Measures one run's probed steps, reusing each step structure's plan and the work
    buffers. ``parameters``: the model's parameters, for the global gradient norm (the
    watched weights' gradients are measured anyway; biases and readout are added)."""

    def __init__(
        self, layers: Sequence[WatchedLayer], parameters: Sequence[torch.nn.Parameter] = ()
    ) -> None:
        self.layers = list(layers)
        watched = {id(w) for layer in self.layers for w in (layer.weight, layer.recurrent_weight)}
        self.others = [p for p in parameters if id(p) not in watched]
        self.scratch = Scratch()
        self._plans: dict[tuple[object, ...], _Plan] = {}
        self._stored: dict[tuple[str, Key], torch.Tensor] = {}

    def store(self, name: str, key: Key, tensor: torch.Tensor) -> torch.Tensor:
        """A copy of ``tensor`` in the buffer kept for (name, key) (a Tape's ``store``)."""
        buffer = self._stored.get((name, key))
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
            self._stored[(name, key)] = buffer
        return buffer.copy_(tensor.detach())

    def launch(self, tape: Tape) -> Launched:
        """Queue the device work of a probed step, after ``loss.backward()``."""
        slots = list(_slots(tape, self.layers, self.others))
        names, tensors = zip(*slots, strict=True) if slots else ((), ())
        # the model fixes every shape and dtype but the batch's, which the first row shows
        key = (names, (tensors[0].shape, tensors[0].dtype) if tensors else None)
        if key not in self._plans:
            self._plans[key] = _Plan(slots, self.layers)
        plan, tensors = self._plans[key], list(tensors)
        return Launched(plan, tensors, plan.rows.launch(tensors, self.scratch))

    def measure(self, tape: Tape) -> tuple[list[Label], np.ndarray, float]:
        """:meth:`launch`, transfer and finish: labels, values, global gradient norm."""
        launched = self.launch(tape)
        return launched.finish(launched.vector.cpu().numpy())


def measure(tape: Tape, layers: Sequence[WatchedLayer]) -> tuple[list[Label], np.ndarray]:
    """Row labels and the float64 values of every statistic of this step."""
    labels, values, _ = Probe(layers).measure(tape)
    return labels, values


@dataclass
class Recorder:
    """Host-side long table of every probed step. Steps added as :class:`Deferred` are
    finished together, per plan, when the table is read."""

    steps: list[np.ndarray] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    values: list[np.ndarray | None] = field(default_factory=list)
    deferred: list[tuple[int, Deferred]] = field(default_factory=list)  # (place in values, sums)

    def add(self, step: int, labels: list[Label], values: np.ndarray) -> None:
        """Store one step's statistics (host values, one per label)."""
        if len(labels) != len(values):
            raise ValueError(f"{len(labels)} labels for {len(values)} values")
        self.steps.append(np.full(len(labels), step, dtype=np.int32))
        self.labels.extend(labels)
        self.values.append(values)

    def add_deferred(self, step: int, deferred: Deferred) -> None:
        """Store one step's sums; its values are computed when the table is read."""
        labels = deferred.plan.labels
        self.steps.append(np.full(len(labels), step, dtype=np.int32))
        self.labels.extend(labels)
        self.deferred.append((len(self.values), deferred))
        self.values.append(None)

    def _finish_deferred(self) -> None:
        by_plan: dict[int, list[tuple[int, Deferred]]] = defaultdict(list)
        for place, deferred in self.deferred:
            by_plan[id(deferred.plan)].append((place, deferred))
        for items in by_plan.values():
            values = items[0][1].plan.finish_deferred([deferred for _, deferred in items])
            for (place, _), row in zip(items, values, strict=True):
                self.values[place] = row
        self.deferred = []

    def columns(self) -> dict[str, np.ndarray]:
        """The long table as columns (schema.LAYER_COLUMNS)."""
        if not self.labels:
            empty = np.array([], dtype=object)
            return {
                "step": np.array([], np.int32),
                "layer": np.array([], np.int16),
                "t": np.array([], np.int16),
                "name": empty,
                "metric": empty,
                "value": np.array([], np.float64),
            }
        self._finish_deferred()
        layer, t, name, metric = zip(*self.labels, strict=True)
        return {
            "step": np.concatenate(self.steps),
            "layer": np.asarray(layer, dtype=np.int16),
            "t": np.asarray(t, dtype=np.int16),
            "name": np.asarray(name, dtype=object),
            "metric": np.asarray(metric, dtype=object),
            "value": np.concatenate(self.values),
        }


def _computation_order(label: Label) -> tuple[int, int, int]:
    """Sort key following the computation: forward quantities and weights by layer and
    time step, then (slot 1) the loss, then gradients from the last layer back."""
    layer, t, _name, metric = label
    if metric.startswith("grad_"):
        return (2, -layer, -t)
    return (0, layer, t)


def first_non_finite(
    labels: Sequence[Label], values: np.ndarray, loss: float
) -> dict[str, object] | None:
    """Where a step first went non-finite, in the order the step computes: the earliest
    forward statistic (lowest layer, then time step), else the loss, else the gradient
    nearest the output. None if everything is finite."""
    bad = [(_computation_order(labels[i]), i) for i in np.flatnonzero(~np.isfinite(values))]
    if not np.isfinite(loss):
        bad.append(((1, 0, 0), -1))
    if not bad:
        return None
    _, first = min(bad)
    if first == -1:
        return {"what": "loss", "value": float(loss)}
    layer, t, name, metric = labels[first]
    return {
        "what": metric,
        "layer": int(layer),
        "t": int(t),
        "name": name,
        "value": float(values[first]),
    }
