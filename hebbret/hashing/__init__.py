"""Hashers for similarity search behind one functional interface: ``fit`` then ``encode``.

Every method is a :class:`Hasher`: a pair of pure functions ``fit(x_train, cfg) -> params`` (a
NamedTuple of arrays, including the training mean) and ``encode(params, x) -> Codes``. The methods
are those of BioHash's comparison (Ryali et al. 2020, §3.3 and appendix D; docs/biohash.md
§Baselines), with the paper's settings as defaults:

=================  ======  =====================================================================
name               sparse  code of a (centred) input x
=================  ======  =====================================================================
``lsh``            no      ``sign(R x)``, R Gaussian (k, d) (Charikar 2002, SimHash)
``pcahash``        no      sign of the top-k principal-component projections
``sh``             no      Spectral Hashing (Weiss et al. 2009): k 1-D sinusoidal eigenfunctions
``itq``            no      PCA to k dims, then a learned rotation (Gong & Lazebnik 2011)
``flyhash``        yes     top-k of ``M x``, M (10 d, d) binary with 10 % ones a row (Dasgupta 2017)
``naivebiohash``   no      sign of the k currents of a k-unit Krotov-Hopfield layer
``biohash``        yes     top-k of the m = k / activity currents ``<W_mu, x>_mu`` (BioHash eq. 6)
``bioconvhash``    yes     BioHash on Hebbian conv features (BioHash §2.4, :mod:`.bioconv`)
=================  ======  =====================================================================

Every method centres its inputs by the training mean (BioHash appendix D: "the training / retrieval
database was centered; queries were also centered using the mean computed on the training set"),
FlyHash included. The mean and the PCA covariance are accumulated in float64 (a float32 sum over
CIFAR-10's 51M pixels is visibly wrong, docs/biohash.md §Learning rule).

Codes: dense methods give L = k bits; sparse ones (BioHash, FlyHash) give L = m bits with exactly k
ones a row, plus the sorted indices of the k active units (storage k log2(m) bits). Dense bits are
``projection > 0`` (ITQ: ``>= 0``, as in its reference code). Encoding runs one jitted function
per chunk of rows, so memory stays bounded and nothing recompiles from chunk to chunk; top-k
uses ``lax.top_k`` on float32 (ties go to the lower unit index).

Example:
  >>> cfg = HashConfig(k=16, activity=0.05)                 # m = 320 hidden units
  >>> params = fit("biohash", xb, cfg)                      # train on the database
  >>> cq, cb = encode("biohash", params, xq), encode("biohash", params, xb)
  >>> cb.bits.shape, cb.active.shape                        # (N, 320), (N, 16)
  >>> retrieval.evaluate(cq.packed, cb.packed, yq, yb, metric="hamming", R=1000)["map"]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from hebbret import retrieval
from hebbret.errors import InputError, check_seed
from hebbret.hashing import bioconv
from hebbret.rules import biohash

_HI = jax.lax.Precision.HIGHEST
_STAT_ROWS = 1024  # rows per host-side chunk when accumulating covariance / projections


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


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


class HashConfig(NamedTuple):
    """Settings shared by all hashers (each uses the fields it needs).

    Attributes:
      k: hash length: active units (sparse methods) or bits (dense methods).
      activity: BioHash a = k / m, so m = round(k / a); 0.5 % for CIFAR-10, 5 % for MNIST.
      rule: the Krotov-Hopfield learning rule settings (BioHash, NaiveBioHash).
      fly_expansion: FlyHash m = fly_expansion * d Kenyon cells (paper: 10).
      fly_sampling: fraction of the d inputs each Kenyon cell sums (paper: 0.1).
      itq_iterations: ITQ alternations (paper: 50).
      seed: the one seed of every random choice (projections, rotations, weights).
      conv: BioConvHash's convolutional front end (filters, kernel sizes, k_CI, pooling).
      image_shape: (H, W, C) of the images that (n, H*W*C) rows hold (BioConvHash only).
    """

    k: int
    activity: float = 0.005
    rule: biohash.RuleConfig = biohash.RuleConfig()
    fly_expansion: int = 10
    fly_sampling: float = 0.1
    itq_iterations: int = 50
    seed: int = 0
    conv: bioconv.ConvConfig = bioconv.ConvConfig()
    image_shape: tuple[int, int, int] | None = None


class Hasher(NamedTuple):
    """A hashing method: ``params = fit(x_train, cfg)``; ``codes = encode(params, x)``.

    ``fit`` also takes keywords ``progress`` (BioHash training bar) and ``mesh`` (device mesh for
    the Hebbian training; ignored by the other methods); ``encode`` takes ``chunk_size`` (rows per
    jitted call; default keeps a chunk's activations near 64 MB).
    """

    name: str
    sparse: bool
    fit: Callable[..., Any]
    encode: Callable[..., Codes]


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


class BioConvHashParams(NamedTuple):
    """filters: one (F, K*K*C) bank per kernel size of ``conv``, learned on unit patches;
    filter_epochs: the rule's epochs per bank; image_shape (H, W, C); layer: the BioHash layer
    on the (n, D) conv features (its mean, W (m, D), k, epochs, mean norm)."""

    filters: tuple[np.ndarray, ...]
    filter_epochs: tuple[int, ...]
    conv: bioconv.ConvConfig
    image_shape: tuple[int, int, int]
    layer: BioHashParams

    @property
    def epochs(self) -> int:
        """Epochs of the BioHash layer."""
        return self.layer.epochs

    @property
    def mean_norm(self) -> float:
        """Final mean row norm of the BioHash layer."""
        return self.layer.mean_norm


# --------------------------------------------------------------------------------------------
# Input checks and statistics
# --------------------------------------------------------------------------------------------


def _features(x: Any) -> np.ndarray:
    """Checks a feature matrix at a public boundary; returns it as float32 (n, d)."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        reason = str(e).splitlines()[0]
        raise InputError(f"features are not a rectangular array: {reason}") from None
    if x.ndim != 2:
        raise InputError(f"features must be a 2-D (n, d) array, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise InputError(f"features must be real numbers, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"features are empty: shape {x.shape}")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32, copy=False)
    if not all(np.isfinite(x[s : s + 8192]).all() for s in range(0, x.shape[0], 8192)):
        raise InputError("data contains NaN or inf (or values beyond float32)")
    return x


