"""Matching seconds per query of 400-d CNN features (Kuo et al. Tables 4 / 5) under the three
distances: hebbret's jitted retrieval kernel vs a per-query numpy loop.

The paper's 0.08-0.26 s/query is the time to match one query against the database on their CPU.
The reference here does that the plain way (``hebbret.pipelines.kuo.numpy_ranking``: the paper's
eqs. 2-5 in float64 numpy against every database item, then a full argsort), one query at a
time. hebbret's kernel is timed two ways: all queries in one ``retrieval.evaluate`` call (ranking
and AP of every query, the whole database), and one query per call (latency: input checks and
the database's upload included, ``chunk_size=1``). Each is timed once
after a warm-up call; the AP of the numpy loop's queries is checked against the kernel's.
Features: seeded synthetic ReLU features (10 clusters, labels = cluster), or with ``--features
FILE.npz`` (arrays ``xq``, ``xb``, ``yq``, ``yb``) real ones.

    python benchmarks/kuo_matching.py [--n 50000 --queries 1000 --loop 100 --out results/<name>]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time

import jax
import numpy as np

from hebbret import retrieval
from hebbret.files import atomic_write_text
from hebbret.pipelines.kuo import DISTANCES, numpy_ranking, retrieve
from hebbret.results import git_revision


def synthetic(n: int, nq: int, d: int = 400):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, d), dtype=np.float32)
    yb, yq = rng.integers(0, 10, n), rng.integers(0, 10, nq)

    def feats(y):
        return np.maximum(centres[y] + 1.5 * rng.standard_normal((len(y), d), np.float32), 0)

    return feats(yq), feats(yb), yq, yb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000, help="database items (synthetic)")
    p.add_argument("--queries", type=int, default=1_000, help="queries for the kernel")
    p.add_argument("--loop", type=int, default=100, help="queries for the numpy loop")
    p.add_argument("--features", help="npz with xq, xb, yq, yb (instead of synthetic)")
    p.add_argument("--out", default="results/kuo_matching_benchmark")
    args = p.parse_args()
    command = shlex.join(["python", *sys.argv])
    if args.features:
        with np.load(args.features, allow_pickle=False) as f:
            xq, xb, yq, yb = (f[k] for k in ("xq", "xb", "yq", "yb"))
        xq, yq = xq[: args.queries], yq[: args.queries]
        source = args.features
    else:
        xq, xb, yq, yb = synthetic(args.n, args.queries)
        source = "synthetic ReLU features, 10 clusters"
    rows = []
    for distance in DISTANCES:
        r = retrieve(xq, xb, yq, yb, distance, timing_queries=args.loop)
        kw = dict(metric=distance, R=None, normaliser="relevant", chunk_size=1)
        retrieval.evaluate(xq[:1], xb, yq[:1], yb, **kw)  # warm-up of the one-query shape
        t = time.perf_counter()
        for i in range(args.loop):
            retrieval.evaluate(xq[i : i + 1], xb, yq[i : i + 1], yb, **kw)
        r["kernel_one_query_s"] = (time.perf_counter() - t) / args.loop
        numpy_ranking(xq[0], xb, distance)
        rows.append({"distance": distance} | r)
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    devices = ", ".join(str(d) for d in jax.devices())
    cpu = platform.processor() or platform.machine()
    lines = [
        f"`{command}`",
        "",
        f"{date}; {os.cpu_count()} CPU cores ({cpu}), JAX devices: {devices}; git "
        f"{git_revision()}. Database {len(xb):,} x {xb.shape[1]} float32 ({source}); kernel: "
        f"{len(xq):,} queries in one call, and {args.loop} one query a call; numpy loop: "
        f"{args.loop} queries. mAP over the whole database.",
        "",
        "| distance | kernel, batched (ms/query) | kernel, one query a call (ms) | numpy loop "
        "(ms/query) | numpy / batched | numpy / one-query | paper (ms/query, CIFAR-10) | "
        "mAP | max AP diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    paper = {"euclidean": 85, "manhattan": 83, "cosine": 262}
    for r in rows:
        lines.append(
            f"| {r['distance']} | {1e3 * r['kernel_s_per_query']:.3f} | "
            f"{1e3 * r['kernel_one_query_s']:.2f} | {1e3 * r['numpy_s_per_query']:.1f} | "
            f"{r['numpy_s_per_query'] / r['kernel_s_per_query']:.0f}x | "
            f"{r['numpy_s_per_query'] / r['kernel_one_query_s']:.1f}x | {paper[r['distance']]} | "
            f"{r['map']:.2f} | {r['max_ap_diff']:.1e} |"
        )
    md = "\n".join(lines)
    print(md)
    record = {"command": command, "date": date, "args": vars(args), "rows": rows}
    atomic_write_text(args.out + ".md", md + "\n")
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
