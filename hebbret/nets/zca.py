"""Random patches and ZCA whitening, the input side of the sparse auto-encoder kernels of Kuo,
Chou & Chang 2016 (docs/sae_cnn.md §Pre-processing), after Coates, Ng & Lee 2011.

Patches are flattened to D = size * size * C values in (row, column, channel) order (the order of
a Flax ``Conv`` kernel's first three axes, and of :func:`hebbret.plots.filter_grid`).

- :func:`sample_patches`: random size x size patches of the unlabelled images, pixels in [0, 1];
- :func:`normalise_patches`: per-patch brightness / contrast normalisation (Coates et al. 2011);
- :func:`fit_zca` (float64, once) and :func:`whiten` (a jittable function): optional
  normalisation, then ``(x - mean) @ W`` with ``W = U diag(1 / sqrt(lambda + eps)) U^T``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hebbret.errors import InputError

PATCH = 5
"""The paper's patch (and first-layer kernel) side."""

ZCA_EPS = 0.1
"""Default ZCA regulariser: the value of Coates et al. 2011 (after their per-patch normalisation,
which gives each patch unit variance) and of UFLDL's linear-decoder exercise."""

CONTRAST_EPS = 10.0 / 255.0**2
"""Default per-patch normalisation regulariser for [0, 1] pixels: Coates et al. 2011 divide by
``sqrt(var + 10)`` on [0, 255] pixels, i.e. ``sqrt(var + 10 / 255**2)`` on [0, 1]."""


# ----------------------------------------------------------------------------------------------
# patches


