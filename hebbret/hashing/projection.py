"""Dense hashers by projection: LSH, PCAHash, Spectral Hashing, ITQ (BioHash's baselines, §3.3).

Each maps a row x (d,), centred by the training mean mu, to k bits:

- LSH / SimHash (Charikar 2002): ``b = [R (x - mu) > 0]``, R (k, d) with i.i.d. N(0, 1) entries.
- PCAHash: ``b = [P (x - mu) > 0]``, P (k, d) the top-k principal directions (k <= d).
- Spectral Hashing (Weiss, Torralba & Fergus 2009): PCA to npca = min(k, d) dims, then the k
  analytic 1-D eigenfunctions of smallest eigenvalue of a uniform distribution on each
  direction's range: ``b_i = [sin(pi/2 + j_i pi (v_dim_i - mn_dim_i) / (mx - mn)_dim_i) > 0]``.
- ITQ (Gong & Lazebnik 2011): ``b = [(V R) >= 0]``, V = P (x - mu) the k PCA projections, R (k, k)
  the orthogonal rotation minimising the quantisation loss ``||B - V R||_F^2`` (their eq. 2).

Shapes: ``fit_<method>(x (n, d), cfg, *, key)`` -> params; ``encode_<method>(params, x (n, d))``
-> :class:`~hebbret.hashing.codes.Codes` with bits (n, k). LSH and ITQ draw from ``key``
(``jax.random.normal(key, (k, d))``, ``jax.random.normal(key, (k, k))``); PCAHash and SH are
deterministic and ignore it. The PCA covariance is accumulated in float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from hebbret.hashing import inputs
from hebbret.hashing.codes import Codes, centre, map_rows
from hebbret.hashing.config import HashConfig

_HI = jax.lax.Precision.HIGHEST


class LSHParams(NamedTuple):
    """mean (d,) float64 training mean; projection (k, d) float32 Gaussian R."""

    mean: np.ndarray
    projection: np.ndarray


class PCAHashParams(NamedTuple):
    """mean (d,) float64; components (k, d) float64 top principal directions (rows, unit norm,
    largest-magnitude entry positive); variances (k,) their eigenvalues, descending."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray


class SHParams(NamedTuple):
    """Spectral Hashing (Weiss's trainSH): mean (d,); components (npca, d); mn, mx (npca,) the
    range of the training projections (min - eps, max + eps); modes (k, npca) int32, one nonzero
    j per row."""

    mean: np.ndarray
    components: np.ndarray
    mn: np.ndarray
    mx: np.ndarray
    modes: np.ndarray


class ITQParams(NamedTuple):
    """mean (d,); components (k, d) PCA directions; rotation (k, k) orthogonal R; loss
    (iterations + 1,) quantisation loss ||B - V R||_F^2 / n before each update and at the end."""

    mean: np.ndarray
    components: np.ndarray
    rotation: np.ndarray
    loss: np.ndarray


