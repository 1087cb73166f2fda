"""Hebbian PCA (Lagani et al. 2022, eq. 2; docs/hebbian_pca.md) for dense and conv layers.

The nonlinear Hebbian PCA rule (Sanger's generalised Hebbian algorithm with an activation f), for
neurons i = 1..n with weight vectors w_i, input x and ``y_i = w_i . x``:

    dw_i = eta * f(y_i) * (x - sum_{j <= i} f(y_j) w_j)                               (eq. 2)

averaged over N inputs. Stacking the inputs as rows of X (N, d), the weights as rows of W (n, d)
and the responses ``R = f(X W^T)`` (N, n), the average is the matrix form

    dW = (R^T X - tril(R^T R) W) / N.

For a convolutional layer every receptive-field patch is one input x, so N = batch * positions.
``R^T X`` is then the gradient of ``sum(R * conv(x, W))`` with respect to the kernel: computed
here as the convolution's kernel cotangent (``jax.vjp``), without materialising the patches.
``R^T R`` is an (n, n) sum over batch and positions. Flax layouts are used throughout: a dense
kernel is W^T (d, n), a conv kernel is (kh, kw, c_in, n) with W = kernel.reshape(d, n).T.

:func:`hebbian_step` applies the rule to every Hebbian layer of a network in one forward pass
(the way the authors ran it: all layers at once, f = ReLU, plain SGD with lr 1e-3, batch-norm
running statistics updating); :func:`hebbret.rules.hpca_train.pretrain` runs it for epochs over a
training set, optionally data-parallel over a device mesh, resuming from orbax checkpoints.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hebbret.nets import convnet


class HebbianConfig(NamedTuple):
    """Hebbian phase (docs/hebbian_pca.md §Learning rule): plain SGD with ``lr``, ``epochs``
    passes in minibatches."""

    lr: float = 1e-3
    epochs: int = 20
    batch: int = 64


# --------------------------------------------------------------------------------------------
# The rule (eq. 2, matrix form)
# --------------------------------------------------------------------------------------------


_HI = jax.lax.Precision.HIGHEST
_BLOCK = 64


def _lower_term(w_t: jax.Array, r: jax.Array) -> jax.Array:
    """``(tril(R^T R) W)^T`` (d, n) for R (N, n), W^T (d, n), by the cheaper of two exact forms.

    Direct: the (n, n) Gram matrix, then ``W^T triu(G)``: N n^2 + n^2 d multiply-adds. Blocked,
    for few inputs and many neurons (a dense layer, N = batch): with the neurons in blocks of b,
    row i of block I is ``sum_s r_si P_I[s] + sum_{j in I, j <= i} G_ij w_j`` where
    ``P_I = sum_{J < I} R_J W_J`` (N, d) is an exclusive prefix sum over blocks: 2 N n d +
    N n b + n b d. For fc5 (N = 64, n = 4,096, d = 2,304) that is 1.8 G instead of 40 G.
    """
    chex.assert_rank([w_t, r], 2)
    chex.assert_equal_shape([w_t, r], dims=1)
    (num, n), d = r.shape, w_t.shape[0]
    direct = num * n * n + n * n * d
    blocked = 2 * num * n * d + num * n * _BLOCK + n * _BLOCK * d
    if n % _BLOCK or direct <= blocked:
        gram = jnp.einsum("si,sj->ij", r, r, precision=_HI)
        return jnp.matmul(w_t, jnp.triu(gram), precision=_HI)
    rb = r.reshape(num, n // _BLOCK, _BLOCK)
    wb = w_t.reshape(d, n // _BLOCK, _BLOCK)
    q = jnp.einsum("sJj,dJj->sJd", rb, wb, precision=_HI)  # R_J W_J
    prefix = jnp.cumsum(q, axis=1) - q  # P_I = sum_{J < I} R_J W_J
    off = jnp.einsum("sIi,sId->dIi", rb, prefix, precision=_HI)
    gram = jnp.einsum("sIi,sIj->Iij", rb, rb, precision=_HI)  # diagonal blocks G_II
    diag = jnp.einsum("Iij,dIj->dIi", jnp.tril(gram), wb, precision=_HI)
    return (off + diag).reshape(d, n)


def dense_update(kernel: jax.Array, x: jax.Array, r: jax.Array) -> jax.Array:
    """HPCA update of a dense layer (Lagani et al. 2022, eq. 2, matrix form), layout (d, n).

    Args:
      kernel: (d, n) = W^T.
      x: (N, d) inputs.
      r: (N, n) responses ``f(x @ kernel)``.

    Returns:
      (d, n) ``dW^T = (X^T R - W^T triu(R^T R)) / N`` (the average of eq. 2 over the N inputs).
    """
    chex.assert_rank([kernel, x, r], 2)
    chex.assert_shape(x, (r.shape[0], kernel.shape[0]))
    chex.assert_shape(r, (x.shape[0], kernel.shape[1]))
    n_in = x.shape[0]
    rtx = jnp.einsum("sd,si->di", x, r, precision=_HI)
    return (rtx - _lower_term(kernel, r)) / n_in


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_update(kernel: jax.Array, x: jax.Array, r: jax.Array) -> jax.Array:
    """HPCA update of a conv layer (valid, stride 1): every patch is one input of eq. 2
    (Lagani et al. 2022).

    Args:
      kernel: (kh, kw, c, n) HWIO; W = kernel.reshape(kh * kw * c, n).T.
      x: (B, H, W, c) layer input.
      r: (B, H - kh + 1, W - kw + 1, n) responses ``f(conv(x, kernel))``.

    Returns:
      (kh, kw, c, n) update, eq. 2 averaged over the N = B * positions patches. ``R^T X`` is the
      kernel cotangent of the convolution (no patch matrix); ``tril(R^T R) W`` a (d, n) matmul.
    """
    chex.assert_rank([kernel, x, r], 4)
    (kh, kw, c, n), (b, h, w, _) = kernel.shape, x.shape
    chex.assert_shape(x, (b, h, w, c))
    chex.assert_shape(r, (b, h - kh + 1, w - kw + 1, n))
    _, pull = jax.vjp(lambda k: _conv(x, k), kernel)
    (rtx,) = pull(r)
    n_out = r.shape[-1]
    flat_r = r.reshape(-1, n_out)
    lower = _lower_term(kernel.reshape(-1, n_out), flat_r).reshape(kernel.shape)
    return (rtx - lower) / flat_r.shape[0]


def unfold(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Reference im2col: (B, H, W, c) -> (B * H' * W', kh * kw * c) patches in HWIO order."""
    b, h, w, c = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    cols = np.empty((b, ho, wo, kh, kw, c), x.dtype)
    for a in range(kh):
        for e in range(kw):
            cols[:, :, :, a, e, :] = x[:, a : a + ho, e : e + wo, :]
    return cols.reshape(b * ho * wo, kh * kw * c)


