"""Hashers by expansion and winner-take-all: FlyHash, BioHash and its dense ablation NaiveBioHash.

Each maps a row x (d,), centred by the training mean mu, through m units:

- FlyHash (Dasgupta, Stevens & Navlakha 2017): m = fly_expansion * d Kenyon cells, M (m, d) binary
  with s = max(1, round(fly_sampling d)) ones a row (s distinct random inputs); the code is the
  top k of ``M (x - mu)``: bits (n, m) with k ones, active (n, k).
- BioHash (Ryali et al. 2020): W (m, d), m = round(k / activity), learned by the Krotov-Hopfield
  rule (eq. 1) on the centred data; the code is BioHash eq. 6, the top k of the m currents
  ``<W_mu, x - mu>_mu = sum_i sign(W_mu,i) |W_mu,i|^(p-1) (x - mu)_i``: bits (n, m) with k ones
  (the paper's -1 is 0 here), active (n, k).
- NaiveBioHash (BioHash §3.3): the same rule with m = k units and no sparse expansion; bit mu is
  ``[<W_mu, x - mu>_mu > 0]``: bits (n, k).

Randomness: FlyHash's row r of block b (rows b .. b + 4095) comes from
``jax.random.uniform(fold_in(key, b), ...)``; BioHash's W0 ~ N(0, 1) and epoch shuffles come from
``biohash_train.train(key, ...)``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from hebbret.hashing import inputs
from hebbret.hashing.codes import Codes, centre, map_rows, sparse_codes, top_k_sorted
from hebbret.hashing.config import HashConfig, biohash_units
from hebbret.rules import biohash, biohash_train

_HI = jax.lax.Precision.HIGHEST
_FLY_ROWS = 4096  # Kenyon cells drawn per key


class FlyHashParams(NamedTuple):
    """mean (d,); projection (m, d) uint8 binary, round(fly_sampling d) ones a row; k active."""

    mean: np.ndarray
    projection: np.ndarray
    k: int


class BioHashParams(NamedTuple):
    """mean (d,); w (m, d) float32 learned synapses; k active units (NaiveBioHash: k = m, dense);
    p of the rule's inner product; epochs run, final mean row norm and the training history."""

    mean: np.ndarray
    w: np.ndarray
    k: int
    p: float
    epochs: int
    mean_norm: float
    history: Any


@functools.partial(jax.jit, static_argnames="k")
def _fly_chunk(mean, projection, x, *, k):
    """FlyHash: winner-take-all over the m Kenyon-cell sums M (x - mean): (C, d) -> (C, k)."""
    act = jnp.dot(centre(mean, x, projection), projection.T, precision=_HI)
    return top_k_sorted(act, k)


@functools.partial(jax.jit, static_argnames=("k", "p"))
def _bio_chunk(mean, w, x, *, k, p):
    """BioHash eq. 6: indices of the top k of the m currents <W_mu, x - mean>_mu."""
    return top_k_sorted(biohash.currents(w, centre(mean, x, w), p), k)


@functools.partial(jax.jit, static_argnames="p")
def _naive_chunk(mean, w, x, *, p):
    """NaiveBioHash: bit mu = (<W_mu, x - mean>_mu > 0)."""
    return (biohash.currents(w, centre(mean, x, w), p) > 0).astype(jnp.uint8)


def fit_flyhash(
    x: np.ndarray, cfg: HashConfig, *, key: jax.Array, progress: bool = False, mesh: Any = None
) -> FlyHashParams:
    """FlyHash (Dasgupta, Stevens & Navlakha 2017): m = fly_expansion * d Kenyon cells; cell mu
    sums s = max(1, round(fly_sampling d)) distinct random inputs (a binary (m, d) matrix with s
    ones a row: the top s of uniform noise from ``fold_in(key, first row of its block)``).
    Data-independent apart from the training mean used for centring. ``progress`` and ``mesh``
    are ignored."""
    x, mean, key = inputs.train_features(x, cfg, "flyhash", key=key)
    d = x.shape[1]
    m = int(cfg.fly_expansion) * d
    s = max(1, round(cfg.fly_sampling * d))
    proj = np.zeros((m, d), np.uint8)
    for start in range(0, m, _FLY_ROWS):
        rows = min(_FLY_ROWS, m - start)
        u = jax.random.uniform(jax.random.fold_in(key, start), (rows, d))
        cols = np.asarray(jax.lax.top_k(u, s)[1])
        np.put_along_axis(proj[start : start + rows], cols, 1, axis=1)
    return FlyHashParams(mean, proj, int(cfg.k))


