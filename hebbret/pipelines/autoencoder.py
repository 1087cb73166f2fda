"""Gosthipaty's study: auto-encoder embeddings, k-means, cluster-then-rank retrieval, NMI / RI.

For each protocol (``paper``: CIFAR-10's 60k images pooled, 300 random images per class as
queries, the other 57k the database and training set; ``biohash``: the library's CIFAR-10
protocol, 1,000 per class against the other 50k) and each variant (``vanilla``: reconstruction
only; ``supervised``: plus a classification head on the bottleneck, trained on the database's
labels), the auto-encoder is trained on the database images, the database embeddings are
clustered by k-means, and the queries are scored three ways: NMI and Rand index of the clusters
(database and queries) against the labels; mAP over the whole database of plain Euclidean ranking
and of cluster-then-rank (:mod:`hebbret.retrieval.clusters`); and the seconds per query of a
top-100 search over the whole database against one over the query's cluster only, with the
fraction of the database that search scans. Figures: t-SNE of the database embeddings, test
images above both variants' reconstructions, a retrieval grid per variant. Networks are
checkpointed per epoch and rows written as they finish, so the same call resumes. Settings:
``experiments/configs/autoencoder.py``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from hebbret import data, files, plots, retrieval
from hebbret.data import splits
from hebbret.errors import InputError, check_seed
from hebbret.nets import autoencoder as ae
from hebbret.nets import convnet
from hebbret.pipelines import autoencoder_report as report
from hebbret.pipelines.study import Study, as_dict, default_out
from hebbret.retrieval import clusters

PROTOCOLS = {"paper": 300, "biohash": 1000}  # queries per class
VARIANTS = ("vanilla", "supervised")
SEARCH_DEPTH = 100


def check(cfg: dict[str, Any]) -> None:
    """InputError now, before any data is loaded."""
    for field, known in (("protocols", PROTOCOLS), ("variants", VARIANTS)):
        unknown = [v for v in cfg[field] if v not in known]
        if unknown or not cfg[field]:
            raise InputError(f"config.{field} {list(cfg[field])}: expected some of {tuple(known)}")
    check_seed(cfg["seed"])
    ints = [("database", cfg["database"], 0), ("clusters", cfg["clusters"], 1)]
    ints += [("tsne_points", cfg["tsne_points"], 0)]
    ints += [(f"train.{f}", cfg["train"][f], 1) for f in ("epochs", "batch")]
    for name, value, low in ints:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"config.{name} must be an integer >= {low}, got {value!r}")


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
      config: ``experiments/configs/autoencoder.py`` settings (ConfigDict or dict).
      out: path prefix of ``OUT.json`` / ``OUT.md`` (default ``results/autoencoder_<experiment>``).
      checkpoint_root: where the networks are checkpointed.
      command: the command line, for the report.
      log: progress lines (default print).
    """
    cfg = as_dict(config)
    check(cfg)
    out = out or default_out("autoencoder", cfg)
    ckpt_root = pathlib.Path(checkpoint_root or f"checkpoints/{pathlib.Path(out).name}")
    files.check_writable(ckpt_root / "step")
    figures = [f"_{p}_{s}.png" for p in cfg["protocols"] for s in ("tsne", "reconstructions")]
    figures += [f"_{p}_{v}_grid.png" for p in cfg["protocols"] for v in cfg["variants"]]
    study = Study(out, cfg, cfg["seed"], suffixes=figures, log=log)
    log = study.log
    try:
        ds = data.load(cfg["dataset"])
        pool = ds.pooled()
        if pool.y is None:
            raise InputError(f"{ds.spec}: missing labels (the protocol scores by class)")
        convnet.check_images(pool.x[:1])

        def save(complete: bool) -> dict[str, Any]:
            text = report.report(command, cfg, ds, study.rows, study.seconds)
            return study.save(
                {}, text, dataset={"spec": ds.spec, "checksum": ds.checksum}, complete=complete
            )

        for protocol in cfg["protocols"]:
            todo = [v for v in cfg["variants"] if not _done(study.rows, protocol, v)]
            if not todo:
                continue
            split = splits.per_class_queries(pool.y, PROTOCOLS[protocol], cfg["seed"])
            db = split.database[: cfg["database"] or None]  # already shuffled: a random subset
            xb, yb, xq, yq = pool.x[db], pool.y[db], pool.x[split.queries], pool.y[split.queries]
            if cfg["clusters"] > len(xb):  # before any training
                raise InputError(
                    f"{cfg['clusters']} clusters for {len(xb)} database items: more clusters "
                    "than items"
                )
            shown = {"originals": xq[:10]}
            tsne, tsne_labels = {}, {}
            for variant in cfg["variants"]:
                row, emb_b, recon = _variant(cfg, protocol, variant, xb, yb, xq, yq, ds,
                                             ckpt_root, out, log)  # fmt: skip
                shown[variant] = recon[:10]
                if cfg["tsne_points"]:
                    pick = np.random.default_rng(cfg["seed"]).permutation(len(xb))
                    pick = pick[: cfg["tsne_points"]]
                    tsne[variant], tsne_labels[variant] = _tsne(emb_b[pick], cfg["seed"]), yb[pick]
                if not _done(study.rows, protocol, variant):
                    study.rows.append(row)
                    log(report.line(row))
                    save(False)
            if tsne:
                fig = plots.embedding_scatter(tsne, tsne_labels, class_names=ds.class_names)
                _save_fig(f"{out}_{protocol}_tsne.png", fig)
            fig = plots.image_rows(shown, title="test images and their reconstructions")
            _save_fig(f"{out}_{protocol}_reconstructions.png", fig)
        record = save(complete=True)
        log(f"wrote {out}.json and {out}.md ({study.seconds / 60:.1f} min)")
        return record
    except KeyboardInterrupt:
        raise study.interrupted() from None


