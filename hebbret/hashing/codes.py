"""Binary codes (:class:`Codes`) and the chunked, jitted encoding that computes them.

Dense methods give L = k bits a row; sparse ones (BioHash, FlyHash, BioConvHash) give L = m bits
with exactly k ones a row, plus the sorted indices of the k active units (storage k log2(m) bits).
Bits are packed for Hamming ranking by :func:`hebbret.retrieval.pack_bits`, the one packer.

Encoding runs one jitted function per fixed-size chunk of rows (the last chunk zero-padded), so
memory stays bounded and nothing recompiles from chunk to chunk. Top-k uses ``lax.top_k`` on
float32 (ties go to the lower unit index).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from hebbret import retrieval
from hebbret.errors import InputError


class Codes(NamedTuple):
    """Binary codes of n items.

    Attributes:
      bits: (n, L) uint8 in {0, 1}; L = m with exactly k ones a row for sparse methods, L = k for
        dense ones.
      active: (n, k) int32 sorted indices of the active units (sparse methods), else None.
    """

    bits: np.ndarray
    active: np.ndarray | None

    @property
    def packed(self) -> np.ndarray:
        """(n, ceil(L / 32)) uint32: :func:`hebbret.retrieval.pack_bits` of ``bits``."""
        return retrieval.pack_bits(self.bits)


def sparse_codes(active: np.ndarray, m: int) -> Codes:
    """Codes of a sparse method from its (n, k) active units: bits (n, m) with k ones a row."""
    bits = np.zeros((active.shape[0], m), np.uint8)
    np.put_along_axis(bits, active.astype(np.intp), 1, axis=1)
    return Codes(bits, active)


def rows_per_chunk(n: int, width: int, chunk_size: int | None) -> int:
    """Rows per jitted call: keeps the (rows, width) float32 activations near 64 MB; a power of
    two, no larger than needed for n rows (so small inputs compile small)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    cap = 2 ** int(np.clip(np.floor(np.log2(2**24 / max(width, 1))), 4, 12))
    return min(cap, 1 << max(n - 1, 0).bit_length())


def map_rows(fn: Callable, x: np.ndarray, width: int, chunk_size: int | None, *consts):
    """Applies jitted ``fn(*consts, rows)`` to fixed-size row chunks of x -> numpy (n, ...)."""
    n = x.shape[0]
    rows = rows_per_chunk(n, max(width, x.shape[1]), chunk_size)
    consts = tuple(jnp.asarray(c) for c in consts)
    outs = []
    for s in range(0, n, rows):
        block = x[s : s + rows]
        block = block.toarray() if scipy.sparse.issparse(block) else block
        if block.shape[0] < rows:  # pad the last chunk: one shape, one compilation
            block = np.concatenate([block, np.zeros((rows - block.shape[0], x.shape[1]), x.dtype)])
        outs.append(fn(*consts, jnp.asarray(block)))
    return np.concatenate([np.asarray(o) for o in outs])[:n]


def centre(mean: jax.Array, x: jax.Array, weights: jax.Array) -> jax.Array:
    """x - mean for a chunk x (C, d), asserting (at trace time) mean (d,) and weights (L, d)."""
    chex.assert_rank([mean, weights, x], [1, 2, 2])
    chex.assert_shape(mean, (x.shape[1],))
    chex.assert_shape(weights, (None, x.shape[1]))
    return x - mean[None, :]


def top_k_sorted(act: jax.Array, k: int) -> jax.Array:
    """(C, m) activations -> (C, k) int32 indices of the k largest, sorted ascending."""
    _, idx = jax.lax.top_k(act.astype(jnp.float32), k)
    return jnp.sort(idx, axis=1).astype(jnp.int32)
