"""BioConvHash's convolutional front end (Ryali et al. 2020, §2.4 and appendix D).

See docs/biohash.md §BioConvHash.

Filters: for each kernel size K, F filters of shape (K, K, C), the rows of ``W`` (F, K*K*C) in
(row, column, channel) order, learned with the Krotov-Hopfield rule (BioHash eq. 1,
:func:`hebbret.rules.biohash_train.train`) on K x K image patches normalised to unit length (§2.4;
as in Grinberg et al. 2019). Patches are sampled uniformly (image, row, column) from the training
images.

Feature map of an image (H, W, C), per kernel size K (stride 1, no padding):

- patch-normalised currents ``a[y, x, f] = <W_f, P_yx>_f / ||P_yx||``, where ``P_yx`` is the patch
  at (y, x) and ``<., .>_f`` BioHash eq. 1's inner product (``W_f . P_yx`` for p = 2); computed as
  a convolution divided by the square root of a box filter of the squared image, so no patch is
  ever materialised (an all-zero patch gives 0);
- cross-channel inhibition: ``a[y, x, f]`` is kept when it is among the k_CI largest of
  ``a[y, x, :]`` and set to 0 otherwise (§2.4; ties at the threshold are all kept);
- 2-D max-pooling, kernel 7, stride 2, no padding (appendix D);
- flattened in (y, x, f) order; the kernel sizes' maps are concatenated, in the order given.

For 32 x 32 images, kernel sizes (3, 4, 10) give 12 x 12, 12 x 12 and 9 x 9 pooled maps: D = 369 F
(147,600 for the paper's F = 400). A BioHash layer on these features makes BioConvHash
(:mod:`hebbret.hashing.conv`). Because every patch is normalised, scaling a region of an
image (the "shadows" of appendix B) leaves the currents inside it unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hebbret import distributed
from hebbret import mesh as meshes
from hebbret import progress as progress_bars
from hebbret.errors import InputError
from hebbret.hashing import csr_rows
from hebbret.rules import biohash, biohash_train

_HI = jax.lax.Precision.HIGHEST
_TINY = 1e-12


class ConvConfig(NamedTuple):
    """BioConvHash's front end (defaults: the paper's CIFAR-10 settings; MNIST: F = 500,
    kernels (3, 4), k_ci = 10).

    Attributes:
      filters: F filters per kernel size.
      kernels: kernel sizes K (square K x K filters), one filter bank each.
      k_ci: channels kept per location by cross-channel inhibition (1 <= k_ci <= F).
      pool: max-pool kernel; stride: max-pool stride.
      patches: patches sampled from the training images to learn each filter bank.
    """

    filters: int = 400
    kernels: tuple[int, ...] = (3, 4, 10)
    k_ci: int = 1
    pool: int = 7
    stride: int = 2
    patches: int = 500_000


def pooled_side(side: int, kernel: int, cfg: ConvConfig) -> int:
    """Side of the pooled map: ``(side - K + 1 - pool) // stride + 1``."""
    return (side - kernel + 1 - cfg.pool) // cfg.stride + 1


def feature_dim(image_shape: Sequence[int], cfg: ConvConfig) -> int:
    """D = sum over kernel sizes of H'_K * W'_K * F."""
    h, w, _ = check_config(image_shape, cfg)
    return sum(pooled_side(h, k, cfg) * pooled_side(w, k, cfg) * cfg.filters for k in cfg.kernels)


# --------------------------------------------------------------------------------------------
# Patches and filter learning
# --------------------------------------------------------------------------------------------


def normalise_patches(patches: jax.Array) -> jax.Array:
    """(n, d) -> (n, d): each row divided by its L2 norm (all-zero rows stay zero)."""
    norms = jnp.sqrt(jnp.sum(patches * patches, axis=1, keepdims=True))
    return patches / jnp.maximum(norms, _TINY)


@functools.partial(jax.jit, static_argnames="kernel")
def _extract(images: jax.Array, idx: jax.Array, ys: jax.Array, xs: jax.Array, kernel: int):
    c = images.shape[-1]

    def one(i, y, x):
        return jax.lax.dynamic_slice(images[i], (y, x, 0), (kernel, kernel, c)).reshape(-1)

    return normalise_patches(jax.vmap(one)(idx, ys, xs).astype(jnp.float32))


def sample_patches(key: jax.Array, images: np.ndarray, kernel: int, count: int) -> np.ndarray:
    """``count`` K x K patches at uniformly random (image, row, column), unit-normalised.

    Args:
      key: PRNG key; images: (n, H, W, C); kernel: K <= min(H, W); count: number of patches.

    Returns:
      (count, K*K*C) float32, each row in (row, column, channel) order and of unit L2 norm.
    """
    images = check_images(images)
    n, h, w, _ = images.shape
    if not 1 <= kernel <= min(h, w):
        raise InputError(f"kernel size {kernel} does not fit in {h} x {w} images")
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")
    ki, ky, kx = jax.random.split(key, 3)
    idx = jax.random.randint(ki, (count,), 0, n)
    ys = jax.random.randint(ky, (count,), 0, h - kernel + 1)
    xs = jax.random.randint(kx, (count,), 0, w - kernel + 1)
    dev = jnp.asarray(images)
    out, step = [], 65_536  # bounded memory: 64k patches per call
    for s in range(0, count, step):
        out.append(
            np.asarray(_extract(dev, idx[s : s + step], ys[s : s + step], xs[s : s + step], kernel))
        )
    return np.concatenate(out)


