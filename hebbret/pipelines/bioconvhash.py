"""BioConvHash's study (Ryali et al. 2020, §2.4): Table 2's row, Table 6 (shadows), Table 3 (k_CI).

The front end is learned once (one filter bank per kernel size, :func:`hebbret.hashing.conv.
learn_front_end`) and its features computed once per k_CI; a BioHash layer is then trained on the
database features for every hash length k (:func:`hebbret.hashing.conv.fit_layer`), so each row
equals ``hashing.fit("bioconvhash", ...)`` with the same key. With ``baseline`` BioHash on pixels
runs on the same protocol. Writes ``OUT.json`` / ``OUT.md`` after every row (a rerun with the
same config resumes), ``OUT_filters.npz`` (arrays ``K3``, ``K4``, ... of shape (F, K*K*C), for
``np.load(..., allow_pickle=False)``) and ``OUT_filters_K<K>.png``. Settings:
``experiments/configs/bioconvhash.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import scipy.sparse

from hebbret import data, files, hashing, mesh, perturb, plots, retrieval
from hebbret.data import splits
from hebbret.errors import InputError, check_seed
from hebbret.hashing import bioconv
from hebbret.hashing import conv as conv_hash
from hebbret.pipelines import bioconvhash_report
from hebbret.pipelines.study import Study, as_dict, check_positive_ints, default_out
from hebbret.rules.biohash import RuleConfig

PAPERS = ("cifar10", "mnist", "none")  # whose published numbers the report puts beside ours


def run(
    config: Any,
    out: str | None = None,
    *,
    devices: int | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the study; returns the record (also in ``OUT.json``)."""
    cfg = as_dict(config)
    check_seed(cfg["seed"])
    check_positive_ints(cfg, "ks", "k_cis")
    cap = cfg.get("layer_max_epochs")  # the BioHash layers' epoch budget; filters keep the rule's
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise InputError(f"config.layer_max_epochs must be an integer >= 1, got {cap!r}")
    if cfg["paper"] not in PAPERS:
        raise InputError(f"unknown config.paper {cfg['paper']!r}: expected one of {PAPERS}")
    out = out or default_out("bioconvhash", cfg)
    suffixes = ("_filters.npz", *(f"_filters_K{k}.png" for k in cfg["conv"]["kernels"]))
    study = Study(out, cfg, cfg["seed"], suffixes=suffixes, log=log)
    rows, log = study.rows, study.log
    done = study.previous["metrics"] if study.previous else {}
    info = {"filters": [], "features": list(done.get("features", []))}
    try:
        ds = data.load(cfg["dataset"])
        proto = splits.class_query_protocol(
            ds, cfg["queries_per_class"], cfg["R"], cfg["seed"], query_subset=cfg["query_subset"]
        )
        pooled = ds.pooled().x
        images = {"db": pooled[proto.database], "clean": pooled[proto.queries]}
        if cfg["shadows"]:
            images["shadows"] = perturb.shadow(images["clean"])
        grid = mesh.data_mesh(devices) if devices else None
        rule = RuleConfig(**cfg["rule"])
        conv = bioconv.ConvConfig(**cfg["conv"])
        hcfg = hashing.HashConfig(k=min(cfg["ks"]), activity=cfg["activity"], rule=rule, conv=conv)
        layer = hcfg if cap is None else hcfg._replace(rule=rule._replace(max_epochs=cap))
        for k in cfg["ks"]:  # every cell checked before the first filter is learned
            hashing.check("bioconvhash", hcfg._replace(k=k), images["db"].shape, mesh=grid)
        key = jax.random.key(cfg["seed"])
        log(f"{ds.spec}: {proto.name}, R = {proto.R or 'All'}")

        def save(complete: bool) -> dict[str, Any]:
            text = bioconvhash_report.report(command, cfg, ds, proto, rows, info, study.seconds)
            return study.save(
                {"protocol": proto.name} | info,
                text,
                dataset={"spec": ds.spec, "checksum": ds.checksum},
                complete=complete,
            )

        kept = done.get("filters", [])
        front = _front_end(images["db"], hcfg, key, grid, info, kept, out, lambda: save(False), log)
        for k_ci in cfg["k_cis"]:  # features per k_CI, then a BioHash layer per k
            todo = _todo(rows, cfg["ks"], "bioconvhash", k_ci)
            if not todo:
                continue
            fe = front._replace(conv=front.conv._replace(k_ci=k_ci))
            t = time.perf_counter()
            sparse = conv_hash.keep_sparse(fe, len(images["db"]))  # CSR beyond 1 GiB
            feats = {
                name: conv_hash.features(fe, x, mesh=grid, progress=True, sparse=sparse)
                for name, x in images.items()
            }
            seconds = time.perf_counter() - t
            n_images = sum(len(x) for x in images.values())
            info["features"] = [f for f in info["features"] if f["k_ci"] != k_ci] + [
                {
                    "k_ci": k_ci,
                    "dim": int(feats["db"].shape[1]),
                    "images": n_images,
                    "seconds": seconds,
                    "images_per_s": n_images / seconds,
                    "nonzero_fraction": _nonzero(feats["db"]),
                    "storage": "sparse (CSR)" if sparse else "dense",
                    "db_feature_bytes": _nbytes(feats["db"]),
                }
            ]
            log(f"features k_ci={k_ci}: D = {feats['db'].shape[1]}, {n_images / seconds:.0f} img/s")
            queries = {name: feats[name] for name in images if name != "db"}
            extra = {"method": "bioconvhash", "k_ci": k_ci}
            for row in _layers(feats["db"], queries, proto, layer, todo, key, extra, grid, log):
                rows.append(row)
                save(complete=False)
            del feats
        todo = _todo(rows, cfg["ks"], "biohash", None)  # BioHash on pixels, same protocol
        if cfg["baseline"] and todo:
            queries = {"clean": proto.xq}
            if cfg["shadows"]:
                queries["shadows"] = splits.features(images["shadows"])
            extra = {"method": "biohash"}
            for row in _layers(proto.xb, queries, proto, layer, todo, key, extra, grid, log):
                rows.append(row)
                save(complete=False)
        record = save(complete=True)
        log(f"wrote {out}.json and {out}.md ({study.seconds:.0f} s)")
        return record
    except KeyboardInterrupt:
        raise study.interrupted() from None


