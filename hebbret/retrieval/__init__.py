"""The retrieval kernel: distances, ranking with a tie policy, and retrieval metrics.

One jitted function per (metric, tie policy, depth, chunk shape) ranks a chunk of queries against
the whole database and reduces the ranked lists to per-query metrics, so the (nq, N) distance matrix
never exists at once and nothing recompiles from chunk to chunk. The database can be sharded over
devices: each shard ranks its own items, each query's candidate lists are merged on one device
(the chunk's queries are split over the devices), and the result equals the single-device one
(``mesh=`` argument, :func:`hebbret.mesh.database_mesh`; tested on 8 simulated CPU devices).

Vocabulary (docs/README.md §Vocabulary): ``xq`` (nq, d) queries, ``xb`` (N, d) database,
relevance = same label. ``AP@R = (1 / Z) * sum_{l<=R} P(l) rel(l)`` (BioHash eq. 12) with the
normaliser ``Z`` one of ``NORMALISERS``: "retrieved" (relevant items in the top R; BioHash),
"relevant" (all relevant items in the database; Tzelepi eq. 18) or "min" (``min(R, relevant)``;
Lagani's ``MAPMetric``). Ties (Hamming distances take only L + 1 values) follow one of ``TIES``:
"exact" (default: the expected metric over all orders of tied items, McSherry & Najork 2008, no
seed), "random" (one seeded permutation of the database) or "stable" (database index; leaks
labels on class-sorted data, so only on request).

The package, one concept per module:

- :mod:`~hebbret.retrieval.bits`: packing binary codes into uint32 words, popcounts;
- :mod:`~hebbret.retrieval.distances`: the metrics' ranking keys and natural values;
- :mod:`~hebbret.retrieval.inputs`: input checks, feature conditioning, labels, depths, ranks;
- :mod:`~hebbret.retrieval.ap`: tie groups, expected AP terms, and the per-query metrics;
- :mod:`~hebbret.retrieval.kernel`: the sharded chunk kernel and the loop over query chunks;
- here: the public entry points :func:`evaluate`, :func:`search`, :func:`pairwise_distances`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from hebbret import mesh as meshes
from hebbret.errors import InputError, check_seed
from hebbret.mesh import database_mesh
from hebbret.retrieval.ap import NORMALISERS, TIES
from hebbret.retrieval.bits import pack_bits, unpack_bits
from hebbret.retrieval.distances import (
    BIT_METRICS,
    FLOAT_METRICS,
    METRICS,
    max_active,
    natural_values,
    prepare,
    ranking_keys,
    unscaled,
)
from hebbret.retrieval.inputs import (
    check_inputs,
    check_leave_out,
    list_depth,
    more_depths,
    ranks,
    warn_if_all_relevant,
)
from hebbret.retrieval.kernel import MAX_BINS, KernelConfig, run_chunks

__all__ = [
    "BIT_METRICS",
    "FLOAT_METRICS",
    "METRICS",
    "NORMALISERS",
    "TIES",
    "database_mesh",
    "evaluate",
    "pack_bits",
    "pairwise_distances",
    "search",
    "unpack_bits",
]


def pairwise_distances(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    """All (nq, N) distances, for small problems and plots (use :func:`evaluate` to rank at scale).

    Returns squared Euclidean / Euclidean / Manhattan / cosine *similarity* / Hamming / overlap
    counts as float32; bit metrics take packed uint32 codes from :func:`pack_bits`.
    """
    xq, xb, _, _, exponent = check_inputs(xq, xb, None, None, metric)
    num_bits = 32 * xb.shape[-1]
    q, b = prepare(metric, jnp.asarray(xq)), prepare(metric, jnp.asarray(xb))
    keys = ranking_keys(metric, q, b, num_bits)
    return unscaled(metric, natural_values(metric, keys, num_bits), exponent)


def evaluate(
    xq: np.ndarray,
    xb: np.ndarray,
    yq: np.ndarray,
    yb: np.ndarray,
    *,
    metric: str,
    R: int | str | None = None,  # noqa: N803  (the literature's name)
    normaliser: str = "retrieved",
    tie: str = "exact",
    at: Sequence[int] = (),
    more_R: Sequence[int] = (),  # noqa: N803
    seed: int = 0,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    progress: bool = False,
    leave_out: np.ndarray | None = None,
) -> dict:
    """Ranks the whole database for every query and returns retrieval metrics.

    Args:
      xq: (nq, d) query features, or (nq, W) uint32 packed codes for "hamming" / "overlap".
      xb: (N, d) database features / codes.
      yq: (nq,) query labels; yb: (N,) database labels, integers (any width) or strings.
        Relevant = same label.
      metric: one of ``METRICS``. Euclidean metrics centre both sides on the database mean
        first (float64), so a large common offset cannot cost precision.
      R: list depth for AP@R, a positive integer (values above N are clipped to N) or
        None / "all" for the whole database.
      normaliser: which AP normaliser ``"map"`` reports (all three are in ``"ap"``).
      tie: "exact" (expected value over tie orders), "random" (seeded) or "stable".
      at: ranks N for precision@N, recall@N and the top-N score (each <= N).
      more_R: further list depths R' whose mAP@R' (every normaliser) is computed in the same
        pass, e.g. (20, 50, 100) for Lagani's table (returned in ``map_at``).
      seed: permutation seed for ``tie="random"``.
      chunk_size: queries per kernel call (default: keeps a chunk's distances near 64 MB),
        rounded up to a multiple of the mesh's device count.
      mesh: a 1-D device mesh with axis "db" (see :func:`database_mesh`) to shard the database.
      leave_out: (nq,) database index of each query's own item, left out of that query's ranking
        and of its relevant items (leave-one-out: queries drawn from the database, e.g.
        ``evaluate(x[q], x, y[q], y, leave_out=q)``); the database then has N - 1 items per query.

    Returns:
      dict with ``map`` (mean AP@R under ``normaliser``), ``ap`` {normaliser: (nq,) per-query AP},
      ``map_by_normaliser``, ``map_at`` {R': {normaliser: mean}},
      ``precision_at`` / ``recall_at`` / ``top_n_score`` {N: mean},
      ``pr_curve`` {"precision", "recall": (depth,) means over queries at every rank},
      ``pr11`` (11,) interpolated precision at recall 0, 0.1, ..., 1, and the settings used.

    Example:
      >>> m = evaluate(xq, xb, yq, yb, metric="hamming", R=1000)["map"]
    """
    if normaliser not in NORMALISERS:
        raise InputError(f"unknown normaliser {normaliser!r}: expected one of {NORMALISERS}")
    if tie not in TIES:
        raise InputError(f"unknown tie policy {tie!r}: expected one of {TIES}")
    if yq is None or yb is None:
        raise InputError("evaluate needs labels for the queries and the database (yq, yb)")
    seed = check_seed(seed)
    meshes.check(mesh, meshes.DB)
    xq, xb, yq, yb, _ = check_inputs(xq, xb, yq, yb, metric)
    n = xb.shape[0]
    if leave_out is not None:
        leave_out = check_leave_out(leave_out, xq.shape[0], n)
        n -= 1  # items ranked per query
    r = list_depth(R, n)
    warn_if_all_relevant(yq, yb)
    at = ranks(at, n)
    more_r = tuple(dict.fromkeys(list_depth(d, n) for d in more_depths(more_R)))
    depth = max((r,) + at + more_r)
    num_bits = 32 * xb.shape[1]
    use_hist = metric in BIT_METRICS and tie == "exact" and num_bits + 1 <= MAX_BINS
    active = max_active(metric, xq, num_bits)
    cfg = KernelConfig(
        metric=metric,
        tie=tie,
        r=r,
        depth=depth,
        at=at or (r,),
        num_bits=num_bits,
        use_histogram=use_hist,
        search_only=False,
        num_db=n,
        active=active,
        more_r=more_r,
    )
    _, results = run_chunks(
        cfg, xq, yq, xb, yb, chunk_size=chunk_size, mesh=mesh, seed=seed, progress=progress,
        leave_out=leave_out,
    )  # fmt: skip
    nq = xq.shape[0]
    per_query = ("hits_at", "pr11", "precision_at", "recall_at", "num_relevant")
    cat = {k: np.concatenate([o[k] for o in results])[:nq] for k in per_query}
    ap = {k: np.concatenate([o["ap"][k] for o in results])[:nq] for k in NORMALISERS}

    def mean_ap(d: int, k: str) -> float:
        return float(np.concatenate([o["ap_more"][d][k] for o in results])[:nq].mean())

    map_at = {d: {k: mean_ap(d, k) for k in NORMALISERS} for d in more_r}
    curve = {k: sum(o[f"{k}_curve_sum"] for o in results) / nq for k in ("precision", "recall")}
    return {
        "map": float(ap[normaliser].mean()),
        "ap": ap,
        "map_by_normaliser": {k: float(v.mean()) for k, v in ap.items()},
        "map_at": map_at,
        "precision_at": {a: float(cat["precision_at"][:, i].mean()) for i, a in enumerate(at)},
        "recall_at": {a: float(cat["recall_at"][:, i].mean()) for i, a in enumerate(at)},
        "top_n_score": {a: float(cat["hits_at"][:, i].mean()) for i, a in enumerate(at)},
        "pr_curve": curve,
        "pr11": cat["pr11"].mean(0),
        "num_relevant": cat["num_relevant"],
        "settings": {"metric": metric, "R": r, "normaliser": normaliser, "tie": tie, "seed": seed},
    }


def search(
    xq: np.ndarray,
    xb: np.ndarray,
    k: int,
    *,
    metric: str,
    tie: str = "random",
    seed: int = 0,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """faiss-style k-nearest-neighbour search: returns ``D, I`` of shape (nq, k).

    ``D`` holds the metric's values (distance; cosine similarity; overlap count) and ``I`` database
    indices, best first. Ties are broken by ``tie`` ("random" with ``seed``, or "stable").
    """
    if tie not in ("random", "stable"):
        raise InputError(f"search breaks ties 'random' or 'stable', got {tie!r}")
    seed = check_seed(seed)
    meshes.check(mesh, meshes.DB)
    xq, xb, _, _, exponent = check_inputs(xq, xb, None, None, metric)
    if isinstance(k, bool | np.bool_) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= xb.shape[0]:
        raise InputError(f"k must be in [1, database size {xb.shape[0]}], got {k}")
    k = int(k)
    num_bits = 32 * xb.shape[1]
    active = max_active(metric, xq, num_bits)
    cfg = KernelConfig(
        metric=metric,
        tie=tie,
        r=k,
        depth=k,
        at=(k,),
        num_bits=num_bits,
        use_histogram=False,
        search_only=True,
        num_db=xb.shape[0],
        active=active,
    )
    zq, zb = np.zeros(xq.shape[0], np.int32), np.zeros(xb.shape[0], np.int32)
    perm, results = run_chunks(
        cfg, xq, zq, xb, zb, chunk_size=chunk_size, mesh=mesh, seed=seed, progress=False
    )
    nq = xq.shape[0]
    keys = np.concatenate([o["keys"] for o in results])[:nq]
    idx = np.concatenate([o["indices"] for o in results])[:nq]
    values = natural_values(metric, jnp.asarray(keys), num_bits)
    return unscaled(metric, values, exponent), perm[idx]