def learn_filters(
    key: jax.Array,
    images: np.ndarray,
    kernel: int,
    cfg: ConvConfig = ConvConfig(),  # noqa: B008  (an immutable NamedTuple)
    rule: biohash.RuleConfig = biohash.RuleConfig(),  # noqa: B008
    *,
    mesh=None,
    progress: bool = False,
) -> biohash_train.TrainResult:
    """F filters of size K x K x C: ``biohash_train.train`` on ``cfg.patches`` unit-normalised
    patches (no centring: the patches live on the unit sphere). ``key`` is split in two: patch
    sampling, then the rule's W0 and shuffles. ``mesh`` splits each minibatch over devices as for
    BioHash. Returns the rule's :class:`~hebbret.rules.biohash_train.TrainResult`; ``w`` is
    (F, K*K*C)."""
    kp, kw = jax.random.split(key)
    patches = sample_patches(kp, images, kernel, int(cfg.patches))
    return biohash_train.train(kw, patches, int(cfg.filters), rule, mesh=mesh, progress=progress)


# --------------------------------------------------------------------------------------------
# The feature map
# --------------------------------------------------------------------------------------------


def inhibit(a: jax.Array, k_ci: int) -> jax.Array:
    """Cross-channel inhibition over the last axis: values among the k_ci largest are kept, the
    rest set to 0 (ties at the k_ci-th value all kept). (..., F) -> (..., F)."""
    if k_ci >= a.shape[-1]:
        return a
    if k_ci == 1:
        threshold = jnp.max(a, axis=-1, keepdims=True)
    else:
        threshold = jax.lax.top_k(a, k_ci)[0][..., -1:]
    return jnp.where(a >= threshold, a, jnp.zeros_like(a))


def max_pool(a: jax.Array, pool: int, stride: int) -> jax.Array:
    """2-D max-pooling without padding: (n, H, W, F) -> (n, (H - pool) // stride + 1, ..., F).

    Separable: the max over a pool x pool window is the max over its rows of the max over its
    columns, so two 1-D windows (2 * pool comparisons an output, not pool^2; 3-8x faster on CPU).
    """
    a = jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, (1, pool, 1, 1), (1, stride, 1, 1), "VALID")
    return jax.lax.reduce_window(
        a, -jnp.inf, jax.lax.max, (1, 1, pool, 1), (1, 1, stride, 1), "VALID"
    )


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI
    )