def encode_flyhash(params: FlyHashParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """Top-k winner-take-all of M (x - mean): (n, d) -> bits (n, m), active (n, k)."""
    x = inputs.encode_features(x, params.mean)
    m = params.projection.shape[0]
    proj = jnp.asarray(params.projection, jnp.float32)
    fn = functools.partial(_fly_chunk, k=params.k)
    return sparse_codes(map_rows(fn, x, m, chunk_size, params.mean, proj), m)


def _train_rule(x, mean, m, cfg, key, progress, mesh) -> BioHashParams:
    if scipy.sparse.issparse(x):  # streamed: centred a chunk at a time, never dense in memory
        res = biohash_train.train(key, x, m, cfg.rule, mesh=mesh, progress=progress, centre=mean)
    else:
        xc = np.concatenate([c.astype(np.float32) for c in inputs.centred_chunks(x, mean)])
        res = biohash_train.train(key, xc, m, cfg.rule, mesh=mesh, progress=progress)
    return BioHashParams(
        mean,
        np.asarray(res.w, np.float32),
        int(cfg.k),
        float(cfg.rule.p),
        int(res.epochs),
        float(res.mean_norm),
        res.history,
    )


def fit_biohash(
    x: np.ndarray, cfg: HashConfig, *, key: jax.Array, progress: bool = False, mesh: Any = None
) -> BioHashParams:
    """BioHash (Ryali et al. 2020): W (m, d), m = round(k / activity), learned by the
    Krotov-Hopfield rule (eq. 1, ``biohash_train.train(key, ...)``: W0 ~ N(0, 1) and the epoch
    shuffles from ``key``) on the centred training data. ``mesh`` splits each minibatch over
    devices; ``progress`` shows the epochs. The params keep the epochs run and the final mean
    row norm."""
    x, mean, key = inputs.train_features(x, cfg, "biohash", key=key, mesh=mesh, allow_sparse=True)
    return _train_rule(x, mean, biohash_units(cfg), cfg, key, progress, mesh)


def encode_biohash(params: BioHashParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """BioHash eq. 6: the k largest of the m currents ``<W_mu, x - mean>_mu`` are 1, the rest 0
    (the paper's -1): (n, d) -> bits (n, m) with exactly k ones, active (n, k)."""
    x = inputs.encode_features(x, params.mean, allow_sparse=True)
    m = params.w.shape[0]
    fn = functools.partial(_bio_chunk, k=params.k, p=params.p)
    return sparse_codes(map_rows(fn, x, m, chunk_size, params.mean, params.w), m)


def fit_naivebiohash(
    x: np.ndarray, cfg: HashConfig, *, key: jax.Array, progress: bool = False, mesh: Any = None
) -> BioHashParams:
    """NaiveBioHash (BioHash §3.3): the same rule and key use as :func:`fit_biohash`, with m = k
    units and no sparse expansion."""
    x, mean, key = inputs.train_features(
        x, cfg, "naivebiohash", key=key, mesh=mesh, allow_sparse=True
    )
    return _train_rule(x, mean, int(cfg.k), cfg, key, progress, mesh)


def encode_naivebiohash(
    params: BioHashParams, x: np.ndarray, *, chunk_size: int | None = None
) -> Codes:
    """bit mu = (<W_mu, x - mean>_mu > 0), the sign of the k currents: (n, d) -> (n, k)."""
    x = inputs.encode_features(x, params.mean, allow_sparse=True)
    fn = functools.partial(_naive_chunk, p=params.p)
    return Codes(map_rows(fn, x, params.w.shape[0], chunk_size, params.mean, params.w), None)
