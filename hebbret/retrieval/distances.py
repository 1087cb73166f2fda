"""Distances between queries and database items as float32 ranking keys (smaller = closer).

For prepared queries ``q`` (C, d) and database items ``b`` (N, d) the keys (C, N) are:

- ``"sqeuclidean"`` and ``"euclidean"``: ``|q|^2 + |b|^2 - 2 q.b`` clipped at 0 (one matmul; the
  Euclidean distance is its square root, which ranks the same);
- ``"manhattan"``: ``sum_k |q_k - b_k|`` (:func:`manhattan`);
- ``"cosine"``: ``1 - q.b / (|q| |b|)`` (rows are normalised once, by :func:`prepare`);
- ``"hamming"`` on packed uint32 codes: ``popcount(q XOR b)``, or ``(L - <q, b>) / 2`` on +-1
  codes of L <= 256 bits (an exact BLAS matmul);
- ``"overlap"``: ``L - |q AND b|``, so a larger overlap ranks first.

Wide sparse codes (> 256 bits, queries with at most 256 ones, e.g. BioHash / FlyHash k-of-m
codes) read each database item's bits at the query's set-bit indices instead of scanning every
word: ``|q AND b|`` directly, and ``d_H = |q| + |b| - 2 |q AND b|``. Bit metrics are exact
integers in float32. :func:`natural_values` turns keys into the metric's own values (Euclidean
distance, cosine similarity, overlap count) and :func:`unscaled` undoes the power-of-two scaling
of :func:`hebbret.retrieval.inputs.conditioned`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hebbret.retrieval.bits import popcount, unpack_pm1

FLOAT_METRICS = ("sqeuclidean", "euclidean", "manhattan", "cosine")
BIT_METRICS = ("hamming", "overlap")
METRICS = FLOAT_METRICS + BIT_METRICS
MATMUL_HAMMING_BITS = 256  # Hamming on at most this many bits runs as a +-1 matmul (BLAS)
MAX_ACTIVE = 256  # wider codes whose queries have at most this many ones: gather the query's bits
MANHATTAN_GROUP = 16  # queries sharing one pass over the transposed database (manhattan)


def prepare(metric: str, x: jax.Array, active: int = 0):
    """Per-item preprocessing done once per call (not per chunk). Wide sparse codes (``active``
    > 0) keep their packed words and add each item's popcount."""
    if active:
        return x, popcount(x)
    if metric == "cosine":
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    if metric == "hamming" and 32 * x.shape[-1] <= MATMUL_HAMMING_BITS:
        return unpack_pm1(x)
    return x


def max_active(metric: str, xq: np.ndarray, num_bits: int) -> int:
    """For wide codes (> 256 bits) whose queries have at most 256 ones (sparse k-of-m codes):
    that maximum, so the kernel gathers query bits instead of scanning every word; else 0."""
    if metric not in BIT_METRICS or num_bits <= MATMUL_HAMMING_BITS:
        return 0
    most = int(np.bitwise_count(xq).sum(1).max())
    return max(most, 1) if most <= MAX_ACTIVE else 0


def sparse_overlap(q, b) -> jax.Array:
    """|q AND b| (C, N) by reading each database item's bits at the query's set-bit indices:
    C * active * N work instead of C * W * N for wide codes (BioHash / FlyHash: W up to ~1000)."""
    idx, valid, _ = q
    chex.assert_equal_shape((idx, valid))
    words = b[0][:, idx // 32]  # (N, C, active)
    bits = (words >> (idx % 32).astype(jnp.uint32)[None, :, :]) & jnp.uint32(1)
    return jnp.sum(jnp.where(valid[None, :, :], bits, 0), -1, dtype=jnp.float32).T


def ranking_keys(metric: str, q, b, num_bits: int) -> jax.Array:
    """Ranking keys (nq, N) float32 for prepared queries q and database b; exact for bit metrics."""
    if isinstance(q, tuple):  # wide codes, queries as set-bit lists (see bits.set_bit_lists)
        overlap = sparse_overlap(q, b)
        chex.assert_shape(overlap, (q[0].shape[0], b[0].shape[0]))
        if metric == "overlap":
            return num_bits - overlap
        return q[2][:, None] + b[1][None, :] - 2.0 * overlap  # |q| + |b| - 2 |q AND b|
    chex.assert_rank((q, b), 2)
    chex.assert_equal_shape_suffix((q, b), 1)
    if metric in ("sqeuclidean", "euclidean"):
        qb = jnp.dot(q, b.T, precision=jax.lax.Precision.HIGHEST)
        d = jnp.sum(q * q, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * qb
        return jnp.maximum(d, 0.0)
    if metric == "manhattan":
        return manhattan(q, b)
    if metric == "cosine":
        return 1.0 - jnp.dot(q, b.T, precision=jax.lax.Precision.HIGHEST)
    if metric == "hamming":
        if q.dtype == jnp.float32:  # +-1 codes from prepare: d = (L - <q, b>) / 2, exact integers
            return (q.shape[-1] - jnp.dot(q, b.T)) * 0.5
        return popcount(q[:, None, :] ^ b[None, :, :])
    if metric == "overlap":  # key = L - |q AND b|: ranking by overlap, as a nonnegative integer
        return num_bits - popcount(q[:, None, :] & b[None, :, :])
    raise AssertionError(metric)


def manhattan(q: jax.Array, b: jax.Array) -> jax.Array:
    """``sum_k |q_k - b_k|`` (nq, N) for q (nq, d), b (N, d): the database transposed once, then
    for :data:`MANHATTAN_GROUP` queries at a time a loop over the d features adding
    ``|q_k - b_k|`` along N into a (group, N) sum (summed in feature order). Vectorised along N
    with the partial sums in cache: ~3x a row-wise ``sum(|b - q_i|, -1)`` per query on XLA:CPU."""
    chex.assert_rank((q, b), 2)
    nq, d = q.shape
    g = MANHATTAN_GROUP
    groups = jnp.pad(q, ((0, -nq % g), (0, 0))).reshape(-1, g, d)
    bt = b.T  # (d, N): feature k of every item is one contiguous row

    def group(qg):  # (g, d) -> (g, N)
        def add(k, total):
            return total + jnp.abs(qg[:, k, None] - bt[k][None, :])

        return jax.lax.fori_loop(0, d, add, jnp.zeros((g, b.shape[0]), b.dtype), unroll=8)

    return jax.lax.map(group, groups).reshape(-1, b.shape[0])[:nq]


def natural_values(metric: str, keys: jax.Array, num_bits: int) -> jax.Array:
    """Ranking keys -> the metric's own values (Euclidean distance, cosine similarity, overlap)."""
    if metric == "euclidean":
        return jnp.sqrt(keys)
    if metric == "cosine":
        return 1.0 - keys
    if metric == "overlap":
        return num_bits - keys
    return keys


def unscaled(metric: str, values: jax.Array, exponent: int) -> np.ndarray:
    """Distances of features multiplied by ``2**exponent`` -> the inputs' distances (float32;
    beyond float32's range they saturate to inf or 0, as the true values would)."""
    power = {"sqeuclidean": 2, "euclidean": 1, "manhattan": 1}.get(metric, 0)
    if exponent == 0 or power == 0:
        return np.asarray(values)
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(np.asarray(values, np.float64), -power * exponent).astype(np.float32)