def _front_end(db_images, hcfg, key, grid, info, kept, out, save, log) -> conv_hash.FrontEnd:
    """One bank per kernel size (bank K from ``fold_in(key, K)``, as
    :func:`conv_hash.learn_front_end`), timed, plotted and saved to ``OUT_filters.npz`` and the
    record after each bank; banks of a resumed run (``kept``: the record's filter entries, same
    config) are read back from that file instead of learned again."""
    path = f"{out}_filters.npz"
    saved = {}
    if kept and os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            saved = {name: f[name] for name in f.files}
    banks, epochs, norms = {}, [], []
    for kernel in hcfg.conv.kernels:
        entry = next((e for e in kept if e["kernel"] == kernel), None)
        if entry is not None and f"K{kernel}" in saved:
            banks[f"K{kernel}"] = saved[f"K{kernel}"]
            info["filters"].append(entry)
            log(f"filters K={kernel}: restored from {path}")
        else:
            t = time.perf_counter()
            one = hcfg._replace(conv=hcfg.conv._replace(kernels=(kernel,)))
            part = conv_hash.learn_front_end(db_images, one, key=key, mesh=grid, progress=True)
            banks[f"K{kernel}"] = part.filters[0]
            entry = {
                "kernel": kernel,
                "filters": hcfg.conv.filters,
                "patches": hcfg.conv.patches,
                "epochs": part.epochs[0],
                "mean_norm": part.mean_norms[0],
                "seconds": time.perf_counter() - t,
            }
            info["filters"].append(entry)
            log(f"filters K={kernel}: {entry['epochs']} epochs, mean norm {entry['mean_norm']:.3f}")
            files.atomic_write(path, lambda f: np.savez(f, **banks))
            save()
        epochs.append(int(entry["epochs"]))
        norms.append(float(entry["mean_norm"]))
        fig = plots.filter_grid(
            banks[f"K{kernel}"][:100],
            kernel,
            db_images.shape[-1],
            title=f"BioConvHash filters, K = {kernel} (first 100)",
        )
        files.atomic_write(
            f"{out}_filters_K{kernel}.png",
            lambda f, fig=fig: fig.savefig(f, format="png", dpi=100),
        )
    return conv_hash.FrontEnd(
        tuple(banks[f"K{k}"] for k in hcfg.conv.kernels),
        tuple(epochs),
        tuple(norms),
        hcfg.conv,
        tuple(int(v) for v in db_images.shape[1:]),
        float(hcfg.rule.p),
    )


def _layers(xb, query_sets, proto, hcfg, ks, key, extra, grid, log):
    """A BioHash layer on the database features ``xb`` for every k (same key for every k);
    yields a row with the mAP of every query set."""
    for k in ks:
        start = time.perf_counter()
        params = hashing.fit("biohash", xb, hcfg._replace(k=k), key=key, progress=True, mesh=grid)
        fit_s = time.perf_counter() - start
        cb = hashing.encode("biohash", params, xb)
        row = extra | {
            "k": k,
            "bits": int(cb.bits.shape[1]),
            "fit_s": fit_s,
            "epochs": params.epochs,
            "mean_norm": params.mean_norm,
        }
        for name, xq in query_sets.items():
            cq = hashing.encode("biohash", params, xq)
            m = retrieval.evaluate(
                cq.packed, cb.packed, proto.yq, proto.yb, metric="hamming", R=proto.R
            )
            row[name] = 100 * m["map"]
        log(
            f"{extra['method']:<12} k_ci={extra.get('k_ci', '-')} k={k:<3} "
            + " ".join(f"{n} {row[n]:6.2f}" for n in query_sets)
            + f"  fit {fit_s:.1f} s, {row['epochs']} epochs, mean norm {row['mean_norm']:.3f}"
        )
        yield row


def _nonzero(x) -> float:
    """Fraction of non-zero entries of dense or CSR features."""
    if scipy.sparse.issparse(x):
        return float(x.nnz / np.prod(x.shape))
    return sum(np.count_nonzero(x[s : s + 4096]) for s in range(0, len(x), 4096)) / x.size


def _nbytes(x) -> int:
    if scipy.sparse.issparse(x):
        return int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes)
    return int(x.nbytes)


def _todo(rows: list[dict], ks, method: str, k_ci: int | None) -> tuple[int, ...]:
    """The hash lengths of ``ks`` with no row yet for (method, k_ci)."""
    done = {r["k"] for r in rows if (r["method"], r.get("k_ci")) == (method, k_ci)}
    return tuple(k for k in ks if k not in done)
