"""beta-VAE pre-training baseline of Lagani et al. 2022 (§4.3; docs/hebbian_pca.md §Training).

The encoder is exactly layers 1-5 of :class:`hebbret.nets.convnet.Net` (same submodule names, same
kernels, batch norms and initialisation), followed by a dense layer ``latent`` to the mean and
log-variance of 256 diagonal Gaussian latents. The decoder mirrors it, as in the authors' code:

    z (256) -> dec_fc1 4096, ReLU -> dec_fc2 2304, ReLU -> reshape 3x3x256
    dec_conv4 3x3 transposed 256->192, ReLU   ->  5x5x192
    un-pool 2 (conv3's max-pool indices)      -> 10x10x192
    dec_conv3 3x3 transposed 192->128, ReLU   -> 12x12x128
    dec_conv2 3x3 transposed 128->96,  ReLU   -> 14x14x96
    un-pool 2 (conv1's max-pool indices)      -> 28x28x96
    dec_conv1 5x5 transposed 96->3, linear    -> 32x32x3 (a standardised image)

Un-pooling puts each value at the position its encoder max-pool took its maximum from (zeros
elsewhere): the vector-Jacobian product of the max-pool, see :func:`unpool`.

The loss (:func:`loss`) is squared-error reconstruction of the standardised image plus beta
times the KL divergence to N(0, I), beta = 0.5. :func:`pretrain_vae` trains it on unlabelled
images and returns variables whose layer-1..5 part :func:`~hebbret.nets.convnet.transplant` copies
into a classifier ``Net`` for supervised fine-tuning (the "VAE" regime of the paper).
"""

from __future__ import annotations

import functools
import pathlib
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


class VAEConfig(NamedTuple):
    """beta-VAE pre-training (docs/hebbian_pca.md §Training): KL weight ``beta``, ``epochs``
    passes over the images in minibatches of ``batch``, Adam with learning rate ``lr`` (the paper
    leaves the optimiser open; Adam is our choice), ``latents`` Gaussian latent variables."""

    beta: float = 0.5
    epochs: int = 20
    batch: int = 64
    lr: float = 1e-3
    latents: int = 256


def _pool(a: jax.Array) -> jax.Array:
    return nn.max_pool(a, (2, 2), strides=(2, 2))


def unpool(pre_pool: jax.Array, values: jax.Array) -> jax.Array:
    """Max-un-pooling with the indices of a 2x2, stride-2 max-pool.

    Args:
      pre_pool: (B, H, W, C) the max-pool's input (only its argmax positions are used; no
        gradient flows into it).
      values: (B, H // 2, W // 2, C) values to place.

    Returns:
      (B, H, W, C): each value at the argmax position of its pooling window, zero elsewhere
      (the pullback of the max-pool, ``vjp(max_pool, pre_pool)(values)``; on a tie one position
      of the window gets the value). Rows/columns a floor-ing pool dropped stay zero.
    """
    _, pull = jax.vjp(_pool, jax.lax.stop_gradient(pre_pool))
    (out,) = pull(values)
    return out


class VAE(nn.Module):
    """beta-VAE whose encoder is layers 1-5 of :class:`hebbret.nets.convnet.Net` (Lagani et al. §3).

    Attributes:
      latents: number of Gaussian latent variables (256).

    Call:
      x (B, 32, 32, 3) standardised float images; ``train`` uses batch statistics in the batch
      norms (updating the running ones: ``mutable=["batch_stats"]``) and samples
      ``z = mean + exp(logvar / 2) * eps`` with eps from the "sample" rng; otherwise z = mean.
      Returns the reconstruction (B, 32, 32, 3), mean (B, latents) and logvar (B, latents).
    """

    latents: int = 256

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        init = nn.initializers.xavier_uniform()
        h, pre_pools = convnet.trunk(self, x, len(convnet.LAYERS), init, train=train)
        stats = nn.Dense(2 * self.latents, kernel_init=init, name="latent")(h)
        mean, logvar = stats[:, : self.latents], stats[:, self.latents :]
        if train:
            eps = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
            z = mean + jnp.exp(0.5 * logvar) * eps
        else:
            z = mean
        d = nn.relu(nn.Dense(4096, kernel_init=init, name="dec_fc1")(z))
        d = nn.relu(nn.Dense(2304, kernel_init=init, name="dec_fc2")(d))
        d = d.reshape(d.shape[0], 3, 3, 256)

        def deconv(features: int, kernel: int, name: str) -> nn.ConvTranspose:
            return nn.ConvTranspose(
                features, (kernel, kernel), padding="VALID", kernel_init=init, name=name
            )

        d = nn.relu(deconv(192, 3, "dec_conv4")(d))  # 5x5x192
        d = unpool(pre_pools["conv3"], d)  # 10x10x192
        d = nn.relu(deconv(128, 3, "dec_conv3")(d))  # 12x12x128
        d = nn.relu(deconv(96, 3, "dec_conv2")(d))  # 14x14x96
        d = unpool(pre_pools["conv1"], d)  # 28x28x96
        recon = deconv(x.shape[-1], 5, "dec_conv1")(d)  # 32x32x3
        return recon, mean, logvar