def _train_features(
    x: Any, cfg: HashConfig, name: str, mesh: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Checks training data and the method's settings (:func:`check`); returns float32 x and its
    float64 mean (d,)."""
    x = _features(x)
    check(name, cfg, x.shape, mesh=mesh)
    return x, np.mean(x, axis=0, dtype=np.float64)


def _encode_features(x: Any, mean: np.ndarray) -> np.ndarray:
    x = _features(x)
    if x.shape[1] != mean.shape[0]:
        raise InputError(
            f"features have {x.shape[1]} columns but the hasher was fitted on {mean.shape[0]}"
        )
    return x


def _need_k_at_most_d(name: str, k: int, d: int) -> None:
    if k > d:
        raise InputError(f"{name} needs k <= d (at most one bit per dimension): k = {k}, d = {d}")


def _centred_chunks(x: np.ndarray, mean: np.ndarray):
    """Yields float64 centred row chunks (bounded memory for 50k x 3072 inputs)."""
    for s in range(0, x.shape[0], _STAT_ROWS):
        yield x[s : s + _STAT_ROWS].astype(np.float64) - mean[None, :]


def _pca(x: np.ndarray, mean: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
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
    for xc in _centred_chunks(x, mean):
        xc32 = np.ldexp(xc, e).astype(np.float32)
        cov += (xc32.T @ xc32).astype(np.float64)
    cov = np.ldexp(cov / x.shape[0], -2 * e)
    values, vectors = scipy.linalg.eigh(cov, subset_by_index=(d - num, d - 1))  # ascending
    comps = vectors[:, ::-1].T.copy()
    values = values[::-1]
    flip = np.sign(comps[np.arange(num), np.argmax(np.abs(comps), axis=1)])
    comps *= np.where(flip == 0, 1.0, flip)[:, None]
    return comps, np.maximum(values, 0.0)


def _project(x: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, num) float64 projections of the centred rows onto ``comps`` (num, d)."""
    return np.concatenate([xc @ comps.T for xc in _centred_chunks(x, mean)])


# --------------------------------------------------------------------------------------------
# Jitted, chunked encoding
# --------------------------------------------------------------------------------------------


def _rows_per_chunk(n: int, width: int, chunk_size: int | None) -> int:
    """Rows per jitted call: keeps the (rows, width) float32 activations near 64 MB; a power of
    two, no larger than needed for n rows (so small inputs compile small)."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    cap = 2 ** int(np.clip(np.floor(np.log2(2**24 / max(width, 1))), 4, 12))
    return min(cap, 1 << max(n - 1, 0).bit_length())


def _map_rows(fn: Callable, x: np.ndarray, width: int, chunk_size: int | None, *consts):
    """Applies jitted ``fn(*consts, rows)`` to fixed-size row chunks of x -> numpy (n, ...)."""
    n = x.shape[0]
    rows = _rows_per_chunk(n, max(width, x.shape[1]), chunk_size)
    consts = tuple(jnp.asarray(c) for c in consts)
    outs = []
    for s in range(0, n, rows):
        block = x[s : s + rows]
        if block.shape[0] < rows:  # pad the last chunk: one shape, one compilation
            block = np.concatenate([block, np.zeros((rows - block.shape[0], x.shape[1]), x.dtype)])
        outs.append(fn(*consts, jnp.asarray(block)))
    return np.concatenate([np.asarray(o) for o in outs])[:n]


def _centre(mean: jax.Array, x: jax.Array) -> jax.Array:
    return x - mean[None, :]


@jax.jit
def _sign_chunk(mean, projection, x):
    """bits = (P (x - mean) > 0): (C, d) -> (C, L) uint8."""
    z = jnp.dot(_centre(mean, x), projection.T, precision=_HI)
    return (z > 0).astype(jnp.uint8)


@jax.jit
def _itq_chunk(mean, projection, x):
    """ITQ's reference thresholds at >= 0: (C, d) -> (C, k) uint8."""
    z = jnp.dot(_centre(mean, x), projection.T, precision=_HI)
    return (z >= 0).astype(jnp.uint8)


@jax.jit
def _sh_chunk(mean, components, mn, dims, freqs, x):
    """Spectral Hashing (compressSH): bit i = sin(pi/2 + omega_i (x_pc[dim_i] - mn[dim_i])) > 0."""
    xpc = jnp.dot(_centre(mean, x), components.T, precision=_HI) - mn[None, :]
    u = jnp.sin(jnp.pi / 2 + xpc[:, dims] * freqs[None, :])
    return (u > 0).astype(jnp.uint8)


def _top_k_sorted(act: jax.Array, k: int) -> jax.Array:
    _, idx = jax.lax.top_k(act.astype(jnp.float32), k)
    return jnp.sort(idx, axis=1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="k")
def _fly_chunk(mean, projection, x, *, k):
    """FlyHash: winner-take-all over the m Kenyon-cell sums M (x - mean): (C, d) -> (C, k)."""
    act = jnp.dot(_centre(mean, x), projection.T, precision=_HI)
    return _top_k_sorted(act, k)


@functools.partial(jax.jit, static_argnames=("k", "p"))
def _bio_chunk(mean, w, x, *, k, p):
    """BioHash eq. 6: indices of the top k of the m currents <W_mu, x - mean>_mu."""
    return _top_k_sorted(biohash.currents(w, _centre(mean, x), p), k)


@functools.partial(jax.jit, static_argnames="p")
def _naive_chunk(mean, w, x, *, p):
    """NaiveBioHash: bit mu = (<W_mu, x - mean>_mu > 0)."""
    return (biohash.currents(w, _centre(mean, x), p) > 0).astype(jnp.uint8)


def _sparse_codes(active: np.ndarray, m: int) -> Codes:
    bits = np.zeros((active.shape[0], m), np.uint8)
    np.put_along_axis(bits, active.astype(np.intp), 1, axis=1)
    return Codes(bits, active)


# --------------------------------------------------------------------------------------------
# LSH / SimHash
# --------------------------------------------------------------------------------------------


def fit_lsh(x: np.ndarray, cfg: HashConfig, **_: Any) -> LSHParams:
    """LSH (SimHash, Charikar 2002): R (k, d) with i.i.d. N(0, 1) entries from ``cfg.seed``."""
    x, mean = _train_features(x, cfg, "lsh")
    proj = jax.random.normal(jax.random.key(cfg.seed), (cfg.k, x.shape[1]), jnp.float32)
    return LSHParams(mean, np.asarray(proj))


def encode_lsh(params: LSHParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """bits = R (x - mean) > 0: (n, d) -> (n, k)."""
    x = _encode_features(x, params.mean)
    proj = params.projection
    bits = _map_rows(_sign_chunk, x, proj.shape[0], chunk_size, params.mean, proj)
    return Codes(bits, None)


# --------------------------------------------------------------------------------------------
# PCAHash
# --------------------------------------------------------------------------------------------


def fit_pcahash(x: np.ndarray, cfg: HashConfig, **_: Any) -> PCAHashParams:
    """PCAHash: the top-k principal directions of the centred training data (k <= d)."""
    x, mean = _train_features(x, cfg, "pcahash")
    comps, variances = _pca(x, mean, cfg.k)
    return PCAHashParams(mean, comps, variances)


def encode_pcahash(params: PCAHashParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """bits = components (x - mean) > 0: (n, d) -> (n, k)."""
    x = _encode_features(x, params.mean)
    comps = params.components.astype(np.float32)
    return Codes(_map_rows(_sign_chunk, x, comps.shape[0], chunk_size, params.mean, comps), None)


# --------------------------------------------------------------------------------------------
# Spectral Hashing
# --------------------------------------------------------------------------------------------


def fit_sh(x: np.ndarray, cfg: HashConfig, **_: Any) -> SHParams:
    """Spectral Hashing (Weiss, Torralba & Fergus 2009), as in Weiss's ``trainSH.m``.

    1. PCA to npca = min(k, d) dimensions; 2. a uniform distribution on [mn, mx] per dimension
    (training min - eps, max + eps); 3. the analytic 1-D eigenfunctions
    ``Phi_j(x) = sin(pi/2 + j pi / (mx - mn) (x - mn))`` with eigenvalue ∝ (j / (mx - mn))^2,
    ``j = 1 .. ceil((k + 1) R / max R) - 1`` per dimension; keep the k smallest (the constant mode
    j = 0 excluded; ties keep the reference's order: dimension, then j)."""
    x, mean = _train_features(x, cfg, "sh")
    k = int(cfg.k)
    npca = min(k, x.shape[1])
    comps, _ = _pca(x, mean, npca)
    proj = _project(x, mean, comps)
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
    x = _encode_features(x, params.mean)
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
    return Codes(_map_rows(_sh_chunk, x, len(modes), chunk_size, *consts), None)


# --------------------------------------------------------------------------------------------
# ITQ
# --------------------------------------------------------------------------------------------


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


def fit_itq(x: np.ndarray, cfg: HashConfig, **_: Any) -> ITQParams:
    """ITQ (Gong & Lazebnik 2011): PCA to k <= d dims, random orthogonal R (QR of a seeded
    Gaussian), ``cfg.itq_iterations`` alternations of :func:`itq_rotation`."""
    x, mean = _train_features(x, cfg, "itq")
    comps, _ = _pca(x, mean, cfg.k)
    v = _project(x, mean, comps)
    g = np.asarray(jax.random.normal(jax.random.key(cfg.seed), (cfg.k, cfg.k), jnp.float32))
    q, r = np.linalg.qr(g.astype(np.float64))
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]  # unique QR: a Haar-random rotation
    rot, loss = itq_rotation(v, q, int(cfg.itq_iterations))
    return ITQParams(mean, comps, rot, loss)


def encode_itq(params: ITQParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """bits = (V R >= 0), V = components (x - mean): (n, d) -> (n, k)."""
    x = _encode_features(x, params.mean)
    proj = (params.rotation.T @ params.components).astype(np.float32)  # (k, d): rows of (P^T R)^T
    return Codes(_map_rows(_itq_chunk, x, proj.shape[0], chunk_size, params.mean, proj), None)


# --------------------------------------------------------------------------------------------
# FlyHash
# --------------------------------------------------------------------------------------------


def fit_flyhash(x: np.ndarray, cfg: HashConfig, **_: Any) -> FlyHashParams:
    """FlyHash (Dasgupta, Stevens & Navlakha 2017): m = fly_expansion * d Kenyon cells; cell mu
    sums s = max(1, round(fly_sampling d)) distinct random inputs (a binary (m, d) matrix with s
    ones a row). Data-independent apart from the training mean used for centring."""
    x, mean = _train_features(x, cfg, "flyhash")
    d = x.shape[1]
    m = int(cfg.fly_expansion) * d
    s = max(1, round(cfg.fly_sampling * d))
    key = jax.random.key(cfg.seed)
    proj = np.zeros((m, d), np.uint8)
    for start in range(0, m, 4096):  # s distinct columns a row: top s of uniform noise
        rows = min(4096, m - start)
        u = jax.random.uniform(jax.random.fold_in(key, start), (rows, d))
        cols = np.asarray(jax.lax.top_k(u, s)[1])
        np.put_along_axis(proj[start : start + rows], cols, 1, axis=1)
    return FlyHashParams(mean, proj, int(cfg.k))


def encode_flyhash(params: FlyHashParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """Top-k winner-take-all of M (x - mean): (n, d) -> bits (n, m), active (n, k)."""
    x = _encode_features(x, params.mean)
    m = params.projection.shape[0]
    proj = jnp.asarray(params.projection, jnp.float32)
    fn = functools.partial(_fly_chunk, k=params.k)
    return _sparse_codes(_map_rows(fn, x, m, chunk_size, params.mean, proj), m)


# --------------------------------------------------------------------------------------------
# BioHash and NaiveBioHash
# --------------------------------------------------------------------------------------------


def biohash_units(cfg: HashConfig) -> int:
    """m = round(k / activity) hidden units for BioHash; InputError unless 0 < a < 1 and k < m."""
    if not (isinstance(cfg.activity, int | float | np.number) and 0.0 < cfg.activity < 1.0):
        raise InputError(f"activity must be in (0, 1), got {cfg.activity}")
    m = round(cfg.k / cfg.activity)
    if cfg.k >= m:
        raise InputError(
            f"biohash needs k < m = round(k / activity) = {m}, got k = {cfg.k} "
            f"(lower the activity {cfg.activity})"
        )
    return m


def _train_rule(x, mean, m, cfg, progress, mesh) -> BioHashParams:
    xc = np.concatenate([c.astype(np.float32) for c in _centred_chunks(x, mean)])
    res = biohash.train(jax.random.key(cfg.seed), xc, m, cfg.rule, mesh=mesh, progress=progress)
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
    x: np.ndarray, cfg: HashConfig, *, progress: bool = False, mesh: Any = None
) -> BioHashParams:
    """BioHash (Ryali et al. 2020): W (m, d), m = round(k / activity), learned by the
    Krotov-Hopfield rule (eq. 1, ``biohash.train``) on the centred training data, W ~ N(0, 1) from
    ``jax.random.key(cfg.seed)``. The params keep the epochs run and the final mean row norm."""
    x, mean = _train_features(x, cfg, "biohash", mesh)
    return _train_rule(x, mean, biohash_units(cfg), cfg, progress, mesh)


def encode_biohash(params: BioHashParams, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """BioHash eq. 6: the k largest of the m currents ``<W_mu, x - mean>_mu`` are 1, the rest 0
    (the paper's -1): (n, d) -> bits (n, m) with exactly k ones, active (n, k)."""
    x = _encode_features(x, params.mean)
    m = params.w.shape[0]
    fn = functools.partial(_bio_chunk, k=params.k, p=params.p)
    return _sparse_codes(_map_rows(fn, x, m, chunk_size, params.mean, params.w), m)


def fit_naivebiohash(
    x: np.ndarray, cfg: HashConfig, *, progress: bool = False, mesh: Any = None
) -> BioHashParams:
    """NaiveBioHash (BioHash §3.3): the same rule with m = k units and no sparse expansion."""
    x, mean = _train_features(x, cfg, "naivebiohash", mesh)
    return _train_rule(x, mean, int(cfg.k), cfg, progress, mesh)


def encode_naivebiohash(
    params: BioHashParams, x: np.ndarray, *, chunk_size: int | None = None
) -> Codes:
    """bit mu = (<W_mu, x - mean>_mu > 0), the sign of the k currents: (n, d) -> (n, k)."""
    x = _encode_features(x, params.mean)
    fn = functools.partial(_naive_chunk, p=params.p)
    return Codes(_map_rows(fn, x, params.w.shape[0], chunk_size, params.mean, params.w), None)


# --------------------------------------------------------------------------------------------
# BioConvHash
# --------------------------------------------------------------------------------------------


def _images(x: Any, image_shape: tuple[int, int, int] | None) -> np.ndarray:
    """(n, H, W, C) images from 4-D input or from (n, H*W*C) rows and ``image_shape``."""
    x = np.asarray(x)
    if x.ndim == 4:
        if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
            raise InputError(f"images are {x.shape[1:]}, but image_shape is {tuple(image_shape)}")
        return bioconv.check_images(x)
    x = _features(x)
    if image_shape is None:
        raise InputError(
            "bioconvhash needs images: pass (n, H, W, C) arrays or set HashConfig.image_shape"
        )
    if x.shape[1] != int(np.prod(image_shape)):
        raise InputError(
            f"features have {x.shape[1]} columns but the hasher was fitted on "
            f"{int(np.prod(image_shape))} (images of shape {tuple(image_shape)})"
        )
    return x.reshape((x.shape[0], *image_shape))


def fit_bioconvhash(
    x: np.ndarray, cfg: HashConfig, *, progress: bool = False, mesh: Any = None
) -> BioConvHashParams:
    """BioConvHash (Ryali et al. §2.4): per kernel size, F filters learned by the Krotov-Hopfield
    rule on unit-normalised patches (:func:`hebbret.hashing.bioconv.learn_filters`); conv features
    (normalised currents, cross-channel inhibition, max-pool; :func:`bioconv.feature_map`); then
    a BioHash layer (m = k / activity units) trained on the centred features."""
    images = _images(x, cfg.image_shape)
    check("bioconvhash", cfg, images.shape, mesh=mesh)  # fails before any filter is learned
    key = jax.random.key(cfg.seed)
    banks, epochs = [], []
    for kernel in cfg.conv.kernels:
        res = bioconv.learn_filters(
            jax.random.fold_in(key, kernel),
            images,
            kernel,
            cfg.conv,
            cfg.rule,
            mesh=mesh,
            progress=progress,
        )
        banks.append(np.asarray(res.w, np.float32))
        epochs.append(int(res.epochs))
    feats = bioconv.feature_map(banks, images, cfg.conv, p=cfg.rule.p, mesh=mesh, progress=progress)
    layer = fit_biohash(feats, cfg, progress=progress, mesh=mesh)
    return BioConvHashParams(tuple(banks), tuple(epochs), cfg.conv, tuple(images.shape[1:]), layer)


def encode_bioconvhash(
    params: BioConvHashParams, x: np.ndarray, *, chunk_size: int | None = None
) -> Codes:
    """Conv features, then BioHash eq. 6 on them: (n, H*W*C) rows or (n, H, W, C) images ->
    bits (n, m) with k ones, active (n, k). Images go through in blocks of 4,096, so the (n, D)
    features are never all in memory."""
    images = _images(x, params.image_shape)
    block, parts = 4096, []
    for s in range(0, images.shape[0], block):
        feats = bioconv.feature_map(
            params.filters, images[s : s + block], params.conv, p=params.layer.p
        )
        parts.append(encode_biohash(params.layer, feats, chunk_size=chunk_size).active)
    return _sparse_codes(np.concatenate(parts), params.layer.w.shape[0])


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

HASHERS: dict[str, Hasher] = {
    "lsh": Hasher("lsh", False, fit_lsh, encode_lsh),
    "pcahash": Hasher("pcahash", False, fit_pcahash, encode_pcahash),
    "sh": Hasher("sh", False, fit_sh, encode_sh),
    "itq": Hasher("itq", False, fit_itq, encode_itq),
    "flyhash": Hasher("flyhash", True, fit_flyhash, encode_flyhash),
    "naivebiohash": Hasher("naivebiohash", False, fit_naivebiohash, encode_naivebiohash),
    "biohash": Hasher("biohash", True, fit_biohash, encode_biohash),
    "bioconvhash": Hasher("bioconvhash", True, fit_bioconvhash, encode_bioconvhash),
}

_PARAMS = {
    "lsh": LSHParams,
    "pcahash": PCAHashParams,
    "sh": SHParams,
    "itq": ITQParams,
    "flyhash": FlyHashParams,
    "naivebiohash": BioHashParams,
    "biohash": BioHashParams,
    "bioconvhash": BioConvHashParams,
}

# The HashConfig fields each method reads (beyond k and seed), so callers can reject settings
# that a method would silently ignore.
USES: dict[str, frozenset[str]] = {
    "lsh": frozenset(),
    "pcahash": frozenset(),
    "sh": frozenset(),
    "itq": frozenset({"itq_iterations"}),
    "flyhash": frozenset({"fly_expansion", "fly_sampling"}),
    "naivebiohash": frozenset({"rule"}),
    "biohash": frozenset({"activity", "rule"}),
    "bioconvhash": frozenset({"activity", "rule", "conv", "image_shape"}),
}


def get(name: str) -> Hasher:
    """The registered hasher called ``name``; InputError listing the valid names otherwise."""
    if name not in HASHERS:
        raise InputError(f"unknown hasher {name!r}: expected one of {', '.join(HASHERS)}")
    return HASHERS[name]


def check(name: str, cfg: HashConfig, shape: tuple[int, ...], *, mesh: Any = None) -> None:
    """InputError now if ``fit(name, x, cfg)`` would reject training data of ``shape``: (n, d)
    features, or (n, H, W, C) images / (n, H*W*C) rows with ``cfg.image_shape`` for BioConvHash.

    Checks k, rows vs minibatch, k vs dimension, every setting the method reads (activity, rule,
    FlyHash expansion, ITQ iterations, the conv front end), without touching any data, so a grid
    of (method, k) can be validated before its first fit.
    """
    get(name)
    check_seed(cfg.seed)
    k = cfg.k
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be an integer >= 1, got {k!r}")
    n = int(shape[0])
    if n < 2:
        raise InputError(f"fitting needs at least 2 training rows, got {n}")
    d = int(np.prod(shape[1:]))
    if name in ("pcahash", "itq"):
        _need_k_at_most_d(name, k, d)
    if name == "itq" and not (_is_int(cfg.itq_iterations) and cfg.itq_iterations >= 0):
        raise InputError(f"itq_iterations must be an integer >= 0, got {cfg.itq_iterations!r}")
    if name == "flyhash":
        if not (_is_int(cfg.fly_expansion) and cfg.fly_expansion >= 1):
            raise InputError(f"fly_expansion must be an integer >= 1, got {cfg.fly_expansion!r}")
        if not 0.0 < cfg.fly_sampling <= 1.0:
            raise InputError(f"fly_sampling must be in (0, 1], got {cfg.fly_sampling}")
        if k >= cfg.fly_expansion * d:
            raise InputError(
                f"flyhash needs k < m = {cfg.fly_expansion * d} Kenyon cells, got k = {k}"
            )
    if name == "naivebiohash":
        biohash.check_training(cfg.rule, int(k), n, mesh=mesh)
    if name == "biohash":
        biohash.check_training(cfg.rule, biohash_units(cfg), n, mesh=mesh)
    if name == "bioconvhash":
        image_shape = tuple(shape[1:]) if len(shape) == 4 else cfg.image_shape
        if image_shape is None:
            raise InputError(
                "bioconvhash needs images: pass (n, H, W, C) arrays or set HashConfig.image_shape"
            )
        dim = bioconv.feature_dim(image_shape, cfg.conv)
        biohash.check_training(cfg.rule, int(cfg.conv.filters), int(cfg.conv.patches), mesh=mesh)
        check("biohash", cfg, (n, dim), mesh=mesh)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def fit(
    name: str, x: np.ndarray, cfg: HashConfig, *, progress: bool = False, mesh: Any = None
) -> Any:
    """``get(name).fit(x, cfg)``: x (n, d) training features -> the method's params."""
    return get(name).fit(x, cfg, progress=progress, mesh=mesh)


def encode(name: str, params: Any, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """``get(name).encode(params, x)``: x (n, d) -> :class:`Codes`. InputError if ``params``
    were not fitted by method ``name``."""
    hasher = get(name)
    if not isinstance(params, _PARAMS[name]) or (
        isinstance(params, BioHashParams) and (params.k == params.w.shape[0]) != (not hasher.sparse)
    ):
        fitted = next((m for m, t in _PARAMS.items() if isinstance(params, t) and m != name), None)
        if isinstance(params, BioHashParams):
            fitted = "naivebiohash" if params.k == params.w.shape[0] else "biohash"
        origin = f"params of {fitted!r}" if fitted else f"a {type(params).__name__}"
        raise InputError(f"encode({name!r}, ...) got {origin}, not the params of {name!r}")
    return hasher.encode(params, x, chunk_size=chunk_size)
