"""Reproduce BioConvHash (Ryali et al. §2.4): Table 2's row, Table 6 (shadows), Table 3 (k_CI).

    python experiments/bioconvhash.py --experiment table2 [--quick] [--dataset DATASET] [--seed 0]

The filters are learned once per kernel size and the conv features computed once per k_CI; a
BioHash layer is then trained on the database features for every hash length k. Writes
``results/bioconvhash_<experiment>[_quick].json`` and ``.md`` (ours with the paper's in brackets),
``..._filters_K<K>.png`` (the learned filters) and ``..._filters.npz`` (arrays ``K3``, ``K4``, ...
of shape (F, K * K * channels), for ``np.load(..., allow_pickle=False)``).
See experiments/configs/bioconvhash.py.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from configs.bioconvhash import get_config  # noqa: E402

from hebbret import data, files, hashing, perturb, plots, published, results, retrieval
from hebbret.data import splits  # noqa: E402
from hebbret.errors import run_command  # noqa: E402
from hebbret.hashing import bioconv  # noqa: E402
from hebbret.pipelines import compare
from hebbret.rules import biohash


def _map(method: str, params, xq: np.ndarray, cb: hashing.Codes, proto) -> float:
    cq = hashing.encode(method, params, xq)
    out = retrieval.evaluate(cq.packed, cb.packed, proto.yq, proto.yb, metric="hamming", R=proto.R)
    return 100 * out["map"]


def _hash_rows(method, xb, query_sets, proto, cfg, rule, seed, extra, log, mesh=None):
    """Fit ``method`` on the database features for every k; yields a row (mAP of every query
    set) per k."""
    for k in cfg["ks"]:
        hcfg = hashing.HashConfig(k=k, activity=cfg["activity"], rule=rule, seed=seed)
        start = time.perf_counter()
        params = hashing.fit(method, xb, hcfg, progress=True, mesh=mesh)
        fit_s = time.perf_counter() - start
        cb = hashing.encode(method, params, xb)
        row = extra | {
            "k": k,
            "bits": int(cb.bits.shape[1]),
            "fit_s": fit_s,
            "epochs": params.epochs,
            "mean_norm": params.mean_norm,
        }
        for name, xq in query_sets.items():
            row[name] = _map(method, params, xq, cb, proto)
        log(
            f"{extra['method']:<12} k_ci={extra.get('k_ci', '-')} k={k:<3} "
            + " ".join(f"{n} {row[n]:6.2f}" for n in query_sets)
            + f"  fit {fit_s:.1f} s, {row['epochs']} epochs, mean norm {row['mean_norm']:.3f}"
        )
        yield row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="table2", choices=["table2", "kci", "mnist"])
    parser.add_argument("--dataset", help="dataset spec (default: the experiment's)")
    parser.add_argument("--quick", action="store_true", help="2-core CPU preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="results path without extension")
    parser.add_argument("--ks", help="comma-separated hash lengths (default: the experiment's)")
    parser.add_argument("--filters", type=int, help="F filters per kernel size")
    parser.add_argument("--kernels", help="comma-separated kernel sizes")
    parser.add_argument("--k-cis", help="comma-separated channel-inhibition k_CI values")
    parser.add_argument("--no-baseline", action="store_true", help="skip BioHash on pixels")
    parser.add_argument(
        "--max-epochs", type=int, help="cap on BioHash-layer epochs (default: the experiment's)"
    )
    parser.add_argument(
        "--devices", type=int, help="split minibatches and image chunks over this many devices"
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command = "python experiments/bioconvhash.py " + shlex.join(argv)

    cfg = get_config(args.experiment, quick=args.quick)
    cfg["dataset"] = args.dataset or cfg["dataset"]
    if args.ks:
        cfg["ks"] = tuple(int(k) for k in args.ks.split(","))
    if args.filters is not None:
        cfg["conv"] = cfg["conv"] | {"filters": args.filters}
    if args.kernels:
        cfg["conv"] = cfg["conv"] | {"kernels": tuple(int(k) for k in args.kernels.split(","))}
    if args.max_epochs is not None:
        cfg["max_epochs"] = args.max_epochs
    if args.k_cis:
        cfg["k_cis"] = tuple(int(k) for k in args.k_cis.split(","))
    if args.no_baseline:
        cfg["baseline"] = False
    out = args.out or f"results/bioconvhash_{args.experiment}{'_quick' if args.quick else ''}"
    for suffix in (".json", ".md", "_filters.npz", "_filters_K1.png"):
        files.check_writable(f"{out}{suffix}")
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        start = time.perf_counter()

        ds = data.load(cfg["dataset"])
        proto = splits.class_query_protocol(
            ds, cfg["queries_per_class"], cfg["R"], args.seed, query_subset=cfg.get("query_subset")
        )
        pooled = ds.pooled().x
        images = {"db": pooled[proto.database], "clean": pooled[proto.queries]}
        if cfg["shadows"]:
            images["shadows"] = perturb.shadow(images["clean"])
        mesh = biohash.data_mesh(args.devices) if args.devices else None
        log(f"{ds.spec}: {proto.name}, R = {proto.R or 'All'}")
        rule = biohash.RuleConfig(max_epochs=cfg["max_epochs"])
        conv = bioconv.ConvConfig(**cfg["conv"])
        run_config = cfg | {
            "experiment": args.experiment,
            "quick": args.quick,
            "tie": "exact",
            "normaliser": "retrieved",
            "rule": rule._asdict(),
        }
        # a rerun of the same command keeps the finished rows and adds the missing ones
        previous = results.previous_run(out, run_config, args.seed)
        done = previous["metrics"] if previous else {"rows": [], "features": []}
        rows, info = list(done["rows"]), {"filters": [], "features": list(done["features"])}
        before = previous["wall_time_s"] if previous else 0.0
        if rows:
            log(f"resuming: {len(rows)} rows already in {out}.json")

        def save(complete: bool) -> float:
            seconds = before + time.perf_counter() - start
            record = results.record(
                config=run_config,
                seed=args.seed,
                metrics={"rows": rows, "protocol": proto.name} | info,
                wall_time_s=seconds,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
            )
            results.write_run(
                out, record, report(args, cfg, proto, rows, info, seconds), complete=complete
            )
            return seconds

        # 1. filters: one bank per kernel size, learned once on unit-normalised patches
        banks = []
        for kernel in conv.kernels:
            t = time.perf_counter()
            res = bioconv.learn_filters(
                jax.random.fold_in(jax.random.key(args.seed), kernel),
                images["db"],
                kernel,
                conv,
                rule,
                mesh=mesh,
                progress=True,
            )
            banks.append(np.asarray(res.w))
            info["filters"].append(
                {
                    "kernel": kernel,
                    "filters": conv.filters,
                    "patches": conv.patches,
                    "epochs": res.epochs,
                    "mean_norm": res.mean_norm,
                    "seconds": time.perf_counter() - t,
                }
            )
            log(f"filters K={kernel}: {res.epochs} epochs, mean norm {res.mean_norm:.3f}")
            channels = images["db"].shape[-1]
            fig = plots.filter_grid(
                res.w[:100],
                kernel,
                channels,
                title=f"BioConvHash filters, K = {kernel} (first 100)",
            )
            files.atomic_write(
                f"{out}_filters_K{kernel}.png",
                lambda f, fig=fig: fig.savefig(f, format="png", dpi=100),
            )

        files.atomic_write(
            f"{out}_filters.npz",
            lambda f: np.savez(f, **{f"K{k}": w for k, w in zip(conv.kernels, banks, strict=True)}),
        )

        # 2. features per k_CI, then a BioHash layer per k
        for k_ci in cfg["k_cis"]:
            todo = _todo(rows, cfg["ks"], "bioconvhash", k_ci)
            if not todo:
                continue
            c = conv._replace(k_ci=k_ci)
            t = time.perf_counter()
            feats = {
                name: bioconv.feature_map(banks, x, c, mesh=mesh, progress=True)
                for name, x in images.items()
            }
            seconds = time.perf_counter() - t
            n_images = sum(len(x) for x in images.values())
            info["features"] = [f for f in info["features"] if f["k_ci"] != k_ci]
            info["features"].append(
                {
                    "k_ci": k_ci,
                    "dim": int(feats["db"].shape[1]),
                    "images": n_images,
                    "seconds": seconds,
                    "images_per_s": n_images / seconds,
                    "nonzero_fraction": float(np.mean(feats["db"][:1000] != 0)),
                }
            )
            log(f"features k_ci={k_ci}: D = {feats['db'].shape[1]}, {n_images / seconds:.0f} img/s")
            queries = {name: feats[name] for name in images if name != "db"}
            for row in _hash_rows(
                "biohash",
                feats["db"],
                queries,
                proto,
                cfg | {"ks": todo},
                rule,
                args.seed,
                {"method": "bioconvhash", "k_ci": k_ci},
                log,
                mesh,
            ):
                rows.append(row)
                save(complete=False)  # a long run keeps every finished row
            del feats

        # 3. BioHash on pixels, same protocol (the comparison of Tables 2 and 6)
        todo = _todo(rows, cfg["ks"], "biohash", None)
        if cfg["baseline"] and todo:
            queries = {"clean": proto.xq}
            if cfg["shadows"]:
                queries["shadows"] = splits.features(images["shadows"])
            for row in _hash_rows(
                "biohash",
                proto.xb,
                queries,
                proto,
                cfg | {"ks": todo},
                rule,
                args.seed,
                {"method": "biohash"},
                log,
                mesh,
            ):
                rows.append(row)
                save(complete=False)
        seconds = save(complete=True)
        log(f"wrote {out}.json and {out}.md ({seconds:.0f} s)")
        return 0
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"the rows finished so far are in {out}.json; rerun the same command to resume"
        ) from None


def _todo(rows: list[dict], ks, method: str, k_ci: int | None) -> tuple[int, ...]:
    """The hash lengths of ``ks`` with no row yet for (method, k_ci)."""
    done = {r["k"] for r in rows if (r["method"], r.get("k_ci")) == (method, k_ci)}
    return tuple(k for k in ks if k not in done)


def _paper(cfg: dict, method: str, k: int, shadows: bool, k_ci: int | None = None):
    if cfg["paper"] == "mnist":
        table, ks = published.BIOHASH_MNIST_TABLE1, published.BIOHASH_KS
        if shadows:
            return None
    elif k_ci is not None:
        table = published.BIOCONVHASH_CIFAR10_TABLE3
        ks, method = published.BIOCONVHASH_TABLE3_KS, k_ci
    else:
        table = published.BIOHASH_CIFAR10_TABLE6 if shadows else published.BIOHASH_CIFAR10_TABLE2
        ks = published.BIOHASH_KS
    values = table.get(method)
    return values[list(ks).index(k)] if values and k in ks else None


def report(args, cfg, proto, rows, info, seconds) -> str:
    """Markdown: the command, the protocol, the mAP table next to the paper's, the timings."""
    label = "CIFAR-10 (JPEG)" if "cifar10-jpeg" in cfg["dataset"] else cfg["dataset"]
    conv = cfg["conv"]
    lines = [
        f"`{args.command}`",
        "",
        f"{label}; {proto.name}; mAP@{proto.R or 'All'} (percent) by Hamming ranking, AP "
        "normalised by the relevant items retrieved in the top R (BioHash eq. 12), ties exact. "
        f"Front end: F = {conv['filters']} filters for each K in {list(conv['kernels'])}, "
        f"{conv['patches']:,} training patches each, pool {conv['pool']} stride {conv['stride']}; "
        f"BioHash layer activity {100 * cfg['activity']:.2f} %. Paper's number in brackets "
        f"(F = {400 if cfg['paper'] == 'cifar10' else 500}). Wall time {seconds / 60:.1f} min on "
        f"{os.cpu_count()} CPU cores.",
        "",
    ]
    ks = list(cfg["ks"])
    sweep = len(cfg["k_cis"]) > 1
    lines += ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    groups = []
    for r in rows:
        for qs in ("clean", "shadows"):
            key = (r["method"], r.get("k_ci"), qs)
            if qs in r and key not in groups:
                groups.append(key)
    for method, k_ci, qs in groups:
        cells = []
        for k in ks:
            hit = [r for r in rows if (r["method"], r.get("k_ci"), r["k"]) == (method, k_ci, k)]
            text = f"{hit[0][qs]:.2f}" if hit else ""
            ref = _paper(cfg, method, k, qs == "shadows", k_ci if sweep else None)
            cells.append(text + (f" ({ref:.2f})" if ref is not None else ""))
        name = compare.DISPLAY_NAMES[method] + (" (pixels)" if method == "biohash" else "")
        name += f", k_CI = {k_ci}" if sweep else ""
        name += ", shadows" if qs == "shadows" else ""
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Filters (Krotov-Hopfield rule on unit patches):", ""]
    lines += [
        "| K | F | patches | epochs | final mean norm | time (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f['kernel']} | {f['filters']} | {f['patches']:,} | {f['epochs']} | "
        f"{f['mean_norm']:.3f} | {f['seconds']:.1f} |"
        for f in info["filters"]
    ]
    lines += [
        "",
        "| k_CI | feature dim D | images | images / s | nonzero |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f['k_ci']} | {f['dim']:,} | {f['images']:,} | {f['images_per_s']:.0f} | "
        f"{100 * f['nonzero_fraction']:.1f} % |"
        for f in info["features"]
    ]
    lines += [
        "",
        "BioHash layers (training time on this machine's CPU):",
        "",
        "| method | k_CI | k | m | epochs | final mean norm | fit time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method']} | {r.get('k_ci', '-')} | {r['k']} | {r['bits']} | {r['epochs']} | "
        f"{r['mean_norm']:.3f} | {r['fit_s']:.1f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_command("experiments/bioconvhash.py", main))
