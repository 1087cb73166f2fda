"""What each ``hebbret`` subcommand does, given its parsed flags (see :mod:`hebbret.cli`)."""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections.abc import Sequence

import jax
import numpy as np

from hebbret import data, files, hashing, results, retrieval
from hebbret.data import presets, splits
from hebbret.errors import InputError
from hebbret.pipelines import compare as compare_hashers

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
    return cfg._replace(rule=rule, conv=conv, image_shape=shape)


def _check_out(path: str | None) -> None:
    """Fail on an unusable --out before any work (see :func:`files.check_writable`)."""
    if path is not None:
        files.check_writable(path)


def data_summary(args: argparse.Namespace) -> int:
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


def evaluate(args: argparse.Namespace) -> int:
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


def compare(args: argparse.Namespace) -> int:
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
    compare_hashers.check(methods, args.k, cfg, proto.xb.shape)  # the whole grid, before any fit
    print(
        f"{ds.spec}: {len(proto.yq)} queries x {len(proto.yb)} database items, {proto.name}, "
        f"Hamming ranking, exact ties, AP normaliser 'retrieved'"
    )
    rows, stopped = [], None
    try:
        for row in compare_hashers.iter_rows(
            proto,
            methods=methods,
            ks=args.k,
            config=cfg,
            key=jax.random.key(args.seed),
            progress=not args.no_progress,
            log=print,
        ):
            rows.append(row)
    except (InputError, KeyboardInterrupt) as e:
        stopped = e
    seconds = time.perf_counter() - start
    if rows:
        print()
        print(compare_hashers.table(rows))
        print(
            f"\nmAP@{'All' if proto.R is None else proto.R} in percent; wall time {seconds:.1f} s"
        )
    if args.out and (rows or stopped is None):
        config = {
            "methods": methods,
            "ks": list(args.k),
            "protocol": proto.name,
            "hash_config": _jsonable_config(cfg, args.seed),
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


def hash_features(args: argparse.Namespace) -> int:
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
    key = jax.random.key(args.seed)
    params = hashing.fit(args.method, x, cfg, key=key, progress=not args.no_progress)
    codes = hashing.encode(args.method, params, x)
    arrays = {
        "bits": codes.bits,
        "packed": codes.packed,
        "config": np.array(json.dumps({"method": args.method} | _jsonable_config(cfg, args.seed))),
    }
    if codes.active is not None:
        arrays["active"] = codes.active
    files.atomic_write(args.out, lambda f: np.savez(f, **arrays))
    print(
        f"{args.method}: {codes.bits.shape[0]} codes of {codes.bits.shape[1]} bits "
        f"(k = {args.k}) -> {args.out}"
    )
    return 0


def _jsonable_config(cfg: hashing.HashConfig, seed: int) -> dict:
    """The config as recorded: its fields, then ``seed`` (the fits' key is jax.random.key(seed))."""
    return cfg._asdict() | {"rule": cfg.rule._asdict(), "conv": cfg.conv._asdict(), "seed": seed}
