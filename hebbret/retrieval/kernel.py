"""The chunk kernel: ranks a chunk of queries against the (sharded) database and reduces the
ranked lists to per-query metrics, without ever holding the (nq, N) distance matrix.

One jitted function per :class:`KernelConfig` and mesh (:func:`compiled_chunk`) takes a chunk of
C queries (padded to a fixed C, a multiple of the device count, so nothing recompiles from chunk
to chunk) and the database sharded over a 1-D mesh with axis ``"db"`` (:mod:`hebbret.mesh`, via
``jax.shard_map``). Each device computes the keys (C, Ns) of its shard for all C queries
(:mod:`hebbret.retrieval.distances`); then the chunk's queries are split over the devices, so
each device reduces C / n queries against the whole database (the work after the shard's
distances is not repeated on every device):

- integer keys (Hamming, overlap) under the "exact" tie policy: a per-query histogram of
  (key, relevant), summed over devices onto each query's device (``psum_scatter``), determines
  every tie group with no sort at all;
- otherwise ``lax.top_k`` on the negated keys (stable: lower index first among equals) gives each
  shard's best ``depth`` items; ``all_to_all`` sends each query's lists to its device, which
  merges them (``top_k``; shard order = global index order, so the result equals the
  single-device one). For exact ties one extra item tells whether the last tie group continues
  past the list.

The tie groups become expected per-position terms and metrics in :mod:`hebbret.retrieval.ap`.
:func:`run_chunks` permutes (random policy), pads and shards the database, and maps the kernel
over query chunks.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hebbret import mesh as meshes
from hebbret import progress as progress_bars
from hebbret.distributed import to_host
from hebbret.errors import InputError
from hebbret.retrieval.ap import (
    expected_terms,
    groups_from_histogram,
    groups_from_sorted,
    per_query_metrics,
    singletons,
)
from hebbret.retrieval.bits import set_bit_lists
from hebbret.retrieval.distances import BIT_METRICS, MATMUL_HAMMING_BITS, prepare, ranking_keys

MAX_BINS = 4096  # integer metrics with more distinct values than this use top_k instead


class KernelConfig(NamedTuple):
    """Everything static about one compiled chunk kernel (hashable: the jit cache key)."""

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


SUMMED = ("precision_curve_sum", "recall_curve_sum")  # outputs summed over the chunk's queries


def shard_body(cfg: KernelConfig, q, yq, total, valid_q, drop, b, yb, valid_b):
    """Ranks a chunk of queries (C, ...) against one database shard (Ns, ...), then reduces this
    device's C / n queries against the whole database.

    ``total`` (C,) is each query's number of relevant items in the whole database (the left-out
    item excluded); ``drop`` (C,) the global database index each query leaves out, or -1.
    Returns ``(per_query, summed)``: this device's rows (C / n, ...) of the per-query outputs,
    and the :data:`SUMMED` outputs summed over all C queries (replicated)."""
    keys = ranking_keys(cfg.metric, q, b, cfg.num_bits)
    chex.assert_rank(keys, 2)
    chex.assert_shape((yq, total, valid_q, drop), (keys.shape[0],))
    chex.assert_shape((yb, valid_b), (keys.shape[1],))
    ndev, me = jax.lax.axis_size(meshes.DB), jax.lax.axis_index(meshes.DB)
    mine = keys.shape[0] // ndev  # queries reduced on this device

    def own(a):  # this device's rows of a replicated (C, ...) array
        return jax.lax.dynamic_slice_in_dim(a, me * mine, mine)

    def to_owner(a, concat):  # (C, ...) per shard -> (C / n, ...) of every shard, in shard order
        if ndev == 1:
            return a
        if concat is None:
            return jax.lax.psum_scatter(a, meshes.DB, scatter_dimension=0, tiled=True)
        return jax.lax.all_to_all(a, meshes.DB, 0, concat, tiled=True)

    offset = me * keys.shape[1]
    index = offset + jnp.arange(keys.shape[1], dtype=jnp.int32)
    kept = valid_b[None, :] & (index[None, :] != drop[:, None])  # (C, Ns)
    keys = jnp.where(kept, keys, jnp.inf)
    if cfg.use_histogram:
        # exact ties from the histogram of integer keys; no sort at all
        rel = (yq[:, None] == yb[None, :]) & kept
        nbins = cfg.num_bits + 1
        code = jnp.where(kept, keys.astype(jnp.int32) + nbins * rel, 2 * nbins)
        hist = jax.vmap(lambda c: jnp.bincount(c, length=2 * nbins))(code)
        hist = to_owner(hist, None).astype(jnp.float32)  # summed over shards
        counts, relcounts = hist[:, :nbins] + hist[:, nbins:], hist[:, nbins:]
        grp = groups_from_histogram(counts, relcounts, cfg.depth)
        return _metrics(cfg, grp, own(total), own(valid_q))
    # top_k per shard, then each query's device merges the shards' lists (shard order = global
    # index order). For exact ties one extra item tells whether the last tie group continues past
    # the list. (Only ask for it when it is used: XLA turns a top_k whose tail is dead into a
    # full sort.)
    exact = cfg.tie == "exact" and not cfg.search_only
    size = min(cfg.depth + 1, cfg.num_db) if exact else cfg.depth
    neg, idx = jax.lax.top_k(-keys, min(size, keys.shape[1]))
    top_keys, top_idx, top_rel = -neg, idx + offset, yb[idx] == yq[:, None]
    if ndev > 1:  # merge the shards' sorted lists (costs another top_k)
        cand_keys, cand_idx = to_owner(top_keys, 1), to_owner(top_idx, 1)
        cand_rel = to_owner(top_rel, 1)
        neg, pick = jax.lax.top_k(-cand_keys, size)
        top_keys, top_idx = -neg, jnp.take_along_axis(cand_idx, pick, 1)
        top_rel = jnp.take_along_axis(cand_rel, pick, 1)
    crosses = None
    if size > cfg.depth:
        crosses = top_keys[:, cfg.depth] == top_keys[:, cfg.depth - 1]
        top_keys, top_idx = top_keys[:, : cfg.depth], top_idx[:, : cfg.depth]
        top_rel = top_rel[:, : cfg.depth]
    if cfg.search_only:
        return {"keys": top_keys, "indices": top_idx, "relevant": top_rel}, {}
    if exact:
        last = top_keys[:, -1:]

        def count(k, last, r):  # (size, relevant count) of the last tie group among keys k
            return jnp.sum(k == last, 1, dtype=jnp.float32), jnp.sum(
                (k == last) & r, 1, dtype=jnp.float32
            )

        def whole_database():  # a full pass, only when some group really crosses the list end
            every_last = jax.lax.all_gather(last, meshes.DB, tiled=True) if ndev > 1 else last
            n, g = count(keys, every_last, yb[None, :] == yq[:, None])
            return to_owner(n, None), to_owner(g, None)

        n_last, g_last = count(top_keys, last, top_rel)
        if crosses is not None:  # one decision for all devices: the pass has collectives
            anywhere = jax.lax.psum(jnp.any(crosses).astype(jnp.int32), meshes.DB) > 0
            n_last, g_last = jax.lax.cond(anywhere, whole_database, lambda: (n_last, g_last))
        grp = groups_from_sorted(top_keys, top_rel.astype(jnp.float32), n_last, g_last)
    else:
        grp = singletons(top_rel.astype(jnp.float32))
    return _metrics(cfg, grp, own(total), own(valid_q))


def _metrics(cfg: KernelConfig, grp, total, valid_q):
    """This device's per-query metrics and the :data:`SUMMED` ones summed over every device."""
    erel, prel = expected_terms(grp)
    out = per_query_metrics(cfg, grp, erel, prel, total, valid_q)
    return out, {k: jax.lax.psum(out.pop(k), meshes.DB) for k in SUMMED}


