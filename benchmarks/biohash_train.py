"""Epochs/s of hebbret.rules.biohash_train.epoch (jitted lax.scan) vs plain vectorised numpy.

One epoch = n // 100 minibatch steps of 100 rows over the same seeded N(0, 1) data (n = 5,000 by
default, so 50 steps), from the same N(0, 1) initial weights, at CIFAR size m = 3200 units,
d = 3072 inputs. The numpy baselines, written here:

- "numpy, notebook": Krotov & Hopfield's reference notebook step (argsort over the m currents,
  dense (m, B) activation matrix, dense (m, d) update) in float32: the "plain" implementation;
- "numpy, row-sparse": the same update computed only on the rows of units some sample activates
  (what hebbret does), to show how much of the speed-up is that exact shortcut and how much is XLA.

JAX is timed after one warm-up epoch (compilation, reported separately). Every measurement runs in
rounds (jax, notebook, row-sparse, jax, ...) so background load hits all of them alike; each
reports its best round. After one epoch the three weight matrices are compared (max |difference|).

    python benchmarks/biohash_train.py [--m 3200 --d 3072 --n 5000 --rounds 3 --out results/<name>]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from hebbret.files import atomic_write_text
from hebbret.rules import biohash, biohash_train

SEED, EPS = 0, 0.02
CASES = {  # name: (RuleConfig, description)
    "hebbian": (biohash.RuleConfig(), "p = 2, Delta = 0 (BioHash default)"),
    "anti": (biohash.RuleConfig(delta=0.4, r=2), "p = 2, Delta = 0.4, r = 2"),
}


# --------------------------------------------------------------------------------------------
# numpy baselines (float32, in place, one minibatch per call)
# --------------------------------------------------------------------------------------------


def np_notebook_step(w: np.ndarray, x: np.ndarray, eps: float, cfg: biohash.RuleConfig) -> None:
    """Krotov & Hopfield's notebook, p = 2: argsort ranks, dense activations and update."""
    hid, num = w.shape[0], x.shape[0]
    inputs = x.T  # (d, B)
    tot_input = w @ inputs  # (m, B)
    y = np.argsort(tot_input, axis=0)
    yl = np.zeros((hid, num), np.float32)
    yl[y[hid - 1, :], np.arange(num)] = 1.0
    yl[y[hid - cfg.r], np.arange(num)] = -cfg.delta
    xx = np.sum(yl * tot_input, 1)
    ds = yl @ x - xx[:, None] * w
    nc = max(np.amax(np.abs(ds)), cfg.precision)
    w += np.float32(eps) * (ds / nc)


def np_sparse_step(w: np.ndarray, x: np.ndarray, eps: float, cfg: biohash.RuleConfig) -> None:
    """The same update, computed only for the units that win (or rank r) for some sample."""
    cur = x @ w.T  # (B, m)
    if cfg.delta == 0.0:
        units = np.argmax(cur, axis=1)[:, None]
        g = np.ones(1, np.float32)
    else:  # argpartition puts the 1st and the r-th largest exactly at positions 0 and r - 1
        part = np.argpartition(-cur, (0, cfg.r - 1), axis=1)
        units = part[:, [0, cfg.r - 1]]
        g = np.asarray([1.0, -cfg.delta], np.float32)
    vals = np.take_along_axis(cur, units, 1)
    uniq, inv = np.unique(units.ravel(), return_inverse=True)
    onehot = np.zeros((len(uniq), inv.size), np.float32)
    onehot[inv, np.arange(inv.size)] = np.broadcast_to(g[None, :], units.shape).ravel()
    rows = onehot @ np.repeat(x, units.shape[1], axis=0)  # rows of G X
    rows -= (onehot @ vals.ravel())[:, None] * w[uniq]
    nc = max(np.amax(np.abs(rows)), cfg.precision)
    w[uniq] += np.float32(eps) * (rows / nc)


