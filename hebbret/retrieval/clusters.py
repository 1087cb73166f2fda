"""Cluster-then-rank retrieval (Gosthipaty; docs/autoencoder_retrieval.md) and clustering scores.

k-means (scikit-learn, seeded) on the database embeddings; a query goes to its nearest centre and
that cluster's members are ranked by Euclidean distance. So that mAP over the whole database stays
defined, the items of the other clusters come after them, also by distance: the ranking key is

    key(q, b) = ||q - b||^2 + M [cluster(b) != cluster(q)],    M > max ||q - b||^2,

computed by the library's kernel on features with the clusters' one-hot codes appended, scaled by
sqrt(M / 2) (``||e_i - e_j||^2 = 2`` for different clusters, 0 for the same). With the "relevant"
normaliser, a relevant item outside the query's cluster then counts at its rank after the whole
cluster, where the report's search (items outside never returned) would count it as never found:
the report's number is at most ours, and equal when every relevant item shares the cluster.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hebbret.errors import InputError


class Clusters(NamedTuple):
    centres: np.ndarray  # (k, d) float64
    members: np.ndarray  # (N,) cluster of each database item


def _finite_2d(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{what} must be a non-empty 2-D (n, d) array, got shape {x.shape}")
    if x.dtype.kind not in "iuf" or not np.isfinite(x).all():
        raise InputError(f"{what} contain NaN or inf (or are not numbers)")
    return x


def fit(xb: np.ndarray, k: int = 10, seed: int = 0) -> Clusters:
    """k-means of the (N, d) database embeddings: scikit-learn ``KMeans(k, random_state=seed)``
    (the report's call), fitted in float64."""
    xb = _finite_2d(xb, "database embeddings")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"the number of clusters must be a positive integer, got {k!r}")
    if k > len(xb):
        raise InputError(f"{k} clusters for {len(xb)} database items: more clusters than items")
    from sklearn.cluster import KMeans  # noqa: PLC0415  (scikit-learn loads slowly)

    km = KMeans(n_clusters=int(k), random_state=seed, n_init="auto").fit(xb.astype(np.float64))
    return Clusters(km.cluster_centers_, km.labels_.astype(np.int32))


def assign(clusters: Clusters, x: np.ndarray) -> np.ndarray:
    """(n,) nearest centre of each row of (n, d) ``x`` (squared Euclidean, float64)."""
    x = _finite_2d(x, "queries")
    c = clusters.centres
    if x.shape[1] != c.shape[1]:
        raise InputError(f"queries have {x.shape[1]} columns, the cluster centres {c.shape[1]}")
    x = x.astype(np.float64)
    d = (x**2).sum(1)[:, None] - 2.0 * x @ c.T + (c**2).sum(1)[None, :]
    return np.argmin(d, axis=1).astype(np.int32)


def penalised(
    xq: np.ndarray, xb: np.ndarray, clusters: Clusters
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xq', xb', query clusters)``: features whose squared Euclidean distance is the
    cluster-then-rank key of the module docstring (float64, centred on the database mean; with r
    the largest distance of a row from that mean, M = 4.5 r^2 > (2 r)^2, which bounds every
    squared distance)."""
    xq, xb = _finite_2d(xq, "queries"), _finite_2d(xb, "database embeddings")
    if xq.shape[1] != xb.shape[1] or len(xb) != len(clusters.members):
        raise InputError(
            f"queries (d={xq.shape[1]}), database (d={xb.shape[1]}, N={len(xb)}) and clusters "
            f"(N={len(clusters.members)}) do not match"
        )
    cq = assign(clusters, xq)
    k = len(clusters.centres)
    centre = xb.astype(np.float64).mean(0)
    radius = max(
        np.linalg.norm(xq - centre, axis=1).max(), np.linalg.norm(xb - centre, axis=1).max()
    )
    scale = np.sqrt((4.5 * radius**2 + 1e-12) / 2.0)  # sqrt(M / 2), M > (2 radius)^2 >= any d^2
    eye = np.eye(k) * scale
    return (
        np.concatenate([xq - centre, eye[cq]], axis=1),
        np.concatenate([xb - centre, eye[clusters.members]], axis=1),
        cq,
    )


def scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI (arithmetic-mean normalisation, scikit-learn's default) and Rand index of a
    clustering against the class labels, both in [0, 1]."""
    from sklearn import metrics  # noqa: PLC0415

    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.ndim != 1 or len(labels) == 0:
        raise InputError(
            f"labels and clusters must be (n,) of one length, got {labels.shape} and "
            f"{clusters.shape}"
        )
    return {
        "nmi": float(metrics.normalized_mutual_info_score(labels, clusters)),
        "ri": float(metrics.rand_score(labels, clusters)),
    }
