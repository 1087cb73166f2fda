"""Hebbian PCA pre-training (Lagani et al. 2022, eq. 2; docs/hebbian_pca.md) over epochs.

:func:`pretrain` runs :func:`hebbret.rules.hpca.hebbian_step` (the rule on every Hebbian layer
at once) over the full minibatches of a reshuffled training set each epoch, optionally
data-parallel over a device mesh, with a checkpoint after every epoch and resume
(:func:`hebbret.epochs.run`).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hebbret import epochs
from hebbret import mesh as meshes
from hebbret.errors import InputError
from hebbret.nets import convnet
from hebbret.rules.hpca import HebbianConfig, _step_fn


def pretrain(
    key: jax.Array,
    images: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    cfg: HebbianConfig = HebbianConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    num_classes: int = 10,
    mesh: Mesh | None = None,
    checkpoint_dir: str | pathlib.Path | None = None,
    keep_variance: bool = True,
    progress: bool = True,
) -> dict:
    """Hebbian pre-training of layers 1-5 of :class:`hebbret.nets.convnet.Net` on unlabelled images.

    Kernels start uniform in +-1/sqrt(fan_in) (drawn from the first half of ``split(key)``);
    epoch t shuffles the images with ``fold_in`` of the second half and t, and runs
    :func:`hebbret.rules.hpca.hebbian_step` on every full minibatch. With ``mesh`` (1-D, axis
    "data") each minibatch is split over the devices: the updates are global sums, so the result
    equals the single-device one to float tolerance. With ``checkpoint_dir`` the variables are
    saved (orbax) as ``<checkpoint_dir>/<epoch>`` after every epoch and a rerun resumes from the
    last one.

    Args:
      key: PRNG key.
      images: (n, 32, 32, 3) uint8 training images, n >= cfg.batch.
      mean, std: (3,) channel statistics for :func:`hebbret.nets.convnet.standardise`.
      cfg: learning rate, epochs, batch.
      num_classes: width of the (untrained) head, so the variables fit a classifier later.
      mesh: optional device mesh from :func:`hebbret.mesh.data_mesh`.
      checkpoint_dir: optional directory for per-epoch checkpoints.
      keep_variance: bn3-bn5 keep relative channel variance, as in the authors' Hebbian
        network (:class:`hebbret.nets.convnet.Net`); fine-tune the result with the same setting.
      progress: tqdm bar over minibatches.

    Returns:
      variables ``{"params", "batch_stats"}`` of ``Net(num_classes, depth=5)`` (numpy arrays).
    """
    images = convnet.check_images(images)
    if images.shape[0] < cfg.batch:
        raise InputError(f"need at least batch = {cfg.batch} images, got {images.shape[0]}")
    meshes.check(mesh, meshes.DATA)
    if cfg.batch % meshes.size(mesh):
        raise InputError(f"batch {cfg.batch} must divide by the {meshes.size(mesh)} devices")
    model = convnet.Net(num_classes, depth=5, init_scheme="hebbian", keep_variance=keep_variance)
    init_key, shuffle_key = jax.random.split(key)
    variables = convnet.init(model, init_key, images.shape[1:])
    step = _step_fn(model)
    shard = (lambda a: a) if mesh is None else _sharder(mesh, P(meshes.DATA))
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    steps = images.shape[0] // cfg.batch

    def one_epoch(t: int, variables: dict, tick) -> dict:
        order = jax.random.permutation(jax.random.fold_in(shuffle_key, t), images.shape[0])
        order = np.asarray(order)
        for s in range(steps):
            batch = shard(images[np.sort(order[s * cfg.batch : (s + 1) * cfg.batch])])
            variables = step(variables, batch, mean, std, jnp.float32(cfg.lr))
            tick()
        return variables

    variables = epochs.run(
        one_epoch,
        variables,
        cfg.epochs,
        desc="hebbian",
        steps=steps,
        show=progress,
        checkpoint_dir=checkpoint_dir,
        refuse_past_end=True,
        prepare=None if mesh is None else _sharder(mesh, P()),
    )
    return jax.tree.map(np.asarray, variables)


def _sharder(mesh: Mesh, spec: P):
    sharding = NamedSharding(mesh, spec)
    return lambda a: jax.device_put(a, sharding)
