"""Query expansion (QE) and spatial verification + QE (SVQE), Tzelepi & Tefas 2018, §4.

Both work with any feature extractor. Shapes: queries ``xq`` (nq, d) and database ``xb`` (N, d)
float features, database images ``db_images`` (N, H, W, C), and ``embed`` any function that maps
images (n, H, W, C) to features (n, d) like those in ``xb``.

- QE (eq. 15): each query ``q`` becomes ``q_new = (q + sum_{i<=top} x_i) / (top + 1)``, with
  ``x_i`` the representations of its ``top`` nearest database items under ``metric``.
- SVQE: each of the query's ``shortlist`` nearest database images is cut into 9 overlapping
  regions of half its width and half its height (a 3 x 3 grid at offsets 0, W/4, W/2 and
  0, H/4, H/2, :func:`crops`), each resized back to (H, W) and embedded. A shortlisted image
  scores its best representation among its full image's (its row of ``xb``) and its 9 crops'
  (:func:`rerank_shortlist`); the shortlist is re-ordered by that score (ties keep the search
  order), and the query is expanded as in eq. 15 with the full-image representations of the first
  ``top`` images of the re-ordered shortlist (:func:`spatial_verification_qe`).

The crops of each database image that any query shortlists are embedded once, ``batch_size``
images (9 * ``batch_size`` crops) per ``embed`` call; their features are kept, 9 * U * d float32
for U distinct shortlisted images.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from hebbret.errors import InputError
from hebbret.retrieval import FLOAT_METRICS, pairwise_distances, search


def query_expansion(
    xq: np.ndarray,
    xb: np.ndarray,
    *,
    top: int = 10,
    metric: str = "euclidean",
    seed: int = 0,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """Eq. 15: (nq, d) queries -> (nq, d) float32 means of each query and its ``top`` nearest
    (N, d) database rows. Ranking is :func:`hebbret.retrieval.search` (ties random with ``seed``;
    ``chunk_size`` and ``mesh`` as there)."""
    _check_metric(metric)
    xb = _database(xb)
    top = _count(top, "top", len(xb))
    _, idx = search(xq, xb, top, metric=metric, seed=seed, chunk_size=chunk_size, mesh=mesh)
    return _expand(xq, xb, idx)


def spatial_verification_qe(
    xq: np.ndarray,
    xb: np.ndarray,
    db_images: np.ndarray,
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    top: int = 10,
    shortlist: int = 100,
    metric: str = "euclidean",
    seed: int = 0,
    batch_size: int = 64,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """SVQE: (nq, d) queries -> (nq, d) float32, each the mean of the query and the (N, d)
    full-image rows of the first ``top`` images of its re-ordered shortlist
    (:func:`rerank_shortlist`)."""
    xb = _database(xb)
    top = _count(top, "top", len(xb))
    if _count(shortlist, "shortlist", len(xb)) < top:
        raise InputError(f"shortlist ({shortlist}) must be at least top ({top})")
    options = {"metric": metric, "seed": seed, "chunk_size": chunk_size, "mesh": mesh}
    order = rerank_shortlist(
        xq, xb, db_images, embed, shortlist=shortlist, batch_size=batch_size, **options
    )
    return _expand(xq, xb, order[:, :top])


def rerank_shortlist(
    xq: np.ndarray,
    xb: np.ndarray,
    db_images: np.ndarray,
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    shortlist: int = 100,
    metric: str = "euclidean",
    seed: int = 0,
    batch_size: int = 64,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """(nq, shortlist) database indices: each query's ``shortlist`` nearest items re-ordered by the
    best match among each item's full image (row of ``xb``) and its 9 crops (``embed``)."""
    _check_metric(metric)
    xb = _database(xb)
    n, d = xb.shape
    shortlist = _count(shortlist, "shortlist", n)
    batch_size = _count(batch_size, "batch_size", None)
    if not hasattr(db_images, "shape"):
        db_images = np.asarray(db_images)
    if len(db_images.shape) != 4 or db_images.shape[0] != n:
        raise InputError(f"db_images must be ({n}, H, W, C) like xb, got {db_images.shape}")
    _, idx = search(xq, xb, shortlist, metric=metric, seed=seed, chunk_size=chunk_size, mesh=mesh)
    unique = np.unique(idx)
    crop_features = np.empty((len(unique), 9, d), np.float32)
    for i in range(0, len(unique), batch_size):
        part = unique[i : i + batch_size]
        c = crops(np.asarray(db_images[part]))
        f = np.asarray(embed(c.reshape(-1, *c.shape[2:])))
        if f.shape != (9 * len(part), d):
            raise InputError(
                f"embed returned shape {f.shape} for {9 * len(part)} images, not (n, {d})"
            )
        if not np.isfinite(f).all():
            raise InputError("embed returned NaN or inf features")
        crop_features[i : i + len(part)] = f.reshape(len(part), 9, d)
    sign = -1.0 if metric == "cosine" else 1.0  # cosine similarity: larger is closer
    xq = np.asarray(xq)
    rows = max(1, int((2**24 / (10 * shortlist)) ** 0.5))  # a chunk's distances stay near 64 MB
    scores = np.empty(idx.shape, np.float32)
    for i in range(0, len(idx), rows):
        sel = idx[i : i + rows]
        u = np.unique(sel)
        reps = np.concatenate([xb[u, None], crop_features[np.searchsorted(unique, u)]], axis=1)
        dist = sign * pairwise_distances(xq[i : i + rows], reps.reshape(-1, d), metric)
        best = dist.reshape(len(sel), len(u), 10).min(-1)
        scores[i : i + rows] = np.take_along_axis(best, np.searchsorted(u, sel), 1)
    return np.take_along_axis(idx, np.argsort(scores, axis=1, kind="stable"), 1)


