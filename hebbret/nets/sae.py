"""Sparse auto-encoder (SAE) kernels for the first convolution of Kuo, Chou & Chang 2016
(docs/sae_cnn.md §Pre-processing), after Coates, Ng & Lee 2011 and the UFLDL tutorial.

The pipeline, all on flattened patches of D = size * size * C values in (row, column, channel)
order (the order of a Flax ``Conv`` kernel's first three axes, and of
:func:`hebbret.plots.filter_grid`):

1. :func:`sample_patches`: random size x size patches of the unlabelled images, pixels in [0, 1];
2. :func:`fit_zca` / :func:`whiten`: optional per-patch brightness/contrast normalisation
   (Coates et al. 2011), then ZCA whitening ``(x - mean) @ W``;
3. :func:`train`: a one-hidden-layer auto-encoder with sigmoid hidden units and a linear output
   (UFLDL's "linear decoder", for whitened inputs that are not confined to [0, 1]), loss
   :func:`loss`: squared reconstruction error + beta * KL sparsity + weight decay, Adam over
   minibatches, resumable per-epoch checkpoints;
4. :func:`conv_kernels`: the encoder folded with the whitening into (size, size, C, H) convolution
   kernels and H biases for the CNN's first layer.

Example:
  >>> patches = sample_patches(key, images, 100_000)               # (n, 25 * C) in [0, 1]
  >>> w = fit_zca(patches)                                          # normalise + ZCA
  >>> params, losses = train(key, np.asarray(whiten(w, patches)), SAEConfig())
  >>> kernel, bias = conv_kernels(params, w)                        # (5, 5, C, 64), (64,)
"""

from __future__ import annotations

import functools
import math
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebbret import epochs
from hebbret.errors import InputError
from hebbret.nets.zca import PATCH, Whitening, check_patches

_RHO_HAT_CLIP = 1e-6  # keeps log(rho_hat) and log(1 - rho_hat) finite when sigmoids saturate


# ----------------------------------------------------------------------------------------------
# the sparse auto-encoder


class SAEConfig(NamedTuple):
    """Sparse auto-encoder training (the paper gives no constants).

    hidden: H hidden units (the paper's 64 first-layer kernels). rho: target mean activation,
    0.05 (the example value of Ng's CS294A/UFLDL sparse auto-encoder notes). beta: sparsity weight,
    3 (UFLDL's sparse auto-encoder exercise). weight_decay: lambda of (lambda/2)||W||^2, 1e-3
    (between UFLDL's 1e-4 in that exercise and 3e-3 in its linear-decoder exercise, which also
    uses rho 0.035, beta 5). UFLDL optimises the whole set with L-BFGS; we use Adam (learning rate
    ``lr``) over minibatches of ``batch`` patches for ``epochs`` passes.
    """

    hidden: int = 64
    rho: float = 0.05
    beta: float = 3.0
    weight_decay: float = 1e-3
    lr: float = 1e-3
    batch: int = 256
    epochs: int = 20


def init(key: jax.Array, d: int, hidden: int = 64) -> dict[str, jax.Array]:
    """Fresh parameters ``{"W1": (D, H), "b1": (H,), "W2": (H, D), "b2": (D,)}``: weights
    uniform in +-sqrt(6 / (D + H + 1)) (UFLDL's initialisation), biases 0, float32."""
    if d < 1 or hidden < 1:
        raise InputError(f"need D >= 1 inputs and H >= 1 hidden units, got D={d}, H={hidden}")
    r = math.sqrt(6.0 / (d + hidden + 1))
    k1, k2 = jax.random.split(key)
    return {
        "W1": jax.random.uniform(k1, (d, hidden), jnp.float32, -r, r),
        "b1": jnp.zeros((hidden,), jnp.float32),
        "W2": jax.random.uniform(k2, (hidden, d), jnp.float32, -r, r),
        "b2": jnp.zeros((d,), jnp.float32),
    }


def encode(params: dict, x: jax.Array) -> jax.Array:
    """Hidden activations ``h = sigmoid(x @ W1 + b1)``: x (N, D) -> (N, H)."""
    return jax.nn.sigmoid(x @ params["W1"] + params["b1"][None, :])


def decode(params: dict, h: jax.Array) -> jax.Array:
    """Linear decoder ``x_hat = h @ W2 + b2``: h (N, H) -> (N, D)."""
    return h @ params["W2"] + params["b2"][None, :]