@functools.lru_cache(maxsize=64)
def compiled_chunk(cfg: KernelConfig, mesh: Mesh):
    """One jitted chunk function per static configuration and mesh (never per chunk)."""
    rep, shard = P(), P(meshes.DB)
    body = jax.shard_map(
        functools.partial(shard_body, cfg),
        mesh=mesh,
        in_specs=(rep, rep, rep, rep, rep, shard, shard, shard),
        out_specs=(shard, rep),  # per-query rows split over the devices; sums replicated
        check_vma=False,
    )
    return jax.jit(body)


def queries_per_chunk(cfg: KernelConfig, num_db: int, words: int, chunk_size: int | None) -> int:
    """Queries per kernel call. The histogram path is memory-bound and wants its (C, N) keys in
    cache (~8 MB); the top_k path wants larger matmuls (~32 MB of keys) (measured on 2 CPU
    cores); wide codes bound their (C, N, words or active) intermediate to ~64 MB."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    budget = 2**21 if cfg.use_histogram else 2**23
    per_query = num_db
    if cfg.metric in BIT_METRICS and cfg.num_bits > MATMUL_HAMMING_BITS:
        per_query, budget = num_db * (cfg.active or words), 2**24
    return int(2 ** np.clip(np.floor(np.log2(budget / per_query)), 0, 9))


def run_chunks(
    cfg: KernelConfig, xq, yq, xb, yb, *, chunk_size, mesh, seed, progress, leave_out=None
):
    """Permutes (random policy) and shards the database, then maps the kernel over query chunks.

    ``leave_out`` (nq,): the database index each query leaves out of its ranking (or None)."""
    mesh = meshes.database_mesh(1) if mesh is None else mesh
    ndev = meshes.size(mesh)
    n = xb.shape[0]
    perm = np.random.default_rng(seed).permutation(n) if cfg.tie == "random" else np.arange(n)
    per = -(-n // ndev)
    pad = per * ndev - n
    xb_p = np.concatenate([xb[perm], np.zeros((pad,) + xb.shape[1:], xb.dtype)])
    yb_p = np.concatenate([yb[perm], np.zeros(pad, np.int32)])
    valid_b = np.arange(per * ndev) < n
    shard = NamedSharding(mesh, P(meshes.DB))
    b = prepare(cfg.metric, jax.device_put(xb_p, shard), cfg.active)
    yb_d, vb_d = jax.device_put(yb_p, shard), jax.device_put(valid_b, shard)
    fn = compiled_chunk(cfg, mesh)
    chunk = queries_per_chunk(cfg, per, xb.shape[1], chunk_size)
    chunk = -(-chunk // ndev) * ndev  # each device reduces chunk / ndev of the queries
    nq = xq.shape[0]
    labels, counts = np.unique(yb, return_counts=True)
    at = np.minimum(np.searchsorted(labels, yq), len(labels) - 1)
    total = np.where(labels[at] == yq, counts[at], 0).astype(np.float32)
    drop = np.full(nq, -1, np.int32)
    if leave_out is not None:  # the left-out item is not in the ranking nor among the relevant
        total -= yb[leave_out] == yq
        drop = np.argsort(perm).astype(np.int32)[leave_out]  # its position in the permuted order
    starts = list(range(0, nq, chunk))

    def one(start: int):
        idx = np.minimum(np.arange(start, start + chunk), nq - 1)  # pad by repeating the last
        if cfg.active:
            q = tuple(jnp.asarray(a) for a in set_bit_lists(xq[idx], cfg.active))
        else:
            q = prepare(cfg.metric, jnp.asarray(xq[idx]))
        valid = jnp.asarray(np.arange(start, start + chunk) < nq)
        per_query, summed = fn(
            q, jnp.asarray(yq[idx]), jnp.asarray(total[idx]), valid, jnp.asarray(drop[idx]),
            b, yb_d, vb_d,
        )  # fmt: skip
        return jax.tree.map(to_host, per_query | summed)

    # XLA:CPU runs top_k and scatter on one thread: dispatch chunks from a few threads at once.
    workers = min(len(starts), os.cpu_count() or 1, 4) if jax.default_backend() == "cpu" else 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        chunks = pool.map(one, starts)
        shown = progress and len(starts) >= 4
        bar = progress_bars.bar(
            chunks, total=len(starts), desc="retrieval", unit="chunk", enabled=shown
        )
        results = list(bar)
    return perm, results
