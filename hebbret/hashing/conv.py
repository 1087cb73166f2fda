"""BioConvHash (Ryali et al. 2020, §2.4): BioHash on Hebbian convolutional features.

1. Front end (:func:`learn_front_end`): for each kernel size K of ``cfg.conv``, F filters
   (F, K*K*C) learned by the Krotov-Hopfield rule (BioHash eq. 1) on unit-normalised K x K
   patches of the training images (:func:`hebbret.hashing.bioconv.learn_filters`).
2. Features (:func:`features`): normalised currents, cross-channel inhibition (k_CI), max-pool,
   flattened and concatenated over kernel sizes: (n, H, W, C) images -> (n, D) float32
   (:func:`hebbret.hashing.bioconv.feature_map`; D = :func:`bioconv.feature_dim`).
3. Hash layer (:func:`fit_layer`): BioHash (m = round(k / activity) units, eq. 1) on the centred
   features; the code is eq. 6, the top k of the m currents: bits (n, m) with k ones, active (n, k).

Keys: from the one ``key`` of :func:`fit_bioconvhash`, the bank of kernel size K is learned with
``jax.random.fold_in(key, K)`` (which ``learn_filters`` splits into patch sampling and the rule's
W0 and shuffles) and the hash layer with ``key`` itself. A study that sweeps k learns the front end
once, computes its features once and fits one layer per k, with the same key, getting exactly
what :func:`fit_bioconvhash` gives for each k::

    fe = conv.learn_front_end(images, cfg, key=key)
    feats = conv.features(fe, images)
    params = {k: conv.fit_layer(fe, feats, cfg._replace(k=k), key=key) for k in ks}
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
import scipy.sparse

from hebbret.errors import InputError
from hebbret.hashing import bioconv, inputs
from hebbret.hashing.codes import Codes, sparse_codes
from hebbret.hashing.config import HashConfig, check, check_front_end, check_key
from hebbret.hashing.sparse import BioHashParams, encode_biohash, fit_biohash

DENSE_LIMIT = 2**30  # dense training features up to 1 GiB; sparse (CSR) beyond
_ENCODE_BLOCK = 4096  # images a block when encoding: the (n, D) features never all in memory


class FrontEnd(NamedTuple):
    """BioConvHash's learned convolutional front end.

    Attributes:
      filters: one (F, K*K*C) float32 bank per kernel size of ``conv.kernels``, in that order.
      epochs: the rule's epochs per bank; mean_norms: each bank's final mean row p-norm.
      conv: the front end's settings (kernels, F, k_CI, pooling, patches).
      image_shape: (H, W, C) of the images it was learned on.
      p: the rule's p (the filters' inner product, BioHash eq. 1), used by the feature map.
    """

    filters: tuple[np.ndarray, ...]
    epochs: tuple[int, ...]
    mean_norms: tuple[float, ...]
    conv: bioconv.ConvConfig
    image_shape: tuple[int, int, int]
    p: float


class BioConvHashParams(NamedTuple):
    """The front end and the BioHash layer fitted on its (n, D) features (mean (D,), W (m, D))."""

    front_end: FrontEnd
    layer: BioHashParams

    @property
    def filters(self) -> tuple[np.ndarray, ...]:
        """The front end's filter banks, one (F, K*K*C) per kernel size."""
        return self.front_end.filters

    @property
    def filter_epochs(self) -> tuple[int, ...]:
        """The rule's epochs per filter bank."""
        return self.front_end.epochs

    @property
    def conv(self) -> bioconv.ConvConfig:
        """The front end's settings."""
        return self.front_end.conv

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images."""
        return self.front_end.image_shape

    @property
    def epochs(self) -> int:
        """Epochs of the BioHash layer."""
        return self.layer.epochs

    @property
    def mean_norm(self) -> float:
        """Final mean row norm of the BioHash layer."""
        return self.layer.mean_norm


def images(x: Any, image_shape: tuple[int, int, int] | None) -> np.ndarray:
    """(n, H, W, C) images from 4-D input or from (n, H*W*C) rows and ``image_shape``."""
    x = np.asarray(x)
    if x.ndim == 4:
        if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
            raise InputError(f"images are {x.shape[1:]}, but image_shape is {tuple(image_shape)}")
        return bioconv.check_images(x)
    x = inputs.features(x)
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


def _learn(imgs: np.ndarray, cfg: HashConfig, key, mesh, progress) -> FrontEnd:
    banks, epochs, norms = [], [], []
    for kernel in cfg.conv.kernels:
        res = bioconv.learn_filters(
            jax.random.fold_in(key, kernel),
            imgs,
            kernel,
            cfg.conv,
            cfg.rule,
            mesh=mesh,
            progress=progress,
        )
        banks.append(np.asarray(res.w, np.float32))
        epochs.append(int(res.epochs))
        norms.append(float(res.mean_norm))
    shape = tuple(int(v) for v in imgs.shape[1:])
    return FrontEnd(tuple(banks), tuple(epochs), tuple(norms), cfg.conv, shape, float(cfg.rule.p))


def learn_front_end(
    x: Any, cfg: HashConfig, *, key: jax.Array, mesh: Any = None, progress: bool = False
) -> FrontEnd:
    """Learns one filter bank per kernel size of ``cfg.conv`` with ``cfg.rule`` (bank K from
    ``fold_in(key, K)``) on images x: (n, H, W, C), or (n, H*W*C) rows with ``cfg.image_shape``.
    ``cfg.k`` and ``cfg.activity`` are not read. ``mesh`` splits each minibatch over devices."""
    imgs = images(x, cfg.image_shape)
    check_front_end(cfg, imgs.shape[1:], mesh=mesh)
    return _learn(imgs, cfg, check_key(key), mesh, progress)


def features(
    front_end: FrontEnd,
    x: Any,
    *,
    mesh: Any = None,
    progress: bool = False,
    chunk_size: int = 256,
    sparse: bool = False,
) -> np.ndarray:
    """The front end's features of images x ((n, H, W, C), or (n, H*W*C) rows): (n, D) float32,
    computed in jitted chunks of ``chunk_size`` images (:func:`bioconv.feature_map`); with
    ``sparse`` a ``scipy.sparse`` CSR array, which :func:`fit_layer` trains on without ever
    densifying it (the paper's front end in bounded memory)."""
    _check_type(front_end)
    imgs = images(x, front_end.image_shape)
    return _features(front_end, imgs, mesh, progress, chunk_size, sparse)


def keep_sparse(front_end: FrontEnd, n: int) -> bool:
    """Whether the features of n images should be kept sparse: dense ones would pass
    ``DENSE_LIMIT`` bytes."""
    return 4 * n * bioconv.feature_dim(front_end.image_shape, front_end.conv) > DENSE_LIMIT


def _check_type(front_end: Any) -> None:
    if not isinstance(front_end, FrontEnd):
        raise InputError(f"front_end must be a conv.FrontEnd, got {type(front_end).__name__}")


def _check_matches(front_end: Any, cfg: HashConfig, image_shape: tuple[int, ...]) -> None:
    """InputError unless ``front_end`` is what :func:`learn_front_end` gives for ``cfg`` on images
    of ``image_shape`` (same conv settings, p and image shape)."""
    _check_type(front_end)
    ours = (front_end.conv, front_end.p, front_end.image_shape)
    if ours != (cfg.conv, float(cfg.rule.p), image_shape):
        raise InputError(
            f"front_end was learned with {front_end.conv}, p = {front_end.p} on "
            f"{front_end.image_shape} images, not with cfg.conv {cfg.conv}, p = {cfg.rule.p} on "
            f"{image_shape} images"
        )


def _features(front_end: FrontEnd, imgs, mesh, progress, chunk_size=256, sparse=False):
    return bioconv.feature_map(
        front_end.filters,
        imgs,
        front_end.conv,
        p=front_end.p,
        chunk_size=chunk_size,
        mesh=mesh,
        progress=progress,
        sparse=sparse,
    )


def fit_layer(
    front_end: FrontEnd,
    feats: np.ndarray,
    cfg: HashConfig,
    *,
    key: jax.Array,
    mesh: Any = None,
    progress: bool = False,
) -> BioConvHashParams:
    """BioHash (k, activity, rule of ``cfg``; W0 and shuffles from ``key``) on ``feats``, the
    (n, D) :func:`features` of the training images, dense or ``scipy.sparse`` (then streamed to
    the rule in centred chunks: the same weights); bundled with ``front_end``. ``cfg.conv`` and
    ``cfg.image_shape`` are not read: the front end's own settings hold."""
    _check_type(front_end)
    dim = bioconv.feature_dim(front_end.image_shape, front_end.conv)
    shape = feats.shape if scipy.sparse.issparse(feats) else np.shape(feats)
    if len(shape) != 2 or shape[1] != dim:
        raise InputError(f"features must be (n, {dim}), the front end's feature map, got {shape}")
    layer = fit_biohash(feats, cfg, key=key, progress=progress, mesh=mesh)
    return BioConvHashParams(front_end, layer)


def fit_bioconvhash(
    x: Any,
    cfg: HashConfig,
    *,
    key: jax.Array,
    front_end: FrontEnd | None = None,
    progress: bool = False,
    mesh: Any = None,
) -> BioConvHashParams:
    """BioConvHash on training images x ((n, H, W, C), or (n, H*W*C) rows with
    ``cfg.image_shape``): :func:`learn_front_end` (skipped when ``front_end`` is given: it must
    have been learned with ``cfg.conv`` and ``cfg.rule.p`` on images of this shape), its
    :func:`features`, then :func:`fit_layer`; everything checked before the first filter. The
    features are kept sparse when dense ones would pass ``DENSE_LIMIT`` bytes (the weights are
    the same either way)."""
    imgs = images(x, cfg.image_shape)
    check("bioconvhash", cfg, imgs.shape, mesh=mesh)  # fails before any filter is learned
    key = check_key(key)
    if front_end is None:
        front_end = _learn(imgs, cfg, key, mesh, progress)
    else:
        _check_matches(front_end, cfg, tuple(imgs.shape[1:]))
    feats = _features(front_end, imgs, mesh, progress, sparse=keep_sparse(front_end, len(imgs)))
    return fit_layer(front_end, feats, cfg, key=key, progress=progress, mesh=mesh)


def encode_bioconvhash(
    params: BioConvHashParams, x: np.ndarray, *, chunk_size: int | None = None
) -> Codes:
    """Conv features, then BioHash eq. 6 on them: (n, H*W*C) rows or (n, H, W, C) images ->
    bits (n, m) with k ones, active (n, k). Images go through in blocks of 4,096, so the (n, D)
    features are never all in memory."""
    imgs = images(x, params.image_shape)
    parts = []
    for s in range(0, imgs.shape[0], _ENCODE_BLOCK):
        feats = _features(params.front_end, imgs[s : s + _ENCODE_BLOCK], None, False)
        parts.append(encode_biohash(params.layer, feats, chunk_size=chunk_size).active)
    return sparse_codes(np.concatenate(parts), params.layer.w.shape[0])
