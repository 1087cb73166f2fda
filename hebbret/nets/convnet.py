"""Lagani et al.'s 6-layer CNN (2022, Fig. 1; docs/hebbian_pca.md §Network), in Flax linen.

    input 32x32x3
    conv1 5x5  3->96,   ReLU, max-pool 2, BN   -> 14x14x96
    conv2 3x3 96->128,  ReLU,             BN   -> 12x12x128
    conv3 3x3 128->192, ReLU, max-pool 2, BN   ->  5x5x192
    conv4 3x3 192->256, ReLU,             BN   ->  3x3x256 (2,304 features)
    fc5   2304->4096,   ReLU,             BN   ->  4096
    dropout 0.5 (training only), fc6 4096->classes ("head")

No padding, stride 1, no bias in layers 1-5 (each is followed by batch norm, which makes a bias
redundant, and the Hebbian rule has none). With ``keep_variance`` (the authors' Hebbian model_6l,
their ``modified_bn``) bn3, bn4 and bn5 multiply each channel c back by its relative running
standard deviation, ``sqrt((var_c + eps) / (mean(var) + eps))``: the layer keeps which channels
vary most (a Hebbian PCA layer orders its channels by variance) instead of giving all unit
variance; the next Hebbian layer and a Euclidean ranking of the features both see that.

``Net(depth=L)`` cuts the network after layer L and puts the head on layer L's (flattened)
output: the layer-wise evaluation of the paper. Its second output is the layer-L feature (after
BN), the retrieval representation.

Why linen rather than nnx: the Hebbian rule (:mod:`hebbret.rules.hpca`) is a pure function of
``(params, batch) -> params``; linen keeps parameters as a plain pytree outside the module, so
the same variables flow through the Hebbian step, optax, orbax and a sharded ``jax.jit`` with no
object state to split and merge. ``sow("hebbian", ...)`` exposes each layer's input and ReLU
response to the rule only when that collection is asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hebbret.errors import InputError


class Layer(NamedTuple):
    """One Hebbian layer: name, kernel side (None: dense), output width, 2x2 max-pool after."""

    name: str
    kernel: int | None
    features: int
    pool: bool


LAYERS = (
    Layer("conv1", 5, 96, True),
    Layer("conv2", 3, 128, False),
    Layer("conv3", 3, 192, True),
    Layer("conv4", 3, 256, False),
    Layer("fc5", None, 4096, False),
)
IMAGE_SHAPE = (32, 32, 3)
_KEEP_VARIANCE_FROM = 2  # bn3, bn4, bn5 (the authors' model_6l)
_INITS = {
    # Xavier (Glorot) uniform for supervised training (Lagani et al. 2022, §4.3)
    "xavier": nn.initializers.xavier_uniform(),
    # uniform in +-1/sqrt(fan_in) for the Hebbian phase: variance_scaling(1/3) has limit
    # sqrt(3 * (1/3) / fan_in)
    "hebbian": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}


class Net(nn.Module):
    """Layers 1..depth of the network plus a linear head; returns ``(logits, features)``.

    Attributes:
      num_classes: head width.
      depth: L in 1..5, the layer the head (and the retrieval features) sit on.
      dropout: dropout rate before the head (training only).
      init_scheme: kernel initialiser of layers 1-5, "xavier" or "hebbian".
      keep_variance: bn3-bn5 keep relative channel variance (the authors' Hebbian network).

    Call:
      images (B, 32, 32, 3) standardised float; ``train`` uses batch statistics and dropout
      (needs a "dropout" rng); ``hebbian`` sows each layer's (input, ReLU response) and skips
      dropout (the Hebbian phase has none).
      Returns logits (B, num_classes) and layer-L features (B, D_L).
    """

    num_classes: int
    depth: int = 5
    dropout: float = 0.5
    init_scheme: str = "xavier"
    keep_variance: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, hebbian: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        h, _ = trunk(
            self, x, self.depth, _INITS[self.init_scheme], train=train, hebbian=hebbian,
            keep_variance=self.keep_variance,
        )  # fmt: skip
        feats = h.reshape(h.shape[0], -1)
        drop = nn.Dropout(self.dropout, deterministic=hebbian or not train)(feats)
        logits = nn.Dense(self.num_classes, kernel_init=_INITS["xavier"], name="head")(drop)
        return logits, feats


def trunk(
    module: nn.Module,
    x: jax.Array,
    depth: int,
    kernel_init: Callable,
    *,
    train: bool,
    hebbian: bool = False,
    keep_variance: bool = False,
    first: int = 1,
    prelu_last: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Layers first..depth, built inside ``module``'s compact ``__call__`` (submodules
    "conv1".."fc5", "bn1".."bn5": :class:`Net` and :class:`hebbret.nets.vae.VAE` share them, so
    pre-trained layers transplant by name). Returns layer ``depth``'s output after BN and each
    pooled layer's pre-pool ReLU map (for max-unpooling); with ``hebbian`` sows (input, ReLU
    response); with ``keep_variance`` bn3-bn5 rescale by relative running std (see the module
    docstring). ``x`` is layer ``first - 1``'s output; ``prelu_last`` replaces layer ``depth``'s
    ReLU by a per-channel PReLU (parameter "<name>_prelu", slope 0.25 at init, as Caffe's):
    the retraining of :mod:`hebbret.retraining.network`."""
    h, pre_pools = x, {}
    for i, layer in list(enumerate(LAYERS[:depth]))[first - 1 :]:
        if layer.kernel is None:
            h = h.reshape(h.shape[0], -1)
            lin = nn.Dense(layer.features, use_bias=False, kernel_init=kernel_init, name=layer.name)
        else:
            k = (layer.kernel, layer.kernel)
            lin = nn.Conv(
                layer.features, k, padding="VALID", use_bias=False, kernel_init=kernel_init,
                name=layer.name,
            )  # fmt: skip
        z = lin(h)
        if prelu_last and i == depth - 1:
            slope = module.param(
                f"{layer.name}_prelu", nn.initializers.constant(0.25), (z.shape[-1],)
            )
            r = jnp.where(z >= 0, z, slope.reshape((1,) * (z.ndim - 1) + (-1,)) * z)
        else:
            r = nn.relu(z)
        if hebbian:
            module.sow("hebbian", f"{layer.name}_io", (h, r))
        if layer.pool:
            pre_pools[layer.name] = r
            r = nn.max_pool(r, (2, 2), strides=(2, 2))
        bn = nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn{i + 1}"
        )
        h = bn(r)
        if keep_variance and i >= _KEEP_VARIANCE_FROM:
            # the running variance after this step's update, a constant for backprop (in the
            # authors' PyTorch code running_var is a buffer, which carries no gradient)
            var = jax.lax.stop_gradient(bn.get_variable("batch_stats", "var")) + bn.epsilon
            h = h * jnp.sqrt(var / var.mean()).reshape((1,) * (h.ndim - 1) + (-1,))
    return h, pre_pools


