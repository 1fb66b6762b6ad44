"""The packed torch reduction: Σx and Σx² of a fixed list of tensors (rows) on the device,
finished on the host in float64.

Why it is shaped so: a small net's step is a few hundred kernel launches, so launches and
passes over memory are the cost. All small rows of a step (preacts, activations,
gradients, weights, whatever their shapes) are copied by one call into a buffer, each
from a multiple of PARTIAL elements (the zero padding between rows changes no sum), and
the buffer is read by two kernels: float32 sums and L2 norms of PARTIAL-element pieces,
which keep float32 precision. A large row is read in place the same way, in pieces of
:func:`piece_size` elements. The fractions' counts (:mod:`initbench.measure.counts`)
follow, and everything lands in one float64 vector that reaches the host in one transfer::

    vector = [piece sums (P)] [piece sums of squares (P)] [counts (F)] [the caller's extras]

The host adds each row's pieces in float64 and derives mean, var = (Σx² − (Σx)²/n)/(n − 1),
sq and norm. Where that formula cannot keep float32 precision (:meth:`Layout.trusted`) the row
is measured again by the two-pass path (:mod:`initbench.measure.exact`).

Three index spaces, no more: rows (in the plan's order, :func:`reduction_order`), pieces
(each row's from ``starts[row]``, in row order) and count slots (the rows' counts, in row
order).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from initbench.measure.counts import Count, Scratch
from initbench.measure.exact import two_pass_moments

PACK_LIMIT = 1 << 17  # elements: smaller tensors are packed together (launches dominate
# them); larger ones are read in place, where packing would only add a copy
CHUNK = 1 << 16  # elements packed and read at once (256 kB in float32): the copy writes
# to, and the two reductions read from, a buffer that stays in cache (measured at 1 thread:
# mlp d30 w64 1.37x a plain step, rnn d1 w64 1.32x; with 1 << 20, 1.50x both)
PARTIAL = 1024  # elements per float32 partial sum and norm (measured: within 5e-7 of float64)
TINY_SQ = 2.0**-100  # a smaller mean square may hold float32 squares that underflowed
MAX_KAPPA2 = 4.0  # sq / var beyond this: Σx² − (Σx)²/n cancels more than float32 allows

# Moment reduction of the catalogue -> its column in a row's statistics (see moments_from_sums).
MOMENT_COLUMNS = {"mean": 0, "var": 1, "sq": 2, "norm": 3}


def is_large(numel: int) -> bool:
    """Whether a row is read alone, in place (else packed with the other small rows)."""
    return numel >= PACK_LIMIT


@functools.lru_cache(maxsize=256)
def piece_size(n: int) -> int:
    """Elements per partial sum of a large n-element row: the largest divisor of n in
    [PARTIAL / 2, PARTIAL] (no remainder), else PARTIAL (the rest is one more piece)."""
    return next((k for k in range(PARTIAL, PARTIAL // 2 - 1, -1) if n % k == 0), PARTIAL)


def _padded(n: int) -> int:
    """Elements a small row takes in a packed buffer: whole PARTIAL-element pieces."""
    return -(-n // PARTIAL) * PARTIAL


@dataclass(frozen=True)
class Chunk:
    """Rows [start, stop) read together: packed (small rows, copied into the shared buffer
    at ``offsets``, read as (size / PARTIAL, PARTIAL)) or one large row alone, in place."""

    start: int
    stop: int
    alone: bool
    offsets: tuple[int, ...] = ()
    size: int = 0


def chunks(sizes: Sequence[int]) -> list[Chunk]:
    """Consecutive small rows packed, in order, at most CHUNK padded elements per chunk;
    each large row alone."""
    found: list[Chunk] = []
    start, offset, offsets = 0, 0, []
    for row, n in enumerate(sizes):
        if offsets and (is_large(n) or offset + _padded(n) > CHUNK):
            found.append(Chunk(start, row, False, tuple(offsets), offset))
            offset, offsets = 0, []
        if is_large(n):
            found.append(Chunk(row, row + 1, True))
            start = row + 1
            continue
        if not offsets:
            start = row
        offsets.append(offset)
        offset += _padded(n)
    if offsets:
        found.append(Chunk(start, len(sizes), False, tuple(offsets), offset))
    return found


def reduction_order(sizes: Sequence[int], last: Sequence[int] = ()) -> list[int]:
    """The rows' order for :class:`Layout`: the rows in ``last`` after all others (so that
    they are contiguous), and in each part the small rows before the large ones (so that
    they are packed together); otherwise in order."""
    at_end = set(last)
    return sorted(range(len(sizes)), key=lambda row: (row in at_end, is_large(sizes[row])))


def row_pieces(n: int, alone: bool) -> int:
    """Pieces of an n-element row: whole PARTIAL pieces (packed, the last padded), or
    n // piece_size(n) plus one for a rest (alone)."""
    return -(-n // piece_size(n)) if alone else -(-n // PARTIAL)


@dataclass(frozen=True)
class Run:
    """Rows [start, stop) whose count is taken by one call: consecutive packed rows of one
    shape asking the same count, unbroken by padding (or one row). Its counts are the
    count slots from ``first``."""

    start: int
    stop: int
    count: Count
    first: int


class Layout:
    """Where each row is read and where its values land in the step's vector (see the
    module docstring). Depends only on the rows' shapes and counts (``(row, count)``
    pairs in row order, the count slots): a plan builds it once."""

    def __init__(
        self, shapes: Sequence[tuple[int, ...]], counts: Sequence[tuple[int, Count]] = ()
    ) -> None:
        self.shapes = [tuple(shape) for shape in shapes]
        sizes = [math.prod(shape) for shape in self.shapes]
        self.n = np.array(sizes, dtype=np.float64)
        self._tiny = TINY_SQ * self.n  # sq >= TINY_SQ  <=>  Σx² >= TINY_SQ n
        # sq <= MAX_KAPPA2 var  <=>  (Σx)² <= a Σx²; a one-element row has no variance
        self._a = np.where(self.n > 1, self.n - (self.n - 1) / MAX_KAPPA2, -1.0)
        self.chunks = chunks(sizes)
        # per row, the first row of its packed chunk (-1: read alone)
        self._packed_in = [
            -1 if c.alone else c.start for c in self.chunks for _ in range(c.start, c.stop)
        ]
        per_row = [row_pieces(n, self._packed_in[row] < 0) for row, n in enumerate(sizes)]
        self.starts = np.cumsum([0, *per_row[:-1]]).astype(np.int64)
        self.pieces = sum(per_row)
        self.counted = [row for row, _ in counts]
        self.counts = [count for _, count in counts]
        self.divisors = np.array([c.divisor(self.shapes[r]) for r, c in counts], dtype=np.float64)
        self.complement = np.array([c.complement for c in self.counts], dtype=bool)
        self.runs = self._runs()
        self.length = 2 * self.pieces + len(self.counted)

    def _runs(self) -> list[Run]:
        runs: list[Run] = []
        for slot, (row, count) in enumerate(zip(self.counted, self.counts, strict=True)):
            if runs and self._joins(runs[-1], row, count):
                runs[-1] = Run(runs[-1].start, row + 1, count, runs[-1].first)
            else:
                runs.append(Run(row, row + 1, count, slot))
        return runs

    def _joins(self, run: Run, row: int, count: Count) -> bool:
        """Whether ``row`` extends ``run``: the next row of the same packed chunk, with
        the same count and shape, and no padding between them."""
        same = (run.stop, run.count, self.shapes[row - 1]) == (row, count, self.shapes[row])
        packed = self._packed_in[row] >= 0 and self._packed_in[row] == self._packed_in[row - 1]
        return same and packed and self.n[row] % PARTIAL == 0

    def sums(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Σx and Σx² of every row, (..., R) each, from launched vectors (..., length):
        the pieces' sums and sums of squares, added up in float64."""
        lead, p = host.shape[:-1], self.pieces
        if not p:
            return np.zeros((*lead, 0)), np.zeros((*lead, 0))
        with np.errstate(all="ignore"):  # non-finite tensors give inf and NaN, as they should
            total = np.add.reduceat(host[..., : 2 * p].reshape(*lead, 2, p), self.starts, axis=-1)
        return total[..., 0, :], total[..., 1, :]

    def stats(self, host: np.ndarray) -> np.ndarray:
        """(..., R, 4) statistics from the partial sums alone (see :meth:`trusted`)."""
        return self.stats_from_sums(*self.sums(host))

    def stats_from_sums(self, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """(..., R, 4) statistics from :meth:`sums`."""
        with np.errstate(all="ignore"):
            return moments_from_sums(total, squares, self.n)

    def trusted(self, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """(..., R) bool from :meth:`sums`: the rows whose fast statistics keep float32
        precision: sq = Σx²/n finite, no float32 square underflowed (sq >= TINY_SQ), and
        Σx² − (Σx)²/n did not cancel (sq <= MAX_KAPPA2 var, i.e. (Σx)² <= a Σx² with
        a = n − (n − 1)/MAX_KAPPA2). The others are measured again by the two-pass path.
        A NaN fails every comparison; an infinite Σx fails the last."""
        with np.errstate(all="ignore"):
            bounded = (total * total <= squares * self._a) & (squares >= self._tiny)
            return bounded & (squares < np.inf)

    def all_trusted(self, total: np.ndarray, squares: np.ndarray) -> bool:
        """Whether :meth:`trusted` holds for every row of one vector's sums: the same
        comparisons, in few calls (this runs at every probed step)."""
        return bool(
            (squares >= self._tiny).all()
            and squares.max() < np.inf
            and (total * total <= squares * self._a).all()
        )

    def fractions(self, counts: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """(..., F) fractions of the counted rows from their counts (..., F) and the rows'
        statistics (NaN where the row's tensor is not finite)."""
        ratio = counts / self.divisors
        fractions = np.where(self.complement, 1.0 - ratio, ratio)
        return np.where(np.isfinite(stats[..., self.counted, 2]), fractions, np.nan)

    def counts_of(self, host: np.ndarray) -> np.ndarray:
        """The counts (..., F) of launched vectors (..., length)."""
        return host[..., 2 * self.pieces : self.length]

    def repaired(
        self, total: np.ndarray, squares: np.ndarray, tensors: Sequence[torch.Tensor]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(R, 4) statistics from one vector's sums, and the rows measured again by the
        two-pass path (those the sums cannot give at float32 precision: a second, small
        transfer)."""
        stats = self.stats_from_sums(total, squares)
        redo = np.flatnonzero(~self.trusted(total, squares))
        if len(redo):
            stats[redo] = two_pass_moments([tensors[row] for row in redo])
        return stats, redo

    def finish(
        self, host: np.ndarray, tensors: Sequence[torch.Tensor]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(R, 4) statistics (:meth:`repaired`) and the (F,) fractions of a launched vector."""
        stats, _ = self.repaired(*self.sums(host), tensors)
        return stats, self.fractions(self.counts_of(host), stats)


def moments_from_sums(total: np.ndarray, squares: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Σx, Σx² and element counts (..., R) -> (..., R, 4): mean, unbiased variance, mean
    square and L2 norm (at float32 precision where :meth:`Layout.trusted`). Non-finite sums give
    NaN or inf (callers silence numpy's warnings about them)."""
    mean, var, sq = _mean_var_sq(total, squares, n)
    return np.stack([mean, var, sq, np.sqrt(squares)], axis=-1)


def _mean_var_sq(total: np.ndarray, squares: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, unbiased variance and mean square from Σx, Σx² and element counts."""
    mean = total / n
    return mean, np.maximum(squares - total * mean, 0.0) / (n - 1), squares / n


@dataclass
class _Views:
    """Where one chunk's device work reads and writes: views built once per layout."""

    places: list[torch.Tensor]  # packed: each row's place in the shared buffer (row-shaped),
    # then the padding that other chunks overwrite (zeroed by the same copy)
    zeros: list[torch.Tensor]  # packed: zeros to copy into that padding
    pieces: torch.Tensor | None  # packed: (pieces, PARTIAL) view of the shared buffer
    sums: torch.Tensor  # the chunk's piece sums, in the result buffer
    norms: torch.Tensor  # the chunk's piece L2 norms, in the result buffer
    runs: list[tuple[Run, torch.Tensor | None, torch.Tensor]]  # run, packed view, its counts


class Reducer:
    """The device work of a :class:`Layout`: buffers allocated by the first launch (in the
    rows' dtype and device) and reused by every later one. ``extras``: slots at the end
    of the vector for the caller's own values, sent in the same transfer."""

    def __init__(self, layout: Layout, extras: int = 0) -> None:
        self.layout, self._extras = layout, extras
        self._views: list[_Views] = []
        self._no_grad = torch.no_grad()
        self._set_vector(torch.zeros(layout.length + extras, dtype=torch.float64))

    def _set_vector(self, vector: torch.Tensor) -> None:
        """The step's float64 vector, and the views of it every launch writes or reads."""
        p = self.layout.pieces
        self.vector, self._head, self._squares = vector, vector[: 2 * p], vector[p : 2 * p]
        self.extras = vector[self.layout.length :]  # the caller's slots
        # on a CPU the host reads the vector in place: no copy, no call per step
        self.host = vector.numpy() if vector.device.type == "cpu" else None

    def launch(self, tensors: Sequence[torch.Tensor], scratch: Scratch) -> torch.Tensor:
        """Queue one step's device work; returns the float64 vector of the module
        docstring (a buffer the next launch overwrites)."""
        if not self.layout.chunks:
            return self.vector
        with self._no_grad:
            if not self._views:
                self._allocate(tensors[0])
            for chunk, views in zip(self.layout.chunks, self._views, strict=True):
                rows = tensors[chunk.start : chunk.stop]
                if chunk.alone:
                    self._read_alone(rows[0], views, scratch)
                else:
                    self._read_packed(rows, views, scratch)
            self._head.copy_(self._result)
            self._squares.square_()  # the pieces' sums of squares, exact in float64
        return self.vector

    def to_host(self) -> np.ndarray:
        """The launched vector on the host (read in place on a CPU: valid until the next
        launch)."""
        return self.host if self.host is not None else self.vector.cpu().numpy()

    @staticmethod
    def _read_packed(rows: Sequence[torch.Tensor], views: _Views, scratch: Scratch) -> None:
        torch._foreach_copy_(views.places, [*rows, *views.zeros] if views.zeros else rows)
        torch.sum(views.pieces, dim=1, out=views.sums)
        torch.linalg.vector_norm(views.pieces, dim=1, out=views.norms)
        for run, view, out in views.runs:
            run.count.count(view, out, scratch)

    @staticmethod
    def _read_alone(tensor: torch.Tensor, views: _Views, scratch: Scratch) -> None:
        """A large row in place: whole pieces of piece_size(n), then the rest as one more."""
        flat = tensor.detach().reshape(-1)
        piece = piece_size(flat.numel())
        whole = flat.numel() // piece
        pieces = flat[: whole * piece].view(whole, piece)
        torch.sum(pieces, dim=1, out=views.sums[:whole])
        torch.linalg.vector_norm(pieces, dim=1, out=views.norms[:whole])
        if whole < len(views.sums):
            rest = flat[whole * piece :]
            torch.sum(rest, dim=0, keepdim=True, out=views.sums[whole:])
            torch.linalg.vector_norm(rest, dim=0, keepdim=True, out=views.norms[whole:])
        for run, _, out in views.runs:
            run.count.count(tensor.detach()[None], out, scratch)

    def _allocate(self, like: torch.Tensor) -> None:
        """The result buffers, the shared packing buffer, and each chunk's views into them."""
        layout, device = self.layout, like.device
        self._result = torch.empty(2 * layout.pieces, dtype=like.dtype, device=device)
        self._set_vector(
            torch.zeros(layout.length + self._extras, dtype=torch.float64, device=device)
        )
        packed_chunks = [chunk for chunk in layout.chunks if not chunk.alone]
        size = max((chunk.size for chunk in packed_chunks), default=0)
        packed = torch.zeros(size, dtype=like.dtype, device=device)
        shared = len(packed_chunks) > 1  # then padding must be zeroed again at every launch
        self._views = [self._chunk_views(chunk, packed, shared) for chunk in layout.chunks]

    def _chunk_views(self, chunk: Chunk, packed: torch.Tensor, shared: bool) -> _Views:
        layout = self.layout
        first = int(layout.starts[chunk.start])
        end = int(layout.starts[chunk.stop]) if chunk.stop < len(layout.starts) else layout.pieces
        sums = self._result[first:end]
        norms = self._result[layout.pieces + first : layout.pieces + end]
        places, pads = [], []
        for row, offset in zip(range(chunk.start, chunk.stop), chunk.offsets, strict=False):
            n, shape = int(layout.n[row]), layout.shapes[row]
            places.append(packed[offset : offset + n].view(shape))
            if shared and _padded(n) > n:
                pads.append(packed[offset + n : offset + _padded(n)])
        places += pads
        zeros = [torch.zeros_like(pad) for pad in pads]
        runs = [
            self._run_views(run, chunk, packed)
            for run in layout.runs
            if chunk.start <= run.start < chunk.stop
        ]
        pieces = None if chunk.alone else packed[: chunk.size].view(-1, PARTIAL)
        return _Views(places, zeros, pieces, sums, norms, runs)

    def _run_views(
        self, run: Run, chunk: Chunk, packed: torch.Tensor
    ) -> tuple[Run, torch.Tensor | None, torch.Tensor]:
        """A run, its (rows, *shape) view of the packed buffer (None: read in place), and
        where its counts go in the vector."""
        layout, rows = self.layout, run.stop - run.start
        at = 2 * layout.pieces + run.first
        out = self.vector[at : at + rows]
        if chunk.alone:
            return run, None, out
        shape = layout.shapes[run.start]
        offset = chunk.offsets[run.start - chunk.start]
        return run, packed[offset : offset + rows * math.prod(shape)].view(rows, *shape), out
