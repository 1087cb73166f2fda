"""Gosthipaty's convolutional auto-encoder, vanilla or with "a hint of supervision"
(docs/autoencoder_retrieval.md), in Flax linen.

    input 32x32x3 in [0, 1]
    enc1  3x3 conv 32,  BN, ReLU, max-pool 2  -> 16x16x32
    enc2  3x3 conv 64,  BN, ReLU, max-pool 2  ->  8x8x64
    enc3  3x3 conv 128, BN, ReLU, max-pool 2  ->  4x4x128
    bottleneck 3x3 conv 16, BN, ReLU          ->  4x4x16 = the 256-d embedding
    dec3  up-sample 2, 3x3 conv 128, BN, ReLU ->  8x8x128
    dec2  up-sample 2, 3x3 conv 64,  BN, ReLU -> 16x16x64
    dec1  up-sample 2, 3x3 conv 32,  BN, ReLU -> 32x32x32
    out   3x3 conv 3, sigmoid                 -> 32x32x3 reconstruction
    head  (supervised variant) dense 256 -> classes on the flattened embedding

The report fixes the block types (Conv-BatchNorm-ReLU; max-pooling after encoder blocks,
up-sampling before decoder blocks; the last encoder convolution is the embedding), Adam with its
default settings and the MSE loss; widths, depth, batch and epochs are ours. Batch norms use
Keras' defaults (momentum 0.99, epsilon 1e-3), the report's framework.

Loss (:func:`loss`): ``mean_p (x^_p - x_p)^2 + weight * CE(logits, y)`` (the supervised variant
adds the cross-entropy; Keras' default loss weights are 1 and 1).
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebbret import epochs
from hebbret.errors import InputError
from hebbret.nets import convnet

WIDTHS = (32, 64, 128)
EMBEDDING_CHANNELS = 16  # 4 x 4 x 16 = 256-d embedding


class ConvAE(nn.Module):
    """Call ``(x (B, 32, 32, 3) float in [0, 1], train)`` -> ``(reconstruction (B, 32, 32, 3),
    embedding (B, 256), logits (B, classes) or None)``; ``num_classes`` 0: no head (vanilla)."""

    num_classes: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False):
        def block(h, width, name):
            h = nn.Conv(width, (3, 3), padding="SAME", name=f"{name}_conv")(h)
            h = nn.BatchNorm(
                use_running_average=not train, momentum=0.99, epsilon=1e-3, name=f"{name}_bn"
            )(h)
            return nn.relu(h)

        h = x
        for i, width in enumerate(WIDTHS):
            h = nn.max_pool(block(h, width, f"enc{i + 1}"), (2, 2), strides=(2, 2))
        code = block(h, EMBEDDING_CHANNELS, "bottleneck")
        h = code
        for i, width in reversed(list(enumerate(WIDTHS))):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest up-sampling, as Keras
            h = block(h, width, f"dec{i + 1}")
        recon = nn.sigmoid(nn.Conv(x.shape[-1], (3, 3), padding="SAME", name="out")(h))
        emb = code.reshape(code.shape[0], -1)
        logits = nn.Dense(self.num_classes, name="head")(emb) if self.num_classes else None
        return recon, emb, logits


class AEConfig(NamedTuple):
    """Training: Adam (optax defaults: lr 1e-3, the report's "default parameter settings"),
    ``epochs`` passes in minibatches of ``batch``; ``weight`` of the cross-entropy (supervised)."""

    epochs: int = 20
    batch: int = 64
    lr: float = 1e-3
    weight: float = 1.0


def init(model: ConvAE, key: jax.Array) -> dict:
    """Fresh ``{"params", "batch_stats"}`` for (B, 32, 32, 3) inputs."""
    variables = model.init(key, jnp.zeros((1, *convnet.IMAGE_SHAPE), jnp.float32))
    return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


def loss(
    recon: jax.Array,
    target: jax.Array,
    logits: jax.Array | None = None,
    labels: jax.Array | None = None,
    weight: float = 1.0,
) -> jax.Array:
    """``mean((recon - target)^2)`` over every pixel, plus ``weight`` times the mean softmax
    cross-entropy of ``logits`` (B, classes) against integer ``labels`` (B,) when given."""
    chex.assert_equal_shape([recon, target])
    value = jnp.mean(jnp.square(recon - target))
    if logits is not None:
        chex.assert_shape(labels, (logits.shape[0],))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        value = value + weight * ce
    return value


@functools.lru_cache(maxsize=8)
def _step(model: ConvAE, cfg: AEConfig):
    tx = optax.adam(cfg.lr)

    def step(variables, opt, raw, y):
        x = raw.astype(jnp.float32) / 255.0

        def objective(params):
            (recon, _, logits), new = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x, train=True, mutable=["batch_stats"],
            )  # fmt: skip
            return loss(recon, x, logits, y, cfg.weight), new["batch_stats"]

        (value, stats), grads = jax.value_and_grad(objective, has_aux=True)(variables["params"])
        updates, opt = tx.update(grads, opt, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        return {"params": params, "batch_stats": stats}, opt, value

    return jax.jit(step), tx


def train(
    key: jax.Array,
    model: ConvAE,
    variables: dict,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    cfg: AEConfig = AEConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict, list[float]]:
    """Trains on (n, 32, 32, 3) uint8 ``images`` (and (n,) ``labels`` for a model with a head).

    Epoch t shuffles with ``fold_in(key, t)``; one Adam step per full minibatch (a last partial
    batch is dropped). With ``checkpoint_dir`` every epoch is saved (orbax) and a rerun resumes,
    giving the uninterrupted result. Returns the variables and the mean loss of each epoch."""
    images = convnet.check_images(images)
    if len(images) < cfg.batch:
        raise InputError(f"need at least batch = {cfg.batch} images, got {len(images)}")
    if model.num_classes:
        labels = np.asarray(labels) if labels is not None else None
        if labels is None or labels.shape != (len(images),):
            raise InputError(f"the supervised auto-encoder needs ({len(images)},) labels")
        if labels.min() < 0 or labels.max() >= model.num_classes:
            raise InputError(f"labels must lie in [0, {model.num_classes})")
    else:
        labels = np.zeros(len(images), np.int32)  # unused by the vanilla loss
    step, tx = _step(model, cfg)
    steps = len(images) // cfg.batch
    variables = jax.tree.map(jnp.asarray, variables)

    def one_epoch(t: int, state: epochs.Training, tick) -> epochs.Training:
        v, opt = state.params, state.opt_state
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, t), len(images)))
        total = jnp.float32(0.0)
        for s in range(steps):
            idx = np.sort(order[s * cfg.batch : (s + 1) * cfg.batch])
            v, opt, value = step(v, opt, images[idx], labels[idx])
            total += value
            tick()
        return epochs.Training(v, opt, [*state.losses, float(total / steps)])

    out = epochs.run_training(
        one_epoch, variables, tx.init(variables["params"]), cfg.epochs, desc="auto-encoder",
        steps=steps, show=progress, checkpoint_dir=checkpoint_dir, refuse_past_end=True,
        postfix=lambda s: {"loss": f"{s.losses[-1]:.4f}"},
    )  # fmt: skip
    return jax.tree.map(np.asarray, out.params), out.losses


def apply(
    model: ConvAE, variables: dict, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(reconstructions (n, 32, 32, 3) in [0, 1], embeddings (n, 256), logits or None)`` in
    float32 (running batch-norm statistics), 500 images a call."""
    images = convnet.check_images(images)
    fn = _apply(model)
    d = int(np.prod(convnet.IMAGE_SHAPE))
    both = convnet.map_chunks(lambda part: fn(variables, part), images, min(500, len(images)))
    recon = both[:, :d].reshape(-1, *convnet.IMAGE_SHAPE)
    emb = both[:, d : d + 16 * EMBEDDING_CHANNELS]
    logits = both[:, d + 16 * EMBEDDING_CHANNELS :] if model.num_classes else None
    return recon, emb, logits


@functools.lru_cache(maxsize=8)
def _apply(model: ConvAE):
    def fn(variables, raw):
        recon, emb, logits = model.apply(variables, raw.astype(jnp.float32) / 255.0)
        parts = [recon.reshape(recon.shape[0], -1), emb] + ([logits] if logits is not None else [])
        return jnp.concatenate(parts, axis=1)

    return jax.jit(fn)
