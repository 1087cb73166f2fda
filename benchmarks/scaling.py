"""Scaling study: hebbret's data- and database-parallel pieces on 1, 2, 4, 8 devices.

Four workloads, each timed on meshes over the first n devices (``hebbret.mesh``) and checked
against the one-device result in the same run:

- BioHash training: epochs/s of the Krotov-Hopfield rule (``biohash_train.epoch``); each
  minibatch is split over the devices and the sparse partial updates all-gathered (shard_map).
- Hebbian PCA: images/s of the 6-layer net's Hebbian step (``hpca._step_fn``); each minibatch
  split over the devices (sharded jit: XLA inserts the all-reduces of the updates).
- Retrieval: query-item pairs/s of ``retrieval.evaluate`` (queries x database items: weak
  scaling grows the database); the database is split over the devices (shard_map), each device
  ranks its shard for every query of a chunk, then reduces 1/n of the chunk's queries against the
  whole database (``all_to_all`` of the shards' lists, then a merge). mAP@1000: each shard sends
  its top 1,001 per query. mAP@All (exact, the whole database ranked): every shard is sorted
  whole and sent, and each query's full list is merged on its device.
- BioConvHash features: images/s of ``bioconv.feature_map``; each chunk of images split over
  the devices (no communication).

Strong scaling keeps the global problem fixed (the ratio to one device is the speed-up); weak
scaling grows it with n (per-device work fixed: ideal is a constant time, so the table shows
throughput over n x the one-device throughput as the efficiency). The reference of every
ratio is the one-device run of the same workload in the same process.

Devices: the machine's accelerators when there are several; on a CPU, 8 simulated devices
(``--xla_force_host_platform_device_count=8``, set here before JAX starts) that share the CPU's
cores, so on a CPU the table measures the overhead of the sharded code, not a speed-up.

    python benchmarks/scaling.py [--devices 1,2,4,8 --repeats 3 --out results/scaling_benchmark]
"""

from __future__ import annotations

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import argparse  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from hebbret import mesh, retrieval  # noqa: E402
from hebbret.files import atomic_write, atomic_write_text  # noqa: E402
from hebbret.hashing import bioconv  # noqa: E402
from hebbret.nets import convnet  # noqa: E402
from hebbret.results import git_revision  # noqa: E402
from hebbret.rules import biohash, biohash_train, hpca  # noqa: E402


def timed(call: Callable[[], object], repeats: int) -> float:
    """Best wall seconds of ``call()`` over ``repeats`` runs, after one warm-up (compilation)."""
    jax.block_until_ready(call())
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(call())
        best = min(best, time.perf_counter() - t)
    return float(best)


def biohash_run(n: int, weak: bool, repeats: int, size: dict) -> tuple[float, float, np.ndarray]:
    """(seconds of one epoch, samples in it, weights after it)."""
    batch = size["bh_batch"] * (n if weak else 1)
    rows = size["bh_steps"] * batch
    x = np.random.default_rng(0).standard_normal((rows, size["bh_d"]), dtype=np.float32)
    w0 = jax.random.normal(jax.random.key(1), (size["bh_m"], size["bh_d"]), jnp.float32)
    cfg = biohash.RuleConfig(batch=batch)
    grid = mesh.data_mesh(n) if n > 1 else None
    xd = jnp.asarray(x) if grid is None else jax.device_put(x, NamedSharding(grid, P()))
    call = lambda: biohash_train.epoch(w0, xd, 0.02, cfg, mesh=grid)  # noqa: E731
    return timed(call, repeats), rows, np.asarray(call())


