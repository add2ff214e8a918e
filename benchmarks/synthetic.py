"""A CIFAR-shaped split of random images, saved where `data.prepared=` reads it: for throughput checks on a
machine that has no copy of the real files (a GPU node without internet, for instance).

    .venv/bin/python benchmarks/synthetic.py --output /tmp/cifar10.pt --train 10000
    optbench-train data=cifar10 data.prepared=/tmp/cifar10.pt data.augment=false model=resnet18 trainer=gpu

The images are uniform random uint8 with random labels, so accuracy stays at chance: use it to time steps,
never to compare optimizers. The shapes, dtypes, normalization and split sizes are the real dataset's, so
every step does the same work as on CIFAR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from optbench.training.data import Dataset, Split, save_prepared

SHAPES = {"cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100)}  # image shape, classes


def synthetic(name: str, n_train: int, n_val: int, n_test: int, seed: int = 0) -> Dataset:
    shape, classes = SHAPES[name]
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        x = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
        return Split(x, torch.randint(0, classes, (n,), generator=generator))

    train = split(n_train)
    pixels = train.x.float().div(255)  # per-channel statistics of the training images, as for the real data
    mean, std = tuple(pixels.mean(dim=(0, 2, 3)).tolist()), tuple(pixels.std(dim=(0, 2, 3)).tolist())
    return Dataset(name, train, split(n_val), split(n_test), shape, classes, mean, std)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", choices=sorted(SHAPES), default="cifar10")
    parser.add_argument("--output", type=Path, required=True, help="the .pt file to write")
    parser.add_argument("--train", type=int, default=45000, help="training images (default: CIFAR's 45,000)")
    parser.add_argument("--val", type=int, default=5000)
    parser.add_argument("--test", type=int, default=10000)
    args = parser.parse_args(argv)
    data = synthetic(args.name, args.train, args.val, args.test)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_prepared(data, args.output)
    print(f"{args.output}: {data.name}-shaped random images, {args.train}/{args.val}/{args.test} train/val/test")


if __name__ == "__main__":
    main()