def normalised_currents(images: jax.Array, w: jax.Array, p: float = 2.0) -> jax.Array:
    """``a[n, y, x, f] = <W_f, P_nyx>_f / ||P_nyx||``: (n, H, W, C), (F, K*K*C) ->
    (n, H - K + 1, W - K + 1, F) float32."""
    c = images.shape[-1]
    f, d = w.shape
    k = round((d // c) ** 0.5)
    x = images.astype(jnp.float32)
    bank = biohash.signed_power(w, p).reshape(f, k, k, c).transpose(1, 2, 3, 0)  # HWIO
    norms = jnp.sqrt(jnp.maximum(_conv(x * x, jnp.ones((k, k, c, 1), jnp.float32)), 0.0))
    return _conv(x, bank) / jnp.maximum(norms, _TINY)


@functools.partial(jax.jit, static_argnames=("k_ci", "pool", "stride", "p"))
def _feature_chunk(filters, images, k_ci, pool, stride, p):
    chex.assert_rank(images, 4)
    chex.assert_rank(list(filters), 2)
    n = images.shape[0]
    maps = [
        max_pool(inhibit(normalised_currents(images, w, p), k_ci), pool, stride).reshape(n, -1)
        for w in filters
    ]
    return jnp.concatenate(maps, axis=1)


def feature_map(
    filters: Sequence[np.ndarray],
    images: np.ndarray,
    cfg: ConvConfig = ConvConfig(),  # noqa: B008
    *,
    p: float = 2.0,
    chunk_size: int = 256,
    mesh: Mesh | None = None,
    progress: bool = False,
    sparse: bool = False,
) -> np.ndarray | scipy.sparse.csr_array:
    """BioConvHash features: normalised currents -> inhibition -> max-pool -> flatten, per filter
    bank, concatenated; computed in jitted chunks of ``chunk_size`` images (memory bounded by one
    chunk's (chunk, H, W, F) activations, plus the output).

    Args:
      filters: one (F, K*K*C) array per kernel size in ``cfg.kernels``, in that order.
      images: (n, H, W, C) images (any real dtype).
      cfg: the front end's settings (k_ci, pool, stride).
      p: the rule's p (the filters' inner product, BioHash eq. 1).
      mesh: optional 1-D device mesh (:func:`hebbret.mesh.data_mesh`): each chunk's images are
        split over its devices (the chunk is rounded up to a multiple of the device count).
      sparse: return a ``scipy.sparse`` CSR array, built a chunk at a time (peak memory: the
        result plus a 128 MiB block, :class:`hebbret.hashing.csr_rows.RowBuilder`). With k_CI = 1
        a pooled location keeps at most pool^2 of its F channels (F = 400: ~5 % of the entries
        of CIFAR-10 features are non-zero), so the paper's 147,600-d features of 60k images take
        ~3 GB instead of 35 GB.

    Returns:
      (n, D) float32, D = :func:`feature_dim` (dense, or CSR with ``sparse``).
    """
    images = check_images(images)
    h, w, c = images.shape[1:]
    check_config((h, w, c), cfg)
    if len(filters) != len(cfg.kernels):
        raise InputError(f"got {len(filters)} filter banks for kernel sizes {cfg.kernels}")
    banks = []
    for k, bank in zip(cfg.kernels, filters, strict=True):
        bank = np.asarray(bank, np.float32)
        if bank.ndim != 2 or bank.shape[1] != k * k * c:
            raise InputError(
                f"a {k} x {k} filter bank for {c}-channel images must be (F, {k * k * c}), "
                f"got {bank.shape} (colour / greyscale mismatch?)"
            )
        if not 1 <= cfg.k_ci <= bank.shape[0]:
            raise InputError(f"k_ci must be in [1, F = {bank.shape[0]}], got {cfg.k_ci}")
        banks.append(jnp.asarray(bank))
    n = images.shape[0]
    chunk = max(1, min(int(chunk_size), n))
    put = jnp.asarray
    meshes.check(mesh, meshes.DATA)
    if mesh is not None:
        devices = meshes.size(mesh)
        chunk = -(-chunk // devices) * devices
        banks = [jax.device_put(b, NamedSharding(mesh, P())) for b in banks]
        data = NamedSharding(mesh, P(meshes.DATA))
        put = functools.partial(jax.device_put, device=data)
    static = {
        "k_ci": int(cfg.k_ci),
        "pool": int(cfg.pool),
        "stride": int(cfg.stride),
        "p": float(p),
    }
    starts = progress_bars.bar(
        range(0, n, chunk), desc="conv features", unit="chunk", enabled=progress
    )
    out, rows_csr = None, None
    for s in starts:
        block = images[s : s + chunk]
        rows = block.shape[0]
        if rows < chunk:  # one shape, one compilation
            block = np.concatenate([block, np.zeros((chunk - rows, h, w, c), block.dtype)])
        feats = distributed.to_host(_feature_chunk(tuple(banks), put(block), **static))[:rows]
        if sparse:
            if rows_csr is None:
                rows_csr = csr_rows.RowBuilder(feats.shape[1])
            rows_csr.append(feats)
            continue
        if out is None:
            out = np.empty((n, feats.shape[1]), np.float32)
        out[s : s + rows] = feats
    return rows_csr.build() if sparse else out


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def check_images(images) -> np.ndarray:
    """(n, H, W, C) real, finite, non-empty; else InputError naming the problem."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(f"images must be (n, H, W, C), got shape {images.shape}")
    if images.shape[0] == 0:
        raise InputError("no images (n = 0)")
    if not np.issubdtype(images.dtype, np.number):
        raise InputError(f"images must be numeric, got {images.dtype}")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise InputError("images contain NaN or inf")
    return images


def check_config(image_shape: Sequence[int], cfg: ConvConfig) -> tuple[int, int, int]:
    """(H, W, C) if the front end ``cfg`` fits images of ``image_shape``; else InputError."""
    if len(image_shape) != 3:
        raise InputError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    h, w, c = (int(v) for v in image_shape)
    if cfg.filters < 1 or not cfg.kernels:
        raise InputError(f"need filters >= 1 and at least one kernel size, got {cfg}")
    if not 1 <= cfg.k_ci <= cfg.filters:
        raise InputError(f"k_ci must be in [1, F = {cfg.filters}], got {cfg.k_ci}")
    for k in cfg.kernels:
        if k < 1 or k > min(h, w):
            raise InputError(f"kernel size {k} does not fit in {h} x {w} images")
        if min(h, w) - k + 1 < cfg.pool:
            raise InputError(
                f"a {k} x {k} convolution of {h} x {w} images leaves "
                f"{min(h, w) - k + 1} positions, fewer than the {cfg.pool} x {cfg.pool} pool"
            )
    if cfg.pool < 1 or cfg.stride < 1:
        raise InputError(f"pool and stride must be >= 1, got {cfg.pool}, {cfg.stride}")
    return h, w, c