def loss(
    recon: jax.Array,
    target: jax.Array,
    mean: jax.Array,
    logvar: jax.Array,
    beta: float | jax.Array,
) -> jax.Array:
    """beta-VAE loss (Lagani et al. 2022 §4.3: MSE + beta * KL), a scalar.

    With B images, reconstruction x^_b and (standardised) target x_b of P = H*W*C pixels, and
    latent means mu_bj and log-variances lv_bj:

        recon = (1/B) sum_b sum_p (x^_bp - x_bp)^2
        KL    = (1/B) sum_b sum_j (mu_bj^2 + exp(lv_bj) - 1 - lv_bj) / 2
        loss  = recon + beta * KL

    (per-image sums averaged over the batch, the usual VAE convention: KL(q(z|x) || N(0, I))).

    Args:
      recon, target: (B, H, W, C) float.
      mean, logvar: (B, latents).
      beta: KL weight.
    """
    chex.assert_equal_shape([recon, target])
    chex.assert_rank([mean, logvar], 2)
    chex.assert_equal_shape([mean, logvar])
    chex.assert_equal_shape_prefix([target, mean], 1)
    batch = target.shape[0]
    rec = jnp.sum(jnp.square(recon - target)) / batch
    kl = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar) / batch
    return rec + beta * kl


def init(model: VAE, key: jax.Array) -> dict:
    """Fresh variables ``{"params", "batch_stats"}`` of ``model`` for (B, 32, 32, 3) inputs."""
    dummy = jnp.zeros((1, *convnet.IMAGE_SHAPE), jnp.float32)
    variables = jax.jit(lambda k: model.init(k, dummy))(key)
    return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


@functools.lru_cache(maxsize=8)
def _step_fn(model: VAE, lr: float, beta: float):
    tx = optax.adam(lr)

    def step(state, raw, mean, std, key):
        x = convnet.standardise(raw, mean, std)

        def objective(params):
            (recon, mu, logvar), new = model.apply(
                {"params": params, "batch_stats": state["batch_stats"]},
                x,
                train=True,
                rngs={"sample": key},
                mutable=["batch_stats"],
            )
            return loss(recon, x, mu, logvar, beta), new["batch_stats"]

        (value, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, value

    return jax.jit(step, donate_argnums=0)


def pretrain_vae(
    key: jax.Array,
    images: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    cfg: VAEConfig = VAEConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    checkpoint_dir: str | pathlib.Path | None = None,
    progress: bool = True,
) -> tuple[dict, list[float]]:
    """beta-VAE pre-training of layers 1-5 (Lagani et al. 2022 §4.3) on unlabelled images.

    Xavier-initialised :class:`VAE` variables (from ``key``); epoch t shuffles the images with
    ``fold_in(key, t)`` and takes one Adam step on :func:`loss` (beta = ``cfg.beta``) per full
    minibatch (a last partial batch is dropped), latents sampled with a key derived from ``key``
    and the step number. With ``checkpoint_dir`` the parameters, batch statistics, Adam state and
    loss history are saved after every epoch and a rerun resumes after the last saved epoch.

    Args:
      key: PRNG key.
      images: (n, 32, 32, 3) uint8 training images, n >= cfg.batch.
      mean, std: (3,) channel statistics for :func:`hebbret.nets.convnet.standardise`.
      cfg: beta, epochs, batch, learning rate, latents.
      checkpoint_dir: optional directory for per-epoch checkpoints.
      progress: tqdm bar over minibatches.

    Returns:
      ``(variables, history)``: variables ``{"params", "batch_stats"}`` of ``VAE(cfg.latents)``
      as numpy arrays (give them to :func:`hebbret.nets.convnet.transplant` to initialise a
      ``Net``), and history, the mean minibatch loss of every epoch 1..cfg.epochs (epochs done
      by an earlier, checkpointed run included: the history is checkpointed with the state).
    """
    images = convnet.check_images(images)
    if images.shape[0] < cfg.batch:
        raise InputError(f"need at least batch = {cfg.batch} images, got {images.shape[0]}")
    model = VAE(cfg.latents)
    tx = optax.adam(cfg.lr)
    init_key, sample_key = jax.random.split(jax.random.fold_in(key, 0xFFFFFFFF))
    variables = init(model, init_key)
    fresh = {**variables, "opt_state": tx.init(variables["params"])}
    opt_structure = jax.tree.structure(fresh["opt_state"])
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    steps = images.shape[0] // cfg.batch

    def one_epoch(t: int, run: tuple[dict, list[float]], tick) -> tuple[dict, list[float]]:
        state, history = run
        # cached, and built only when there is an epoch left to run
        step = _step_fn(model, float(cfg.lr), float(cfg.beta))
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, t), images.shape[0]))
        total = jnp.float32(0.0)
        for s in range(steps):
            batch = images[np.sort(order[s * cfg.batch : (s + 1) * cfg.batch])]
            k = jax.random.fold_in(sample_key, t * steps + s)
            state, value = step(state, batch, mean, std, k)
            total = total + value
            tick()
        return state, [*history, float(total / steps)]

    def from_tree(tree: dict) -> tuple[dict, list[float]]:
        opt_leaves = [tree["opt_state"][str(i)] for i in range(len(tree["opt_state"]))]
        restored = {
            "params": tree["params"],
            "batch_stats": tree["batch_stats"],
            "opt_state": jax.tree.unflatten(opt_structure, opt_leaves),
        }
        return restored, [float(v) for v in np.asarray(tree["history"])]

    state, history = epochs.run(
        one_epoch,
        (fresh, []),
        cfg.epochs,
        desc="beta-vae",
        steps=steps,
        show=progress,
        checkpoint_dir=checkpoint_dir,
        to_tree=lambda run: _saveable(run[0], np.asarray(run[1], np.float32)),
        like=lambda last: _saveable(fresh, np.zeros(last, np.float32)),
        from_tree=from_tree,
    )
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return jax.tree.map(np.asarray, variables), history


def _saveable(state: dict, history: np.ndarray) -> dict:
    """The checkpointed tree: the training state with the optimiser state as ``{"0": leaf, ...}``
    (orbax does not restore optax's named tuples into the same structure) plus the history."""
    opt = {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(state["opt_state"]))}
    return {
        "params": state["params"],
        "batch_stats": state["batch_stats"],
        "opt_state": opt,
        "history": history,
    }
