"""One loop over epochs for every training loop: resume, per-epoch checkpoints, progress bar.

The numerics live in the caller's ``epoch(t, state, tick) -> state`` (jitted steps, pure, no
files); :func:`run` owns everything around them:

- resume: with ``checkpoint_dir``, the latest step ``s`` saved there
  (:func:`hebbret.checkpoints.latest_step`) is restored and epochs ``s, s + 1, ...`` run;
- saving: after epoch t (0-based) the state is saved as step ``t + 1``
  (:func:`hebbret.checkpoints.save_step`, which keeps only the latest step);
- the progress bar (:func:`hebbret.progress.bar`): over epochs, or over minibatches when the
  loop gives ``steps`` per epoch (the epoch function then calls ``tick()`` after each one);
- early stopping: ``stop(state)`` after an epoch ends the loop.

Example:
  >>> def epoch(t, w, tick):
  ...     return w + 1.0
  >>> run(epoch, jnp.zeros(3), 5, desc="demo", checkpoint_dir="/tmp/ckpt")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from hebbret import checkpoints, progress
from hebbret.errors import InputError


def run[S](
    epoch: Callable[[int, S, Callable[[], None]], S],
    state: S,
    epochs: int,
    *,
    desc: str,
    steps: int | None = None,
    show: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    to_tree: Callable[[S], Any] | None = None,
    like: Callable[[int], Any] | None = None,
    from_tree: Callable[[Any], S] | None = None,
    refuse_past_end: bool = False,
    prepare: Callable[[S], S] | None = None,
    stop: Callable[[S], bool] | None = None,
    postfix: Callable[[S], dict[str, str]] | None = None,
) -> S:
    """Runs ``epoch(t, state, tick)`` for t = start, ..., ``epochs`` - 1 and returns the state.

    Args:
      epoch: one epoch's work; ``tick()`` advances a per-minibatch bar (a no-op otherwise).
      state: the state before epoch 0 (also the structure a checkpoint is restored into).
      epochs: number of epochs in all (restored ones included).
      desc: the progress bar's label.
      steps: minibatches per epoch: the bar counts them (unit "batch"); None: it counts epochs.
      show: show the progress bar.
      checkpoint_dir: optional directory of per-epoch checkpoints ``<dir>/<epoch>``.
      to_tree: state -> the pytree saved (default: the state itself).
      like: step s -> the pytree structure saved at step s (default: ``to_tree(state)``).
      from_tree: restored pytree -> state (default: the pytree itself).
      refuse_past_end: InputError if ``checkpoint_dir`` holds a step past ``epochs`` (otherwise
        that step is restored and no epoch runs).
      prepare: applied once to the state after any resume, before the first epoch (e.g. placing
        it on a device mesh).
      stop: after each epoch (and its checkpoint), end the loop when ``stop(state)`` is true.
      postfix: state -> fields shown on the bar after each epoch.

    Returns:
      the state after the last epoch run.
    """
    to_tree = to_tree or _same
    from_tree = from_tree or _same
    start = 0
    if checkpoint_dir is not None:
        last = checkpoints.latest_step(checkpoint_dir)
        if last is not None and refuse_past_end and last > epochs:
            raise InputError(
                f"{checkpoint_dir} holds epoch {last}, past the {epochs} asked for "
                "(only the latest epoch is kept): use another checkpoint_dir"
            )
        if last is not None:
            shape = like(last) if like is not None else to_tree(state)
            state = from_tree(checkpoints.restore_step(checkpoint_dir, last, shape))
            start = last
    if prepare is not None:
        state = prepare(state)
    per_epoch = 1 if steps is None else steps
    bar = progress.bar(
        total=epochs * per_epoch,
        initial=min(start, epochs) * per_epoch,
        desc=desc,
        unit="epoch" if steps is None else "batch",
        enabled=show,
    )
    tick = bar.update if steps is not None else _nothing
    for t in range(start, epochs):
        state = epoch(t, state, tick)
        if steps is None:
            bar.update(1)
        if checkpoint_dir is not None:
            checkpoints.save_step(checkpoint_dir, t + 1, to_tree(state))
        if show and postfix is not None:
            bar.set_postfix(**postfix(state))
        if stop is not None and stop(state):
            break
    bar.close()
    return state


def _same(x: Any) -> Any:
    return x


def _nothing() -> None:
    pass


class Training(NamedTuple):
    """The state of a gradient training loop: parameters, optax state, mean loss per epoch."""

    params: Any
    opt_state: Any
    losses: list[float]


def run_training(
    epoch: Callable[[int, Training, Callable[[], None]], Training],
    params: Any,
    opt_state: Any,
    epochs: int,
    **options: Any,
) -> Training:
    """:func:`run` for a :class:`Training` state (``options``: :func:`run`'s keywords). The optax
    state is checkpointed as its numbered leaves (orbax does not restore optax's named tuples into
    the same structure) and the losses as an array of the finished epochs."""
    start = Training(params, opt_state, [])
    structure = jax.tree.structure(opt_state)

    def to_tree(s: Training) -> dict[str, Any]:
        opt = {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(s.opt_state))}
        return {"params": s.params, "opt_state": opt, "losses": np.asarray(s.losses, np.float32)}

    def from_tree(tree: dict[str, Any]) -> Training:
        leaves = [tree["opt_state"][str(i)] for i in range(len(tree["opt_state"]))]
        losses = [float(v) for v in np.asarray(tree["losses"])]
        return Training(tree["params"], jax.tree.unflatten(structure, leaves), losses)

    return run(
        epoch, start, epochs, to_tree=to_tree, from_tree=from_tree,
        like=lambda last: to_tree(start._replace(losses=[0.0] * last)), **options,
    )  # fmt: skip
