"""Kuo, Chou & Chang's study (Tables 2-5): the 7-layer CNN in four variants, its test accuracy,
and retrieval with its 400-d features under three distances, with the matching time per query.

Variants (:data:`VARIANTS`): ``plain`` (RGB), ``da`` (+ horizontal flips and the grey and
equalised-grey channels), ``pretrain`` (conv1 from the sparse auto-encoder) and ``both``. All four
share the initialisation of every other layer, the minibatch order and the optimiser, so each
differs from ``plain`` only in what its name says. The SAE is trained once on grey 5x5 patches of
the training images (ZCA-whitened) and folded into conv1 (:func:`first_layer`).

Retrieval (every variant in ``config.retrieval``; the paper reports its best, ``both``): the
features of the final network, every distance in ``config.distances``, mAP over the whole
database (normalised by all relevant items), under two protocols (the paper does not say which it
used): ``test_vs_train`` (test queries, the training images as database) and ``test_vs_test``
(test queries against the other test images: leave-one-out). Matching time per query: our jitted
kernel over all queries against a per-query numpy loop (distance to every database item, then a
full argsort: what the paper's 0.08-0.26 s/query measures); the loop's first queries are also
checked against the kernel's AP. Checkpoints (orbax, per epoch) under ``checkpoints/<name of OUT>``
(one folder per variant and settings digest) and rows written as they finish, so the same call
resumes. Variants train in the order ``config.variants`` gives and are recorded in the order
of :data:`VARIANTS`, so a resumed run may take another order (e.g. ``both`` before ``pretrain``).
A variant whose accuracy row is recorded but whose retrieval rows are not is trained again if its
checkpoint is gone; each retrieval row keeps its network's top-1 (``network_top1``), and a
mismatch with the accuracy row is logged and noted in the report.
Settings: ``experiments/configs/kuo.py``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from hebbret import checkpoints, data, files, plots, retrieval
from hebbret.data import splits
from hebbret.errors import InputError, check_seed
from hebbret.nets import augment, convnet, kuo, sae, zca
from hebbret.pipelines import kuo_report as report
from hebbret.pipelines.study import Study, as_dict, default_out


class Variant(NamedTuple):
    channels: int  # 3: RGB; 5: + grey + equalised grey
    flip: bool  # random horizontal flips while training
    pretrain: bool  # conv1 from the sparse auto-encoder


VARIANTS = {
    "plain": Variant(3, False, False),
    "da": Variant(5, True, False),
    "pretrain": Variant(3, False, True),
    "both": Variant(5, True, True),
}
DISTANCES = ("euclidean", "manhattan", "cosine")
PROTOCOLS = ("test_vs_train", "test_vs_test")
FIRST_LAYER = ("unit", "exact")
SHORT_LISTS = (30, 1000)  # list depths whose mAP is also reported (retrieve's map_at)


def check(cfg: dict[str, Any]) -> None:
    """InputError now, before any data is loaded, for unknown names and bad sizes."""
    for field, known in (
        ("variants", VARIANTS), ("retrieval", VARIANTS), ("distances", DISTANCES),
        ("protocols", PROTOCOLS),
    ):  # fmt: skip
        unknown = [v for v in cfg[field] if v not in known]
        if unknown:
            raise InputError(f"unknown config.{field} {unknown}: expected some of {tuple(known)}")
    if not cfg["variants"]:
        raise InputError("config.variants is empty")
    missing = set(cfg["retrieval"]) - set(cfg["variants"])
    if missing:
        raise InputError(f"config.retrieval names {sorted(missing)}, not in config.variants")
    if cfg["sae"]["first_layer"] not in FIRST_LAYER:
        raise InputError(
            f"unknown config.sae.first_layer {cfg['sae']['first_layer']!r}: "
            f"expected one of {FIRST_LAYER}"
        )
    check_seed(cfg["seed"])
    sizes = [(f, cfg[f], 0) for f in ("train_images", "queries")] + [
        ("timing_queries", cfg["timing_queries"], 0)
    ]
    sizes += [(f"train.{f}", cfg["train"][f], 1) for f in ("epochs", "batch")]
    sizes += [(f"sae.{f}", cfg["sae"][f], 1) for f in ("patches", "images", "epochs", "batch")]
    for name, value, low in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"config.{name} must be an integer >= {low}, got {value!r}")
    if cfg["sae"]["batch"] > cfg["sae"]["patches"]:
        raise InputError("config.sae.batch > config.sae.patches")


def run(
    config: Any,
    out: str | None = None,
    *,
    checkpoint_root: str | pathlib.Path | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the study and returns its record (also written to ``OUT.json``).

    Args:
      config: ``experiments/configs/kuo.py`` settings (ConfigDict or dict).
      out: path prefix of ``OUT.json`` / ``OUT.md`` (default ``results/kuo_<experiment>``).
      checkpoint_root: where the SAE and the four networks are checkpointed.
      command: the command line, for the report.
      log: progress lines (default print).
    """
    cfg = as_dict(config)
    check(cfg)
    run_order = list(dict.fromkeys(cfg["variants"]))  # run in the order given, recorded in ours,
    for field in ("variants", "retrieval"):  # so a run resumes whatever order it is given in
        cfg[field] = [v for v in VARIANTS if v in cfg[field]]
    out = out or default_out("kuo", cfg)
    ckpt_root = pathlib.Path(checkpoint_root or f"checkpoints/{pathlib.Path(out).name}")
    files.check_writable(ckpt_root / "step")
    study = Study(out, cfg, cfg["seed"], suffixes=("_filters.png", "_grid.png"), log=log)
    log = study.log  # print, unless the caller gave a log
    try:
        ds = data.load(cfg["dataset"])
        if "train" not in ds.splits or "test" not in ds.splits:
            raise InputError(f"{ds.spec} needs train and test splits, has {sorted(ds.splits)}")
        train, test = ds.splits["train"], ds.splits["test"]
        if train.y is None or test.y is None:
            raise InputError(f"{ds.spec}: missing labels (the CNN is trained on them)")
        convnet.check_images(train.x[:1])
        n = cfg["train_images"] or len(train.x)
        if n > len(train.x):
            raise InputError(f"config.train_images={n} > {len(train.x)} training images")
        nq = cfg["queries"] or len(test.x)
        if nq > len(test.x):
            raise InputError(f"config.queries={nq} > {len(test.x)} test images")
        order = np.random.default_rng(cfg["seed"]).permutation(len(train.x))[:n]
        x, y = train.x[order], train.y[order]  # class-sorted folders: a seeded subset
        queries = np.sort(splits.random_queries(len(test.x), nq, cfg["seed"]))

        def save(complete: bool) -> dict[str, Any]:
            text = report.report(command, cfg, ds, study.rows, study.seconds)
            return study.save(
                {}, text, dataset={"spec": ds.spec, "checksum": ds.checksum}, complete=complete
            )

        key = jax.random.key(cfg["seed"])
        grey_kernels = None
        for name in run_order:
            v = VARIANTS[name]
            todo = [(p, d) for p in cfg["protocols"] for d in cfg["distances"]]
            todo = todo if name in cfg["retrieval"] else []
            if _row(study.rows, name) and all(_row(study.rows, name, p, d) for p, d in todo):
                continue
            images = kuo.prepare(x, v.channels)
            mean, std = kuo.channel_stats(images)
            model = kuo.KuoNet(ds.num_classes)
            params = kuo.init(model, jax.random.fold_in(key, 0), v.channels)
            if v.pretrain:
                if grey_kernels is None:
                    grey_kernels = _sae(cfg, x, key, ckpt_root / _folder("sae", cfg), out, log)
                params = kuo.with_first_layer(
                    params, *first_layer(cfg, grey_kernels, images, mean, std)
                )
            folder = ckpt_root / _folder(name, cfg)
            restored = (checkpoints.latest_step(folder) or 0) if folder.is_dir() else 0
            t = time.perf_counter()
            tc = kuo.TrainConfig(**(cfg["train"] | {"flip": v.flip}))
            result = kuo.train(
                jax.random.fold_in(key, 1), model, params, images, y, mean, std, tc,
                checkpoint_dir=folder,
            )  # fmt: skip
            train_s = time.perf_counter() - t
            test_images = kuo.prepare(test.x, v.channels)
            logits, feats_test = kuo.outputs(model, result.params, test_images, mean, std)
            acc = {f"top{k}": kuo.top_k_accuracy(logits, test.y, k) for k in (1, 2, 3)}
            if (known := _row(study.rows, name)) and abs(known["top1"] - acc["top1"]) > 1e-9:
                log(f"warning: {name}'s network reaches top-1 {acc['top1']:.2f}, not the recorded "
                    f"{known['top1']:.2f} (trained again without its checkpoint?)")  # fmt: skip
            if not known:
                row = {"variant": name, "kind": "accuracy"} | acc
                row |= {"train_s": train_s, "epochs_restored": restored, "losses": result.losses}
                study.rows.append(row)
                log(report.line(row))
                save(False)
            if not todo:
                continue
            _, feats_train = kuo.outputs(model, result.params, images, mean, std)
            for protocol, distance in todo:
                if _row(study.rows, name, protocol, distance):
                    continue
                if protocol == "test_vs_train":
                    fb, yb, leave = feats_train, y, None
                else:
                    fb, yb, leave = feats_test, test.y, queries
                row = {"variant": name, "kind": "retrieval", "protocol": protocol}
                row |= {"distance": distance, "network_top1": acc["top1"]} | retrieve(
                    feats_test[queries], fb, test.y[queries], yb, distance, leave_out=leave,
                    timing_queries=cfg["timing_queries"],
                )  # fmt: skip
                study.rows.append(row)
                log(report.line(row))
                save(False)
            if name == cfg["retrieval"][-1]:
                _grid(f"{out}_grid.png", feats_test[queries[:6]], feats_train, test.x[queries[:6]],
                      x, test.y[queries[:6]], y, name)  # fmt: skip
        record = save(complete=True)
        log(f"wrote {out}.json and {out}.md ({study.seconds / 60:.1f} min)")
        return record
    except KeyboardInterrupt:
        raise study.interrupted() from None