def loss(
    params: dict,
    x: jax.Array,
    *,
    rho: float | jax.Array,
    beta: float | jax.Array,
    weight_decay: float | jax.Array,
) -> jax.Array:
    """Sparse auto-encoder loss on a batch x (N, D), a scalar:

        h = sigmoid(x @ W1 + b1),  x_hat = h @ W2 + b2,  rho_hat_j = (1/N) sum_n h_nj
        J = 1/(2N) sum_n ||x_hat_n - x_n||^2
            + beta * sum_j KL(rho || rho_hat_j)
            + (weight_decay / 2) * (||W1||^2 + ||W2||^2)
        KL(rho || q) = rho log(rho / q) + (1 - rho) log((1 - rho) / (1 - q))

    (rho_hat is clipped to [1e-6, 1 - 1e-6] so that saturated units keep the loss finite.)
    """
    n = x.shape[0]
    h = encode(params, x)
    x_hat = decode(params, h)
    rec = 0.5 * jnp.sum(jnp.square(x_hat - x)) / n
    q = jnp.clip(jnp.mean(h, axis=0), _RHO_HAT_CLIP, 1.0 - _RHO_HAT_CLIP)
    kl = jnp.sum(rho * jnp.log(rho / q) + (1.0 - rho) * jnp.log((1.0 - rho) / (1.0 - q)))
    decay = (
        0.5 * weight_decay * (jnp.sum(jnp.square(params["W1"])) + jnp.sum(jnp.square(params["W2"])))
    )
    return rec + beta * kl + decay


@functools.lru_cache(maxsize=8)
def _epoch_fn(lr: float, batch: int):
    """A jitted epoch: (state, patches (n, D), key, (rho, beta, weight_decay)) -> (state, mean
    minibatch loss); one Adam step per full minibatch of a random permutation drawn from ``key``.
    The loss constants are traced arguments, so runs that differ only in them share one
    compilation."""
    tx = optax.adam(lr)

    def epoch(state, patches, key, constants):
        rho, beta, weight_decay = constants

        def step(state, xb):
            value, grads = jax.value_and_grad(loss)(
                state["params"], xb, rho=rho, beta=beta, weight_decay=weight_decay
            )
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            return {"params": params, "opt_state": opt_state}, value

        steps = patches.shape[0] // batch
        order = jax.random.permutation(key, patches.shape[0])[: steps * batch]
        batches = patches[order].reshape(steps, batch, patches.shape[1])
        state, values = jax.lax.scan(step, state, batches)
        return state, jnp.mean(values)

    return jax.jit(epoch)


