"""The ``hebbret`` command line: parses flags and calls the library; nothing else lives here.

    hebbret compare                        # every hasher x hash length on digits: the main job
    hebbret hash --method biohash --k 16 --features F.npy --out codes.npz
    hebbret data SPEC                      # counts per split and class, shape, checksum, cache hit
    hebbret eval --dataset digits          # raw-pixel retrieval under the dataset's protocol
    hebbret eval --queries Q.npy --database D.npy --query-labels QL.npy --database-labels DL.npy

User errors (bad input, unknown dataset, missing file) print one line ``hebbret: error: ...`` and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np

from hebbret import data, files, hashing, results, retrieval
from hebbret.data import presets, splits
from hebbret.errors import InputError, check_seed, run_command
from hebbret.pipelines import compare


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _seed(text: str) -> int:
    try:
        return check_seed(int(text))
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 2**63), got {text!r}"
        ) from None


def _depth(text: str) -> int | str:
    if text.lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"R must be an integer or 'all', got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hebbret",
        description="Hebbian representation learning for content-based image retrieval.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "data",
        help="describe a dataset",
        description=f"Load a dataset and describe it. SPEC is one of: {data.SPECS}.",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser(
        "eval",
        help="retrieval metrics for features or codes",
        description="Rank a database for every query and report mAP@R (three normalisers), "
        "precision@N and recall@N. Either --dataset (raw pixels under the dataset's default "
        "protocol: the baseline every method must beat) or --queries/--database files "
        "(.npy, or .npz with arrays x and y).",
    )
    src = p.add_argument_group("input (one of)")
    src.add_argument("--dataset", metavar="SPEC", help=f"dataset spec: {data.SPECS}")
    src.add_argument("--queries", metavar="FILE", help="query features / packed codes")
    src.add_argument("--database", metavar="FILE", help="database features / packed codes")
    src.add_argument("--query-labels", metavar="FILE", help=".npy labels (else y in the .npz)")
    src.add_argument("--database-labels", metavar="FILE", help=".npy labels (else y in .npz)")
    p.add_argument("--metric", default="sqeuclidean", choices=retrieval.METRICS)
    p.add_argument(
        "--R",
        type=_depth,
        default=None,
        metavar="R",
        help="list depth for AP@R, an integer or 'all' (default: the protocol's R, else all)",
    )
    p.add_argument(
        "--normaliser",
        default="retrieved",
        choices=retrieval.NORMALISERS,
        help="AP normaliser reported as mAP (all three are printed)",
    )
    p.add_argument(
        "--tie",
        default="exact",
        choices=retrieval.TIES,
        help="tie handling: exact expected value (default), seeded random, stable",
    )
    p.add_argument(
        "--at",
        type=_positive_ints,
        default=None,
        metavar="N,N",
        help="ranks for precision@N / recall@N (default 10,100 clipped to R)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="protocol split and tie seed")
    p.add_argument("--devices", type=int, default=1, help="shard the database over this many")
    p.add_argument("--out", metavar="FILE.json", help="write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser(
        "compare",
        help="train every hasher and print the mAP table (the main job)",
        description="Fit each hashing method at each hash length k on the dataset's training "
        "data (= its database, as in the BioHash protocols), rank the database for every query "
        "by Hamming distance, and print mAP (methods x k) with wall times.",
    )
    p.add_argument("--dataset", default="digits", metavar="SPEC", help=f"{data.SPECS}")
    p.add_argument(
        "--k",
        type=_positive_ints,
        default=(2, 4, 8, 16, 32),
        metavar="K,K",
        help="hash lengths (default 2,4,8,16,32)",
    )
    p.add_argument(
        "--methods",
        default=",".join(compare.DEFAULT_METHODS),
        metavar="M,M",
        help=f"comma-separated subset of {', '.join(hashing.HASHERS)} (default: all but "
        "bioconvhash, whose paper settings need ~30 GB for CIFAR-10's 50k images)",
    )
    _hash_options(p)
    p.add_argument("--out", metavar="FILE.json", help="write the rows as a results record")

    p = sub.add_parser(
        "hash",
        help="hash a dataset or any (n, d) feature matrix",
        description="Fit a hasher on all rows and encode all rows, in order. Writes an .npz with "
        "bits (n, L) uint8, packed (n, ceil(L/32)) uint32, active (n, k) int32 sorted unit "
        "indices for sparse methods, and config (JSON).",
    )
    p.add_argument("--method", required=True, choices=list(hashing.HASHERS))
    p.add_argument("--k", type=int, required=True, help="hash length")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="SPEC", help="all splits pooled, raw pixels")
    src.add_argument("--features", metavar="F.npy", help="(n, d) features (.npy or .npz x)")
    _hash_options(p)
    p.add_argument("--out", required=True, metavar="codes.npz")
    return parser


def _hash_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--activity",
        type=float,
        default=None,
        help="BioHash activity k/m (default 0.05 for digits/mnist, else 0.005)",
    )
    p.add_argument("--max-epochs", type=int, default=None, help="cap on BioHash epochs")
    conv = p.add_argument_group("BioConvHash (defaults: the paper's per dataset, see --help)")
    conv.add_argument("--filters", type=int, help="F filters per kernel size (CIFAR 400)")
    conv.add_argument("--kernels", type=_positive_ints, help="kernel sizes (CIFAR 3,4,10)")
    conv.add_argument("--k-ci", type=int, help="channels kept by inhibition (CIFAR 1)")
    conv.add_argument("--pool", type=int, help="max-pool kernel (paper 7)")
    conv.add_argument("--pool-stride", type=int, help="max-pool stride (paper 2)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


# Each flag of _hash_options -> the HashConfig field it sets (the conv flags set fields of
# HashConfig.conv, named as the flag except those in _CONV_FIELDS).
_HASH_FLAGS = {
    "activity": "activity",
    "max_epochs": "rule",
    "filters": "conv",
    "kernels": "conv",
    "k_ci": "conv",
    "pool": "conv",
    "pool_stride": "conv",
}
_CONV_FIELDS = {"pool_stride": "stride"}


def _hash_config(
    args: argparse.Namespace,
    spec: str | None,
    methods: Sequence[str],
    k: int = 1,
    image_shape: tuple[int, ...] | None = None,
) -> hashing.HashConfig:
    """The dataset's preset with every flag the user gave applied; a flag that none of
    ``methods`` reads is an InputError, never silently dropped."""
    for flag, field in _HASH_FLAGS.items():
        if getattr(args, flag, None) is not None and not any(
            field in hashing.USES[m] for m in methods
        ):
            users = [m for m in hashing.HASHERS if field in hashing.USES[m]]
            raise InputError(
                f"--{flag.replace('_', '-')} is not used by {', '.join(methods)} "
                f"(it sets {', '.join(users)})"
            )
    cfg = presets.hash_config(spec or "", k=k)
    rule, conv = cfg.rule, cfg.conv
    if args.activity is not None:
        cfg = cfg._replace(activity=args.activity)
    if args.max_epochs is not None:
        rule = rule._replace(max_epochs=args.max_epochs)
    for flag, field in _HASH_FLAGS.items():
        if field == "conv" and getattr(args, flag, None) is not None:
            conv = conv._replace(**{_CONV_FIELDS.get(flag, flag): getattr(args, flag)})
    shape = None if image_shape is None or len(image_shape) != 3 else tuple(image_shape)
    return cfg._replace(rule=rule, conv=conv, seed=args.seed, image_shape=shape)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hebbret`` script."""
    args = _parser().parse_args(argv)
    commands = {"data": _data, "eval": _eval, "compare": _compare, "hash": _hash}
    return run_command("hebbret", lambda: commands[args.command](args))


