"""The pieces every dataset shares: the Dataset record, its errors, normalisation,
stratified splits, the cache folder and atomic writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import platformdirs

from initbench.config.datasets import (
    Normalize,
)
from initbench.config.geometry import NUM_CLASSES

if TYPE_CHECKING:
    import torch

CACHE_ENV = "INITBENCH_CACHE_DIR"
# per_pixel: a pixel whose train std is below this fraction of the global std is scaled
# as if its std were that floor (MNIST's border pixels are constant 0 in train; dividing
# by ~0 would blow a rare nonzero test pixel up to thousands).
PER_PIXEL_STD_FLOOR = 0.1


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


def cache_dir() -> Path:
    """The folder for initbench's caches and downloads: ``$INITBENCH_CACHE_DIR`` if set,
    else the user cache folder (``~/.cache/initbench`` on Linux). Not created here."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("initbench"))


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


def _class_counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=NUM_CLASSES).tolist()