def _done(rows: list[dict], protocol: str, variant: str) -> bool:
    return any((r["protocol"], r["variant"]) == (protocol, variant) for r in rows)


def _folder(protocol: str, variant: str, cfg: dict) -> str:
    """A folder per protocol, variant and the settings its training depends on."""
    keys = ("dataset", "seed", "database", "train")
    settings = json.dumps({k: cfg[k] for k in keys}, sort_keys=True, default=str)
    return f"{protocol}_{variant}_{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


def _variant(cfg, protocol, variant, xb, yb, xq, yq, ds, ckpt_root, out, log):
    """Trains (or restores) one auto-encoder and scores it; returns (row, database embeddings,
    query reconstructions)."""
    key = jax.random.key(cfg["seed"])
    model = ae.ConvAE(ds.num_classes if variant == "supervised" else 0)
    t = time.perf_counter()
    variables, losses = ae.train(
        jax.random.fold_in(key, 1), model, ae.init(model, jax.random.fold_in(key, 0)), xb,
        yb if variant == "supervised" else None, ae.AEConfig(**cfg["train"]),
        checkpoint_dir=ckpt_root / _folder(protocol, variant, cfg),
    )  # fmt: skip
    train_s = time.perf_counter() - t
    _, emb_b, _ = ae.apply(model, variables, xb)
    recon, emb_q, logits = ae.apply(model, variables, xq)
    row = {"protocol": protocol, "variant": variant, "database": len(xb), "queries": len(xq)}
    row |= {"train_s": train_s, "losses": losses}
    row["test_mse"] = float(np.mean((recon - xq.astype(np.float32) / 255.0) ** 2))
    if logits is not None:
        row["head_accuracy"] = 100.0 * float(np.mean(logits.argmax(1) == yq))
    found = clusters.fit(emb_b, cfg["clusters"], cfg["seed"])
    qc = clusters.assign(found, emb_q)
    row |= {f"{k}_db": v for k, v in clusters.scores(yb, found.members).items()}
    row |= {f"{k}_queries": v for k, v in clusters.scores(yq, qc).items()}
    row |= score(emb_q, emb_b, yq, yb, found)
    _, idx = retrieval.search(*clusters.penalised(emb_q[:6], emb_b, found)[:2], 8,
                              metric="sqeuclidean")  # fmt: skip
    fig = plots.retrieval_grid(xq[:6], xb, idx, yq[:6], yb,
                               title=f"{variant} auto-encoder: cluster-then-rank")  # fmt: skip
    _save_fig(f"{out}_{protocol}_{variant}_grid.png", fig)
    return row, emb_b, recon


def score(
    xq: np.ndarray, xb: np.ndarray, yq: np.ndarray, yb: np.ndarray, found: clusters.Clusters
) -> dict[str, float]:
    """mAP (percent, whole database, all relevant items) and P@10 of plain Euclidean ranking and
    of cluster-then-rank; seconds per query of a top-100 search over the whole database and over
    the query's cluster only (after a warm-up of each); the fraction of the database scanned."""
    kw = dict(metric="sqeuclidean", R=None, normaliser="relevant", at=(10,))
    plain = retrieval.evaluate(xq, xb, yq, yb, **kw)
    q, b, qc = clusters.penalised(xq, xb, found)
    cluster = retrieval.evaluate(q, b, yq, yb, **kw)
    depth = min(SEARCH_DEPTH, len(xb))
    retrieval.search(xq[:2], xb, depth, metric="sqeuclidean")
    t = time.perf_counter()
    retrieval.search(xq, xb, depth, metric="sqeuclidean")
    whole_s = (time.perf_counter() - t) / len(xq)
    sizes = np.bincount(found.members, minlength=len(found.centres))
    groups = [(qc == c, np.flatnonzero(found.members == c)) for c in np.unique(qc)]
    for mask, members in groups:  # each cluster size compiles its own kernel: warm up first
        retrieval.search(xq[mask][:1], xb[members], min(depth, len(members)), metric="sqeuclidean")
    t = time.perf_counter()
    for mask, members in groups:
        retrieval.search(xq[mask], xb[members], min(depth, len(members)), metric="sqeuclidean")
    cluster_s = (time.perf_counter() - t) / len(xq)
    return {
        "map": 100 * plain["map"], "p_at_10": 100 * plain["precision_at"][10],
        "cluster_map": 100 * cluster["map"], "cluster_p_at_10": 100 * cluster["precision_at"][10],
        "scanned": float(np.mean(sizes[qc]) / len(xb)),
        "search_s_per_query": whole_s, "cluster_search_s_per_query": cluster_s,
    }  # fmt: skip


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE  # noqa: PLC0415  (scikit-learn loads slowly)

    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3.0))
    return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)


def _save_fig(path: str, fig) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
