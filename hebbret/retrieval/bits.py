"""Binary codes: packing into uint32 words, unpacking, popcounts, and set-bit lists.

A code of L bits is stored as ``W = ceil(L / 32)`` uint32 words: bit j of the code is bit
``j % 32`` of word ``j // 32`` (little-endian inside a word), and padding bits are 0, so they add
nothing to a Hamming distance or an overlap. Two codes' distances follow from word operations:
Hamming ``d_H(q, b) = popcount(q XOR b)``, overlap ``|q AND b| = popcount(q AND b)``, and for
codes as +-1 vectors of length ``L' = 32 W``, ``d_H(q, b) = (L' - <q, b>) / 2`` (used by
:mod:`hebbret.retrieval.distances` as a BLAS matmul for short codes).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hebbret.errors import InputError


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


def unpack_pm1(packed: jax.Array) -> jax.Array:
    """(n, W) uint32 -> (n, 32 W) float32 in {-1, +1}, inside jit."""
    chex.assert_rank(packed, 2)
    shifts = jnp.arange(32, dtype=jnp.uint32)
    bits = (packed[:, :, None] >> shifts[None, None, :]) & jnp.uint32(1)
    return bits.reshape(packed.shape[0], -1).astype(jnp.float32) * 2.0 - 1.0


def popcount(words: jax.Array) -> jax.Array:
    """Number of set bits over the last axis of uint32 ``words`` (..., W) -> (...) float32."""
    return jnp.sum(jax.lax.population_count(words).astype(jnp.int32), -1).astype(jnp.float32)


def set_bit_lists(packed: np.ndarray, active: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packed (C, W) codes with at most ``active`` ones -> their set-bit indices (C, active)
    int32, a validity mask (C, active) and the popcounts (C,) float32, on the host."""
    rows, cols = np.nonzero(unpack_bits(packed, 32 * packed.shape[1]))
    pop = np.bincount(rows, minlength=packed.shape[0])
    slot = np.arange(len(rows)) - (np.cumsum(pop) - pop)[rows]
    idx, valid = np.zeros((len(packed), active), np.int32), np.zeros((len(packed), active), bool)
    idx[rows, slot], valid[rows, slot] = cols, True
    return idx, valid, pop.astype(np.float32)