def crops(images: np.ndarray) -> np.ndarray:
    """(n, H, W, C) images -> (n, 9, H, W, C): the 3 x 3 grid of half-height, half-width regions
    at offsets 0, H/4, H/2 (rows) and 0, W/4, W/2 (columns), row-major, each resized back to
    (H, W) bilinearly. Integer images are rounded and clipped to their dtype; floats keep theirs."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] < 2 or x.shape[2] < 2:
        raise InputError(f"images must be (n, H, W, C) with H, W >= 2, got shape {x.shape}")
    if x.dtype.kind not in "iuf":
        raise InputError(f"images must be integers or floats, got {x.dtype}")
    n, h, w, c = x.shape
    ch, cw = h // 2, w // 2
    ys, xs = (0, (h - ch) // 2, h - ch), (0, (w - cw) // 2, w - cw)
    parts = np.stack([x[:, y : y + ch, z : z + cw] for y in ys for z in xs], axis=1)
    out = np.asarray(jax.image.resize(jnp.asarray(parts, jnp.float32), (n, 9, h, w, c), "bilinear"))
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(x.dtype)


def _expand(xq: np.ndarray, xb: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(q + sum_j xb[idx[:, j]]) / (k + 1) for (nq, k) indices, accumulated in float64."""
    total = np.asarray(xq, np.float64).copy()
    for j in range(idx.shape[1]):
        total += xb[idx[:, j]]
    return (total / (idx.shape[1] + 1)).astype(np.float32)


def _check_metric(metric: str) -> None:
    if metric not in FLOAT_METRICS:
        raise InputError(
            f"query expansion averages float features: metric must be one of "
            f"{', '.join(FLOAT_METRICS)}, got {metric!r}"
        )


def _database(xb) -> np.ndarray:
    try:
        xb = np.asarray(xb)
    except (ValueError, TypeError) as e:
        raise InputError(f"database is not a rectangular array: {str(e).splitlines()[0]}") from None
    if xb.ndim != 2:
        raise InputError(f"database must be a 2-D (N, d) array, got shape {xb.shape}")
    return xb


def _count(value, name: str, n: int | None) -> int:
    """``value`` checked as an integer in [1, n] (n None: no upper bound)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")
    if n is not None and value > n:
        raise InputError(f"{name} must be at most the database size {n}, got {value}")
    return int(value)