def feature_dim(depth: int) -> int:
    """D_L: 18,816 / 18,432 / 4,800 / 2,304 / 4,096 for L = 1..5 on 32x32 inputs."""
    side, width = IMAGE_SHAPE[0], IMAGE_SHAPE[2]
    for layer in LAYERS[:depth]:
        if layer.kernel is None:
            side, width = 1, layer.features
            continue
        side = side - layer.kernel + 1
        side, width = (side // 2 if layer.pool else side), layer.features
    return side * side * width


def init(model: Net, key: jax.Array, image_shape: tuple[int, ...] = IMAGE_SHAPE) -> dict:
    """Fresh variables ``{"params", "batch_stats"}`` for (B, *image_shape) inputs."""
    if tuple(image_shape) != IMAGE_SHAPE:
        raise InputError(f"the network takes {IMAGE_SHAPE} images, got {tuple(image_shape)}")
    if not 1 <= model.depth <= len(LAYERS):
        raise InputError(f"depth must be in 1..{len(LAYERS)}, got {model.depth}")
    return _init_fn(model)(key)


@functools.lru_cache(maxsize=16)
def _init_fn(model: Net):
    def fn(key):
        variables = model.init(key, jnp.zeros((1, *IMAGE_SHAPE), jnp.float32))
        return {"params": variables["params"], "batch_stats": variables["batch_stats"]}

    return jax.jit(fn)


def transplant(source: dict, target: dict) -> dict:
    """``target`` with every layer-1..5 kernel, BN parameter and BN statistic present in
    ``source`` copied over (the head stays ``target``'s): pre-trained layers under a new head."""
    out = {}
    for collection, layers in target.items():
        src = source.get(collection, {})
        out[collection] = {
            name: (src[name] if name in src and name != "head" else value)
            for name, value in layers.items()
        }
    return out


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (3,) of uint8 images scaled to [0, 1] (of the training set)."""
    images = check_images(images)
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return x.mean(0).astype(np.float32), x.std(0).astype(np.float32)


def standardise(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """``(images / 255 - mean) / std`` as float32; images (B, H, W, C) uint8, mean/std (C,)."""
    shape = (1,) * (images.ndim - 1) + (-1,)
    return (images.astype(jnp.float32) / 255.0 - mean.reshape(shape)) / std.reshape(shape)


def check_images(images: np.ndarray) -> np.ndarray:
    """Checks (n, 32, 32, 3) uint8 colour images; raises InputError naming the problem."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise InputError(
            f"the network takes (n, 32, 32, 3) colour images, got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8, got {images.dtype}")
    if images.shape[0] == 0:
        raise InputError("no images")
    return images


def features(
    model: Net,
    variables: dict,
    images: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    chunk: int = 500,
) -> np.ndarray:
    """Layer-``model.depth`` features (n, D_L) float32 in evaluation mode, ``chunk`` images a
    call (bounded memory; the last chunk is padded so nothing recompiles)."""
    return _chunked(_apply_fn(model, 1), variables, images, mean, std, chunk)


def predict(
    model: Net, variables: dict, images: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """Predicted class (n,) int in evaluation mode."""
    return np.argmax(_chunked(_apply_fn(model, 0), variables, images, mean, std, 500), -1)


def _chunked(fn, variables: dict, images: np.ndarray, mean, std, chunk: int) -> np.ndarray:
    images = check_images(images)
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    return map_chunks(lambda part: fn(variables, part, mean, std), images, chunk)


def map_chunks(fn: Callable[[np.ndarray], jax.Array], x: np.ndarray, chunk: int) -> np.ndarray:
    """``fn`` over ``x`` (n, ...) ``chunk`` rows a call, concatenated as numpy: the last chunk is
    zero-padded to the same shape (nothing recompiles) and the padding's rows dropped."""
    out = []
    for s in range(0, len(x), chunk):
        part = x[s : s + chunk]
        pad = chunk - len(part)
        if pad:
            part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
        out.append(np.asarray(fn(part))[: chunk - pad])
    return np.concatenate(out)


@functools.lru_cache(maxsize=32)
def _apply_fn(model: Net, output: int):
    """Jitted evaluation-mode ``model.apply`` returning output 0 (logits) or 1 (features)."""
    return jax.jit(lambda v, x, mean, std: model.apply(v, standardise(x, mean, std))[output])