def np_epoch(step, w0: np.ndarray, x: np.ndarray, cfg: biohash.RuleConfig) -> np.ndarray:
    w = w0.copy()
    for s in range(x.shape[0] // cfg.batch):
        step(w, x[s * cfg.batch : (s + 1) * cfg.batch], EPS, cfg)
    return w


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def timed(fn) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_case(cfg: biohash.RuleConfig, x: np.ndarray, w0: np.ndarray, rounds: int) -> dict:
    x_dev, w0_dev = jnp.asarray(x), jnp.asarray(w0)

    def jax_epoch() -> np.ndarray:
        return np.asarray(biohash_train.epoch(w0_dev, x_dev, EPS, cfg).block_until_ready())

    first, _ = timed(jax_epoch)
    impls = {
        "jax": jax_epoch,
        "numpy, notebook": lambda: np_epoch(np_notebook_step, w0, x, cfg),
        "numpy, row-sparse": lambda: np_epoch(np_sparse_step, w0, x, cfg),
    }
    times = {k: [] for k in impls}
    loads = {k: [] for k in impls}
    weights = {}
    for _ in range(rounds):
        for name, fn in impls.items():
            loads[name].append(os.getloadavg()[0])
            t, weights[name] = timed(fn)
            times[name].append(t)
    ref = weights["jax"]
    return {
        "jax_first_epoch_s": first,
        "times_s": times,
        "loadavg_1min_at_start": loads,
        "best_s": {k: min(v) for k, v in times.items()},
        "max_abs_diff_vs_jax": {
            k: float(np.max(np.abs(w - ref))) for k, w in weights.items() if k != "jax"
        },
        "max_abs_weight": float(np.max(np.abs(ref))),
        "max_abs_change_jax": float(np.max(np.abs(ref - w0))),
        "mean_norm_after": float(biohash.mean_norm(ref, 2.0)),
    }


def machine() -> dict:
    with open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {})
    src = os.path.join(os.path.dirname(os.path.abspath(biohash.__file__)), "biohash.py")
    with open(src, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()[:12]
    git = ["git", "-C", os.path.dirname(src), "rev-parse", "--short", "HEAD"]
    head = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    return {
        **{"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram, 1)},
        **{"jax_devices": [str(d) for d in jax.devices()], "gpu": jax.default_backend() != "cpu"},
        **{"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        **{"blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip()},
        **{"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")},
        **{"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "platform": platform.platform()},
        "hebbret": f"git {head}, hebbret/biohash.py sha256 {sha}",
    }


def table(res: dict, m: dict, command: str, date: str, args: argparse.Namespace) -> str:
    steps = args.n // 100
    ocore = m["OPENBLAS_CORETYPE"]
    lines = [
        f"`{command}`",
        "",
        f"Machine: {m['cores']}-core CPU ({m['cpu']}), {m['ram_gb']} GB RAM, "
        f"{'a GPU' if m['gpu'] else 'no GPU'} (JAX devices: {', '.join(m['jax_devices'])}). "
        f"{date}. jax {m['jax']}, numpy {m['numpy']} ({m['blas']}), Python {m['python']}; "
        f"OPENBLAS_CORETYPE={'unset' if ocore is None else ocore}; "
        f"XLA_FLAGS={m['XLA_FLAGS'] or 'unset'}. {m['hebbret']}.",
        "",
        f"One epoch = {steps} minibatch steps of 100 rows: n = {args.n:,} random N(0, 1) rows "
        f"(d = {args.d}), m = {args.m} hidden units, the same N(0, 1) initial weights and data "
        f"order for every implementation, eps = {EPS}; all float32. Time: best of {args.rounds} "
        "interleaved rounds; the JAX warm-up epoch (incl. compilation) separately. Speed-up = "
        "numpy time / jax time. Max |diff| = largest elementwise difference of the weights after "
        "one epoch from the JAX weights (for scale: max |W| and the largest change JAX made).",
        "",
        "| rule | implementation | best epoch (s) | epochs/s | jax / numpy speed "
        "| max \\|diff\\| vs jax | rounds (s) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for case, r in res.items():
        desc = CASES[case][1]
        jt = r["best_s"]["jax"]
        for name, best in r["best_s"].items():
            speed = "" if name == "jax" else f"**{best / jt:.1f}x**"
            diff = "" if name == "jax" else f"{r['max_abs_diff_vs_jax'][name]:.1e}"
            rounds = ", ".join(f"{t:.2f}" for t in r["times_s"][name])
            lines.append(
                f"| {desc} | {name} | {best:.3f} | {1 / best:.2f} | {speed} | {diff} | {rounds} |"
            )
    lines.append("")
    for case, r in res.items():
        loads = ", ".join(f"{v:.2f}" for v in r["loadavg_1min_at_start"]["jax"])
        lines.append(
            f"- {CASES[case][1]}: JAX first epoch (compile + run) {r['jax_first_epoch_s']:.2f} s; "
            f"max |W| {r['max_abs_weight']:.2f}, largest JAX change {r['max_abs_change_jax']:.3f}; "
            f"mean row norm after the epoch {r['mean_norm_after']:.2f}; 1-min load average at "
            f"the JAX rounds: {loads}."
        )
    lines += ["", "Target: jax >= 3x faster than the plain (notebook) numpy on this 2-core CPU."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=3200)
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="results/biohash_train_benchmark")
    args = p.parse_args()
    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    command = shlex.join([exe, *sys.argv])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    w0 = rng.standard_normal((args.m, args.d), dtype=np.float32)
    res = {}
    for case, (cfg, desc) in CASES.items():
        res[case] = run_case(cfg, x, w0, args.rounds)
        print(f"{desc}: {res[case]['best_s']}", file=sys.stderr, flush=True)
    m = machine()
    md = table(res, m, command, date, args)
    print(md)
    speed = {c: r["best_s"]["numpy, notebook"] / r["best_s"]["jax"] for c, r in res.items()}
    record = {"command": command, "date": date, "machine": m, "args": vars(args), "eps": EPS}
    record |= {"results": res, "jax_over_numpy_notebook_speed": speed}
    atomic_write_text(args.out + ".md", md)
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