def _check_out(path: str | None) -> None:
    """Fail on an unusable --out before any work (see :func:`files.check_writable`)."""
    if path is not None:
        files.check_writable(path)


def _data(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    ds = data.load(args.spec, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    info = data.summary(ds) | {"load_seconds": round(seconds, 3)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset   {ds.spec} ({ds.kind}, {ds.num_classes} classes)")
    print(f"checksum  sha256:{ds.checksum}")
    print(f"cache     {'hit' if ds.cache_hit else 'miss'}, loaded in {seconds:.2f} s")
    width = max(len(c) for c in ds.class_names)
    names = list(info["splits"])
    print(f"\n{'split':<{width}}  " + "  ".join(f"{n:>9}" for n in names))
    for label, key in (("items", "n"), ("shape", "shape"), ("dtype", "dtype")):
        cells = [
            "x".join(map(str, s[key])) if key == "shape" else str(s[key])
            for s in info["splits"].values()
        ]
        print(f"{label:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))
    print()
    for i, c in enumerate(ds.class_names):
        print(
            f"{c:<{width}}  " + "  ".join(f"{s['counts'][i]:>9}" for s in info["splits"].values())
        )
    return 0


def _load_array(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y-or-None) from a .npy or an .npz (arrays x and optionally y); never unpickles."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        arrays = np.load(file, allow_pickle=False)
        if isinstance(arrays, np.ndarray):
            return arrays, None
        with arrays:
            x = arrays["x"] if "x" in arrays else None
            y = arrays["y"] if "y" in arrays else None
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read {what} file {path}: {str(e).splitlines()[0]}") from e
    if x is None:
        raise InputError(f"{what} file {path} has no array 'x'")
    return x, y


def _labels(file: str | None, fallback: np.ndarray | None, what: str) -> np.ndarray:
    if file is not None:
        y, _ = _load_array(file, f"{what} labels")
        return y
    if fallback is None:
        raise InputError(f"missing {what} labels: pass --{what}-labels or store y in the .npz")
    return fallback


def _eval(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    _check_out(args.out)
    files = (args.queries, args.database)
    if args.dataset is not None:
        if any(files):
            raise InputError("give either --dataset or --queries/--database, not both")
        ds = data.load(args.dataset, progress=not args.no_progress)
        proto = splits.default_protocol(ds, seed=args.seed)
        xq, yq, xb, yb, default_r = proto.xq, proto.yq, proto.xb, proto.yb, proto.R
        source = {"spec": ds.spec, "checksum": ds.checksum, "protocol": proto.name}
    elif all(files):
        xq, fq = _load_array(args.queries, "queries")
        xb, fb = _load_array(args.database, "database")
        yq = _labels(args.query_labels, fq, "query")
        yb = _labels(args.database_labels, fb, "database")
        default_r, source = None, {"queries": args.queries, "database": args.database}
    else:
        raise InputError("give --dataset SPEC, or both --queries and --database")
    r = {None: default_r, "all": None}.get(args.R, args.R)
    n = len(xb)
    depth = n if r is None else min(r, n)
    at = args.at or tuple(sorted({min(10, depth), min(100, depth)}))
    mesh = retrieval.database_mesh(args.devices) if args.devices != 1 else None
    out = retrieval.evaluate(
        xq,
        xb,
        yq,
        yb,
        metric=args.metric,
        R=r,
        normaliser=args.normaliser,
        tie=args.tie,
        at=at,
        seed=args.seed,
        mesh=mesh,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    _print_table(out, len(xq), n)
    print(f"wall time {seconds:.2f} s")
    if args.out:
        metrics = {
            k: out[k]
            for k in (
                "map",
                "map_by_normaliser",
                "precision_at",
                "recall_at",
                "top_n_score",
                "pr11",
            )
        }
        config = dict(
            out["settings"], at=list(at), devices=args.devices, num_queries=len(xq), num_database=n
        )
        results.write_json(
            args.out,
            results.record(
                config=config, seed=args.seed, metrics=metrics, wall_time_s=seconds, dataset=source
            ),
        )
        print(f"wrote {args.out}")
    return 0


def _print_table(out: dict, nq: int, n: int) -> None:
    s = out["settings"]
    r = "All" if s["R"] == n else s["R"]
    print(f"{nq} queries x {n} database items, metric {s['metric']}, ties {s['tie']}")
    print(f"\n{'measure':<24}{'value':>10}")
    for name, value in out["map_by_normaliser"].items():
        mark = " *" if name == s["normaliser"] else ""
        print(f"{f'mAP@{r} ({name})':<24}{100 * value:>10.2f}{mark}")
    for k in out["precision_at"]:
        print(f"{f'precision@{k}':<24}{100 * out['precision_at'][k]:>10.2f}")
        print(f"{f'recall@{k}':<24}{100 * out['recall_at'][k]:>10.2f}")
    print("(percent; * = the reported mAP)")


def _compare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    _check_out(args.out)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise InputError(f"--methods is empty: expected some of {', '.join(hashing.HASHERS)}")
    for m in methods:
        hashing.get(m)  # unknown names fail before any work
    ds = data.load(args.dataset, progress=not args.no_progress)
    proto = splits.default_protocol(ds, seed=args.seed)
    cfg = _hash_config(args, args.dataset, methods, image_shape=ds.pooled().x.shape[1:])
    compare.check(methods, args.k, cfg, proto.xb.shape)  # the whole grid, before any fit
    print(
        f"{ds.spec}: {len(proto.yq)} queries x {len(proto.yb)} database items, {proto.name}, "
        f"Hamming ranking, exact ties, AP normaliser 'retrieved'"
    )
    rows, stopped = [], None
    try:
        for row in compare.iter_rows(
            proto, methods=methods, ks=args.k, config=cfg, progress=not args.no_progress, log=print
        ):
            rows.append(row)
    except (InputError, KeyboardInterrupt) as e:
        stopped = e
    seconds = time.perf_counter() - start
    if rows:
        print()
        print(compare.table(rows))
        print(
            f"\nmAP@{'All' if proto.R is None else proto.R} in percent; wall time {seconds:.1f} s"
        )
    if args.out and (rows or stopped is None):
        config = {
            "methods": methods,
            "ks": list(args.k),
            "protocol": proto.name,
            "hash_config": _jsonable_config(cfg),
        }
        reason = None if stopped is None else (str(stopped) or "interrupted")
        metrics = {"rows": rows, "complete": stopped is None, "stopped": reason}
        results.write_json(
            args.out,
            results.record(
                config=config,
                seed=args.seed,
                metrics=metrics,
                wall_time_s=seconds,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
            ),
        )
        if stopped is None:
            print(f"wrote {args.out}")
    if isinstance(stopped, KeyboardInterrupt) and args.out and rows:
        raise KeyboardInterrupt(f"the {len(rows)} finished rows are in {args.out} (partial)")
    if stopped is not None:
        raise stopped
    return 0


def _hash(args: argparse.Namespace) -> int:
    _check_out(args.out)
    if args.dataset is not None:
        ds = data.load(args.dataset, progress=not args.no_progress)
        pooled = ds.pooled().x
        shape, x = pooled.shape[1:], splits.features(pooled)
    else:
        x, _ = _load_array(args.features, "features")
        shape = x.shape[1:]  # (n, H, W, C) arrays are images (BioConvHash); rows are kept as is
        if x.ndim == 4:
            x = splits.features(x)
    cfg = _hash_config(args, args.dataset, [args.method], k=args.k, image_shape=shape)
    params = hashing.fit(args.method, x, cfg, progress=not args.no_progress)
    codes = hashing.encode(args.method, params, x)
    arrays = {
        "bits": codes.bits,
        "packed": codes.packed,
        "config": np.array(json.dumps({"method": args.method} | _jsonable_config(cfg))),
    }
    if codes.active is not None:
        arrays["active"] = codes.active
    files.atomic_write(args.out, lambda f: np.savez(f, **arrays))
    print(
        f"{args.method}: {codes.bits.shape[0]} codes of {codes.bits.shape[1]} bits "
        f"(k = {args.k}) -> {args.out}"
    )
    return 0


def _jsonable_config(cfg: hashing.HashConfig) -> dict:
    return cfg._asdict() | {"rule": cfg.rule._asdict(), "conv": cfg.conv._asdict()}


if __name__ == "__main__":
    sys.exit(main())