def _folder(name: str, cfg: dict) -> str:
    """``name`` and a digest of every setting its training depends on (data, seed, the SAE's and,
    for a network, the optimiser's), so a checkpoint of other settings is never resumed."""
    keys = ["dataset", "seed", "train_images"] + (["sae"] if name == "sae" else ["train"])
    if name == "sae" or VARIANTS[name].pretrain:
        keys.append("sae")
    settings = json.dumps({k: cfg[k] for k in dict.fromkeys(keys)}, sort_keys=True, default=str)
    return f"{name}_{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


def _row(rows: list[dict], variant: str, protocol: str | None = None, distance: str | None = None):
    kind = "accuracy" if protocol is None else "retrieval"
    for r in rows:
        if (r["variant"], r["kind"]) == (variant, kind) and (
            kind == "accuracy" or (r["protocol"], r["distance"]) == (protocol, distance)
        ):
            return r
    return None


def _sae(cfg, x, key, folder, out, log) -> tuple[np.ndarray, np.ndarray]:
    """The SAE's grey (5, 5, 1, H) kernels and (H,) biases, whitening folded in; trained once
    (resumed from ``folder``); its filters are drawn to ``OUT_filters.png``."""
    s = cfg["sae"]
    grey = convnet.map_chunks(augment.grey, x[: s["images"]], min(2000, s["images"]))[..., None]
    patches = zca.sample_patches(jax.random.fold_in(key, 2), grey, s["patches"])
    whitening = zca.fit_zca(patches, s["zca_eps"])
    inputs = np.asarray(zca.whiten(whitening, patches))
    sc = sae.SAEConfig(**{k: s[k] for k in sae.SAEConfig._fields})
    params, losses = sae.train(jax.random.fold_in(key, 3), inputs, sc, checkpoint_dir=folder)
    rho_hat = float(np.mean(np.asarray(sae.encode(params, inputs[:10_000]))))
    log(f"sparse auto-encoder: loss {losses[0]:.3f} -> {losses[-1]:.3f}, mean activation "
        f"{rho_hat:.3f} (target {sc.rho})")  # fmt: skip
    kernel, bias = sae.conv_kernels(params, whitening)
    fig = plots.filter_grid(kernel.reshape(-1, kernel.shape[-1]).T, zca.PATCH, 1, columns=16,
                            title="SAE first-layer filters (whitening folded in)")  # fmt: skip
    files.atomic_write(f"{out}_filters.png", lambda f: fig.savefig(f, format="png", dpi=120))
    return kernel, bias