def sample_patches(key: jax.Array, images: np.ndarray, n: int, size: int = PATCH) -> np.ndarray:
    """n random size x size patches, flattened in (row, column, channel) order.

    Image i ~ U{0..N-1}, top-left corner (r, c) ~ U{0..H-size} x U{0..W-size}, all drawn
    independently with ``jax.random`` (so the sample is a function of ``key``); patch k is
    ``images[i_k, r_k:r_k+size, c_k:c_k+size, :].reshape(-1)``.

    Args:
      key: PRNG key.
      images: (N, H, W, C) uint8 (scaled to [0, 1] by 1/255) or float (taken as they are, and
        must be finite) images.
      n: number of patches, >= 1.
      size: patch side, 1 <= size <= min(H, W).

    Returns:
      (n, size * size * C) float32 numpy array.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(
            f"images must be (N, H, W, C), got shape {images.shape} (add a channel axis to grey "
            "images)"
        )
    count, height, width, channels = images.shape
    if count == 0:
        raise InputError("no images to sample patches from")
    if channels == 0:
        raise InputError("images have no channels")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise InputError(f"images must be uint8 or float, got {images.dtype}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise InputError(f"patch size must be a positive integer, got {size!r}")
    if size > height or size > width:
        raise InputError(f"patch size {size} is larger than the images ({height} x {width})")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InputError(f"number of patches must be a positive integer, got {n!r}")
    k_img, k_row, k_col = jax.random.split(key, 3)
    idx = np.asarray(jax.random.randint(k_img, (n,), 0, count))
    rows = np.asarray(jax.random.randint(k_row, (n,), 0, height - size + 1))
    cols = np.asarray(jax.random.randint(k_col, (n,), 0, width - size + 1))
    offsets = np.arange(size)
    patches = images[
        idx[:, None, None],
        rows[:, None, None] + offsets[None, :, None],
        cols[:, None, None] + offsets[None, None, :],
    ]  # (n, size, size, C)
    patches = patches.reshape(n, size * size * channels)
    if images.dtype == np.uint8:
        return patches.astype(np.float32) / np.float32(255.0)
    patches = patches.astype(np.float32)
    if not np.all(np.isfinite(patches)):
        raise InputError("images contain non-finite values (NaN or inf)")
    return patches


def normalise_patches(x: jax.Array, eps: float = CONTRAST_EPS) -> jax.Array:
    """Per-patch brightness/contrast normalisation (Coates et al. 2011).

    x (n, D) -> (x - m) / sqrt(v + eps), with m and v each row's mean and (population) variance:
    every patch gets zero mean and (nearly) unit variance; a constant patch becomes 0.
    """
    x = jnp.asarray(x, jnp.float32)
    m = jnp.mean(x, axis=1, keepdims=True)
    v = jnp.var(x, axis=1, keepdims=True)
    return (x - m) / jnp.sqrt(v + eps)


# ----------------------------------------------------------------------------------------------
# ZCA whitening


class Whitening(NamedTuple):
    """A fitted whitening: ``whiten(x) = (n(x) - mean) @ matrix`` on (…, D) patches.

    Attributes:
      mean: (D,) float32, the mean of the (normalised) training patches.
      matrix: (D, D) float32 symmetric ZCA matrix ``U diag(1 / sqrt(lambda + eps)) U^T``.
      eps: the ZCA regulariser added to every covariance eigenvalue lambda.
      contrast_eps: None: n(x) = x; a float: n = :func:`normalise_patches` with this eps
        (per-patch brightness/contrast normalisation before the ZCA).
    """

    mean: np.ndarray
    matrix: np.ndarray
    eps: float
    contrast_eps: float | None = None


def check_patches(patches: np.ndarray | jax.Array, what: str = "patches") -> np.ndarray:
    patches = np.asarray(patches)
    if patches.ndim != 2:
        raise InputError(f"{what} must be (n, D), got shape {patches.shape}")
    if patches.shape[1] == 0:
        raise InputError(f"{what} have no dimensions (D = 0)")
    if not np.issubdtype(patches.dtype, np.number):
        raise InputError(f"{what} must be numeric, got {patches.dtype}")
    if not np.all(np.isfinite(patches)):
        raise InputError(f"{what} contain non-finite values (NaN or inf)")
    return patches


def fit_zca(
    patches: np.ndarray | jax.Array,
    eps: float = ZCA_EPS,
    *,
    normalise: bool = True,
    contrast_eps: float = CONTRAST_EPS,
) -> Whitening:
    """ZCA whitening fitted on (n, D) patches, in float64.

    With ``normalise`` each patch is first brightness/contrast normalised
    (:func:`normalise_patches`, eps ``contrast_eps``; Coates et al. 2011). Then, with mean mu and
    covariance ``S = (1/n) sum_k (x_k - mu)(x_k - mu)^T = U diag(lambda) U^T``:

        W = U diag(1 / sqrt(lambda + eps)) U^T      (symmetric)

    so ``(x - mu) @ W`` has covariance close to I along directions with lambda >> eps and
    shrinks those with lambda << eps (noise). Directions of zero variance (constant patches, the
    patch-mean direction after normalisation, a constant pixel) get the finite gain
    ``1 / sqrt(eps)`` on values that are ~0 there. ``eps`` is in the units of the patch variance:
    the default 0.1 suits normalised patches (about unit variance per pixel); for raw [0, 1]
    pixels (``normalise=False``) a smaller value such as 1e-3 whitens more components.

    Args:
      patches: (n, D) finite values, n >= 2.
      eps: ZCA regulariser, > 0.
      normalise: per-patch normalisation before the ZCA (default on, as Coates et al.).
      contrast_eps: its regulariser (default ``CONTRAST_EPS``, for [0, 1] pixels).

    Returns:
      a :class:`Whitening` (mean and matrix float32; ``contrast_eps`` None when not normalising).
    """
    x = check_patches(patches)
    if x.shape[0] < 2:
        raise InputError(f"need at least 2 patches to fit a whitening, got {x.shape[0]}")
    if not eps > 0 or not math.isfinite(eps):
        raise InputError(f"ZCA eps must be a positive number, got {eps!r}")
    if normalise and (not contrast_eps >= 0 or not math.isfinite(contrast_eps)):
        raise InputError(f"contrast_eps must be a non-negative number, got {contrast_eps!r}")
    x = x.astype(np.float64)
    if normalise:
        x = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(
            x.var(axis=1, keepdims=True) + contrast_eps
        )
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / x.shape[0]
    lam, u = np.linalg.eigh(cov)
    lam = np.clip(lam, 0.0, None)  # round-off can make zero eigenvalues slightly negative
    matrix = (u / np.sqrt(lam + eps)) @ u.T
    matrix = 0.5 * (matrix + matrix.T)  # exactly symmetric
    return Whitening(
        mean.astype(np.float32),
        matrix.astype(np.float32),
        float(eps),
        float(contrast_eps) if normalise else None,
    )


def whiten(w: Whitening, x: jax.Array) -> jax.Array:
    """``(n(x) - mean) @ matrix`` as float32, for x (..., D) (n: the optional per-patch
    normalisation of ``w``). Jit-compatible; it does not check x for NaN."""
    x = jnp.asarray(x, jnp.float32)
    d = w.matrix.shape[0]
    if x.shape[-1] != d:
        raise InputError(f"patches have {x.shape[-1]} values, the whitening expects {d}")
    flat = x.reshape(-1, d)
    if w.contrast_eps is not None:
        flat = normalise_patches(flat, w.contrast_eps)
    mean = jnp.asarray(w.mean, jnp.float32)
    out = (flat - mean[None, :]) @ jnp.asarray(w.matrix, jnp.float32)
    return out.reshape(x.shape)
