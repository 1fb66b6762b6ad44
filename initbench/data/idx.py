"""IDX files (the format of MNIST, Fashion-MNIST and KMNIST): reading, checking and
finding them."""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from initbench.config.datasets import (
    IdxParams,
)
from initbench.config.geometry import IMAGE_SIZE, NUM_CLASSES
from initbench.data.core import (
    DataError,
    Dataset,
    _file_digest,
    _to_dataset,
    cache_dir,
    stratified_take,
)

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


def load_idx(name: str, params: IdxParams, seed: int) -> Dataset:
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
