"""Retraining: regress a network's layer output onto target representations (Tzelepi & Tefas
2018, §3 and §5.3).

Minimises Caffe's Euclidean loss ``1/(2B) sum_b ||f(params, inputs_b) - target_b||^2`` with Adam
(beta1 0.9, beta2 0.999, eps 1e-8; the paper's lr 1e-5, batch 64, 50 epochs). ``f`` is any pure
``apply(params, inputs) -> (B, D)``: the library's cut network
(:func:`hebbret.retraining.network.block_apply`) or a user's own Flax module, e.g.
``lambda p, x: model.apply({"params": p}, x)``. Every epoch reshuffles the pairs with
``fold_in(key, epoch)`` and takes ``ceil(M / batch)`` full batches (the last wraps around, so one
compiled step serves every batch); with ``checkpoint_dir`` every epoch is saved through orbax and
a rerun resumes from the last one, giving the uninterrupted result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebbret import epochs
from hebbret.errors import InputError
from hebbret.retraining.targets import TrainingSet


class RetrainConfig(NamedTuple):
    """The paper's optimisation settings (§5.3)."""

    epochs: int = 50
    batch: int = 64
    lr: float = 1e-5


class RetrainResult(NamedTuple):
    """The retrained parameters (numpy) and the mean training loss of every epoch."""

    params: Any
    losses: list[float]


def check_config(cfg: RetrainConfig) -> RetrainConfig:
    """InputError unless epochs >= 0, batch >= 1 and lr > 0 (finite)."""
    if not (isinstance(cfg.epochs, int) and cfg.epochs >= 0):
        raise InputError(f"retraining epochs must be an integer >= 0, got {cfg.epochs!r}")
    if not (isinstance(cfg.batch, int) and cfg.batch >= 1):
        raise InputError(f"retraining batch must be an integer >= 1, got {cfg.batch!r}")
    if not (np.isfinite(cfg.lr) and cfg.lr > 0):
        raise InputError(f"retraining lr must be a positive number, got {cfg.lr!r}")
    return cfg


def euclidean_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Caffe's EuclideanLoss: ``sum ||pred - target||^2 / (2 B)`` for (B, D) arrays."""
    return 0.5 * jnp.sum((pred - target) ** 2) / pred.shape[0]


def retrain(
    apply: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    inputs: np.ndarray,
    pairs: TrainingSet,
    cfg: RetrainConfig = RetrainConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    key: jax.Array,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "retrain",
) -> RetrainResult:
    """Trains ``params`` so that ``apply(params, inputs[pairs.index])`` approaches ``pairs.target``.

    Args:
      apply: pure function (params, (B, ...) inputs) -> (B, D) representations.
      params: the starting trainable parameters (a pytree; not modified).
      inputs: (N, ...) float inputs of every database item (e.g. cached frozen-layer outputs).
      pairs: (M,) input indices into ``inputs`` and (M, D) targets.
      cfg: epochs, batch, learning rate.
      key: PRNG key of the shuffling.
      checkpoint_dir: per-epoch orbax checkpoints; an existing one is resumed.
    """
    cfg = check_config(cfg)
    index, target = np.asarray(pairs.index), np.asarray(pairs.target, np.float32)
    if index.ndim != 1 or len(index) == 0 or target.shape[:1] != index.shape:
        raise InputError(f"need M >= 1 pairs: index {index.shape}, target {target.shape}")
    if index.min() < 0 or index.max() >= len(inputs):
        raise InputError(f"pair indices must lie in [0, {len(inputs)})")
    if not np.isfinite(target).all():
        raise InputError("targets contain NaN or infinite values")
    probe = jax.eval_shape(apply, params, jax.ShapeDtypeStruct((1, *inputs.shape[1:]), jnp.float32))
    if probe.shape[1:] != target.shape[1:]:
        raise InputError(
            f"the layer gives {probe.shape[1:]} features, the targets {target.shape[1:]}"
        )
    tx = optax.adam(cfg.lr, b1=0.9, b2=0.999, eps=1e-8)
    x_dev, t_dev, i_dev = jnp.asarray(inputs, jnp.float32), jnp.asarray(target), jnp.asarray(index)
    steps = -(-len(index) // cfg.batch)

    @jax.jit
    def step(state, rows, x_all, t_all, i_all):  # the data as arguments, not as constants
        p, opt = state

        def loss_fn(p):
            return euclidean_loss(apply(p, x_all[i_all[rows]]), t_all[rows])

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), loss

    def one_epoch(t: int, state: epochs.Training, tick) -> epochs.Training:
        p, opt = state.params, state.opt_state
        perm = jax.random.permutation(jax.random.fold_in(key, t), len(index))
        order = np.resize(np.asarray(perm), steps * cfg.batch)
        total = jnp.float32(0.0)
        for s in range(steps):
            rows = jnp.asarray(order[s * cfg.batch : (s + 1) * cfg.batch])
            (p, opt), loss = step((p, opt), rows, x_dev, t_dev, i_dev)
            total += loss
            tick()
        return epochs.Training(p, opt, [*state.losses, float(total / steps)])

    params = jax.tree.map(jnp.array, params)
    out = epochs.run_training(
        one_epoch, params, tx.init(params), cfg.epochs, desc=desc, steps=steps, show=progress,
        checkpoint_dir=checkpoint_dir, refuse_past_end=True,
        postfix=lambda s: {"loss": f"{s.losses[-1]:.4g}"},
    )  # fmt: skip
    return RetrainResult(jax.tree.map(np.asarray, out.params), out.losses)
