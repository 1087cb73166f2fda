"""Epochs and the training loop of the BioHash rule (:mod:`hebbret.rules.biohash`).

An epoch is one pass over the data in minibatches of ``batch`` rows, each a :func:`~hebbret.rules.
biohash.step` ``W <- W + eps_t * dW / max(max|dW|, precision)`` (BioHash eqs. (1)-(2)), as one
jitted ``lax.scan``; the ragged tail of ``n % batch`` rows is dropped (as Krotov & Hopfield's
notebook does). :func:`train` runs epochs t = 0, 1, ... with ``eps_t = eps0 * (1 - t / tmax)``,
reshuffling every epoch (so a different tail is dropped each time), until the mean row p-norm
falls below 1.06 (Ryali et al. 2020, appendix D): the weights converge to the unit p-sphere.

Devices: with a 1-D mesh (axis ``"data"``, :func:`hebbret.mesh.data_mesh`) each device takes a
slice of every minibatch and computes the currents and its partial update ``G_s X_s - c_s W`` on
it. The partial updates are kept sparse, as (unit, row, coefficient) triples; summing them across
devices (an all-gather of the triples; each device then sums 1/N of dW's rows, the per-unit sum
a single device does, and the row blocks are all-gathered) happens before the max-normalisation,
so N devices give the weights one device gives (to float tolerance: a block of rows is summed by
a smaller matmul).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hebbret import epochs
from hebbret import mesh as meshes
from hebbret.errors import InputError, all_finite
from hebbret.rules.biohash import (
    RuleConfig,
    _apply,
    _as_pair,
    _check_rule,
    _is_int,
    _mean_norm,
    _partial,
    _Rule,
    _rule,
)

_AXIS = meshes.DATA
STREAM_BYTES = 256 * 2**20  # densified rows per chunk when x is scipy.sparse


class TrainResult(NamedTuple):
    """Output of :func:`train`: weights (m, d), epochs run, final mean norm, norm after each."""

    w: jax.Array
    epochs: int
    mean_norm: float
    history: list[float]


@functools.lru_cache(maxsize=32)
def _epoch_fn(rule: _Rule, batch: int, mesh: Mesh | None):
    """A jitted ``(w, x, order, eps) -> w``: one pass over ``x[order]`` (order: (steps * batch,)
    row indices) with lax.scan; one compilation per (rule, batch, mesh, shapes), not per epoch."""
    sharded = meshes.size(mesh) > 1

    def local(w, x, order, eps):  # order: (steps, batch / devices) rows of this device's slices
        def body(w, idx):
            units, gx, gi = _partial(w, x[idx], rule)
            if sharded:  # sum the devices' sparse partial updates before normalising
                gather = functools.partial(jax.lax.all_gather, axis_name=_AXIS, axis=0, tiled=True)
                units, gx, gi = gather(units), gather(gx), gather(gi)
            return _apply(w, units, gx, gi, eps, rule.precision, _AXIS if sharded else None), None

        return jax.lax.scan(body, w, order)[0]

    if sharded:
        local = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(), P(None, _AXIS), P()),
            out_specs=P(),
            check_vma=False,
        )
    return jax.jit(lambda w, x, order, eps: local(w, x, order.reshape(-1, batch), eps))


def epoch(
    w: jax.Array,
    x_epoch: jax.Array,
    eps: jax.Array | float,
    cfg: RuleConfig,
    *,
    mesh: Mesh | None = None,
) -> jax.Array:
    """One pass over ``x_epoch`` in order, in minibatches of ``cfg.batch`` (a scan of
    :func:`hebbret.rules.biohash.step`).

    The last ``n % cfg.batch`` rows are dropped. With ``mesh`` (1-D, axis ``"data"``) every
    minibatch is split over the devices and their partial updates are summed before the
    max-normalisation, so the result equals the single-device one to float tolerance.

    Args:
      w: (m, d) weights.
      x_epoch: (n, d) samples, n >= cfg.batch.
      eps: learning rate of this epoch (traced: epochs do not recompile).
      cfg: uses ``p``, ``delta``, ``r``, ``precision``, ``batch``.
      mesh: optional device mesh from :func:`hebbret.mesh.data_mesh`; cfg.batch must divide by
        its size.

    Returns:
      (m, d) float32 weights after ``n // cfg.batch`` steps.
    """
    w, x = _as_pair(w, x_epoch)
    _check_rule(cfg, w.shape[0])
    _check_batch(cfg, x.shape[0], mesh)
    steps = x.shape[0] // cfg.batch
    order = jnp.arange(steps * cfg.batch, dtype=jnp.int32)
    fn = _epoch_fn(_rule(cfg), int(cfg.batch), mesh)
    return fn(w, x, order, jnp.asarray(eps, jnp.float32))


def train(
    key: jax.Array,
    x: np.ndarray,
    m: int,
    cfg: RuleConfig = RuleConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    mesh: Mesh | None = None,
    progress: bool = True,
    init: jax.Array | None = None,
    centre: np.ndarray | None = None,
) -> TrainResult:
    """Trains m hidden units on ``x`` with the Krotov-Hopfield rule until the weights converge.

    ``W0 ~ N(0, 1)`` of shape (m, d) drawn from ``key`` (or ``init``); epoch t = 0, 1, ...
    shuffles ``x`` with ``fold_in(key, t)`` and runs :func:`epoch` with
    ``eps_t = eps0 * (1 - t / tmax)``. Stops after the first epoch whose mean row p-norm is below
    ``cfg.norm_target`` (1.06, Ryali et al. appendix D), or after ``min(max_epochs, tmax)`` epochs
    (eps_t reaches 0 at t = tmax). ``x`` is used as given: centre it first (BioHash centres by the
    training mean). Deterministic given ``key``.

    Args:
      key: a jax PRNG key.
      x: (n, d) float training data without NaN/inf, n >= cfg.batch.
      m: number of hidden units (hash layer width).
      cfg: the rule's hyperparameters.
      mesh: optional 1-D device mesh (:func:`hebbret.mesh.data_mesh`) to split each minibatch
        over devices.
      progress: show a tqdm bar per epoch with the mean norm.
      init: optional (m, d) initial weights instead of the N(0, 1) draw.
      centre: optional (d,) vector subtracted from every row (in float64) before the rule sees
        it. With a ``scipy.sparse`` ``x`` (e.g. BioConvHash features) the epoch is streamed:
        each chunk of ~256 MB of shuffled rows is densified, centred and sent to the device,
        so the dense (n, d) matrix never exists; the weights equal the dense run's.

    Returns:
      :class:`TrainResult` with ``w`` (m, d) float32, ``epochs`` run, the final ``mean_norm``
      and ``history`` (mean norm after each epoch, length ``epochs``).

    Example:
      >>> res = train(jax.random.key(0), x - x.mean(0), m=400)
      >>> res.epochs, res.mean_norm
    """
    streamed = scipy.sparse.issparse(x)
    x = _check_sparse(x) if streamed else _check_data(x)
    check_training(cfg, m, x.shape[0], mesh=mesh)
    n, d = x.shape
    if centre is not None:
        centre = np.asarray(centre, np.float64)
        if centre.shape != (d,) or not np.isfinite(centre).all():
            raise InputError(f"centre must be a finite ({d},) vector, got shape {centre.shape}")
        if not streamed:
            x = (x - centre).astype(np.float32)
    if init is None:
        w = jax.random.normal(key, (int(m), d), jnp.float32)
        if cfg.init_norm is not None:  # start on the sphere the rule converges to (an ablation)
            norms = jnp.sum(jnp.abs(w) ** cfg.p, axis=1, keepdims=True) ** (1.0 / cfg.p)
            w = w * (cfg.init_norm / norms)
    else:
        w = jnp.asarray(init, jnp.float32)
        if w.shape != (m, d):
            raise InputError(f"init must have shape (m, d) = {(m, d)}, got {w.shape}")
        if not bool(jnp.all(jnp.isfinite(w))):
            raise InputError("init contains NaN or inf")
    fn = _epoch_fn(_rule(cfg), int(cfg.batch), mesh)
    put = jnp.asarray
    if mesh is not None:
        put = functools.partial(jax.device_put, device=NamedSharding(mesh, P()))
    used = (n // cfg.batch) * cfg.batch
    if streamed:
        rows = max(1, STREAM_BYTES // (4 * d * cfg.batch)) * cfg.batch
        zero = np.zeros(d) if centre is None else centre
        chunks = (_aligned((rows, d)), _aligned((rows, d)))
        if mesh is None:  # XLA:CPU reads a 64-byte-aligned host array in place (no 256 MB copy)
            put = functools.partial(jax.device_put, may_alias=True)

        def run(w, order, eps):  # the dense run's steps, a chunk of shuffled rows at a time
            order = np.asarray(order)
            for j, s in enumerate(range(0, used, rows)):
                # into buffers allocated once (fresh ~1 GB of pages a chunk cost as much as the
                # rule); the step two chunks back has finished with this one (and it may still
                # back that step's input array: never resized)
                part = x[order[s : s + rows]]
                r = part.shape[0]
                chunk = chunks[j % 2][:r]
                chunk[...] = 0.0
                part.toarray(out=chunk)  # adds the non-zeros into the zeroed rows
                # x - centre computed in float64 and rounded to float32, as for dense x
                np.subtract(chunk, zero, out=chunk, casting="same_kind")
                # one chunk in flight (the next is densified meanwhile): without the wait,
                # asynchronous dispatch would queue every chunk of the epoch in memory
                steps = jnp.arange(r, dtype=jnp.int32)
                w = fn(jax.block_until_ready(w), put(chunk), steps, eps)
            return w
    else:
        x_dev = put(x)
        run = lambda w, order, eps: fn(w, x_dev, order, eps)  # noqa: E731

    def one_epoch(t: int, state: tuple[jax.Array, list[float]], tick) -> tuple:
        w, history = state
        order = jax.random.permutation(jax.random.fold_in(key, t), n)[:used].astype(jnp.int32)
        eps = jnp.float32(cfg.eps0 * (1.0 - t / cfg.tmax))
        w = run(w, order, eps)
        return w, [*history, float(_mean_norm(w, float(cfg.p)))]

    w, history = epochs.run(
        one_epoch,
        (w, []),
        min(cfg.max_epochs, cfg.tmax),
        desc="biohash",
        show=progress,
        stop=lambda state: state[1][-1] < cfg.norm_target,
        postfix=lambda state: {"mean_norm": f"{state[1][-1]:.4f}"},
    )
    return TrainResult(w, len(history), history[-1], history)


def _aligned(shape: tuple[int, int]) -> np.ndarray:
    """An uninitialised float32 array whose data starts on a 64-byte boundary, the alignment
    XLA:CPU needs to use a host buffer without copying it."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + 64, np.uint8)
    at = -raw.ctypes.data % 64
    return raw[at : at + size].view(np.float32).reshape(shape)


