"""synthetic: ten smooth random prototypes with shifts and noise; seeded, instant,
learnable (the tests' dataset)."""

from __future__ import annotations

import numpy as np

from initbench.config.datasets import (
    SyntheticParams,
)
from initbench.config.geometry import IMAGE_SIZE, NUM_CLASSES
from initbench.data.core import Dataset, _class_counts, normalize_pair


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
