"""Images/s of one Hebbian PCA step on the 6-layer net (rules.hpca, jitted) vs numpy, and the
wall time of the hpca protocol estimated from throughputs measured on this machine.

Compared: ``hpca._step_fn(model)`` (standardise, training-mode forward pass, eq. 2 on all
five layers at once, ``W += lr dW``) against the straightforward numpy version of the same step,
written here: float32 forward pass (conv = ``hpca.unfold`` + matmul, ReLU, 2x2 max-pool, batch
norm with batch statistics; bn3-bn5 rescaled by relative running std, as ``hpca_train.pretrain``'s
network keeps variance), then per layer ``dW = (R^T X - tril(R^T R) W) / N`` with plain
matmuls (X: unfolded patches of the layer input, R: ReLU responses). Same seeded uint8 batches of
64 (random, or the first training images of ``--dataset``), same initial kernels. Before timing,
one step of each is run from the same kernels and the updates ``(new - old) / lr`` compared.
Timing runs in interleaved rounds (jax, numpy, jax, ...); each reports its best round; JAX's first
call (compilation) is reported separately. The ratio "jax / numpy" is jax img/s over numpy img/s:
how many times faster hebbret's step is. Part of it is algorithmic: for fc5 (64 inputs, 4,096
neurons) hebbret computes ``tril(R^T R) W`` in an exact blocked form (hpca._lower_term), the
reference directly; the numpy time per layer is printed to show where the time goes.

The protocol estimate (experiments/configs/hpca.py, full and quick) multiplies image counts by
throughputs measured briefly here: Hebbian step, beta-VAE step, supervised step per depth and
evaluation forward pass per depth; it ignores retrieval (ranking, Nystroem), data loading and
compilation.

    .venv/bin/python benchmarks/hpca.py [--batches 40 --repeats 3 --ref-batches 5 --out <path>]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebbret import data, results
from hebbret.files import atomic_write_text
from hebbret.nets import convnet, finetune, vae
from hebbret.rules import hpca

BATCH, SEED, LR, EPOCH_IMAGES = 64, 0, 1e-3, 40_000
CONFIG = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / "hpca.py"


def np_step(kernels: list[np.ndarray], bn: list[tuple], x: np.ndarray, secs: dict) -> list:
    """The updates dW^T (kernel layout) of every layer for one batch x (B, 32, 32, 3) float32,
    from one float32 numpy forward pass; ``bn`` holds each layer's (scale, bias, running var),
    the running var updated in place; ``secs[layer]`` accumulates each layer's time."""
    h, updates = x, []
    for i, (layer, k, (scale, bias, run_var)) in enumerate(
        zip(convnet.LAYERS, kernels, bn, strict=True)
    ):
        t = time.perf_counter()
        n_out = layer.features
        if layer.kernel is None:
            h = h.reshape(len(h), -1)
            patches = h
        else:
            b, side = h.shape[0], h.shape[1] - layer.kernel + 1
            patches = hpca.unfold(h, layer.kernel, layer.kernel)
        resp = np.maximum(patches @ k.reshape(-1, n_out), 0.0)  # R (N, n)
        w = k.reshape(-1, n_out).T  # W (n, d)
        dw = (resp.T @ patches - np.tril(resp.T @ resp) @ w) / len(patches)
        updates.append(dw.T.reshape(k.shape))
        r = resp if layer.kernel is None else resp.reshape(b, side, side, n_out)
        if layer.pool:
            half = side // 2
            r = r[:, : 2 * half, : 2 * half].reshape(b, half, 2, half, 2, n_out).max(axis=(2, 4))
        axes = tuple(range(r.ndim - 1))
        mu, var = r.mean(axis=axes), r.var(axis=axes)
        h = (r - mu) / np.sqrt(var + 1e-5) * scale + bias
        run_var *= 0.9
        run_var += 0.1 * var
        if i >= 2:  # bn3-bn5 keep relative variance
            h = h * np.sqrt((run_var + 1e-5) / (run_var + 1e-5).mean())
        h = h.astype(np.float32)
        secs[layer.name] = secs.get(layer.name, 0.0) + time.perf_counter() - t
    return updates


