"""Supervised training of :class:`hebbret.nets.convnet.Net` on the labelled images.

Lagani et al.'s recipe (2022, §4.3; docs/hebbian_pca.md §Training): end-to-end SGD, batch 64,
Nesterov momentum 0.9, L2 weight decay (5e-2 on CIFAR-10, 1e-2 on CIFAR-100; added to the gradient
as PyTorch's ``weight_decay`` does), cross-entropy, dropout 0.5 before the head, 20 epochs with the
learning rate 1e-3 constant for 10 epochs and then halved every 2 epochs (the paper's text; the
authors' code halves it every epoch from 10 to 19), and early stopping on validation accuracy: the
returned variables are those of the epoch with the best validation accuracy.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hebbret import epochs
from hebbret.errors import InputError
from hebbret.nets import convnet


class FinetuneConfig(NamedTuple):
    """Supervised phase hyperparameters (Lagani et al. 2022, §4.3)."""

    epochs: int = 20
    batch: int = 64
    lr: float = 1e-3
    hold: int = 10  # epochs at the initial learning rate
    halve_every: int = 2  # then halve it every this many epochs
    momentum: float = 0.9
    weight_decay: float = 5e-2


class FinetuneResult(NamedTuple):
    """Best-on-validation variables and the per-epoch history."""

    variables: dict
    best_epoch: int  # 1-based
    val_accuracy: list[float]
    train_loss: list[float]


def lr_at_epoch(cfg: FinetuneConfig, epoch: jax.Array | int) -> jax.Array:
    """``lr * 0.5 ** n(epoch)``; n = 0 for epoch < hold, else ``(epoch - hold) // halve_every + 1``
    (0-based epochs: 1e-3 for 0..9, 5e-4 for 10-11, 2.5e-4 for 12-13, ...)."""
    e = jnp.asarray(epoch)
    halvings = jnp.where(e < cfg.hold, 0, (e - cfg.hold) // cfg.halve_every + 1)
    return cfg.lr * 0.5**halvings


def optimiser(cfg: FinetuneConfig) -> optax.GradientTransformation:
    """L2 weight decay added to the gradient, then Nesterov momentum (``optax.sgd`` without its
    final ``-lr`` scaling: the step applies ``-lr_at_epoch`` itself, so the learning rate is a
    traced argument and one compiled step serves every schedule and dataset size)."""
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay),
        optax.trace(decay=cfg.momentum, nesterov=True),
    )


@functools.lru_cache(maxsize=16)
def _train_step(model: convnet.Net, cfg: FinetuneConfig):
    tx = optimiser(cfg)

    def loss_fn(params, batch_stats, x, y, key):
        (logits, _), state = model.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, state["batch_stats"]

    def step(variables, opt_state, raw, y, mean, std, key, lr):
        x = convnet.standardise(raw, mean, std)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, stats), grads = grad_fn(variables["params"], variables["batch_stats"], x, y, key)
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        params = jax.tree.map(lambda p, u: p - lr * u, variables["params"], updates)
        return {"params": params, "batch_stats": stats}, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def finetune(
    key: jax.Array,
    model: convnet.Net,
    variables: dict,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    mean: np.ndarray,
    std: np.ndarray,
    cfg: FinetuneConfig = FinetuneConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    progress: bool = True,
) -> FinetuneResult:
    """Trains ``model`` end to end from ``variables`` on ``train`` = (images, labels).

    Every epoch reshuffles the labelled images with ``fold_in(key, epoch)`` and takes
    ``ceil(n / batch)`` full batches (the last one wraps around, so no batch has another shape);
    validation accuracy is measured after each epoch and the best epoch's variables are returned.

    Args:
      key: PRNG key (shuffling and dropout).
      model: the network (its depth and head width).
      variables: initial ``{"params", "batch_stats"}`` (fresh, or pre-trained layers
        :func:`hebbret.nets.convnet.transplant`-ed under a fresh head).
      train: (n, 32, 32, 3) uint8 images and (n,) integer labels in [0, model.num_classes).
      val: validation images and labels, same format.
      mean, std: (3,) channel statistics for :func:`hebbret.nets.convnet.standardise`.
      cfg: the schedule and regularisation.
      progress: tqdm bar over epochs with the validation accuracy.

    Returns:
      :class:`FinetuneResult` (variables as numpy arrays).
    """
    x, y = _check_labelled(train, model.num_classes, "training")
    vx, vy = _check_labelled(val, model.num_classes, "validation")
    steps = -(-len(x) // cfg.batch)
    step = _train_step(model, cfg)
    variables = jax.tree.map(jnp.array, variables)  # copies: the step donates its inputs
    opt_state = optimiser(cfg).init(variables["params"])
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

    def one_epoch(epoch: int, state: _State, tick) -> _State:
        variables, opt_state = state.variables, state.opt_state
        ekey = jax.random.fold_in(key, epoch)
        order = np.resize(np.asarray(jax.random.permutation(ekey, len(x))), steps * cfg.batch)
        lr = lr_at_epoch(cfg, epoch).astype(jnp.float32)
        total = jnp.float32(0.0)
        for s in range(steps):
            idx = order[s * cfg.batch : (s + 1) * cfg.batch]
            skey = jax.random.fold_in(ekey, s)
            variables, opt_state, loss = step(
                variables, opt_state, x[idx], y[idx], mean, std, skey, lr
            )
            total += loss
        acc = float(np.mean(convnet.predict(model, variables, vx, mean, std) == vy))
        state = state._replace(
            variables=variables,
            opt_state=opt_state,
            accs=[*state.accs, acc],
            losses=[*state.losses, float(total) / steps],
        )
        if acc > state.best_acc:
            best = jax.tree.map(np.asarray, variables)
            state = state._replace(best=best, best_acc=acc, best_epoch=epoch + 1)
        return state

    state = epochs.run(
        one_epoch,
        _State(variables, opt_state, None, -1.0, 0, [], []),
        cfg.epochs,
        desc="finetune",
        show=progress,
        postfix=lambda s: {"loss": f"{s.losses[-1]:.3f}", "val_acc": f"{s.accs[-1]:.3f}"},
    )
    return FinetuneResult(state.best, state.best_epoch, state.accs, state.losses)


class _State(NamedTuple):
    """The loop's state after an epoch: current and best-on-validation variables, histories."""

    variables: dict
    opt_state: Any
    best: dict | None
    best_acc: float
    best_epoch: int
    accs: list[float]
    losses: list[float]


def _check_labelled(pair, num_classes: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = pair
    if labels is None:
        raise InputError(f"missing {what} labels")
    images = convnet.check_images(images)
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise InputError(f"{what} labels must have shape ({len(images)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{what} labels must be integers, got {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise InputError(
            f"{what} labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    return images, labels.astype(np.int32)
