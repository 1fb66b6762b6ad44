"""gaussian: white-noise images, every pixel N(0, 1), with random balanced labels; the
input of pure signal-propagation runs (Brock et al. 2021's plots use N(0, 1) input).
Nothing is learnable: test accuracy stays at chance."""

from __future__ import annotations

import numpy as np

from initbench.config.datasets import GaussianParams
from initbench.config.geometry import IMAGE_SHAPE, NUM_CLASSES
from initbench.data.core import Dataset, _class_counts


def _split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = rng.standard_normal((n, *IMAGE_SHAPE), dtype=np.float32)  # (n, 1, 28, 28)
    labels = rng.permutation(np.arange(n) % NUM_CLASSES)  # as balanced as n allows
    return images, labels


def load_gaussian(params: GaussianParams, seed: int) -> Dataset:
    """Draw the dataset: same (params, seed) -> bit-identical tensors. Already standard
    normal, so not normalised again."""
    import torch  # here, not at the top: listing and validating never load data

    rng = np.random.default_rng([seed, 0x6A55])
    train_x, train_y = _split(params.n_train, rng)
    test_x, test_y = _split(params.n_test, rng)
    info = {
        "source": "gaussian",
        "seed": seed,
        "normalization": {"mode": "none"},
        "train_class_counts": _class_counts(train_y),
        "test_class_counts": _class_counts(test_y),
    }
    return Dataset(
        name="gaussian",
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y.astype(np.int64)),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y.astype(np.int64)),
        num_classes=NUM_CLASSES,
        info=info,
    )
