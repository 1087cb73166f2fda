"""The retrieval kernel: distances, ranking with a tie policy, and retrieval metrics.

One jitted function per (metric, tie policy, depth, chunk shape) ranks a chunk of queries against
the whole database and reduces the ranked lists to per-query metrics, so the (nq, N) distance matrix
never exists at once and nothing recompiles from chunk to chunk. The database can be sharded over
devices: each shard ranks its own items, the shards' candidate lists are merged, and the result
equals the single-device one (``mesh=`` argument; tested on 8 simulated CPU devices).

Vocabulary (docs/README.md §Vocabulary): ``xq`` (nq, d) queries, ``xb`` (N, d) database,
relevance = same label. ``AP@R = (1 / Z) * sum_{l<=R} P(l) rel(l)`` (BioHash eq. 12) with the
normaliser ``Z``:

- ``"retrieved"``: relevant items inside the top R (hashing literature, BioHash; AP = 0 if none);
- ``"relevant"``: all relevant items in the database (Tzelepi eq. 18, mAP@All code);
- ``"min"``: ``min(R, relevant in the database)`` (Lagani's ``MAPMetric``).

Ties (Hamming distances take only L + 1 values) are handled by one of three policies:

- ``"exact"`` (default): the expected metric over all orders of tied items (McSherry & Najork 2008),
  with no seed. At rank position l inside a tie group that starts after s items, has n members, g of
  them relevant, and rb relevant items before it: ``E[rel(l)] = g/n`` and
  ``E[P(l) rel(l)] = (g/n) (rb + 1 + (l-s-1)(g-1)/(n-1)) / l``. With the "retrieved" normaliser the
  group cut by R makes the normaliser random; its hypergeometric law is summed over exactly.
- ``"random"``: ties broken by one seeded random permutation of the database.
- ``"stable"``: ties broken by database index (leaks labels on class-sorted data: only on request).

Integer-valued distances (Hamming, overlap) under ``"exact"`` need no sort at all: a per-query
histogram of (distance, relevant) determines every tie group. Other cases use ``lax.top_k``, which
is stable (lower index first among equals), on the negated distances.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hebbret.errors import InputError, check_seed

FLOAT_METRICS = ("sqeuclidean", "euclidean", "manhattan", "cosine")
BIT_METRICS = ("hamming", "overlap")
METRICS = FLOAT_METRICS + BIT_METRICS
NORMALISERS = ("retrieved", "relevant", "min")
TIES = ("exact", "random", "stable")
_AXIS = "db"
_MAX_BINS = 4096  # integer metrics with more distinct values than this use top_k instead
_MATMUL_HAMMING_BITS = 256  # Hamming on at most this many bits runs as a +-1 matmul (BLAS)
_MAX_ACTIVE = 256  # wider codes whose queries have at most this many ones: gather the query's bits


# --------------------------------------------------------------------------------------------
# Bit packing
# --------------------------------------------------------------------------------------------


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Packs (n, L) bits (0/1, bool, or +-1 with > 0 meaning 1) into (n, ceil(L/32)) uint32 words.

    Bit j of a code is bit (j % 32) of word j // 32 (little-endian in a word); padding bits are 0.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise InputError(f"bits must be a 2-D (n, L) array, got shape {bits.shape}")
    n, length = bits.shape
    words = -(-length // 32)
    padded = np.zeros((n, words * 32), np.uint8)
    padded[:, :length] = bits > 0
    packed = np.packbits(padded.reshape(n, words, 4, 8), axis=-1, bitorder="little")
    return np.ascontiguousarray(packed.reshape(n, words * 4)).view("<u4").astype(np.uint32)


def unpack_bits(packed: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (n, W) uint32 -> (n, length) uint8 in {0, 1}."""
    packed = np.ascontiguousarray(np.asarray(packed, dtype="<u4"))
    n, words = packed.shape
    bits = np.unpackbits(packed.view(np.uint8).reshape(n, words * 4), axis=1, bitorder="little")
    return bits[:, :length]


def _unpack_pm1(packed: jax.Array) -> jax.Array:
    """(n, W) uint32 -> (n, 32 W) float32 in {-1, +1}, inside jit."""
    shifts = jnp.arange(32, dtype=jnp.uint32)
    bits = (packed[:, :, None] >> shifts[None, None, :]) & jnp.uint32(1)
    return bits.reshape(packed.shape[0], -1).astype(jnp.float32) * 2.0 - 1.0


# --------------------------------------------------------------------------------------------
# Distances (smaller = closer). All return float32 ranking keys of shape (nq, N).
# --------------------------------------------------------------------------------------------


def _prepare(metric: str, x: jax.Array, active: int = 0):
    """Per-item preprocessing done once per call (not per chunk). Wide sparse codes (``active``
    > 0) keep their packed words and add each item's popcount."""
    if active:
        return x, _popcount(x)
    if metric == "cosine":
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    if metric == "hamming" and 32 * x.shape[-1] <= _MATMUL_HAMMING_BITS:
        return _unpack_pm1(x)
    return x


