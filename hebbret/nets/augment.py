"""Kuo, Chou & Chang's data augmentation (2016; docs/sae_cnn.md §Augmentation), in JAX.

Horizontal flips of the training images, and two extra input channels per image, its grey level
and its histogram-equalised grey level, so the network sees 5 channels (R, G, B, grey, equalised
grey). The channels match Pillow bit for bit: :func:`grey` is ``Image.convert("L")`` and
:func:`equalise` is ``ImageOps.equalize`` of that grey image (the paper does not name its tools;
Pillow's are the reference implementation the tests compare with).

All functions take uint8 batches (grey images (B, H, W), colour ones (B, H, W, 3)) as numpy or
JAX arrays, check them at the boundary (:class:`hebbret.errors.InputError`, one line) and run a
jitted pure function; they return JAX arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hebbret.errors import InputError

# Pillow's fixed-point luma weights (libImaging/Convert.c, L24): 0.299, 0.587 and 0.114 times
# 2**16, rounded so that they sum to exactly 2**16.
_LUMA = (19595, 38470, 7471)
_LEVELS = 256


def _array(x: object) -> jax.Array | np.ndarray:
    return x if isinstance(x, jax.Array) else np.asarray(x)


def _check(fn: str, images: object, rank: int, what: str, channels: int | None = None):
    x = _array(images)
    if x.ndim != rank or (channels is not None and x.shape[-1] != channels):
        raise InputError(f"{fn} needs {what} images, got shape {tuple(x.shape)}")
    if x.dtype != np.uint8:
        raise InputError(f"{fn} needs uint8 images, got dtype {x.dtype}")
    if 0 in x.shape:
        raise InputError(f"{fn} needs a non-empty batch of non-empty images, got shape {x.shape}")
    return x


def grey(images: jax.Array | np.ndarray) -> jax.Array:
    """Grey level (ITU-R BT.601 luma) of each pixel, exactly as Pillow's ``convert("L")``.

    ``L = (19595 R + 38470 G + 7471 B + 2**15) >> 16``, i.e. ``0.299 R + 0.587 G + 0.114 B``
    with 16-bit fixed-point weights, rounded half up. (Pillow's documentation writes
    ``R * 299/1000 + G * 587/1000 + B * 114/1000``; its code is the fixed-point form above, which
    differs from rounding the /1000 form on 9,040 of the 2**24 colours.)

    images: (B, H, W, 3) uint8 RGB -> (B, H, W) uint8.
    """
    return _grey(_check("grey", images, 4, "(B, H, W, 3)", channels=3))


@jax.jit
def _grey(images: jax.Array) -> jax.Array:
    x = images.astype(jnp.int32)
    r, g, b = (w * x[..., c] for c, w in enumerate(_LUMA))
    return ((r + g + b + (1 << 15)) >> 16).astype(jnp.uint8)


def equalise(grey_images: jax.Array | np.ndarray) -> jax.Array:
    """Per-image histogram equalisation, exactly as Pillow's ``ImageOps.equalize`` on mode "L".

    For an image of N pixels with histogram h (256 bins) and highest grey level present m:
    ``step = (N - h[m]) // 255``; if step == 0 (in particular with one grey level only) the image
    is returned unchanged; otherwise level v maps to
    ``min(255, (step // 2 + sum_{u < v} h[u]) // step)`` (the lookup table of Pillow, whose
    ``point`` clips a table entry of 256, which the rounding can give at v = m, to 255).

    grey_images: (B, H, W) uint8 -> (B, H, W) uint8, each image equalised on its own histogram.
    """
    return _equalise(_check("equalise", grey_images, 3, "(B, H, W) grey"))


@jax.jit
def _equalise(grey_images: jax.Array) -> jax.Array:
    batch, n = grey_images.shape[0], grey_images.shape[1] * grey_images.shape[2]
    flat = grey_images.reshape(batch, n).astype(jnp.int32)
    hist = jax.vmap(lambda v: jnp.bincount(v, length=_LEVELS))(flat)  # (B, 256)
    top = flat.max(axis=1, keepdims=True)  # (B, 1) highest level present
    step = (n - jnp.take_along_axis(hist, top, axis=1)) // (_LEVELS - 1)  # (B, 1)
    safe = jnp.maximum(step, 1)
    below = jnp.cumsum(hist, axis=1) - hist  # pixels strictly darker than each level
    lut = jnp.minimum((safe // 2 + below) // safe, _LEVELS - 1)  # (B, 256)
    out = jnp.where(step == 0, flat, jnp.take_along_axis(lut, flat, axis=1))
    return out.astype(jnp.uint8).reshape(grey_images.shape)


def five_channels(images: jax.Array | np.ndarray) -> jax.Array:
    """The network's input: channels R, G, B, :func:`grey`, :func:`equalise` of the grey.

    images: (B, H, W, 3) uint8 -> (B, H, W, 5) uint8.
    """
    return _five_channels(_check("five_channels", images, 4, "(B, H, W, 3)", channels=3))


@jax.jit
def _five_channels(images: jax.Array) -> jax.Array:
    g = _grey(images)
    return jnp.concatenate([images, g[..., None], _equalise(g)[..., None]], axis=-1)


def flip_mask(key: jax.Array, batch: int) -> jax.Array:
    """Which of ``batch`` images :func:`random_flip` flips with this key: (batch,) bool, each
    True with probability 1/2, independently."""
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise InputError(f"flip_mask needs a positive batch size, got {batch!r}")
    return jax.random.bernoulli(key, 0.5, (int(batch),))


def random_flip(key: jax.Array, images: jax.Array | np.ndarray) -> jax.Array:
    """Flips each image left-right (``x[b, :, ::-1, :]``) with probability 1/2, independently per
    image; image b is flipped iff ``flip_mask(key, B)[b]``. Deterministic given the key.

    images: (B, H, W, C) of any channel count C; uint8 (the raw images) or any other dtype (e.g.
    standardised float images) -> same shape and dtype.
    """
    x = _array(images)
    if x.ndim != 4:
        raise InputError(f"random_flip needs (B, H, W, C) images, got shape {tuple(x.shape)}")
    if 0 in x.shape:
        raise InputError(f"random_flip needs a non-empty batch of non-empty images, got {x.shape}")
    return _random_flip(key, x)


@jax.jit
def _random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
