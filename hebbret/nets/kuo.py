"""Kuo, Chou & Chang's 7-layer CNN (2016, Fig. 5; docs/sae_cnn.md), in Flax linen.

    input 32x32xC (C = 3: RGB; 5: RGB + grey + equalised grey, :mod:`hebbret.nets.augment`)
    conv1 5x5 C->64,   max-pool 2, ReLU  -> 16x16x64  (kernels from the sparse auto-encoder)
    conv2 5x5 64->64,  max-pool 2, ReLU  ->  8x8x64
    conv3 5x5 64->128, max-pool 2, ReLU  ->  4x4x128
    fc4   2048->400,   ReLU              ->  400      (the retrieval feature)
    fc5   400->classes, softmax

The paper fixes the 64 first-layer 5x5 kernels, three convolution + sub-sampling pairs with the
ReLU *after* each sub-sampling, and the 400-d fully connected feature layer; the other widths and
the padding are only drawn in its figure, so they are ours ("SAME" convolutions, 2x2 max-pools).

Training (``train``): cross-entropy, SGD with Nesterov momentum 0.9, weight decay, batch 128, the
learning rate divided by 10 at 60 % and 85 % of the epochs (the paper trains 25 epochs and gives
no optimiser), and with ``flip`` every minibatch's images mirrored at random (the paper's
horizontal reflections). Every epoch reshuffles with ``fold_in(key, epoch)``; with
``checkpoint_dir`` each epoch is saved (orbax) and a rerun resumes, giving the uninterrupted result.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebbret import epochs
from hebbret.errors import InputError
from hebbret.nets import augment, convnet

WIDTHS = (64, 64, 128)
FEATURES = 400
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as augment.grey


class KuoNet(nn.Module):
    """Returns ``(logits (B, classes), features (B, 400))`` for standardised (B, 32, 32, C)."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        for i, width in enumerate(WIDTHS):
            x = nn.Conv(width, (5, 5), padding="SAME", name=f"conv{i + 1}")(x)
            x = nn.relu(nn.max_pool(x, (2, 2), strides=(2, 2)))
        feats = nn.relu(nn.Dense(FEATURES, name="fc4")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="fc5")(feats), feats


class TrainConfig(NamedTuple):
    """Optimisation settings (ours: the paper gives only the 25 epochs)."""

    epochs: int = 25
    batch: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    flip: bool = True


class TrainResult(NamedTuple):
    params: dict
    losses: list[float]


def init(model: KuoNet, key: jax.Array, channels: int) -> dict:
    """Fresh parameters (Flax defaults: LeCun-normal kernels, zero biases) for C channels."""
    if channels not in (3, 5):
        raise InputError(
            f"the network takes 3 (RGB) or 5 (RGB + grey + equalised) channels, got {channels}"
        )
    return model.init(key, jnp.zeros((1, 32, 32, channels), jnp.float32))["params"]


def with_first_layer(params: dict, kernel: np.ndarray, bias: np.ndarray) -> dict:
    """``params`` with conv1's (5, 5, C, 64) kernel and (64,) bias replaced (e.g. the SAE's)."""
    want = params["conv1"]["kernel"].shape
    if tuple(kernel.shape) != tuple(want) or tuple(bias.shape) != (want[-1],):
        raise InputError(
            f"conv1 takes a {tuple(want)} kernel and ({want[-1]},) bias, "
            f"got {kernel.shape} and {bias.shape}"
        )
    conv1 = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    return {**params, "conv1": conv1}


