"""CIFAR-10 as an MNIST-size stand-in where MNIST is not prepared: 70,000 grey 28x28 images in
one .npz, for measuring BioConvHash's MNIST front end (F = 500, K = 3, 4) at MNIST's size.

    python experiments/mnist_size_standin.py --dataset archive:PATH/cifar10-jpeg.tar.gz \\
        --out grey28.npz
    python experiments/main.py --config experiments/configs/bioconvhash.py:mnist \\
        --config.dataset=npz:grey28.npz

Every image is converted to grey (Pillow's luma) and resized to 28x28 (area averaging,
``hebbret.data.images.grey_resized``); the first 10,000 training images are added again mirrored
left-right, so there are 70,000 images as in MNIST (``x_train``: 50k + 10k mirrored, ``x_test``:
10k). An original and its mirror may fall one among the queries and one in the database: one
near-duplicate among ~6,900 relevant items, which moves a query's AP@All by ~1e-4.
"""

from __future__ import annotations

import argparse

import numpy as np

from hebbret import data, files
from hebbret.data.images import grey_resized

MNIST_SIZE = 70_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="a dataset spec with train and test splits")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--size", type=int, default=28, help="image side (MNIST: 28)")
    args = p.parse_args()
    files.check_writable(args.out)
    ds = data.load(args.dataset)
    if {"train", "test"} - set(ds.splits):
        raise SystemExit(f"{ds.spec} needs train and test splits, has {sorted(ds.splits)}")
    train, test = ds.splits["train"], ds.splits["test"]
    if train.y is None or test.y is None:
        raise SystemExit(f"{ds.spec}: missing labels")
    extra = MNIST_SIZE - len(train.x) - len(test.x)
    if not 0 <= extra <= len(train.x):
        raise SystemExit(f"cannot make {MNIST_SIZE} images from {len(train.x) + len(test.x)}")
    x_train = grey_resized(train.x, args.size)
    x_train = np.concatenate([x_train, x_train[:extra, :, ::-1]])
    y_train = np.concatenate([train.y, train.y[:extra]]).astype(np.int32)
    x_test, y_test = grey_resized(test.x, args.size), test.y.astype(np.int32)

    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    files.atomic_write(args.out, lambda f: np.savez(f, **arrays))
    print(f"wrote {args.out}: {len(x_train)} + {len(x_test)} grey {args.size}x{args.size} images")


if __name__ == "__main__":
    main()
