"""The library's 6-layer network (:mod:`hebbret.nets.convnet`) cut for retraining.

Tzelepi & Tefas' notation ``RRI(L1, L2; LT)``: retrain layers L1, L2 so that the target layer LT's
output regresses onto the targets, the ReLU after LT replaced by a freshly initialised PReLU
(slope 0.25 per channel) so the layer can reach targets below zero. Here the network is cut in
two at the first retrained layer F:

- the *prefix*, layers 1..F-1, is frozen: its output for every image is computed once
  (:func:`prefix_inputs`) and cached, so retraining never runs the convolutions below F again;
- the *block*, layers F..LT, maps those inputs to the layer-LT representation (after its
  batch norm, in evaluation mode: running statistics are constants, BN scale and bias of a
  retrained layer are trained). Layers of the block that are not retrained stay frozen.

Layer names are those of :data:`hebbret.nets.convnet.LAYERS` ("conv1".."fc5"); the paper's FC6 /
FC7 are the last two, conv4 (2,304 features) and fc5 (4,096). Any other Flax network retrains
through :func:`hebbret.retraining.regress.retrain` with an ``apply(params, inputs)`` of its own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hebbret import checkpoints
from hebbret.errors import InputError
from hebbret.nets import convnet

NAMES = tuple(layer.name for layer in convnet.LAYERS)


class Cut(NamedTuple):
    """Which layers are retrained (1-based, sorted) and the target layer LT (1-based)."""

    retrained: tuple[int, ...]
    target: int

    @property
    def first(self) -> int:
        return self.retrained[0]

    def label(self) -> str:
        """The paper's notation, e.g. ``(conv4,fc5; fc5)``."""
        names = ",".join(NAMES[i - 1] for i in self.retrained)
        return f"({names}; {NAMES[self.target - 1]})"


def cut(layers: Sequence[str], target: str) -> Cut:
    """Checks layer names (InputError for unknown ones, none, or a target before them)."""
    names = tuple(layers)
    unknown = [n for n in (*names, target) if n not in NAMES]
    if unknown:
        raise InputError(f"unknown layers {unknown}: the network's layers are {list(NAMES)}")
    if not names:
        raise InputError("no layer to retrain")
    retrained = tuple(sorted({NAMES.index(n) + 1 for n in names}))
    t = NAMES.index(target) + 1
    if t < retrained[-1]:
        raise InputError(
            f"the target layer {target} comes before the retrained layer {NAMES[retrained[-1] - 1]}"
        )
    return Cut(retrained, t)


class _Prefix(nn.Module):
    depth: int
    keep_variance: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.zeros  # never initialised: only applied with given variables
        h, _ = convnet.trunk(
            self, x, self.depth, init, train=False, keep_variance=self.keep_variance
        )
        return h


class Block(nn.Module):
    """Layers ``first``..``target`` with a PReLU after the target layer; returns (B, D_LT)."""

    first: int
    target: int
    keep_variance: bool

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        h, _ = convnet.trunk(
            self, h, self.target, nn.initializers.zeros, train=False,
            keep_variance=self.keep_variance, first=self.first, prelu_last=True,
        )  # fmt: skip
        return h.reshape(h.shape[0], -1)


def prefix_inputs(
    variables: dict,
    c: Cut,
    images: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    keep_variance: bool = False,
    chunk: int = 500,
) -> np.ndarray:
    """The frozen layers' output (n, ...) float32 for (n, 32, 32, 3) uint8 images: the standardised
    images themselves when layer 1 is retrained."""
    images = convnet.check_images(images)
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    fn = _prefix_fn(c.first - 1, keep_variance)
    chunk = min(chunk, len(images))  # small inputs: no padding to a full chunk
    return convnet.map_chunks(lambda part: fn(variables, part, mean, std), images, chunk)


@functools.lru_cache(maxsize=8)
def _prefix_fn(depth: int, keep_variance: bool):
    model = _Prefix(depth, keep_variance)

    def fn(variables, raw, mean, std):
        x = convnet.standardise(raw, mean, std)
        return model.apply(_only(variables, NAMES[:depth]), x) if depth else x

    return jax.jit(fn)


def _only(variables: dict, names: Sequence[str]) -> dict:
    """The variables of the named layers (kernel, PReLU slope, BN) from a full network's."""
    keep = {*names, *(f"{n}_prelu" for n in names)}
    keep |= {f"bn{NAMES.index(n) + 1}" for n in names}
    return {col: {k: v for k, v in tree.items() if k in keep} for col, tree in variables.items()}