# --------------------------------------------------------------------------------------------
# Input checks (one-line InputErrors)
# --------------------------------------------------------------------------------------------


def check_training(cfg: RuleConfig, m: int, n: int, *, mesh: Mesh | None = None) -> None:
    """InputError now if :func:`train` would reject ``m`` units on ``n`` rows with ``cfg``
    (hyperparameters, schedule, rows vs minibatch, mesh), so callers can fail before any work."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise InputError(f"m (number of hidden units) must be an integer >= 1, got {m!r}")
    _check_rule(cfg, int(m))
    _check_schedule(cfg)
    _check_batch(cfg, n, mesh)


def _check_data(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputError(f"data must be a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"data must have at least one row and one column, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"data must be floating point (centre it first), got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError("data contains NaN or inf")
    return x


def _check_sparse(x) -> scipy.sparse.csr_array:
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"data must be a non-empty 2-D (n, d) matrix, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"data must be floating point, got dtype {x.dtype}")
    if not (isinstance(x, scipy.sparse.csr_array) and x.dtype == np.float32):  # else no copy
        x = scipy.sparse.csr_array(x, dtype=np.float32)
    if not all_finite(x.data):
        raise InputError("data contains NaN or inf")
    return x


def _check_schedule(cfg: RuleConfig) -> None:
    if not (math.isfinite(cfg.eps0) and cfg.eps0 > 0):
        raise InputError(f"eps0 must be a finite number > 0, got {cfg.eps0!r}")
    if not _is_int(cfg.tmax) or cfg.tmax < 1:
        raise InputError(f"tmax must be an integer >= 1, got {cfg.tmax!r}")
    if not _is_int(cfg.max_epochs) or cfg.max_epochs < 1:
        raise InputError(f"max_epochs must be an integer >= 1, got {cfg.max_epochs!r}")
    if math.isnan(cfg.norm_target):
        raise InputError("norm_target is NaN")


def _check_batch(cfg: RuleConfig, n: int, mesh: Mesh | None) -> None:
    if n < cfg.batch:
        raise InputError(f"data has {n} rows, fewer than one minibatch of {cfg.batch}")
    meshes.check(mesh, _AXIS)
    ndev = meshes.size(mesh)
    if cfg.batch % ndev:
        raise InputError(f"batch {cfg.batch} is not divisible by the {ndev} devices of the mesh")