def train(
    key: jax.Array,
    patches: np.ndarray | jax.Array,
    cfg: SAEConfig = SAEConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    checkpoint_dir: str | pathlib.Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Trains the sparse auto-encoder on (already whitened) patches.

    Parameters from :func:`init` with ``fold_in(key, 0xFFFFFFFF)``; epoch t permutes the patches
    with ``fold_in(key, t)`` and takes one Adam step (``cfg.lr``) on :func:`loss` per full
    minibatch of ``cfg.batch`` (a last partial batch is dropped). With ``checkpoint_dir`` the
    parameters, Adam state and loss history are saved after every epoch and a rerun resumes
    after the last saved epoch (same result as an uninterrupted run).

    Args:
      key: PRNG key.
      patches: (n, D) finite SAE inputs (e.g. ``whiten(w, sample_patches(...))``), n >= cfg.batch.
      cfg: hidden units, rho, beta, weight decay, learning rate, batch, epochs.
      checkpoint_dir: optional directory for per-epoch checkpoints.
      progress: a progress bar over epochs.

    Returns:
      ``(params, losses)``: params ``{"W1": (D, H), "b1": (H,), "W2": (H, D), "b2": (D,)}`` as
      numpy float32, and the mean minibatch loss of every epoch 1..cfg.epochs (restored epochs
      included).
    """
    x = check_patches(patches)
    if cfg.batch < 1 or cfg.hidden < 1 or cfg.epochs < 0:
        raise InputError(
            f"need batch >= 1, hidden >= 1, epochs >= 0; got batch={cfg.batch}, "
            f"hidden={cfg.hidden}, epochs={cfg.epochs}"
        )
    if not 0.0 < cfg.rho < 1.0:
        raise InputError(f"target activation rho must lie in (0, 1), got {cfg.rho}")
    if x.shape[0] < cfg.batch:
        raise InputError(f"need at least batch = {cfg.batch} patches, got {x.shape[0]}")
    x = jnp.asarray(x, jnp.float32)
    tx = optax.adam(cfg.lr)
    params = init(jax.random.fold_in(key, 0xFFFFFFFF), x.shape[1], cfg.hidden)
    constants = tuple(jnp.float32(v) for v in (cfg.rho, cfg.beta, cfg.weight_decay))

    def one_epoch(t: int, run: epochs.Training, tick) -> epochs.Training:
        fn = _epoch_fn(float(cfg.lr), cfg.batch)
        state = {"params": run.params, "opt_state": run.opt_state}
        state, value = fn(state, x, jax.random.fold_in(key, t), constants)
        return epochs.Training(state["params"], state["opt_state"], [*run.losses, float(value)])

    out = epochs.run_training(
        one_epoch, params, tx.init(params), cfg.epochs, desc="sparse auto-encoder",
        show=progress, checkpoint_dir=checkpoint_dir,
    )  # fmt: skip
    return {k: np.asarray(v) for k, v in out.params.items()}, out.losses


# ----------------------------------------------------------------------------------------------
# folding into convolution kernels


def conv_kernels(
    params: dict,
    whitening: Whitening,
    size: int = PATCH,
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's pre-activation folded with the whitening into convolution kernels.

    With A = W1 (D, H), M the ZCA matrix, mu its mean and P = I - (1/D) 1 1^T (the patch-mean
    removal; P = I without per-patch normalisation), in float64:

        kernel = (P M A).reshape(size, size, C, H)       bias = b1 - mu @ M @ A

    A "VALID" convolution (stride 1, no flip: Flax ``Conv`` / ``lax.conv_general_dilated`` with
    (kh, kw, in, out) kernels) of an image scaled as the patches were (e.g. [0, 1]) gives at each
    position, for the patch p there:

    - without normalisation (``whitening.contrast_eps is None``): ``conv(p) + bias`` equals
      ``whiten(p) @ W1 + b1``, the SAE hidden pre-activation, exactly;
    - with normalisation: ``whiten(p) @ W1 + b1 = conv(p) / s(p) + bias`` with
      ``s(p) = sqrt(var(p) + contrast_eps)``: the mean removal is linear and folded in, but a
      convolution cannot divide by each patch's own contrast, so ``conv(p) + bias`` is exact
      only up to that positive per-position scale of the linear term.

    Args:
      params: SAE parameters (W1 (D, H), b1 (H,), ...).
      whitening: the whitening the SAE was trained behind.
      size: kernel side.
      channels: C, image channels (None: D / size**2); D must equal size * size * C.

    Returns:
      ``(kernel, bias)``: (size, size, C, H) and (H,) float32 numpy arrays. As filters for
      :func:`hebbret.plots.filter_grid`: ``kernel.reshape(-1, H).T``.
    """
    w1 = np.asarray(params["W1"], np.float64)
    b1 = np.asarray(params["b1"], np.float64)
    if w1.ndim != 2 or b1.shape != (w1.shape[1],):
        raise InputError(f"W1 must be (D, H) and b1 (H,), got {w1.shape} and {b1.shape}")
    d, hidden = w1.shape
    if channels is None:
        if size < 1 or d % (size * size):
            raise InputError(f"W1 has D={d} inputs, not a multiple of size x size = {size}x{size}")
        channels = d // (size * size)
    if size < 1 or channels < 1 or size * size * channels != d:
        raise InputError(
            f"W1 has D={d} inputs, but a {size}x{size} kernel over {channels} channels has "
            f"{size * size * channels}: wrong channel count or size"
        )
    m = np.asarray(whitening.matrix, np.float64)
    mu = np.asarray(whitening.mean, np.float64)
    if m.shape != (d, d) or mu.shape != (d,):
        raise InputError(
            f"the whitening is for D={mu.shape[0] if mu.ndim == 1 else mu.shape} values "
            f"(matrix {m.shape}), W1 has D={d}"
        )
    ma = m @ w1
    if whitening.contrast_eps is not None:
        ma = ma - ma.mean(axis=0, keepdims=True)  # P @ (M A)
    kernel = ma.reshape(size, size, channels, hidden)
    bias = b1 - mu @ m @ w1
    return kernel.astype(np.float32), bias.astype(np.float32)
