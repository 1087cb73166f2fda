"""Peak memory against n: BioConvHash features and the BioHash layer on them (dense vs sparse),
and the retrieval kernel.

Every (workload, n) runs in a fresh child process (this script with ``--child``), so its peak
resident memory (``ru_maxrss``) is its own; "growth" subtracts the child's resident memory after
its imports and inputs were ready. Workloads:

- ``features``, ``features_sparse``: the paper's CIFAR-10 front end (F = 400 filters for each
  K in 3, 4, 10, k_CI = 1, pool 7 stride 2: D = 147,600) on n images, kept dense (float32) or
  as CSR (``sparse=True``). Filters: unit-normalised patches of the images (a stand-in for learned
  ones, which need hours here; learned F = 32 banks are sparser than patch banks of the same F).
- ``layer_dense``, ``layer_sparse``: those features, then one epoch of the BioHash layer
  (k = 2, activity 0.5 %: m = 400 units, ``hashing.fit("biohash")``); dense, or streamed from CSR.
- ``retrieval``: ``retrieval.evaluate`` of 1,000 queries against n 400-d float32 items
  (Kuo et al.'s feature size), mAP over the whole database.

    python benchmarks/memory.py [--dataset archive:PATH] [--out results/memory_benchmark]

Without ``--dataset`` the images are uniform noise (denser features than real images).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

FEATURE_SIZES = (1_000, 2_000, 4_000)
RETRIEVAL_SIZES = (50_000, 100_000, 200_000)
WORKLOADS = ("features", "features_sparse", "layer_dense", "layer_sparse", "retrieval")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def child(workload: str, n: int, images_path: str) -> dict:
    """Runs one workload at size n; returns its memory and time."""
    import jax  # noqa: PLC0415

    from hebbret import hashing, retrieval  # noqa: PLC0415
    from hebbret.hashing import bioconv  # noqa: PLC0415
    from hebbret.rules.biohash import RuleConfig  # noqa: PLC0415

    info: dict = {}
    if workload == "retrieval":
        rng = np.random.default_rng(0)
        xb, yb = rng.standard_normal((n, 400), dtype=np.float32), rng.integers(0, 10, n)
        xq, yq = rng.standard_normal((1000, 400), dtype=np.float32), rng.integers(0, 10, 1000)
        base = rss_mb()
        t = time.perf_counter()
        info["map"] = retrieval.evaluate(xq, xb, yq, yb, metric="euclidean", R=None)["map"]
    else:
        images = np.asarray(np.load(images_path, mmap_mode="r")[:n])
        cfg = bioconv.ConvConfig()  # the paper's front end
        keys = [jax.random.key(k) for k in cfg.kernels]
        filters = [bioconv.sample_patches(key, images, k, cfg.filters)
                   for key, k in zip(keys, cfg.kernels, strict=True)]  # fmt: skip
        base = rss_mb()
        t = time.perf_counter()
        sparse = workload.endswith("sparse")
        feats = bioconv.feature_map(filters, images, cfg, chunk_size=128, sparse=sparse)
        info["dim"] = int(feats.shape[1])
        info["nonzero"] = float(feats.nnz / np.prod(feats.shape)) if sparse else None
        if workload.startswith("layer"):
            hcfg = hashing.HashConfig(k=2, activity=0.005, rule=RuleConfig(max_epochs=1))
            params = hashing.fit("biohash", feats, hcfg, key=jax.random.key(0))
            info["units"] = int(params.w.shape[0])
    info["seconds"] = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return info | {"base_mb": base, "peak_mb": peak, "growth_mb": peak - base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", help="images for the feature workloads (default: noise)")
    p.add_argument("--out", default="results/memory_benchmark")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2])))
        return
    command = shlex.join(["python", *sys.argv])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "images.npy")
        if args.dataset:
            from hebbret import data  # noqa: PLC0415

            ds = data.load(args.dataset)
            images, source = ds.splits["train"].x[: max(FEATURE_SIZES)], ds.label
        else:
            shape = (max(FEATURE_SIZES), 32, 32, 3)
            images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
            source = "uniform noise images"
        np.save(path, images)
        rows = []
        for workload in WORKLOADS:
            sizes = RETRIEVAL_SIZES if workload == "retrieval" else FEATURE_SIZES
            for n in sizes:
                res = subprocess.run(
                    [sys.executable, __file__, "--child", workload, str(n), path],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if res.returncode:
                    sys.exit(f"{workload} at n = {n} failed:\n{res.stderr[-3000:]}")
                row = {"workload": workload, "n": n} | json.loads(res.stdout.splitlines()[-1])
                rows.append(row)
                print(f"{workload} n={n}: peak {row['peak_mb']:.0f} MB (growth "
                      f"{row['growth_mb']:.0f} MB), {row['seconds']:.1f} s", file=sys.stderr,
                      flush=True)  # fmt: skip
    write(args, command, source, rows)


def slope(rows: list[dict]) -> float:
    """Least-squares MB of growth per 1,000 items."""
    n = np.array([r["n"] for r in rows], float) / 1000
    return float(np.polyfit(n, [r["growth_mb"] for r in rows], 1)[0])


def write(args, command: str, source: str, rows: list[dict]) -> None:
    from hebbret.files import atomic_write, atomic_write_text  # noqa: PLC0415
    from hebbret.results import git_revision  # noqa: PLC0415

    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = [
        f"`{command}`",
        "",
        f"{date}; {os.cpu_count()} CPU cores; git {git_revision()}. Feature workloads on "
        f"{source}. Peak = the child process's maximum resident memory; growth = peak minus its "
        "resident memory once imports and inputs were ready. Slope: least-squares growth per "
        "1,000 items over the three sizes.",
        "",
        "| workload | n | peak (MB) | growth (MB) | seconds | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = []
        if r.get("nonzero") is not None:
            notes.append(f"{100 * r['nonzero']:.1f} % non-zero")
        if r.get("units"):
            notes.append(f"m = {r['units']}, 1 epoch")
        lines.append(
            f"| {r['workload']} | {r['n']:,} | {r['peak_mb']:,.0f} | {r['growth_mb']:,.0f} | "
            f"{r['seconds']:.1f} | {', '.join(notes)} |"
        )
    lines += ["", "| workload | growth per 1,000 items (MB) | dense float32 of the same (MB) |",
              "|---|---:|---:|"]  # fmt: skip
    slopes = {}
    for workload in WORKLOADS:
        mine = [r for r in rows if r["workload"] == workload]
        width = mine[0].get("dim") or 400
        slopes[workload] = slope(mine)
        lines.append(f"| {workload} | {slopes[workload]:,.0f} | {1000 * width * 4 / 2**20:,.0f} |")
    md = "\n".join(lines)
    print(md)
    record = {"command": command, "date": date, "source": source, "rows": rows,
              "slope_mb_per_1000": slopes}  # fmt: skip
    atomic_write_text(args.out + ".md", md + "\n")
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2) + "\n")
    fig = plot(rows)
    atomic_write(args.out + ".png", lambda f: fig.savefig(f, format="png", dpi=100))


def plot(rows: list[dict]):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, names in zip(axes, (WORKLOADS[:4], WORKLOADS[4:]), strict=True):
        for name in names:
            mine = [r for r in rows if r["workload"] == name]
            ax.plot([r["n"] for r in mine], [r["peak_mb"] / 1024 for r in mine], "o-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items (images / database rows)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("peak resident memory (GB)")
    axes[0].set_title("BioConvHash, F = 400 (D = 147,600)", fontsize=9)
    axes[1].set_title("retrieval, 1,000 queries x n 400-d items", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