# --------------------------------------------------------------------------------------------
# All Hebbian layers of a network at once
# --------------------------------------------------------------------------------------------


def hebbian_step(
    model: convnet.Net, variables: dict, images: jax.Array, lr: float | jax.Array
) -> dict:
    """One Hebbian minibatch step on every layer of ``model`` (pure; jit it).

    A training-mode forward pass (batch-norm statistics of the batch, running statistics
    updated) records each layer's input and ReLU response; every kernel then moves by
    ``lr * dW`` (:func:`conv_update` / :func:`dense_update`). Batch-norm scales, offsets and the
    classifier head are not Hebbian and stay as they are.

    Args:
      model: a :class:`hebbret.nets.convnet.Net`.
      variables: its ``{"params", "batch_stats"}``.
      images: (B, 32, 32, 3) standardised float images.
      lr: Hebbian learning rate.

    Returns:
      the new variables.
    """
    chex.assert_rank(images, 4)
    _, state = model.apply(
        variables, images, train=True, hebbian=True, mutable=["batch_stats", "hebbian"]
    )
    params = dict(variables["params"])
    for key, ((inp, resp),) in state["hebbian"].items():
        name = key.removesuffix("_io")
        kernel = params[name]["kernel"]
        update = conv_update if kernel.ndim == 4 else dense_update
        params[name] = {**params[name], "kernel": kernel + lr * update(kernel, inp, resp)}
    return {"params": params, "batch_stats": state["batch_stats"]}


@functools.lru_cache(maxsize=8)
def _step_fn(model: convnet.Net):
    """Jitted ``(variables, raw uint8 images, mean, std, lr) -> variables``: standardise, then
    :func:`hebbian_step` (the variables are donated)."""

    def step(variables, raw, mean, std, lr):
        return hebbian_step(model, variables, convnet.standardise(raw, mean, std), lr)

    return jax.jit(step, donate_argnums=0)