def hpca_run(n: int, weak: bool, repeats: int, size: dict) -> tuple[float, float, np.ndarray]:
    """(seconds of ``hp_steps`` Hebbian steps, images in them, conv1..fc kernels after)."""
    batch = size["hp_batch"] * (n if weak else 1)
    images = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    model = convnet.Net(10, depth=5, init_scheme="hebbian")
    v0 = jax.tree.map(np.asarray, convnet.init(model, jax.random.key(2)))
    mean, std = (jnp.asarray(a) for a in convnet.channel_stats(images))
    step = hpca._step_fn(model)
    if n > 1:
        grid = mesh.data_mesh(n)
        xd = jax.device_put(images, NamedSharding(grid, P(mesh.DATA)))
        put = lambda v: jax.device_put(v, NamedSharding(grid, P()))  # noqa: E731
    else:
        xd, put = jnp.asarray(images), lambda v: jax.tree.map(jnp.asarray, v)  # noqa: E731

    def call():
        v = put(v0)
        for _ in range(size["hp_steps"]):
            v = step(v, xd, mean, std, jnp.float32(1e-3))
        return v

    seconds = timed(call, repeats)
    leaves = jax.tree.leaves(call()["params"])
    return seconds, size["hp_steps"] * batch, np.concatenate([np.ravel(a) for a in leaves])


def retrieval_run(
    n: int,
    weak: bool,
    repeats: int,
    size: dict,
    R: int | None = None,  # noqa: N803
) -> tuple[float, float, float]:
    """(seconds of one ``evaluate`` call, query-item pairs in it, its mAP@R; R None: the whole
    database ranked)."""
    db = size["rt_db"] * (n if weak else 8)  # strong: 8 shares (50k: the CIFAR-10 protocol)
    rng = np.random.default_rng(0)
    xb, yb = rng.standard_normal((db, size["rt_d"]), dtype=np.float32), rng.integers(0, 10, db)
    xq = rng.standard_normal((size["rt_queries"], size["rt_d"]), dtype=np.float32)
    yq = rng.integers(0, 10, len(xq))
    grid = mesh.database_mesh(n)
    call = lambda: retrieval.evaluate(xq, xb, yq, yb, metric="euclidean", R=R, mesh=grid)  # noqa: E731
    return timed(call, repeats), len(xq) * db, float(call()["map"])


def bioconv_run(n: int, weak: bool, repeats: int, size: dict) -> tuple[float, float, np.ndarray]:
    """(seconds of the feature map, images in it, the features)."""
    count = size["bc_images"] * (n if weak else 1)
    images = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    cfg = bioconv.ConvConfig(filters=size["bc_filters"])
    rng = np.random.default_rng(1)
    filters = [rng.standard_normal((cfg.filters, k * k * 3), dtype=np.float32) for k in cfg.kernels]
    grid = mesh.data_mesh(n) if n > 1 else None
    call = lambda: bioconv.feature_map(filters, images, cfg, mesh=grid, chunk_size=count)  # noqa: E731
    return timed(call, repeats), count, call()


WORKLOADS = {
    "BioHash training": (biohash_run, "samples/s"),
    "Hebbian PCA step": (hpca_run, "images/s"),
    "retrieval (mAP@All)": (retrieval_run, "pairs/s"),
    "retrieval (mAP@1000)": (functools.partial(retrieval_run, R=1000), "pairs/s"),
    "BioConvHash features": (bioconv_run, "images/s"),
}
SIZES = {  # per device for weak scaling; every batch divides by 8
    "bh_d": 1024, "bh_m": 400, "bh_batch": 512, "bh_steps": 16,
    "hp_batch": 64, "hp_steps": 4,
    "rt_db": 6_250, "rt_d": 256, "rt_queries": 250,
    "bc_images": 256, "bc_filters": 64,
}  # fmt: skip