def pca(x: np.ndarray, mean: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``num`` principal directions (num, d) and variances (num,) of the centred data.

    The covariance is accumulated chunk by chunk (float32 products of float64-centred chunks,
    float64 sums); each direction's largest-magnitude entry is made positive, so the result is
    deterministic."""
    d = x.shape[1]
    # float32 products of rows scaled by a power of two (exact) into [1, 2) in magnitude, so
    # features of 1e-30 do not underflow nor features of 1e20 overflow
    peak = max(np.abs(x.min(0) - mean).max(), np.abs(x.max(0) - mean).max())
    e = 1 - int(np.frexp(peak)[1]) if peak > 0 else 0
    cov = np.zeros((d, d))
    for xc in inputs.centred_chunks(x, mean):
        xc32 = np.ldexp(xc, e).astype(np.float32)
        cov += (xc32.T @ xc32).astype(np.float64)
    cov = np.ldexp(cov / x.shape[0], -2 * e)
    values, vectors = scipy.linalg.eigh(cov, subset_by_index=(d - num, d - 1))  # ascending
    comps = vectors[:, ::-1].T.copy()
    values = values[::-1]
    flip = np.sign(comps[np.arange(num), np.argmax(np.abs(comps), axis=1)])
    comps *= np.where(flip == 0, 1.0, flip)[:, None]
    return comps, np.maximum(values, 0.0)


def project(x: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, num) float64 projections of the centred rows onto ``comps`` (num, d)."""
    return np.concatenate([xc @ comps.T for xc in inputs.centred_chunks(x, mean)])


@jax.jit
def _sign_chunk(mean, projection, x):
    """bits = (P (x - mean) > 0): (C, d) -> (C, L) uint8."""
    z = jnp.dot(centre(mean, x, projection), projection.T, precision=_HI)
    return (z > 0).astype(jnp.uint8)


@jax.jit
def _itq_chunk(mean, projection, x):
    """ITQ's reference thresholds at >= 0: (C, d) -> (C, k) uint8."""
    z = jnp.dot(centre(mean, x, projection), projection.T, precision=_HI)
    return (z >= 0).astype(jnp.uint8)


@jax.jit
def _sh_chunk(mean, components, mn, dims, freqs, x):
    """Spectral Hashing (compressSH): bit i = sin(pi/2 + omega_i (x_pc[dim_i] - mn[dim_i])) > 0."""
    xpc = jnp.dot(centre(mean, x, components), components.T, precision=_HI) - mn[None, :]
    u = jnp.sin(jnp.pi / 2 + xpc[:, dims] * freqs[None, :])
    return (u > 0).astype(jnp.uint8)


def fit_lsh(
    x: np.ndarray, cfg: HashConfig, *, key: jax.Array, progress: bool = False, mesh: Any = None
) -> LSHParams:
    """LSH (SimHash, Charikar 2002): R (k, d) = ``jax.random.normal(key, (k, d))``, float32.
    ``progress`` and ``mesh`` are ignored."""
    x, mean, key = inputs.train_features(x, cfg, "lsh", key=key)
    proj = jax.random.normal(key, (cfg.k, x.shape[1]), jnp.float32)
    return LSHParams(mean, np.asarray(proj))


def encode_lsh(params: LSHParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """bits = R (x - mean) > 0: (n, d) -> (n, k)."""
    x = inputs.encode_features(x, params.mean)
    proj = params.projection
    bits = map_rows(_sign_chunk, x, proj.shape[0], chunk_size, params.mean, proj)
    return Codes(bits, None)


def fit_pcahash(
    x: np.ndarray, cfg: HashConfig, *, key: jax.Array, progress: bool = False, mesh: Any = None
) -> PCAHashParams:
    """PCAHash: the top-k principal directions of the centred training data (k <= d).
    Deterministic: ``key`` (checked), ``progress`` and ``mesh`` are ignored."""
    x, mean, _ = inputs.train_features(x, cfg, "pcahash", key=key)
    comps, variances = pca(x, mean, cfg.k)
    return PCAHashParams(mean, comps, variances)


def encode_pcahash(params: PCAHashParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """bits = components (x - mean) > 0: (n, d) -> (n, k)."""
    x = inputs.encode_features(x, params.mean)
    comps = params.components.astype(np.float32)
    return Codes(map_rows(_sign_chunk, x, comps.shape[0], chunk_size, params.mean, comps), None)


def fit_sh(
    x: np.ndarray, cfg: HashConfig, *, key: jax.Array, progress: bool = False, mesh: Any = None
) -> SHParams:
    """Spectral Hashing (Weiss, Torralba & Fergus 2009), as in Weiss's ``trainSH.m``.

    1. PCA to npca = min(k, d) dimensions; 2. a uniform distribution on [mn, mx] per dimension
    (training min - eps, max + eps); 3. the analytic 1-D eigenfunctions
    ``Phi_j(x) = sin(pi/2 + j pi / (mx - mn) (x - mn))`` with eigenvalue ∝ (j / (mx - mn))^2,
    ``j = 1 .. ceil((k + 1) R / max R) - 1`` per dimension; keep the k smallest (the constant mode
    j = 0 excluded; ties keep the reference's order: dimension, then j). Deterministic: ``key``
    (checked), ``progress`` and ``mesh`` are ignored."""
    x, mean, _ = inputs.train_features(x, cfg, "sh", key=key)
    k = int(cfg.k)
    npca = min(k, x.shape[1])
    comps, _ = pca(x, mean, npca)
    proj = project(x, mean, comps)
    eps = np.finfo(np.float64).eps
    mn, mx = proj.min(0) - eps, proj.max(0) + eps
    span = mx - mn
    max_mode = np.ceil((k + 1) * span / span.max()).astype(int)
    modes = [np.zeros(npca, np.int32)]  # the constant mode first, as in trainSH
    for i in range(npca):
        for j in range(1, max_mode[i]):
            row = np.zeros(npca, np.int32)
            row[i] = j
            modes.append(row)
    modes = np.stack(modes)
    eig = np.sum((modes * (np.pi / span)[None, :]) ** 2, axis=1)
    order = np.argsort(eig, kind="stable")
    return SHParams(mean, comps, mn, mx, modes[order[1 : k + 1]])


def encode_sh(params: SHParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """Weiss's ``compressSH.m``: bit i = prod_dims sin(pi/2 + omega_i (x_pc - mn)) > 0, where
    each mode has one nonzero j, so the product is that dimension's sinusoid: (n, d) -> (n, k)."""
    x = inputs.encode_features(x, params.mean)
    modes = params.modes
    dims = np.argmax(modes != 0, axis=1).astype(np.int32)
    freqs = modes[np.arange(len(modes)), dims] * np.pi / (params.mx - params.mn)[dims]
    consts = (
        params.mean,
        params.components.astype(np.float32),
        params.mn.astype(np.float32),
        dims,
        freqs.astype(np.float32),
    )
    return Codes(map_rows(_sh_chunk, x, len(modes), chunk_size, *consts), None)


def itq_rotation(v: np.ndarray, r0: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """ITQ's alternating minimisation of ||B - V R||_F^2 over B in {-1, 1}^(n x k), R orthogonal.

    Each iteration: ``B = sign(V R)`` (>= 0 -> +1), then orthogonal Procrustes:
    ``svd(B^T V) = U S W^T`` and ``R = W U^T`` (Gong & Lazebnik 2011, their ITQ.m). The loss
    cannot increase. Returns R (k, k) and the loss per row (iterations + 1,), the last for the
    final R."""
    r = r0
    loss = []
    for _ in range(iterations):
        z = v @ r
        b = np.where(z >= 0, 1.0, -1.0)
        loss.append(np.sum((b - z) ** 2) / v.shape[0])
        u, _, wt = np.linalg.svd(b.T @ v)
        r = wt.T @ u.T
    z = v @ r
    loss.append(np.sum((np.where(z >= 0, 1.0, -1.0) - z) ** 2) / v.shape[0])
    return r, np.asarray(loss)


def fit_itq(
    x: np.ndarray, cfg: HashConfig, *, key: jax.Array, progress: bool = False, mesh: Any = None
) -> ITQParams:
    """ITQ (Gong & Lazebnik 2011): PCA to k <= d dims; R0 the Haar-random rotation from the QR of
    ``jax.random.normal(key, (k, k))``; ``cfg.itq_iterations`` alternations of
    :func:`itq_rotation`. ``progress`` and ``mesh`` are ignored."""
    x, mean, key = inputs.train_features(x, cfg, "itq", key=key)
    comps, _ = pca(x, mean, cfg.k)
    v = project(x, mean, comps)
    g = np.asarray(jax.random.normal(key, (cfg.k, cfg.k), jnp.float32))
    q, r = np.linalg.qr(g.astype(np.float64))
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]  # unique QR: a Haar-random rotation
    rot, loss = itq_rotation(v, q, int(cfg.itq_iterations))
    return ITQParams(mean, comps, rot, loss)


def encode_itq(params: ITQParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """bits = (V R >= 0), V = components (x - mean): (n, d) -> (n, k)."""
    x = inputs.encode_features(x, params.mean)
    proj = (params.rotation.T @ params.components).astype(np.float32)  # (k, d): rows of (P^T R)^T
    return Codes(map_rows(_itq_chunk, x, proj.shape[0], chunk_size, params.mean, proj), None)