def first_layer(
    cfg: dict, grey_kernels: tuple[np.ndarray, np.ndarray], images: np.ndarray, mean, std
) -> tuple[np.ndarray, np.ndarray]:
    """conv1's kernel and bias from the SAE's grey kernels (:func:`kuo.grey_kernels_to_input`).

    ``"exact"``: the SAE's pre-activation itself, bias included. ``"unit"`` (default): the same
    filters, each scaled to unit response on 2,000 standardised training images, biases 0. The
    exact fold leaves every conv1 unit negative at the start (the SAE's sigmoid biases sit near
    -3, its sparsity threshold, and a convolution cannot apply the per-patch contrast
    normalisation the SAE saw), so no gradient reaches conv1 through the ReLUs."""
    kernel, bias = kuo.grey_kernels_to_input(*grey_kernels, mean, std)
    if cfg["sae"]["first_layer"] == "exact":
        return kernel, bias
    sample = np.asarray(convnet.standardise(images[:2000], np.asarray(mean), np.asarray(std)))
    return kuo.unit_response(kernel, sample), np.zeros_like(bias)


def retrieve(
    xq: np.ndarray,
    xb: np.ndarray,
    yq: np.ndarray,
    yb: np.ndarray,
    distance: str,
    *,
    leave_out: np.ndarray | None = None,
    timing_queries: int = 100,
) -> dict[str, Any]:
    """mAP (percent, whole database, all relevant items), P@10, mAP over the top 30 and 1,000
    (``map_at``: AP normalised by the relevant items in the list, the short-list convention; the
    paper shows top-30 lists), and seconds per query of the kernel (all queries, after a warm-up
    call) and of :func:`numpy_ranking` (the first ``timing_queries``, whose AP is checked against
    the kernel's: ``max_ap_diff``)."""
    kw = dict(metric=distance, R=None, normaliser="relevant", at=(10,), more_R=SHORT_LISTS)
    warm = min(len(xq), 8)
    retrieval.evaluate(xq[:warm], xb, yq[:warm], yb, **kw,
                       leave_out=None if leave_out is None else leave_out[:warm])  # fmt: skip
    t = time.perf_counter()
    m = retrieval.evaluate(xq, xb, yq, yb, **kw, leave_out=leave_out)
    kernel_s = (time.perf_counter() - t) / len(xq)
    nt = min(timing_queries, len(xq))
    diff, numpy_s = 0.0, float("nan")
    if nt:
        t = time.perf_counter()
        ranked = [numpy_ranking(xq[i], xb, distance) for i in range(nt)]
        numpy_s = (time.perf_counter() - t) / nt
        for i, order in enumerate(ranked):
            if leave_out is not None:
                order = order[order != leave_out[i]]
            rel = yb[order] == yq[i]
            hits = np.cumsum(rel)
            ap = float(np.sum(hits[rel] / (np.flatnonzero(rel) + 1)) / max(rel.sum(), 1))
            diff = max(diff, abs(100 * ap - 100 * float(m["ap"]["relevant"][i])))
    return {
        "map": 100 * m["map"], "p_at_10": 100 * m["precision_at"][10],
        "map_at": {str(r): 100 * v["retrieved"] for r, v in m["map_at"].items()},
        "kernel_s_per_query": kernel_s, "numpy_s_per_query": numpy_s, "numpy_queries": nt,
        "max_ap_diff": diff, "queries": len(xq), "database": len(xb) - (leave_out is not None),
    }  # fmt: skip


