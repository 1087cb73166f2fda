"""Average precision and the other retrieval metrics from ranked lists, with exact tie handling.

For one query with relevance ``rel(l)`` at rank l and ``P(l) = (1/l) sum_{i<=l} rel(i)``,
``AP@R = (1 / Z) * sum_{l<=R} P(l) rel(l)`` (BioHash eq. 12) with the normaliser ``Z``:

- ``"retrieved"``: relevant items inside the top R (hashing literature, BioHash; AP = 0 if none);
- ``"relevant"``: all relevant items in the database (Tzelepi eq. 18, mAP@All code);
- ``"min"``: ``min(R, relevant in the database)`` (Lagani's ``MAPMetric``).

Tied items (equal keys) form tie groups. Under the "exact" policy the metric is its expected
value over all orders of tied items (McSherry & Najork 2008): at rank position l inside a tie
group that starts after s items, has n members, g of them relevant, and rb relevant items before
it, ``E[rel(l)] = g/n`` and ``E[P(l) rel(l)] = (g/n) (rb + 1 + (l-s-1)(g-1)/(n-1)) / l``
(:func:`expected_terms`). With the "retrieved" normaliser the group cut by R makes Z random; its
hypergeometric law is summed over exactly (:func:`ap_retrieved_exact`). The "random" and
"stable" policies rank tied items in a fixed order: every group is a singleton
(:func:`singletons`) and the same formulas give the plain AP.

Shapes: a chunk of C queries, lists of ``depth`` positions; every array here is (C, depth) or (C,).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from hebbret.retrieval.kernel import KernelConfig

NORMALISERS = ("retrieved", "relevant", "min")
TIES = ("exact", "random", "stable")
RECALL_LEVELS = np.linspace(0.0, 1.0, 11, dtype=np.float32)  # 11-point interpolated precision

# --------------------------------------------------------------------------------------------
# Tie groups -> expected relevance and expected precision-at-a-relevant-hit per rank position
# --------------------------------------------------------------------------------------------


class Groups(NamedTuple):
    """Per rank position l = 1..depth (arrays (C, depth)): its tie group's start s, size n,
    relevant count g, and relevant count rb before the group. Sizes and counts are over the
    whole database, so the last group in the list may extend past depth."""

    s: jax.Array
    n: jax.Array
    g: jax.Array
    rb: jax.Array


def groups_from_sorted(keys: jax.Array, rel: jax.Array, n_last: jax.Array, g_last: jax.Array):
    """Tie groups of a sorted (C, D) key list; the last group's full size/count are given."""
    chex.assert_rank(keys, 2)
    chex.assert_equal_shape((keys, rel))
    chex.assert_shape((n_last, g_last), (keys.shape[0],))
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
    return Groups(s.astype(jnp.float32), n.astype(jnp.float32), g, rb)


def groups_from_histogram(counts: jax.Array, relcounts: jax.Array, depth: int) -> Groups:
    """Tie groups from per-query histograms (C, B) of integer keys; positions 0..depth-1."""
    chex.assert_rank(counts, 2)
    chex.assert_equal_shape((counts, relcounts))
    cum = jnp.cumsum(counts, axis=1)
    pos = jnp.arange(depth)
    bins = jax.vmap(lambda c: jnp.searchsorted(c, pos, side="right"))(cum)
    bins = jnp.minimum(bins, counts.shape[1] - 1)
    take = functools.partial(jnp.take_along_axis, indices=bins, axis=1)
    s = take(cum - counts)
    rb = take(jnp.cumsum(relcounts, axis=1) - relcounts)
    return Groups(s.astype(jnp.float32), take(counts).astype(jnp.float32), take(relcounts), rb)


def singletons(rel: jax.Array) -> Groups:
    """Groups of size one: the list order is the ranking (random / stable policies)."""
    chex.assert_rank(rel, 2)
    depth = rel.shape[-1]
    s = jnp.broadcast_to(jnp.arange(depth, dtype=jnp.float32), rel.shape)
    cum = jnp.cumsum(rel, axis=1, dtype=jnp.float32)
    return Groups(s, jnp.ones_like(s), rel.astype(jnp.float32), cum - rel)


def expected_terms(grp: Groups) -> tuple[jax.Array, jax.Array]:
    """E[rel(l)] and E[P(l) rel(l)] at every position l (McSherry & Najork 2008, eq. for AP)."""
    chex.assert_rank(grp.s, 2)
    chex.assert_equal_shape(list(grp))
    pos = jnp.arange(1, grp.s.shape[-1] + 1, dtype=jnp.float32)[None, :]
    frac = grp.g / grp.n
    pair = jnp.where(grp.n > 1, (grp.g - 1) / jnp.maximum(grp.n - 1, 1), 0.0)
    hits_before = grp.rb + 1.0 + (pos - grp.s - 1.0) * pair
    return frac, frac * hits_before / pos


def ap_retrieved_exact(grp: Groups, prel: jax.Array, r: int) -> jax.Array:
    """E[sum_{l<=R} P(l) rel(l) / n_rel(R)]: the group cut at R has a hypergeometric number X of
    relevant items among its first t positions; given X = x its contribution is
    x c1 + x (x-1) c2 with c1 = (rb+1)/t sum_j 1/(s+j), c2 = sum_j (j-1)/(s+j) / (t (t-1))."""
    chex.assert_equal_shape((grp.s, prel))
    chex.assert_scalar_in(r, 1, prel.shape[1])
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


def ap_at_depth(cfg: KernelConfig, grp: Groups, prel, cum, total, r: int) -> dict:
    """Per-query AP@r under the three normalisers from the expected per-position terms."""
    sum_r = jnp.sum(prel[:, :r], 1)
    safe = jnp.maximum(total, 1.0)
    ap = {
        "relevant": jnp.where(total > 0, sum_r / safe, 0.0),
        "min": jnp.where(total > 0, sum_r / jnp.minimum(float(r), safe), 0.0),
    }
    if cfg.tie == "exact" and r < cfg.num_db:  # the tie group at r may be cut
        ap["retrieved"] = ap_retrieved_exact(grp, prel, r)
    else:
        ap["retrieved"] = jnp.where(cum[:, r - 1] > 0, sum_r / jnp.maximum(cum[:, r - 1], 1e-30), 0)
    return ap


def per_query_metrics(cfg: KernelConfig, grp: Groups, erel, prel, total, valid_q) -> dict:
    """Per-query AP@R (3 normalisers; also at ``more_r``), precision/recall@N, and query-summed
    P-R curves."""
    chex.assert_rank(erel, 2)
    chex.assert_equal_shape((erel, prel))
    chex.assert_shape((total, valid_q), (erel.shape[0],))
    at = cfg.at
    cum = jnp.cumsum(erel, 1)
    safe = jnp.maximum(total, 1.0)
    ap = ap_at_depth(cfg, grp, prel, cum, total, cfg.r)
    more = {r: ap_at_depth(cfg, grp, prel, cum, total, r) for r in cfg.more_r}
    idx = np.asarray(at, np.int32) - 1
    hits = cum[:, idx]  # expected number of relevant items in the top N (top-N score)
    pos = jnp.arange(1, erel.shape[1] + 1, dtype=jnp.float32)[None, :]
    precision = cum / pos
    recall = cum / safe[:, None]
    # 11-point interpolated precision: max precision at recall >= level (0 when never reached).
    reach = recall[:, None, :] >= RECALL_LEVELS[None, :, None] - 1e-6
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
