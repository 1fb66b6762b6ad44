"""The probe's C kernel (native/probe_rows.c): a probed step's sums in one call.

On a CPU run, a probed step's device work is a copy of every watched tensor into one
buffer and a few reductions over it (:mod:`initbench.measure.probes`). Each is a torch call, and
on a small network those calls, not the arithmetic, are the cost. The kernel reads every
tensor in place instead, in one call, and writes the same vector: per-piece sums and sums
of squares (float32 lanes combined in float64), rest elements, dead and saturated counts.

It is compiled on first use with the system's C compiler (``$CC``, else ``cc``, ``gcc``
or ``clang``; about 0.2 s) into initbench's cache folder (:func:`initbench.data.cache_dir`),
under a name that hashes the source, the compiler, its flags and the CPU, so a cache
shared by different machines never loads a kernel built for another CPU. Then it is
checked on a small input against numpy. With no compiler, a failed build or check, or
``INITBENCH_NATIVE=0``, :func:`kernel` returns None and the probe uses torch alone:
the statistics are the same within float32 rounding (tests/test_fast_path.py runs both).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("native") / "probe_rows.c"
ENV = "INITBENCH_NATIVE"  # "0" turns the kernel off
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))  # the first that builds is used
COMPILE_TIMEOUT = 120.0  # seconds

# Per row, the int64 fields the kernel reads (the enum in probe_rows.c, same order).
FIELDS = ("numel", "piece", "pieces", "rest", "at", "rest_at", "kind", "count_at", "units", "inner")
NO_COUNT, DEAD, SATURATED = 0, 1, 2

log = logging.getLogger(__name__)

# probe_rows(n_rows, pointers, fields, ranges, squares, out): the addresses of C-contiguous
# arrays of int64 (n_rows), int64 (n_rows x FIELDS), float64 (n_rows x 2), float64 (out)
Kernel = Callable[[int, int, int, int, int, int], int]


@functools.cache
def kernel() -> Kernel | None:
    """``probe_rows(n_rows, pointers, fields, ranges, squares, out) -> 0`` (see
    probe_rows.c and :data:`Kernel`), or None where it cannot be built or does not give
    numpy's sums (the probe then uses torch alone)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    try:
        library = ctypes.CDLL(str(_built()))
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        log.info("probe kernel unavailable, using torch alone: %s", exc)
        return None
    function = library.probe_rows
    function.restype = ctypes.c_int
    address = ctypes.c_void_p  # plain addresses: ndpointer's checks cost 13 µs a call
    function.argtypes = [ctypes.c_int64, address, address, address, ctypes.c_int64, address]
    if not _agrees(function):
        log.warning("probe kernel %s gives wrong sums; using torch alone", _built())
        return None
    return function


def _compiler() -> list[str]:
    """The compiler command: ``$CC`` (which may carry flags, e.g. "gcc -m64"), else the
    first of cc, gcc and clang on the PATH."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)
    if found is None:
        raise RuntimeError("no C compiler ($CC, cc, gcc or clang)")
    return [found]


def _cpu() -> str:
    """What identifies this CPU's instruction set: the machine, and on Linux the
    vendor, model and feature flags of /proc/cpuinfo."""
    keys = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        lines = []
    chosen = sorted(line for line in lines if line.split(":")[0].strip() in keys)
    return "\n".join([platform.machine(), platform.processor(), *chosen])


def _built() -> Path:
    """The compiled kernel in the cache folder, built now if it is not there."""
    from initbench.data import cache_dir

    compiler, source = _compiler(), SOURCE.read_bytes()
    folder = cache_dir() / "native"
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in FLAG_SETS:
        identity = "\0".join([*compiler, *flags, _cpu(), platform.python_version()])
        digest = hashlib.sha256(source + identity.encode()).hexdigest()[:16]
        target = folder / f"probe_rows-{digest}.so"
        if target.exists():
            return target
        try:
            _compile(compiler, flags, target)
            return target
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
    raise RuntimeError("; ".join(errors))


def _compile(compiler: list[str], flags: tuple[str, ...], target: Path) -> None:
    """Build into a temporary file beside ``target``, then rename it into place (atomic:
    workers building at once each rename a complete file)."""
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        command = [*compiler, *flags, "-shared", "-fPIC", str(SOURCE), "-o", temporary]
        subprocess.run(command, check=True, capture_output=True, timeout=COMPILE_TIMEOUT)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def row_fields(
    numel: int,
    piece: int,
    pieces: int,
    rest: int = 0,
    at: int = 0,
    rest_at: int = -1,
    kind: int = NO_COUNT,
    count_at: int = -1,
    units: int = 1,
    inner: int = 1,
) -> list[int]:
    """One row's fields, in the kernel's order (see probe_rows.c)."""
    return [numel, piece, pieces, rest, at, rest_at, kind, count_at, units, inner]


def _agrees(function: Kernel) -> bool:
    """The kernel's sums, norms, rest and counts of a small input equal numpy's: a row of
    105 elements as (3, 7, 5) in 2 pieces of 40 and a rest of 25, with its dead count,
    and a row of 3 in one short piece, with its saturated count (centre 0, threshold 0.5).
    The vector: 3 sums, 3 sums of squares, 25 rest elements, 2 counts."""
    x = np.random.default_rng(0).standard_normal(108).astype(np.float32)
    fields = np.array(
        [
            row_fields(105, 40, 2, 25, 0, 6, DEAD, 31, units=7, inner=5),
            row_fields(3, 1024, 1, 0, 2, -1, SATURATED, 32),
        ],
        dtype=np.int64,
    )
    ranges = np.array([[0.0, 0.0], [0.0, 0.5]])
    out = np.full(33, np.nan)
    pointers = np.array([x.ctypes.data, x[105:].ctypes.data], dtype=np.int64)
    arrays = [a.ctypes.data for a in (pointers, fields, ranges)]
    if function(2, *arrays, 3, out.ctypes.data) != 0:
        return False
    pieces = [x[:40].astype(np.float64), x[40:80].astype(np.float64), x[105:].astype(np.float64)]
    sums = [piece.sum() for piece in pieces]
    squares = [np.square(piece).sum() for piece in pieces]
    alive = np.count_nonzero(x[:105].reshape(3, 7, 5).max(axis=(0, 2)) > 0)
    return bool(
        np.allclose(out[:6], sums + squares, rtol=1e-6, atol=1e-6)
        and np.array_equal(out[6:31], x[80:105])
        and out[31] == alive
        and out[32] == np.count_nonzero(np.abs(x[105:]) > 0.5)
    )