def hebbian_benchmark(images: np.ndarray, args: argparse.Namespace) -> dict:
    """The check and the interleaved timing of the jax step and the numpy reference."""
    model = convnet.Net(10, depth=5, init_scheme="hebbian", keep_variance=True)
    variables = convnet.init(model, jax.random.key(SEED))
    mean, std = convnet.channel_stats(images)
    jmean, jstd = jnp.asarray(mean), jnp.asarray(std)
    step = hpca._step_fn(model)
    names = [layer.name for layer in convnet.LAYERS]
    batches = [images[i * BATCH : (i + 1) * BATCH] for i in range(len(images) // BATCH)]
    std_x = [((b / np.float32(255) - mean) / std).astype(np.float32) for b in batches]

    def np_state(v: dict) -> tuple[list, list]:
        p, s = jax.tree.map(np.array, v["params"]), jax.tree.map(np.array, v["batch_stats"])
        return [p[n]["kernel"] for n in names], [
            (p[f"bn{i}"]["scale"], p[f"bn{i}"]["bias"], s[f"bn{i}"]["var"])
            for i in range(1, len(names) + 1)
        ]

    kernels, bn = np_state(variables)
    t = time.perf_counter()
    variables = jax.block_until_ready(step(variables, batches[0], jmean, jstd, jnp.float32(LR)))
    first = time.perf_counter() - t
    ref = np_step(kernels, bn, std_x[0], {})
    check = {}
    for name, k, upd in zip(names, kernels, ref, strict=True):
        got = (np.asarray(variables["params"][name]["kernel"]) - k) / LR
        scale = float(np.max(np.abs(upd)))
        check[name] = float(np.max(np.abs(got - upd))) / scale
        np.testing.assert_allclose(got, upd, rtol=2e-3, atol=2e-4 * scale, err_msg=name)
    diffs = ", ".join(f"{n} {v:.1e}" for n, v in check.items())
    print(f"check ok, max |jax - numpy update| / max |numpy update|: {diffs}", file=sys.stderr)
    kernels, bn = np_state(variables)
    times: dict[str, list[float]] = {"jax": [], "numpy": []}
    secs: dict[str, float] = {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        for b in batches[: args.batches]:
            variables = step(variables, b, jmean, jstd, jnp.float32(LR))
        jax.block_until_ready(variables)
        times["jax"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for x in std_x[: args.ref_batches]:
            upd = np_step(kernels, bn, x, secs)
            kernels = [k + LR * u for k, u in zip(kernels, upd, strict=True)]
        times["numpy"].append(time.perf_counter() - t)
    counts = {"jax": args.batches * BATCH, "numpy": args.ref_batches * BATCH}
    ips = {k: counts[k] / min(v) for k, v in times.items()}
    total = sum(secs.values())
    return {
        "jax_first_call_s": first,
        "times_s": times,
        "images_timed": counts,
        "images_per_s": ips,
        "jax_over_numpy": ips["jax"] / ips["numpy"],
        "epoch_40k_s": {k: EPOCH_IMAGES / v for k, v in ips.items()},
        "check_max_rel_diff": check,
        "numpy_layer_share": {n: s / total for n, s in secs.items()},
    }


def throughput(call, n_calls: int, per_call: int) -> float:
    """img/s of ``call(i)`` (returns something to block on) after one warm-up call."""
    jax.block_until_ready(call(0))
    t = time.perf_counter()
    out = [call(i) for i in range(1, n_calls + 1)]
    jax.block_until_ready(out[-1])
    return n_calls * per_call / (time.perf_counter() - t)


def estimate_throughputs(images: np.ndarray, args: argparse.Namespace) -> dict:
    """Supervised step and feature extraction per depth 1..5, and the beta-VAE step (img/s)."""
    mean, std = (jnp.asarray(a) for a in convnet.channel_stats(images))
    key = jax.random.key(SEED)
    labels = np.random.default_rng(SEED).integers(0, 10, len(images)).astype(np.int32)
    nb = len(images) // BATCH
    batch = lambda i: slice((i % nb) * BATCH, (i % nb + 1) * BATCH)  # noqa: E731
    out: dict = {"finetune": {}, "features": {}}
    sub = images[: args.est_images]
    for depth in range(1, 6):
        model = convnet.Net(10, depth=depth)
        state = [convnet.init(model, key)]
        cfg = finetune.FinetuneConfig()
        step = finetune._train_step(model, cfg)
        state.append(finetune.optimiser(cfg).init(state[0]["params"]))
        lr = jnp.float32(cfg.lr)

        def train(i: int, step=step, state=state, lr=lr):
            k = jax.random.fold_in(key, i)
            x, y = images[batch(i)], labels[batch(i)]
            state[0], state[1], loss = step(state[0], state[1], x, y, mean, std, k, lr)
            return loss

        out["finetune"][depth] = throughput(train, args.est_batches, BATCH)
        feats = lambda i, m=model, v=state[0]: convnet.features(m, v, sub, mean, std)  # noqa: E731
        out["features"][depth] = throughput(feats, 1, len(sub))
        print(f"depth {depth}: finetune {out['finetune'][depth]:.0f} img/s, features "
              f"{out['features'][depth]:.0f} img/s", file=sys.stderr, flush=True)  # fmt: skip
    model = vae.VAE()
    v = vae.init(model, key)
    state = [{**v, "opt_state": optax.adam(1e-3).init(v["params"])}]
    vstep = vae._step_fn(model, 1e-3, 0.5)

    def vae_call(i: int):
        state[0], value = vstep(state[0], images[batch(i)], mean, std, jax.random.fold_in(key, i))
        return value

    out["vae"] = throughput(vae_call, args.est_batches, BATCH)
    return out


def protocol_seconds(cfg: dict, ips: dict) -> dict[str, float]:
    """Estimated seconds of each part of the protocol ``cfg`` (all seeds)."""
    n_train = 50_000 - cfg["num_validation"]
    n_val = cfg["val_queries"] or cfg["num_validation"]
    n_eval = (cfg["database"] or n_train) + n_val + (cfg["queries"] or 10_000)
    ft = cfg["finetune"]
    part = dict.fromkeys(("hebbian", "vae", "finetune", "validation", "features"), 0.0)
    for method, name in (("hpca", "hebbian"), ("vae", "vae")):
        if method in cfg["methods"]:
            c = cfg[name]
            part[name] = c["epochs"] * (n_train // c["batch"]) * c["batch"] / ips[name]
    for regime in cfg["regimes"]:
        seen = -(-max(1, round(regime / 100 * n_train)) // ft["batch"]) * ft["batch"]
        for layer in cfg["layers"]:
            runs = len(cfg["methods"])
            part["finetune"] += runs * ft["epochs"] * seen / ips["finetune"][layer]
            part["validation"] += runs * ft["epochs"] * n_val / ips["features"][layer]
            part["features"] += runs * n_eval / ips["features"][layer]
    part = {k: v * len(cfg["seeds"]) for k, v in part.items()}
    return part | {"total": sum(part.values())}


def report(res: dict, command: str, rec: dict, args: argparse.Namespace) -> str:
    m, h, tp = rec["machine"], res["hebbian"], res["throughput"]
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ips, share = h["images_per_s"], h["numpy_layer_share"]
    lines = [
        f"`{command}`", "",
        f"Machine: {m['cpu_count']}-core CPU ({m['cpu']}), {ram:.1f} GB RAM, JAX devices: "
        f"{', '.join(m['devices'])}. {rec['date']}. jax {m['jax']}, numpy {np.__version__}, "
        f"Python {m['python']}; XLA_FLAGS={os.environ.get('XLA_FLAGS') or 'unset'}; "
        f"hebbret git {rec['git_revision']}.", "",
        f"One Hebbian PCA step (eq. 2, all 5 layers, batch {BATCH}) on {res['images']}: jax "
        f"{args.batches} batches, numpy {args.ref_batches} batches, best of {args.repeats} "
        "interleaved rounds. Check: max |jax update - numpy update| / max |numpy update| per "
        "layer, after one step from the same kernels.", "",
        "| jax img/s | numpy img/s | jax / numpy | jax first call (s) | one epoch of 40k, jax / "
        "numpy (min) | check (max rel. diff) | rounds jax / numpy (s) |",
        "|---:|---:|---:|---:|---:|---|---|",
        f"| {ips['jax']:.0f} | {ips['numpy']:.1f} | **{h['jax_over_numpy']:.1f}x** | "
        f"{h['jax_first_call_s']:.1f} | {h['epoch_40k_s']['jax'] / 60:.1f} / "
        f"{h['epoch_40k_s']['numpy'] / 60:.1f} | "
        + ", ".join(f"{n} {v:.0e}" for n, v in h["check_max_rel_diff"].items()) + " | "
        + " / ".join(", ".join(f"{t:.2f}" for t in h["times_s"][k]) for k in ("jax", "numpy"))
        + " |", "",
        "numpy time by layer (forward + update): "
        + ", ".join(f"{n} {100 * s:.0f} %" for n, s in share.items()) + ".", "",
        f"**Protocol wall time, estimated from measured per-epoch throughput** (img/s on this "
        f"machine: Hebbian step {ips['jax']:.0f}, beta-VAE step {tp['vae']:.0f}; per depth 1-5, "
        "supervised step " + " / ".join(f"{tp['finetune'][d]:.0f}" for d in range(1, 6))
        + ", evaluation forward pass " + " / ".join(f"{tp['features'][d]:.0f}" for d in range(1, 6))
        + f"; supervised and VAE steps timed over {args.est_batches} batches, forward pass over "
        f"{args.est_images} images). Validation passes are costed as feature passes; retrieval "
        "(ranking, Nystroem), data loading and compilation are ignored.", "",
        "| preset | Hebbian (h) | VAE (h) | fine-tuning (h) | validation (h) | features (h) "
        "| total (h) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name, est in res["protocol"].items():
        parts = " | ".join(f"{v / 3600:.2f}" for k, v in est.items() if k != "total")
        lines.append(f"| {name} | {parts} | **{est['total'] / 3600:.2f}** |")
    if res.get("quick_measured_s"):
        lines += ["", f"Measured quick run ({args.quick_run}): "
                  f"{res['quick_measured_s'] / 3600:.2f} h (everything included)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=40, help="jax batches per round")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    p.add_argument("--ref-batches", type=int, default=5, help="numpy batches per round")
    p.add_argument("--est-batches", type=int, default=10, help="batches per estimate step")
    p.add_argument("--est-images", type=int, default=2000, help="images per feature pass")
    p.add_argument("--dataset", help="hebbret.data spec (default: random uint8 images)")
    p.add_argument("--quick-run", default="results/hpca_cifar10_quick.json")
    p.add_argument("--out", default="results/hpca_benchmark")
    args = p.parse_args()
    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    command = shlex.join([exe, *sys.argv])
    start = time.perf_counter()
    n = max(args.batches, args.ref_batches, args.est_batches, 1) * BATCH
    n = max(n, args.est_images)
    if args.dataset:
        images, source = data.load(args.dataset).splits["train"].x[:n], f"{args.dataset} images"
    else:
        images = np.random.default_rng(SEED).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        source = f"random uint8 images (seed {SEED})"
    res: dict = {"images": source, "hebbian": hebbian_benchmark(images, args)}
    h = res["hebbian"]
    print(f"jax {h['images_per_s']['jax']:.0f} img/s, numpy {h['images_per_s']['numpy']:.1f} "
          f"img/s: jax / numpy reference = {h['jax_over_numpy']:.1f}x; one Hebbian epoch of 40k: "
          f"jax {h['epoch_40k_s']['jax'] / 60:.1f} min, numpy "
          f"{h['epoch_40k_s']['numpy'] / 60:.1f} min", file=sys.stderr, flush=True)  # fmt: skip
    res["throughput"] = estimate_throughputs(images, args)
    ips = res["throughput"] | {"hebbian": h["images_per_s"]["jax"]}
    spec = importlib.util.spec_from_file_location("hpca_config", CONFIG)
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    res["protocol"] = {
        "full (5 seeds)": protocol_seconds(config.get_config("cifar10").to_dict(), ips),
        "quick": protocol_seconds(config.get_config("cifar10,quick").to_dict(), ips),
    }
    if os.path.exists(args.quick_run):
        with open(args.quick_run) as fh:
            res["quick_measured_s"] = json.load(fh).get("wall_time_s")
    rec = results.record(
        config=vars(args) | {"command": command},
        seed=SEED,
        metrics=res,
        wall_time_s=time.perf_counter() - start,
    )
    md = report(res, command, rec, args)
    print(md)
    results.write_json(args.out + ".json", rec)
    atomic_write_text(args.out + ".md", md)


if __name__ == "__main__":
    main()