def _sparse_query(packed: np.ndarray, active: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packed (C, W) codes with at most ``active`` ones -> their set-bit indices (C, active)
    int32, a validity mask (C, active) and the popcounts (C,) float32, on the host."""
    rows, cols = np.nonzero(unpack_bits(packed, 32 * packed.shape[1]))
    pop = np.bincount(rows, minlength=packed.shape[0])
    slot = np.arange(len(rows)) - (np.cumsum(pop) - pop)[rows]
    idx, valid = np.zeros((len(packed), active), np.int32), np.zeros((len(packed), active), bool)
    idx[rows, slot], valid[rows, slot] = cols, True
    return idx, valid, pop.astype(np.float32)


def _sparse_overlap(q, b) -> jax.Array:
    """|q AND b| (C, N) by reading each database item's bits at the query's set-bit indices:
    C * active * N work instead of C * W * N for wide codes (BioHash / FlyHash: W up to ~1000)."""
    idx, valid, _ = q
    words = b[0][:, idx // 32]  # (N, C, active)
    bits = (words >> (idx % 32).astype(jnp.uint32)[None, :, :]) & jnp.uint32(1)
    return jnp.sum(jnp.where(valid[None, :, :], bits, 0), -1, dtype=jnp.float32).T


def _keys(metric: str, q, b, num_bits: int) -> jax.Array:
    """Ranking keys (nq, N) float32 for prepared queries q and database b; exact for bit metrics."""
    if isinstance(q, tuple):  # wide codes, queries as set-bit lists (see _sparse_query)
        overlap = _sparse_overlap(q, b)
        if metric == "overlap":
            return num_bits - overlap
        return q[2][:, None] + b[1][None, :] - 2.0 * overlap  # |q| + |b| - 2 |q AND b|
    if metric in ("sqeuclidean", "euclidean"):
        qb = jnp.dot(q, b.T, precision=jax.lax.Precision.HIGHEST)
        d = jnp.sum(q * q, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * qb
        return jnp.maximum(d, 0.0)
    if metric == "manhattan":
        rows = max(1, 2**25 // max(1, b.shape[0] * b.shape[1]))
        return jax.lax.map(lambda qi: jnp.sum(jnp.abs(b - qi[None, :]), -1), q, batch_size=rows)
    if metric == "cosine":
        return 1.0 - jnp.dot(q, b.T, precision=jax.lax.Precision.HIGHEST)
    if metric == "hamming":
        if q.dtype == jnp.float32:  # +-1 codes from _prepare: d = (L - <q, b>) / 2, exact integers
            return (q.shape[-1] - jnp.dot(q, b.T)) * 0.5
        return _popcount(q[:, None, :] ^ b[None, :, :])
    if metric == "overlap":  # key = L - |q AND b|: ranking by overlap, as a nonnegative integer
        return num_bits - _popcount(q[:, None, :] & b[None, :, :])
    raise AssertionError(metric)


def _popcount(words: jax.Array) -> jax.Array:
    return jnp.sum(jax.lax.population_count(words).astype(jnp.int32), -1).astype(jnp.float32)


def _natural(metric: str, keys: jax.Array, num_bits: int) -> jax.Array:
    """Ranking keys -> the metric's own values (Euclidean distance, cosine similarity, overlap)."""
    if metric == "euclidean":
        return jnp.sqrt(keys)
    if metric == "cosine":
        return 1.0 - keys
    if metric == "overlap":
        return num_bits - keys
    return keys


def _unscaled(metric: str, values: jax.Array, exponent: int) -> np.ndarray:
    """Distances of features multiplied by ``2**exponent`` -> the inputs' distances (float32;
    beyond float32's range they saturate to inf or 0, as the true values would)."""
    power = {"sqeuclidean": 2, "euclidean": 1, "manhattan": 1}.get(metric, 0)
    if exponent == 0 or power == 0:
        return np.asarray(values)
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(np.asarray(values, np.float64), -power * exponent).astype(np.float32)


def pairwise_distances(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    """All (nq, N) distances, for small problems and plots (use :func:`evaluate` to rank at scale).

    Returns squared Euclidean / Euclidean / Manhattan / cosine *similarity* / Hamming / overlap
    counts as float32; bit metrics take packed uint32 codes from :func:`pack_bits`.
    """
    xq, xb, _, _, exponent = _check_inputs(xq, xb, None, None, metric)
    num_bits = 32 * xb.shape[-1]
    q, b = _prepare(metric, jnp.asarray(xq)), _prepare(metric, jnp.asarray(xb))
    return _unscaled(metric, _natural(metric, _keys(metric, q, b, num_bits), num_bits), exponent)


# --------------------------------------------------------------------------------------------
# Tie groups -> expected relevance and expected precision-at-a-relevant-hit per rank position
# --------------------------------------------------------------------------------------------


class _Groups(NamedTuple):
    """Per rank position l = 1..depth (arrays (C, depth)): its tie group's start s, size n,
    relevant count g, and relevant count rb before the group. Sizes and counts are over the
    whole database, so the last group in the list may extend past depth."""

    s: jax.Array
    n: jax.Array
    g: jax.Array
    rb: jax.Array


def _groups_from_sorted(keys: jax.Array, rel: jax.Array, n_last: jax.Array, g_last: jax.Array):
    """Tie groups of a sorted (C, D) key list; the last group's full size/count are given."""
    depth = keys.shape[-1]
    pos = jnp.arange(depth)
    start = jnp.concatenate([jnp.ones_like(keys[:, :1], bool), keys[:, 1:] != keys[:, :-1]], -1)
    s = jax.lax.cummax(jnp.where(start, pos[None, :], 0), axis=1)
    end = jnp.concatenate([keys[:, 1:] != keys[:, :-1], jnp.ones_like(keys[:, :1], bool)], -1)
    e = jax.lax.cummin(jnp.where(end, pos[None, :], depth - 1), axis=1, reverse=True)
    cum = jnp.cumsum(rel, axis=1, dtype=jnp.float32)
    before = cum - rel  # relevant strictly before each position
    rb = jnp.take_along_axis(before, s, 1)
    in_last = keys == keys[:, -1:]
    n = jnp.where(in_last, n_last[:, None], e - s + 1)
    g = jnp.where(in_last, g_last[:, None], jnp.take_along_axis(cum, e, 1) - rb)
    return _Groups(s.astype(jnp.float32), n.astype(jnp.float32), g, rb)


def _groups_from_histogram(counts: jax.Array, relcounts: jax.Array, depth: int) -> _Groups:
    """Tie groups from per-query histograms (C, B) of integer keys; positions 0..depth-1."""
    cum = jnp.cumsum(counts, axis=1)
    pos = jnp.arange(depth)
    bins = jax.vmap(lambda c: jnp.searchsorted(c, pos, side="right"))(cum)
    bins = jnp.minimum(bins, counts.shape[1] - 1)
    take = functools.partial(jnp.take_along_axis, indices=bins, axis=1)
    s = take(cum - counts)
    rb = take(jnp.cumsum(relcounts, axis=1) - relcounts)
    return _Groups(s.astype(jnp.float32), take(counts).astype(jnp.float32), take(relcounts), rb)


def _singletons(rel: jax.Array) -> _Groups:
    """Groups of size one: the list order is the ranking (random / stable policies)."""
    depth = rel.shape[-1]
    s = jnp.broadcast_to(jnp.arange(depth, dtype=jnp.float32), rel.shape)
    cum = jnp.cumsum(rel, axis=1, dtype=jnp.float32)
    return _Groups(s, jnp.ones_like(s), rel.astype(jnp.float32), cum - rel)


def _expected_terms(grp: _Groups) -> tuple[jax.Array, jax.Array]:
    """E[rel(l)] and E[P(l) rel(l)] at every position l (McSherry & Najork 2008, eq. for AP)."""
    pos = jnp.arange(1, grp.s.shape[-1] + 1, dtype=jnp.float32)[None, :]
    frac = grp.g / grp.n
    pair = jnp.where(grp.n > 1, (grp.g - 1) / jnp.maximum(grp.n - 1, 1), 0.0)
    hits_before = grp.rb + 1.0 + (pos - grp.s - 1.0) * pair
    return frac, frac * hits_before / pos


def _ap_retrieved_exact(grp: _Groups, prel: jax.Array, r: int) -> jax.Array:
    """E[sum_{l<=R} P(l) rel(l) / n_rel(R)]: the group cut at R has a hypergeometric number X of
    relevant items among its first t positions; given X = x its contribution is
    x c1 + x (x-1) c2 with c1 = (rb+1)/t sum_j 1/(s+j), c2 = sum_j (j-1)/(s+j) / (t (t-1))."""
    s, n, g, rb = (a[:, r - 1] for a in grp)
    t = r - s  # positions of the cut group inside the top R (>= 1)
    pos = jnp.arange(1, r + 1, dtype=jnp.float32)[None, :]
    in_cut = grp.s[:, :r] == s[:, None]
    a = jnp.sum(jnp.where(in_cut, 0.0, prel[:, :r]), 1)  # complete groups: X does not matter
    j = pos - s[:, None]
    h1 = jnp.sum(jnp.where(in_cut, 1.0 / pos, 0.0), 1)
    h2 = jnp.sum(jnp.where(in_cut, (j - 1.0) / pos, 0.0), 1)
    c1 = (rb + 1.0) / t * h1
    c2 = jnp.where(t > 1, h2 / (t * jnp.maximum(t - 1.0, 1.0)), 0.0)
    # Hypergeometric law of X on a fixed grid 0..r, from the ratio p(x+1)/p(x), normalised in logs.
    x = jnp.arange(r + 1, dtype=jnp.float32)[None, :]
    lo = jnp.maximum(0.0, t - (n - g))[:, None]
    hi = jnp.minimum(g, t)[:, None]
    step = (
        jnp.log(jnp.maximum(g[:, None] - x, 1.0))
        + jnp.log(jnp.maximum(t[:, None] - x, 1.0))
        - jnp.log(x + 1.0)
        - jnp.log(jnp.maximum((n - g - t)[:, None] + x + 1.0, 1.0))
    )
    step = jnp.where(x >= lo, step, 0.0)
    logp = jnp.concatenate([jnp.zeros_like(step[:, :1]), jnp.cumsum(step[:, :-1], 1)], 1)
    valid = (x >= lo) & (x <= hi)
    p = jax.nn.softmax(jnp.where(valid, logp, -jnp.inf), axis=1)
    denom = rb[:, None] + x
    value = (a[:, None] + c1[:, None] * x + c2[:, None] * x * (x - 1.0)) / jnp.maximum(denom, 1.0)
    return jnp.sum(jnp.where(valid & (denom > 0), p * value, 0.0), 1)


# --------------------------------------------------------------------------------------------
# Metrics from expected per-position terms
# --------------------------------------------------------------------------------------------


class _Static(NamedTuple):
    metric: str
    tie: str
    r: int
    depth: int
    at: tuple[int, ...]
    num_bits: int
    use_histogram: bool
    search_only: bool
    num_db: int  # N, valid database items over all shards
    active: int = 0  # > 0: wide codes, queries as lists of at most this many set bits
    more_r: tuple[int, ...] = ()  # further list depths whose AP is also computed


_RECALL_LEVELS = np.linspace(0.0, 1.0, 11, dtype=np.float32)


def _ap(cfg: _Static, grp: _Groups, prel, cum, total, r: int) -> dict:
    """Per-query AP@r under the three normalisers from the expected per-position terms."""
    sum_r = jnp.sum(prel[:, :r], 1)
    safe = jnp.maximum(total, 1.0)
    ap = {
        "relevant": jnp.where(total > 0, sum_r / safe, 0.0),
        "min": jnp.where(total > 0, sum_r / jnp.minimum(float(r), safe), 0.0),
    }
    if cfg.tie == "exact" and r < cfg.num_db:  # the tie group at r may be cut
        ap["retrieved"] = _ap_retrieved_exact(grp, prel, r)
    else:
        ap["retrieved"] = jnp.where(cum[:, r - 1] > 0, sum_r / jnp.maximum(cum[:, r - 1], 1e-30), 0)
    return ap


def _metrics(cfg: _Static, grp: _Groups, erel, prel, total, valid_q) -> dict:
    """Per-query AP@R (3 normalisers; also at ``more_r``), precision/recall@N, and query-summed
    P-R curves."""
    at = cfg.at
    cum = jnp.cumsum(erel, 1)
    safe = jnp.maximum(total, 1.0)
    ap = _ap(cfg, grp, prel, cum, total, cfg.r)
    more = {r: _ap(cfg, grp, prel, cum, total, r) for r in cfg.more_r}
    idx = np.asarray(at, np.int32) - 1
    hits = cum[:, idx]  # expected number of relevant items in the top N (top-N score)
    pos = jnp.arange(1, erel.shape[1] + 1, dtype=jnp.float32)[None, :]
    precision = cum / pos
    recall = cum / safe[:, None]
    # 11-point interpolated precision: max precision at recall >= level (0 when never reached).
    reach = recall[:, None, :] >= _RECALL_LEVELS[None, :, None] - 1e-6
    pr11 = jnp.max(jnp.where(reach, precision[:, None, :], 0.0), -1)
    w = valid_q.astype(jnp.float32)[:, None]
    return {
        "ap": ap,
        "ap_more": more,
        "hits_at": hits,
        "precision_at": hits / jnp.asarray(at, jnp.float32)[None, :],
        "recall_at": hits / safe[:, None],
        "pr11": pr11,
        "precision_curve_sum": jnp.sum(precision * w, 0),
        "recall_curve_sum": jnp.sum(recall * w, 0),
        "num_relevant": total,
    }


# --------------------------------------------------------------------------------------------
# The chunk kernel (per device shard, merged across the "db" mesh axis)
# --------------------------------------------------------------------------------------------


def _shard_body(cfg: _Static, q, yq, total, valid_q, b, yb, valid_b):
    """Ranks a chunk of queries (C, ...) against one database shard (Ns, ...) and merges shards.

    ``total`` (C,) is each query's number of relevant items in the whole database."""
    keys = _keys(cfg.metric, q, b, cfg.num_bits)
    keys = jnp.where(valid_b[None, :], keys, jnp.inf)
    if cfg.use_histogram:
        rel = (yq[:, None] == yb[None, :]) & valid_b[
            None, :
        ]  # exact ties from the histogram of integer keys; no sort at all
        nbins = cfg.num_bits + 1
        code = jnp.where(valid_b[None, :], keys.astype(jnp.int32) + nbins * rel, 2 * nbins)
        hist = jax.vmap(lambda c: jnp.bincount(c, length=2 * nbins))(code)
        hist = jax.lax.psum(hist, _AXIS).astype(jnp.float32)
        counts, relcounts = hist[:, :nbins] + hist[:, nbins:], hist[:, nbins:]
        grp = _groups_from_histogram(counts, relcounts, cfg.depth)
        erel, prel = _expected_terms(grp)
        return _metrics(cfg, grp, erel, prel, total, valid_q)
    # top_k per shard, then a merge of the shards' lists (shard order = global index order). For
    # exact ties one extra item tells whether the last tie group continues past the list. (Only ask
    # for it when it is used: XLA turns a top_k whose tail is dead into a full sort.)
    exact = cfg.tie == "exact" and not cfg.search_only
    size = min(cfg.depth + 1, cfg.num_db) if exact else cfg.depth
    offset = jax.lax.axis_index(_AXIS) * keys.shape[1]
    neg, idx = jax.lax.top_k(-keys, min(size, keys.shape[1]))
    top_keys, top_idx, top_rel = -neg, idx + offset, yb[idx] == yq[:, None]
    if jax.lax.axis_size(_AXIS) > 1:  # merge the shards' sorted lists (costs another top_k)
        gather = functools.partial(jax.lax.all_gather, axis_name=_AXIS, axis=1, tiled=True)
        cand_keys, cand_idx, cand_rel = gather(top_keys), gather(top_idx), gather(top_rel)
        neg, pick = jax.lax.top_k(-cand_keys, size)
        top_keys, top_idx = -neg, jnp.take_along_axis(cand_idx, pick, 1)
        top_rel = jnp.take_along_axis(cand_rel, pick, 1)
    crosses = None
    if size > cfg.depth:
        crosses = top_keys[:, cfg.depth] == top_keys[:, cfg.depth - 1]
        top_keys, top_idx = top_keys[:, : cfg.depth], top_idx[:, : cfg.depth]
        top_rel = top_rel[:, : cfg.depth]
    if cfg.search_only:
        return {"keys": top_keys, "indices": top_idx, "relevant": top_rel}
    if exact:
        last = top_keys[:, -1:]

        def count(k, r):  # (size, relevant count) of the last tie group among keys k
            return jnp.sum(k == last, 1, dtype=jnp.float32), jnp.sum(
                (k == last) & r, 1, dtype=jnp.float32
            )

        def whole_database():  # a full pass, only when some group really crosses the list end
            n, g = count(keys, yb[None, :] == yq[:, None])
            return jax.lax.psum(n, _AXIS), jax.lax.psum(g, _AXIS)

        n_last, g_last = count(top_keys, top_rel)
        if crosses is not None:
            n_last, g_last = jax.lax.cond(
                jnp.any(crosses), whole_database, lambda: (n_last, g_last)
            )
        grp = _groups_from_sorted(top_keys, top_rel.astype(jnp.float32), n_last, g_last)
    else:
        grp = _singletons(top_rel.astype(jnp.float32))
    erel, prel = _expected_terms(grp)
    return _metrics(cfg, grp, erel, prel, total, valid_q)


@functools.lru_cache(maxsize=64)
def _compiled_chunk(cfg: _Static, mesh: Mesh):
    """One jitted chunk function per static configuration and mesh (never per chunk)."""
    rep, shard = P(), P(_AXIS)
    body = jax.shard_map(
        functools.partial(_shard_body, cfg),
        mesh=mesh,
        in_specs=(rep, rep, rep, rep, shard, shard, shard),
        out_specs=rep,
        check_vma=False,
    )
    return jax.jit(body)


def _default_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()[:1]), (_AXIS,))