def difference(a, b) -> float:
    """Largest absolute difference, relative to the largest magnitude of the reference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,2,4,8", help="device counts (1 is the reference)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (best kept)")
    p.add_argument("--scale", type=float, default=1, help="multiply every problem size")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of workloads")
    p.add_argument("--out", default="results/scaling_benchmark")
    args = p.parse_args()
    counts = sorted({int(c) for c in args.devices.split(",")} | {1})
    if counts[-1] > jax.device_count():
        sys.exit(f"asked for {counts[-1]} devices, JAX sees {jax.device_count()}")
    grow = ("batch", "db", "images")  # kept divisible by 8 when scaled
    size = {k: max(8, round(v * args.scale / 8) * 8) if k[3:] in grow and args.scale != 1 else v
            for k, v in SIZES.items()}  # fmt: skip
    command = shlex.join(["python", *sys.argv])
    rows = []
    names = args.workloads.split(",")
    if set(names) - set(WORKLOADS):
        sys.exit(f"unknown workloads {sorted(set(names) - set(WORKLOADS))}: {list(WORKLOADS)}")
    for name in names:
        run, unit = WORKLOADS[name]
        for mode in ("strong", "weak"):
            ref = None
            for n in counts:
                seconds, work, result = run(n, mode == "weak", args.repeats, size)
                if ref is None:
                    ref = (work / seconds, result)
                check = difference(result, ref[1]) if mode == "strong" else None
                rate = work / seconds
                rows.append({
                    "workload": name, "mode": mode, "devices": n, "seconds": seconds,
                    "work": work, "unit": unit, "throughput": rate,
                    "ratio": rate / ref[0], "efficiency": rate / ref[0] / n, "difference": check,
                })  # fmt: skip
                line = f"{name}, {mode}, {n} devices: {rate:,.1f} {unit}"
                print(f"{line} ({rate / ref[0]:.2f}x one device)", file=sys.stderr, flush=True)
        write(args, command, counts, size, rows)  # after each workload: a crash keeps the rest


def write(args, command: str, counts: list[int], size: dict, rows: list[dict]) -> None:
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    kind = jax.devices()[0].device_kind
    simulated = jax.default_backend() == "cpu"
    where = (
        f"{jax.device_count()} simulated CPU devices sharing {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}): the ratios measure the sharded code's "
        "overhead, not a speed-up"
        if simulated
        else f"{jax.device_count()} x {kind}"
    )
    lines = [
        f"`{command}`",
        "",
        f"{date}; {where}; JAX {jax.__version__}; git {git_revision()}. Best of {args.repeats} "
        "timed runs after a warm-up. Strong: the same problem on n devices (ratio = speed-up over "
        "one device). Weak: the problem grows with n (ratio = throughput over one device's; "
        "efficiency = ratio / n, 1 is ideal). Difference: largest |result - one-device result| "
        "over the largest |one-device result| (BioHash weights, Hebbian kernels, BioConvHash "
        "features; mAP for retrieval).",
        "",
        f"Sizes (per device for weak scaling; strong retrieval ranks 8 x rt_db items): "
        f"{json.dumps(size)}",
        "",
        "| workload | mode | devices | throughput | ratio to 1 device | efficiency | difference |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        diff = "" if r["difference"] is None else f"{r['difference']:.1e}"
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['devices']} | {r['throughput']:,.1f} "
            f"{r['unit']} | {r['ratio']:.2f} | {r['efficiency']:.2f} | {diff} |"
        )
    md = "\n".join(lines)
    print(md)
    record = {"command": command, "date": date, "device_kind": kind, "simulated": simulated,
              "devices": counts, "sizes": size, "rows": rows}  # fmt: skip
    atomic_write_text(args.out + ".md", md + "\n")
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2) + "\n")
    fig = plot(rows, counts, where)
    atomic_write(args.out + ".png", lambda f: fig.savefig(f, format="png", dpi=100))


def plot(rows: list[dict], counts: list[int], where: str):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, mode in zip(axes, ("strong", "weak"), strict=True):
        for name in dict.fromkeys(r["workload"] for r in rows):
            mine = [r for r in rows if (r["workload"], r["mode"]) == (name, mode)]
            ax.plot([r["devices"] for r in mine], [r["ratio"] for r in mine], "o-", label=name)
        ax.plot(counts, counts, "k--", lw=0.8, label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("devices")
        ax.set_title(f"{mode} scaling", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("throughput / one device's")
    axes[1].legend(fontsize=7)
    fig.suptitle(where.split(":")[0], fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
