"""Seconds to build Tzelepi & Tefas targets for N x d features vs a numpy (BLAS) brute force.

FU needs the 2 nearest other items of every item and RRI the 5 nearest items of another class:
exact k-NN over the whole database, N^2 d multiply-adds. hebbret computes them in chunks of 256
rows with one jitted function (distances, mask, ``lax.top_k``): memory stays at 256 x N distances.
The reference, written here: the same chunks in numpy (``q @ x.T`` through BLAS, then
``argpartition`` and a sort of the k), for FU's neighbours. Features: seeded synthetic ones (10
Gaussian clusters, labels = cluster), or with ``--network CKPT --dataset SPEC`` a saved network's
fc5 features (4,096-d) of N random training images, which also gives how often an item's 2
nearest neighbours share its label (what FU pulls it towards). Each is timed once after a warm-up
on a small slice; peak memory is the process's max RSS.

    python benchmarks/retraining_targets.py [--n 50000 --d 4096 --out results/<name>]
    python benchmarks/retraining_targets.py --network CKPT --dataset SPEC [--n 50000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import sys
import time

import jax
import numpy as np

from hebbret import data
from hebbret.files import atomic_write_text
from hebbret.results import git_revision
from hebbret.retraining import network, targets


def numpy_nearest(x: np.ndarray, k: int, mask_labels: np.ndarray | None, chunk: int = 256):
    """(N, k) indices of each row's k nearest other rows (squared Euclidean), nearest first; with
    ``mask_labels`` only rows of another label."""
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty((len(x), k), np.int64)
    for s in range(0, len(x), chunk):
        q = x[s : s + chunk]
        d = sq[s : s + chunk, None] - 2.0 * (q @ x.T) + sq[None, :]
        if mask_labels is None:
            d[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        else:
            d[mask_labels[s : s + chunk, None] == mask_labels[None, :]] = np.inf
        part = np.argpartition(d, k, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, 1), axis=1)
        out[s : s + chunk] = np.take_along_axis(part, order, 1)
    return out


def network_features(path: str, spec: str, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """fc5 features (n, 4096) and labels of n random training images of ``spec`` (seed 0; image
    folders come sorted by class)."""
    ds = data.load(spec)
    train = ds.splits["train"]
    pick = np.sort(np.random.default_rng(0).permutation(len(train.x))[:n])
    images, labels = train.x[pick], np.asarray(train.y[pick])
    variables, mean, std, keep_variance = network.load_network(path, ds.num_classes)
    c = network.cut(["fc5"], "fc5")
    inputs = network.prefix_inputs(variables, c, images, mean, std, keep_variance=keep_variance)
    base, frozen = network.split_params(variables, c, slope=None)
    x = network.features(network.block_apply(c, frozen, keep_variance=keep_variance), base, inputs)
    return x, labels, f"fc5 of {path} on {n:,} random training images of {ds.label}"


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--network", help="a saved network (hebbret.retraining.network.save_network)")
    p.add_argument("--dataset", help="dataset spec whose training images give the features")
    p.add_argument("--out", default="results/retraining_targets_benchmark")
    args = p.parse_args()
    command = shlex.join(["python", *sys.argv])
    if args.network:
        x, labels, source = network_features(args.network, args.dataset, args.n)
    else:
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 10, args.n)
        centres = rng.standard_normal((10, args.d), dtype=np.float32)
        x = centres[labels] + rng.standard_normal((args.n, args.d), dtype=np.float32)
        source = "synthetic: 10 Gaussian clusters"
    warm = np.random.default_rng(1).choice(len(x), 512, replace=False)  # data may be class-sorted
    targets.fu_targets(x[warm])  # warm-up: compile on a small random slice
    targets.rri_targets(x[warm], labels[warm])
    res: dict[str, float] = {}
    t = time.perf_counter()
    fu = targets.fu_targets(x)
    res["hebbret_fu_s"] = time.perf_counter() - t
    t = time.perf_counter()
    targets.rri_targets(x, labels)
    res["hebbret_rri_s"] = time.perf_counter() - t
    res["hebbret_peak_rss_gb"] = rss_gb()
    numpy_nearest(x[warm], 2, None)
    t = time.perf_counter()
    ref_idx = numpy_nearest(x, 2, None)
    res["numpy_fu_nearest_s"] = time.perf_counter() - t
    res["peak_rss_gb"] = rss_gb()
    res["fu_neighbours_same_label"] = float(np.mean(labels[ref_idx] == labels[:, None]))
    check = np.arange(2000)
    _, idx = targets.nearest(x[check], x, 2, exclude="self", q_index=check)
    same = float(np.mean(np.sort(ref_idx[check], 1) == np.sort(idx, 1)))
    res["same_neighbours_fraction"] = same
    assert np.isfinite(fu.target).all()
    cpu = platform.processor() or platform.machine()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    devices = ", ".join(str(d) for d in jax.devices())
    md = "\n".join(
        [
            f"`{command}`",
            "",
            f"{date}; {os.cpu_count()} CPU cores ({cpu}), JAX devices: {devices}; git "
            f"{git_revision()}. N = {len(x):,} items, d = {x.shape[1]} (float32).",
            "",
            f"Features: {source}.",
            "",
            "| targets | hebbret (s) | numpy BLAS brute force, neighbours only (s) | ratio |",
            "|---|---:|---:|---:|",
            f"| FU (2 nearest others, means) | {res['hebbret_fu_s']:.1f} | "
            f"{res['numpy_fu_nearest_s']:.1f} | "
            f"{res['numpy_fu_nearest_s'] / res['hebbret_fu_s']:.2f}x |",
            f"| RRI (class means, 5 nearest irrelevant) | {res['hebbret_rri_s']:.1f} | | |",
            "",
            "An item's 2 nearest neighbours share its label "
            f"{100 * res['fu_neighbours_same_label']:.1f} % of the time (FU: their mean).",
            f"Same 2 nearest neighbours as numpy for {100 * same:.2f} % of the first 2,000 items. "
            "Peak memory "
            f"(max RSS) {res['hebbret_peak_rss_gb']:.1f} GB after hebbret's targets, "
            f"{res['peak_rss_gb']:.1f} GB after both. The work is N^2 d = "
            f"{len(x) ** 2 * x.shape[1] / 1e12:.1f} T multiply-adds per rule.",
        ]
    )
    print(md)
    record = {"command": command, "date": date, "args": vars(args), "results": res}
    atomic_write_text(args.out + ".md", md + "\n")
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