def database_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (default: all) on which the database is sharded."""
    devices = jax.devices()
    num = len(devices) if num_devices is None else num_devices
    if not 1 <= num <= len(devices):
        raise InputError(f"num_devices must be in [1, {len(devices)}], got {num}")
    return Mesh(np.asarray(devices[:num]), (_AXIS,))


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_inputs(xq, xb, yq, yb, metric):
    """Checked ``(xq, xb, yq, yb, exponent)``: float32 features conditioned for the metric by
    :func:`_conditioned` (multiplied by ``2**exponent``), or uint32 codes (exponent 0), and
    labels as dense int32 class ids (or None)."""
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    xq, xb = _array(xq, "queries"), _array(xb, "database")
    for name, x in (("queries", xq), ("database", xb)):
        if x.ndim != 2:
            raise InputError(f"{name} must be a 2-D (n, d) array, got shape {x.shape}")
    if xb.shape[0] == 0:
        raise InputError("empty database: xb has 0 rows")
    if xq.shape[0] == 0:
        raise InputError("no queries: xq has 0 rows")
    if xq.shape[1] != xb.shape[1]:
        raise InputError(f"queries have {xq.shape[1]} columns but the database has {xb.shape[1]}")
    exponent = 0
    if metric in BIT_METRICS:
        for name, x in (("queries", xq), ("database", xb)):
            if x.dtype != np.uint32:
                raise InputError(
                    f"metric {metric!r} needs packed uint32 codes (hebbret.retrieval.pack_bits); "
                    f"{name} are {x.dtype}"
                )
    else:
        if xb.shape[1] == 0:
            raise InputError("features have 0 columns")
        for name, x in (("queries", xq), ("database", xb)):
            if x.dtype.kind not in "biuf":
                raise InputError(f"{name} features must be real numbers, got {x.dtype}")
            if not _all_finite(x):
                raise InputError(f"{name} contain NaN or inf")
            if metric == "cosine" and np.any(~np.any(x != 0, axis=1)):
                raise InputError(f"{name} contain an all-zero row: cosine similarity is undefined")
        xq, xb, exponent = _conditioned(metric, xq, xb)
    if yq is None and yb is None:
        return xq, xb, None, None, exponent
    if yq is None or yb is None:
        raise InputError("labels are needed for both queries and database")
    yq, yb = _class_ids(_array(yq, "query labels"), _array(yb, "database labels"), len(xq), len(xb))
    return xq, xb, yq, yb, exponent


def _array(x, what: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what} are not a rectangular array: {str(e).splitlines()[0]}") from None


def _all_finite(x: np.ndarray, rows: int = 4096) -> bool:
    return all(np.isfinite(x[i : i + rows]).all() for i in range(0, len(x), rows))


_SAFE = (-32, 32)  # binary exponents of magnitudes whose squares and sums float32 holds


def _exponent(peak) -> np.ndarray:
    """e such that ``peak * 2**e`` lies in [1, 2) when ``peak`` is outside [2^-32, 2^32], else 0
    (and 0 where peak is 0), elementwise; from the binary exponent, so it never overflows."""
    _, e = np.frexp(np.asarray(peak, np.float64))  # peak = m 2^e, m in [0.5, 1)
    return np.where((peak > 0) & ((e - 1 < _SAFE[0]) | (e - 1 > _SAFE[1])), 1 - e, 0)


def _conditioned(
    metric: str, xq: np.ndarray, xb: np.ndarray, rows: int = 4096
) -> tuple[np.ndarray, np.ndarray, int]:
    """Float32 features whose distances float32 can compute: ``(xq', xb', e)``.

    The kernel computes ``|q|^2 + |b|^2 - 2 q.b`` (Euclidean), ``sum |q - b|`` (Manhattan) and
    ``q.b / (|q| |b|)`` (cosine) in float32. Nothing done here changes a ranking, but without it
    float32 arithmetic fails on legitimate inputs:

    - Euclidean and Manhattan (translation invariant): both sides minus the database's
      per-column mean (float64, Chan's stable update), rounded to a multiple of the largest power
      of two not above the column's standard deviation. A common offset of 1e3 on unit-scale
      features otherwise cancels the digits that separate near neighbours; a mean small against
      the spread rounds to 0 (nothing to do), and small-integer features stay exact, so exactly
      tied distances stay tied. Features beyond 2^+-32 in magnitude, before or after centring,
      are multiplied by one power of two ``2**e`` (exact, ``np.ldexp``) into [1, 2), so squares
      neither overflow (1e20) nor underflow (1e-30).
    - Cosine: each row beyond 2^+-32 in magnitude times its own power of two.
    """

    def chunks(x: np.ndarray):
        for i in range(0, len(x), rows):
            yield i, x[i : i + rows].astype(np.float64)

    if metric == "cosine":

        def unit_rows(x: np.ndarray) -> np.ndarray:
            e = np.concatenate([_exponent(np.abs(c).max(1)) for _, c in chunks(x)])
            if not np.any(e):
                return x.astype(np.float32)
            out = np.empty(x.shape, np.float32)
            for i, c in chunks(x):
                out[i : i + rows] = np.ldexp(c, e[i : i + rows, None])
            return out

        return unit_rows(xq), unit_rows(xb), 0
    lo = np.minimum(xq.min(0), xb.min(0)).astype(np.float64)  # per-column range of both sides
    hi = np.maximum(xq.max(0), xb.max(0)).astype(np.float64)
    e0 = int(_exponent(max(np.abs(lo).max(), np.abs(hi).max())))
    count, mean, m2 = 0, np.zeros(xb.shape[1]), np.zeros(xb.shape[1])
    for _, c in chunks(xb):  # mean and variance of the database in units of 2**-e0
        c = np.ldexp(c, e0) if e0 else c
        cm = c.mean(0)
        delta, count = cm - mean, count + len(c)
        mean += delta * len(c) / count
        m2 += np.square(c - cm).sum(0) + np.square(delta) * len(c) * (count - len(c)) / count
    std = np.sqrt(m2 / count)
    grid = np.ldexp(1.0, np.frexp(std)[1] - 1)  # the largest power of two <= std
    shift = np.where(std > 0, np.round(mean / np.where(std > 0, grid, 1.0)) * grid, mean)
    lo, hi = np.ldexp(lo, e0) - shift, np.ldexp(hi, e0) - shift
    e1 = int(_exponent(max(np.abs(lo).max(), np.abs(hi).max())))
    if not np.any(shift) and e0 == 0 and e1 == 0:
        return xq.astype(np.float32), xb.astype(np.float32), 0

    def convert(x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, np.float32)
        for i, c in chunks(x):
            out[i : i + rows] = np.ldexp(np.ldexp(c, e0) - shift, e1)
        return out

    return convert(xq), convert(xb), e0 + e1


def _class_ids(yq: np.ndarray, yb: np.ndarray, nq: int, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """Any integer or string labels -> dense int32 class ids shared by queries and database (so
    int64 labels that agree modulo 2**32 stay distinct)."""
    kinds = set()
    for name, y, n in (("query", yq, nq), ("database", yb, nb)):
        if y.ndim != 1 or y.shape[0] != n:
            raise InputError(f"{name} labels have shape {y.shape} but there are {n} {name} items")
        if y.dtype.kind not in "biuUS":
            raise InputError(f"{name} labels must be integers or strings, got {y.dtype}")
        kinds.add("text" if y.dtype.kind in "US" else "int")
    if len(kinds) > 1:
        raise InputError(
            f"query labels ({yq.dtype}) and database labels ({yb.dtype}) are not comparable: "
            "give both as integers or both as strings"
        )
    if yq.dtype.kind == "S" or yb.dtype.kind == "S":
        yq, yb = yq.astype(str), yb.astype(str)
    elif kinds == {"int"} and {yq.dtype.kind, yb.dtype.kind} - {"b"} == {"i", "u"}:
        # int64 with uint64 would promote to float64 and merge labels above 2**53
        big = max((int(y.max()) for y in (yq, yb) if y.dtype.kind == "u" and y.size), default=0)
        common = np.int64 if big <= np.iinfo(np.int64).max else object
        yq, yb = yq.astype(common), yb.astype(common)
    _, ids = np.unique(np.concatenate([yq, yb]), return_inverse=True)
    ids = ids.astype(np.int32)
    return ids[:nq], ids[nq:]


def _depth(R, n: int) -> int:  # noqa: N803  (the literature's name)
    """R (a positive integer, or None / "all" for the whole database) -> a list depth <= n."""
    if R is None or (isinstance(R, str) and R.lower() == "all"):
        return n
    if isinstance(R, bool | np.bool_) or not isinstance(R, int | np.integer):
        raise InputError(f"R must be a positive integer or 'all', got {R!r}")
    if R < 1:
        raise InputError(f"R must be a positive integer or 'all', got {R}")
    return min(int(R), n)


def _ranks(at, n: int) -> tuple[int, ...]:
    """``at`` (a sequence of ranks N for precision@N) checked: integers in [1, n]."""
    if isinstance(at, str) or not isinstance(at, Sequence | np.ndarray):
        raise InputError(f"at must be a sequence of ranks, e.g. (10, 100), got {at!r}")
    for a in at:
        if isinstance(a, bool | np.bool_) or not isinstance(a, int | np.integer):
            raise InputError(f"ranks in at must be integers, got {a!r}")
        if not 1 <= a <= n:
            raise InputError(f"precision@N needs 1 <= N <= database size {n}, got N = {a}")
    return tuple(int(a) for a in at)


def _ranks_or_all(depths) -> tuple:
    """``more_R`` checked as a sequence (its items are checked by :func:`_depth`)."""
    if isinstance(depths, str) or not isinstance(depths, Sequence | np.ndarray):
        raise InputError(f"more_R must be a sequence of list depths, got {depths!r}")
    return tuple(depths)


def _warn_if_all_relevant(yq: np.ndarray, yb: np.ndarray) -> None:
    if np.all(yb == yb[0]) and np.all(yq == yb[0]):
        warnings.warn(
            "every database item is relevant to every query (one class): mAP is 100 "
            "whatever the ranking",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _max_active(metric: str, xq: np.ndarray, num_bits: int) -> int:
    """For wide codes (> 256 bits) whose queries have at most 256 ones (sparse k-of-m codes):
    that maximum, so the kernel gathers query bits instead of scanning every word; else 0."""
    if metric not in BIT_METRICS or num_bits <= _MATMUL_HAMMING_BITS:
        return 0
    most = int(np.bitwise_count(xq).sum(1).max())
    return max(most, 1) if most <= _MAX_ACTIVE else 0


def _chunk_size(cfg: _Static, num_db: int, words: int, chunk_size: int | None) -> int:
    """Queries per kernel call. The histogram path is memory-bound and wants its (C, N) keys in
    cache (~8 MB); the top_k path wants larger matmuls (~32 MB of keys) (measured on 2 CPU
    cores); wide codes bound their (C, N, words or active) intermediate to ~64 MB."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    budget = 2**21 if cfg.use_histogram else 2**23
    per_query = num_db
    if cfg.metric in BIT_METRICS and cfg.num_bits > _MATMUL_HAMMING_BITS:
        per_query, budget = num_db * (cfg.active or words), 2**24
    return int(2 ** np.clip(np.floor(np.log2(budget / per_query)), 0, 9))


def _run(cfg: _Static, xq, yq, xb, yb, *, chunk_size, mesh, seed, progress):
    """Permutes (random policy) and shards the database, then maps the kernel over query chunks."""
    mesh = _default_mesh() if mesh is None else mesh
    ndev = mesh.shape[_AXIS]
    n = xb.shape[0]
    perm = np.random.default_rng(seed).permutation(n) if cfg.tie == "random" else np.arange(n)
    per = -(-n // ndev)
    pad = per * ndev - n
    xb_p = np.concatenate([xb[perm], np.zeros((pad,) + xb.shape[1:], xb.dtype)])
    yb_p = np.concatenate([yb[perm], np.zeros(pad, np.int32)])
    valid_b = np.arange(per * ndev) < n
    shard = NamedSharding(mesh, P(_AXIS))
    b = _prepare(cfg.metric, jax.device_put(xb_p, shard), cfg.active)
    yb_d, vb_d = jax.device_put(yb_p, shard), jax.device_put(valid_b, shard)
    fn = _compiled_chunk(cfg, mesh)
    chunk = _chunk_size(cfg, per, xb.shape[1], chunk_size)
    nq = xq.shape[0]
    labels, counts = np.unique(yb, return_counts=True)
    at = np.minimum(np.searchsorted(labels, yq), len(labels) - 1)
    total = np.where(labels[at] == yq, counts[at], 0).astype(np.float32)
    starts = list(range(0, nq, chunk))

    def one(start: int):
        idx = np.minimum(np.arange(start, start + chunk), nq - 1)  # pad by repeating the last
        if cfg.active:
            q = tuple(jnp.asarray(a) for a in _sparse_query(xq[idx], cfg.active))
        else:
            q = _prepare(cfg.metric, jnp.asarray(xq[idx]))
        valid = jnp.asarray(np.arange(start, start + chunk) < nq)
        out = fn(q, jnp.asarray(yq[idx]), jnp.asarray(total[idx]), valid, b, yb_d, vb_d)
        return jax.tree.map(np.asarray, out)

    # XLA:CPU runs top_k and scatter on one thread: dispatch chunks from a few threads at once.
    workers = min(len(starts), os.cpu_count() or 1, 4) if jax.default_backend() == "cpu" else 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(_progress(pool.map(one, starts), len(starts), progress))
    return perm, results


def _progress(it, total: int, enabled: bool):
    if not enabled or total < 4:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc="retrieval", unit="chunk", leave=False)


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
      chunk_size: queries per kernel call (default: keeps a chunk's distances near 64 MB).
      mesh: a 1-D device mesh with axis "db" (see :func:`database_mesh`) to shard the database.

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
    xq, xb, yq, yb, _ = _check_inputs(xq, xb, yq, yb, metric)
    n = xb.shape[0]
    r = _depth(R, n)
    _warn_if_all_relevant(yq, yb)
    at = _ranks(at, n)
    more_r = tuple(dict.fromkeys(_depth(d, n) for d in _ranks_or_all(more_R)))
    depth = max((r,) + at + more_r)
    num_bits = 32 * xb.shape[1]
    use_hist = metric in BIT_METRICS and tie == "exact" and num_bits + 1 <= _MAX_BINS
    active = _max_active(metric, xq, num_bits)
    cfg = _Static(metric, tie, r, depth, at or (r,), num_bits, use_hist, False, n, active, more_r)
    _, results = _run(
        cfg, xq, yq, xb, yb, chunk_size=chunk_size, mesh=mesh, seed=seed, progress=progress
    )
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
    xq, xb, _, _, exponent = _check_inputs(xq, xb, None, None, metric)
    if isinstance(k, bool | np.bool_) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= xb.shape[0]:
        raise InputError(f"k must be in [1, database size {xb.shape[0]}], got {k}")
    k = int(k)
    num_bits = 32 * xb.shape[1]
    active = _max_active(metric, xq, num_bits)
    cfg = _Static(metric, tie, k, k, (k,), num_bits, False, True, xb.shape[0], active)
    zq, zb = np.zeros(xq.shape[0], np.int32), np.zeros(xb.shape[0], np.int32)
    perm, results = _run(
        cfg, xq, zq, xb, zb, chunk_size=chunk_size, mesh=mesh, seed=seed, progress=False
    )
    nq = xq.shape[0]
    keys = np.concatenate([o["keys"] for o in results])[:nq]
    idx = np.concatenate([o["indices"] for o in results])[:nq]
    return _unscaled(metric, _natural(metric, jnp.asarray(keys), num_bits), exponent), perm[idx]