def split_params(variables: dict, c: Cut, *, slope: float | None = 0.25) -> tuple[dict, dict]:
    """``(trainable, frozen)`` block variables from a network's ``{"params", "batch_stats"}``.

    trainable: the retrained layers' kernels and BN scale/bias, and the target layer's PReLU
    slope (``slope`` per channel when the network has none yet: a fresh PReLU; None keeps a
    ReLU-equivalent slope 0, i.e. the starting network's own features). frozen: the rest of the
    block (other layers' parameters, every BN running statistic)."""
    names = NAMES[c.first - 1 : c.target]
    block = _only(variables, names)
    params = dict(block["params"])
    prelu = f"{NAMES[c.target - 1]}_prelu"
    if prelu not in params:
        width = convnet.LAYERS[c.target - 1].features
        params[prelu] = jnp.full((width,), 0.0 if slope is None else slope, jnp.float32)
    train_keys = {prelu} | {NAMES[i - 1] for i in c.retrained} | {f"bn{i}" for i in c.retrained}
    trainable = {k: v for k, v in params.items() if k in train_keys}
    frozen = {
        "params": {k: v for k, v in params.items() if k not in train_keys},
        "batch_stats": block.get("batch_stats", {}),
    }
    return trainable, frozen


def block_apply(
    c: Cut, frozen: dict, *, keep_variance: bool = False
) -> Callable[[dict, jax.Array], jax.Array]:
    """``apply(trainable, inputs) -> (B, D_LT)`` features: the block with ``frozen`` merged in."""
    model = Block(c.first, c.target, keep_variance)

    def apply(trainable: dict, inputs: jax.Array) -> jax.Array:
        variables = {
            "params": {**frozen["params"], **trainable},
            "batch_stats": frozen["batch_stats"],
        }
        return model.apply(variables, inputs)

    return apply


def merge(variables: dict, trainable: dict) -> dict:
    """A full network's variables with the retrained parameters (and PReLU slope) put in."""
    return {**variables, "params": {**variables["params"], **trainable}}


def features(
    apply: Callable[[dict, jax.Array], jax.Array],
    trainable: dict,
    inputs: np.ndarray,
    *,
    chunk: int = 1000,
) -> np.ndarray:
    """Block features (n, D_LT) float32 of cached prefix ``inputs``, ``chunk`` rows a call."""
    fn = _jitted(apply)
    return convnet.map_chunks(lambda part: fn(trainable, part), inputs, min(chunk, len(inputs)))


@functools.lru_cache(maxsize=8)
def _jitted(apply: Callable) -> Callable:
    """One compiled ``apply`` per function object (a Runner calls it for every stage and row)."""
    return jax.jit(apply)


def save_network(path: str | os.PathLike, variables: dict, mean, std, keep_variance: bool) -> None:
    """Writes a network with its input statistics (orbax, atomically): what
    :func:`load_network` and ``hebbret retrain --network`` read."""
    tree = {
        "variables": jax.tree.map(np.asarray, variables),
        "mean": np.asarray(mean, np.float32),
        "std": np.asarray(std, np.float32),
        "keep_variance": np.asarray(keep_variance),
    }
    checkpoints.save(path, tree)


def load_network(
    path: str | os.PathLike, num_classes: int
) -> tuple[dict, np.ndarray, np.ndarray, bool]:
    """``(variables, mean, std, keep_variance)`` of a network written by :func:`save_network`:
    a 6-layer :class:`hebbret.nets.convnet.Net` with ``num_classes`` outputs, retrained (one
    PReLU layer) or not. CheckpointError if there is none or it has another shape."""
    plain = jax.tree.map(
        np.asarray, convnet.init(convnet.Net(num_classes, depth=5), jax.random.key(0))
    )
    candidates = [plain] + [
        {
            **plain,
            "params": {
                **plain["params"],
                f"{layer.name}_prelu": np.zeros(layer.features, np.float32),
            },
        }
        for layer in convnet.LAYERS
    ]
    error: Exception | None = None
    for like in candidates:
        tree = {"variables": like, "mean": np.zeros(3, np.float32), "std": np.zeros(3, np.float32)}
        tree["keep_variance"] = np.asarray(False)
        try:
            out = checkpoints.restore(path, tree)
        except checkpoints.CheckpointError as e:
            error = error or e
            continue
        return out["variables"], out["mean"], out["std"], bool(out["keep_variance"])
    raise error