def grey_kernels_to_input(
    kernel: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grey-level kernels folded into conv1 of the standardised 3- or 5-channel input.

    The SAE learns (5, 5, 1, H) kernels ``K`` and biases ``b`` for grey patches ``g`` in [0, 1]
    (:func:`hebbret.nets.sae.conv_kernels`). The network sees channel c as
    ``x_c = (raw_c / 255 - m_c) / s_c`` (``mean``, ``std`` (C,)). With C = 3, grey is the luma
    ``g = sum_c w_c raw_c / 255`` (w = 0.299, 0.587, 0.114), so

        K * g + b = sum_c (w_c s_c K) * x_c + (b + sum(K) sum_c w_c m_c);

    with C = 5 the grey channel (index 3) is given, ``g = s_3 x_3 + m_3``, and ``K`` goes on it
    alone (``s_3 K``; bias ``b + m_3 sum(K)``; RGB and equalised kernels start at 0). Exact for a
    "VALID" position; "SAME" borders see zero-padded ``x_c``, i.e. pixels at the channel mean.
    Returns ``(kernel (5, 5, C, H), bias (H,))`` float32.
    """
    k = np.asarray(kernel, np.float64)
    b = np.asarray(bias, np.float64)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if k.ndim != 4 or k.shape[2] != 1 or b.shape != (k.shape[3],):
        raise InputError(
            f"grey kernels must be (h, w, 1, H) with (H,) biases, got {k.shape} and {b.shape}"
        )
    channels = mean.shape[0]
    if channels not in (3, 5) or mean.shape != std.shape or mean.ndim != 1:
        raise InputError(f"mean and std must be (3,) or (5,), got {mean.shape} and {std.shape}")
    weights = np.array(LUMA) if channels == 3 else np.eye(5)[3]
    out = k * (weights * std)[None, None, :, None]
    offset = b + k.sum((0, 1, 2)) * float(weights @ mean)
    return out.astype(np.float32), offset.astype(np.float32)


def unit_response(kernel: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``kernel`` (5, 5, C, H) with each filter divided by the std of its "SAME" response over
    standardised images ``x`` (n, 32, 32, C): every conv1 unit then starts with unit output
    variance, as a fresh LeCun-normal layer about does (a data-dependent scale, as in LSUV)."""
    k = jnp.asarray(kernel, jnp.float32)
    if k.ndim != 4 or np.ndim(x) != 4 or k.shape[2] != np.shape(x)[-1]:
        raise InputError(f"kernel (5, 5, C, H) and images (n, 32, 32, C) expected, got "
                         f"{k.shape} and {np.shape(x)}")  # fmt: skip
    out = jax.lax.conv_general_dilated(
        jnp.asarray(x, jnp.float32), k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    std = np.asarray(out.reshape(-1, k.shape[-1]).std(0), np.float64)
    if not np.all(np.isfinite(std) & (std > 0)):
        raise InputError("a first-layer filter gives no response on these images (std 0)")
    return (np.asarray(kernel, np.float64) / std).astype(np.float32)


def prepare(images: np.ndarray, channels: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 -> (n, 32, 32, channels) uint8: as is, or with the grey and
    histogram-equalised grey channels appended (:func:`hebbret.nets.augment.five_channels`)."""
    images = convnet.check_images(images)
    if channels == 3:
        return images
    if channels != 5:
        raise InputError(f"channels must be 3 or 5, got {channels}")
    return convnet.map_chunks(augment.five_channels, images, min(2000, len(images)))


def check_inputs(params: dict, images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """InputError unless ``images`` are (n, 32, 32, C) uint8 with C the channels ``params`` were
    built for, and ``mean`` / ``std`` are (C,)."""
    want = int(params["conv1"]["kernel"].shape[2])
    shape, dtype = np.shape(images), getattr(images, "dtype", None)
    if len(shape) != 4 or shape[1:3] != (32, 32) or dtype != np.uint8:
        raise InputError(f"images must be (n, 32, 32, C) uint8, got {dtype} {shape}")
    if shape[3] != want:
        raise InputError(
            f"the network was built for {want} input channels, the images have {shape[3]} "
            f"(kuo.prepare(images, {want}))"
        )
    if np.shape(mean) != (want,) or np.shape(std) != (want,):
        raise InputError(f"mean and std must be ({want},), got {np.shape(mean)}, {np.shape(std)}")


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (C,) of uint8 images scaled to [0, 1]."""
    x = np.asarray(images).reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return x.mean(0).astype(np.float32), x.std(0).astype(np.float32)


def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    """``lr``, divided by 10 from 60 % of the epochs and by 100 from 85 %."""
    drops = (epoch >= round(0.6 * cfg.epochs)) + (epoch >= round(0.85 * cfg.epochs))
    return cfg.lr * 0.1 ** int(drops)


@functools.lru_cache(maxsize=8)
def _step(model: KuoNet, cfg: TrainConfig):
    tx = optax.chain(
        optax.add_decayed_weights(cfg.weight_decay), optax.trace(cfg.momentum, nesterov=True)
    )

    def step(params, opt, raw, y, mean, std, key, lr):
        if cfg.flip:
            raw = augment.random_flip(key, raw)
        x = convnet.standardise(raw, mean, std)

        def loss_fn(p):
            logits, _ = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return jax.tree.map(lambda p, u: p - lr * u, params, updates), opt, loss

    return jax.jit(step), tx


def train(
    key: jax.Array,
    model: KuoNet,
    params: dict,
    images: np.ndarray,
    labels: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    cfg: TrainConfig = TrainConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains ``params`` on (n, 32, 32, C) uint8 ``images`` (from :func:`prepare`) and (n,) labels
    in [0, classes); ``mean``, ``std`` (C,) standardise them. Returns the last epoch's params and
    the mean loss of each epoch."""
    check_inputs(params, images, mean, std)
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be ({len(images)},) integers, got {labels.shape}")
    if labels.min() < 0 or labels.max() >= model.num_classes:
        raise InputError(f"labels must lie in [0, {model.num_classes})")
    step, tx = _step(model, cfg)
    steps = -(-len(images) // cfg.batch)
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    params = jax.tree.map(jnp.array, params)

    def one_epoch(t: int, state: epochs.Training, tick) -> epochs.Training:
        p, opt = state.params, state.opt_state
        ekey = jax.random.fold_in(key, t)
        order = np.resize(np.asarray(jax.random.permutation(ekey, len(images))), steps * cfg.batch)
        lr = jnp.float32(lr_at_epoch(cfg, t))
        total = jnp.float32(0.0)
        for s in range(steps):
            idx = order[s * cfg.batch : (s + 1) * cfg.batch]
            skey = jax.random.fold_in(ekey, s)
            p, opt, loss = step(p, opt, images[idx], labels[idx], mean, std, skey, lr)
            total += loss
            tick()
        return epochs.Training(p, opt, [*state.losses, float(total / steps)])

    out = epochs.run_training(
        one_epoch, params, tx.init(params), cfg.epochs, desc="kuo cnn", steps=steps,
        show=progress, checkpoint_dir=checkpoint_dir, refuse_past_end=True,
        postfix=lambda s: {"loss": f"{s.losses[-1]:.3f}"},
    )  # fmt: skip
    return TrainResult(jax.tree.map(np.asarray, out.params), out.losses)


def outputs(
    model: KuoNet, params: dict, images: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (n, classes), features (n, 400))`` in float32, 500 images a call."""
    check_inputs(params, images, mean, std)
    fn = _apply(model)
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    both = convnet.map_chunks(
        lambda part: jnp.concatenate(fn(params, part, mean, std), axis=1),
        np.asarray(images),
        min(500, len(images)),
    )
    return both[:, : model.num_classes], both[:, model.num_classes :]


@functools.lru_cache(maxsize=8)
def _apply(model: KuoNet):
    return jax.jit(
        lambda p, raw, mean, std: model.apply({"params": p}, convnet.standardise(raw, mean, std))
    )


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of rows whose label is among the ``k`` largest logits (Tables 2-3's top-1/2/3)."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return 100.0 * float(np.mean((top == np.asarray(labels)[:, None]).any(1)))
