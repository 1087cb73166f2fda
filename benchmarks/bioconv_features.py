"""Images/s of BioConvHash's feature map (hebbret.hashing.bioconv.feature_map, jitted) vs numpy.

The computation (Ryali et al. §2.4, appendix D): per kernel size K, patch-normalised currents of F
filters on every K x K patch (stride 1), cross-channel inhibition (top k_CI of F), max-pool 7
stride 2, flatten, concatenate. The reference, written here, is the straightforward numpy version:
unfold the patches with ``sliding_window_view``, one BLAS matmul, ``np.linalg.norm``, a max (or
``np.partition``) over channels and a windowed max; both process 64 images at a time, so their
memory stays bounded. Same images (random uint8, CIFAR-10 size), same random filters.

Every measurement runs in interleaved rounds (jax, numpy, jax, ...) so background load hits both
alike; each reports its best round; JAX's first call (compilation) is reported separately. The two
outputs are compared (max |difference|).

    python benchmarks/bioconv_features.py [--n 1024 --rounds 3 --out results/<name>]
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
from numpy.lib.stride_tricks import sliding_window_view

from hebbret.files import atomic_write_text
from hebbret.hashing import bioconv
from hebbret.results import git_revision

CASES = {
    "paper": bioconv.ConvConfig(),  # F = 400, K = 3, 4, 10, k_CI = 1
    "quick": bioconv.ConvConfig(filters=32),  # configs/bioconvhash.py:table2,quick
    "kci10": bioconv.ConvConfig(filters=400, k_ci=10),
}
CHUNK = 64


def np_features(banks: list[np.ndarray], images: np.ndarray, cfg: bioconv.ConvConfig) -> np.ndarray:
    """The same feature map in numpy, 64 images at a time: (n, H, W, C) -> (n, D) float32."""
    out = []
    for s in range(0, len(images), CHUNK):
        x = images[s : s + CHUNK].astype(np.float32)
        n, c = x.shape[0], x.shape[-1]
        maps = []
        for k, w in zip(cfg.kernels, banks, strict=True):
            p = sliding_window_view(x, (k, k), axis=(1, 2))  # (n, H', W', C, K, K)
            p = p.transpose(0, 1, 2, 4, 5, 3).reshape(n, p.shape[1], p.shape[2], k * k * c)
            a = (p @ w.T) / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
            if cfg.k_ci == 1:
                thr = a.max(axis=-1, keepdims=True)
            else:
                thr = -np.partition(-a, cfg.k_ci - 1, axis=-1)[..., cfg.k_ci - 1 : cfg.k_ci]
            a = np.where(a >= thr, a, 0.0)
            win = sliding_window_view(a, (cfg.pool, cfg.pool), axis=(1, 2))
            pooled = win[:, :: cfg.stride, :: cfg.stride].max(axis=(-2, -1))
            maps.append(pooled.reshape(n, -1))
        out.append(np.concatenate(maps, axis=1))
    return np.concatenate(out)


def run_case(cfg: bioconv.ConvConfig, images: np.ndarray, rounds: int) -> dict:
    rng = np.random.default_rng(1)
    c = images.shape[-1]
    banks = [rng.standard_normal((cfg.filters, k * k * c), dtype=np.float32) for k in cfg.kernels]
    impls = {
        "jax": lambda: bioconv.feature_map(banks, images, cfg, chunk_size=CHUNK),
        "numpy": lambda: np_features(banks, images, cfg),
    }
    t = time.perf_counter()
    bioconv.feature_map(banks, images[:CHUNK], cfg, chunk_size=CHUNK)
    first = time.perf_counter() - t
    times = {k: [] for k in impls}
    loads = {k: [] for k in impls}
    outs = {}
    for _ in range(rounds):
        for name, fn in impls.items():
            loads[name].append(os.getloadavg()[0])
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    return {
        "jax_first_call_s": first,
        "times_s": times,
        "best_s": best,
        "images_per_s": {k: len(images) / v for k, v in best.items()},
        "loadavg_1min_at_start": loads,
        "feature_dim": int(outs["jax"].shape[1]),
        "max_abs_diff": float(np.max(np.abs(outs["jax"] - outs["numpy"]))),
        "max_abs_feature": float(np.max(np.abs(outs["numpy"]))),
        # with k_CI > 1 near-ties at the k_CI-th channel can flip between the two float32
        # computations (a kept value in one is 0 in the other): count those entries
        "entries_differing_by_1e-4": float(np.mean(np.abs(outs["jax"] - outs["numpy"]) > 1e-4)),
    }


def machine() -> dict:
    with open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        **{"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram, 1)},
        **{"jax_devices": [str(d) for d in jax.devices()], "gpu": jax.default_backend() != "cpu"},
        **{"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        **{"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "git": git_revision()},
    }


def table(res: dict, m: dict, command: str, date: str, args: argparse.Namespace) -> str:
    lines = [
        f"`{command}`",
        "",
        f"Machine: {m['cores']}-core CPU ({m['cpu']}), {m['ram_gb']} GB RAM, "
        f"{'a GPU' if m['gpu'] else 'no GPU'} (JAX devices: {', '.join(m['jax_devices'])}). "
        f"{date}. jax {m['jax']}, numpy {m['numpy']}, Python {m['python']}; "
        f"XLA_FLAGS={m['XLA_FLAGS'] or 'unset'}; hebbret git {m['git']}.",
        "",
        f"{args.n:,} random uint8 32 x 32 x 3 images, random N(0, 1) filters, {CHUNK} images a "
        f"call for both. Time: best of {args.rounds} interleaved rounds. Speed = numpy time / "
        "jax time. Max |diff| between the two outputs (float32; for scale, max |feature|), and the "
        "fraction of entries differing by > 1e-4 (with k_CI > 1 a near-tie at the k_CI-th channel "
        "can keep a value in one output and zero it in the other).",
        "",
        "| front end | D | jax img/s | numpy img/s | jax / numpy speed | jax first call (s) "
        "| max \\|diff\\| (max \\|feature\\|) | entries > 1e-4 | rounds jax / numpy (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case, r in res.items():
        cfg = CASES[case]
        desc = f"F = {cfg.filters}, K = {', '.join(map(str, cfg.kernels))}, k_CI = {cfg.k_ci}"
        ips = r["images_per_s"]
        rounds = " / ".join(
            ", ".join(f"{t:.2f}" for t in r["times_s"][k]) for k in ("jax", "numpy")
        )
        lines.append(
            f"| {desc} | {r['feature_dim']:,} | {ips['jax']:.0f} | {ips['numpy']:.0f} | "
            f"**{ips['jax'] / ips['numpy']:.1f}x** | {r['jax_first_call_s']:.2f} | "
            f"{r['max_abs_diff']:.1e} ({r['max_abs_feature']:.2f}) | "
            f"{r['entries_differing_by_1e-4']:.1e} | {rounds} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default="results/bioconv_features_benchmark")
    args = p.parse_args()
    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    command = shlex.join([exe, *sys.argv])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    images = np.random.default_rng(0).integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    res = {}
    for case in args.cases.split(","):
        res[case] = run_case(CASES[case], images, args.rounds)
        print(f"{case}: {res[case]['images_per_s']}", file=sys.stderr, flush=True)
    m = machine()
    md = table(res, m, command, date, args)
    print(md)
    record = {"command": command, "date": date, "machine": m, "args": vars(args), "results": res}
    atomic_write_text(args.out + ".md", md)
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