def numpy_ranking(q: np.ndarray, xb: np.ndarray, distance: str) -> np.ndarray:
    """The database ranked for one query the paper's way (eqs. 2-5, float64 numpy): Euclidean
    ``sqrt(sum (a - b)^2)``, Manhattan ``sum |a - b|``, or cosine ``1 - arccos(s) / pi`` (a
    similarity, ranked high first); then a full argsort (stable: index order among ties)."""
    q, xb = np.asarray(q, np.float64), np.asarray(xb, np.float64)
    if distance == "euclidean":
        d = np.sqrt(((xb - q) ** 2).sum(1))
    elif distance == "manhattan":
        d = np.abs(xb - q).sum(1)
    elif distance == "cosine":
        s = xb @ q / (np.linalg.norm(xb, axis=1) * np.linalg.norm(q))
        d = -(1.0 - np.arccos(np.clip(s, -1.0, 1.0)) / np.pi)
    else:
        raise InputError(f"unknown distance {distance!r}: expected one of {DISTANCES}")
    return np.argsort(d, kind="stable")


def _grid(path, fq, fb, iq, ib, yq, yb, name) -> None:
    """Six test queries and their 8 nearest training images (cosine)."""
    _, idx = retrieval.search(fq, fb, 8, metric="cosine")
    fig = plots.retrieval_grid(iq, ib, idx, yq, yb, title=f"{name}: cosine, test vs train")
    files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
