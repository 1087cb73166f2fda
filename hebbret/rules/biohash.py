"""The Krotov-Hopfield learning rule that trains BioHash's hash layer, as pure jitted functions.

Weights ``W`` (m, d), one row per hidden unit mu; a minibatch ``X`` (B, d). BioHash (Ryali et al.
2020, eqs. (1)-(2); docs/biohash.md §Learning rule), after Krotov & Hopfield (2019) and their
reference notebook (DimaKrotov/Biological_Learning):

- currents ``I_muA = <W_mu, x_A>_mu = sum_i sign(W_mu,i) |W_mu,i|^(p-1) x_Ai`` (eq. 1's inner
  product with metric ``eta_ij = |W_mu,i|^(p-2) delta_ij``; for p = 2 it is ``X @ W.T``);
- eq. (2): per sample, rank the m currents; ``g = 1`` for the top unit, ``g = -Delta`` for the unit
  of rank r, 0 otherwise, giving the (m, B) matrix ``G``;
- eq. (1) summed over the minibatch: ``dW = G X - (sum_A G_muA I_muA)[:, None] * W``;
- the notebook's step: ``W <- W + eps_t * dW / max(max|dW|, precision)``, with
  ``eps_t = eps0 * (1 - t / Tmax)`` at epoch t; weights converge to the unit p-sphere, and
  training stops when the mean row p-norm falls below 1.06 (Ryali et al. 2020, appendix D).

Speed: only the units that win (or rank r) for some sample of the minibatch have a nonzero row in
``dW``, so when those K = B (2 B with Delta != 0) (sample, unit) pairs are fewer than m, a step
computes just their rows of ``dW`` (per-unit sums as a (K, K) one-hot matmul) and scatters them
into ``W``; the (B, m) currents matmul is the only O(m d B) work. This is the dense update exactly
(zero rows of ``dW`` leave ``W`` unchanged and cannot be the max). With K > m the dense (m, K)
``G`` is used instead. Ties between currents go to the lower unit index (``lax.top_k``).

Devices: with a 1-D mesh (axis ``"data"``, :func:`data_mesh`) each device takes a slice of every
minibatch and computes the currents and its partial update ``G_s X_s - c_s W`` on it. The partial
updates are kept sparse, as (unit, row, coefficient) triples; summing them across devices (an
all-gather of the triples followed by the same per-unit sum a single device does) happens before
the max-normalisation, so N devices give the weights one device gives (to float tolerance).

Epochs are passes over the data in minibatches of ``batch`` rows; the ragged tail of
``n % batch`` rows is dropped (as the notebook does). :func:`train` reshuffles every epoch, so a
different tail is dropped each time.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hebbret.errors import InputError

_AXIS = "data"
_HIGHEST = jax.lax.Precision.HIGHEST


class RuleConfig(NamedTuple):
    """Hyperparameters of the learning rule (defaults: Ryali et al. 2020, appendix D)."""

    p: float = 2.0  # p-norm of the metric <W_mu, x>_mu = sum_i sign(W_mu,i)|W_mu,i|^(p-1) x_i
    delta: float = 0.0  # anti-Hebbian strength (g = -delta for the unit of rank r)
    r: int = 2  # rank of the anti-Hebbian unit
    eps0: float = 2e-2  # initial learning rate
    tmax: int = 100  # linear decay horizon: eps_t = eps0 * (1 - t / tmax), t = epoch
    batch: int = 100  # minibatch size
    max_epochs: int = 100  # hard cap on epochs
    norm_target: float = 1.06  # stop when the mean row p-norm falls below this (paper's criterion)
    precision: float = 1e-30  # floor of the max-normaliser
    init_norm: float | None = None  # None: W0 ~ N(0, 1) (paper); else rows rescaled to this p-norm


class TrainResult(NamedTuple):
    """Output of :func:`train`: weights (m, d), epochs run, final mean norm, norm after each."""

    w: jax.Array
    epochs: int
    mean_norm: float
    history: list[float]


class _Rule(NamedTuple):
    """The fields of :class:`RuleConfig` that the compiled kernels depend on (their cache key)."""

    p: float
    delta: float
    r: int
    precision: float


def _rule(cfg: RuleConfig) -> _Rule:
    return _Rule(float(cfg.p), float(cfg.delta), int(cfg.r), float(cfg.precision))


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def signed_power(w: jax.Array, p: float) -> jax.Array:
    """``sign(W) |W|^(p-1)`` elementwise (``W`` itself for p = 2; integer powers stay exact)."""
    if p == 2.0:
        return w
    e = p - 1.0
    a = jnp.abs(w)
    powered = jax.lax.integer_pow(a, int(e)) if e.is_integer() else a**e
    return jnp.sign(w) * powered


def _currents_mb(w: jax.Array, x: jax.Array, p: float) -> jax.Array:
    """(m, B) currents, ``W`` (m, d) as the lhs as in the notebook (``W @ X.T`` for p = 2)."""
    return jnp.dot(signed_power(w, p), x.T, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames="p")
def _currents(w: jax.Array, x: jax.Array, p: float) -> jax.Array:
    return _currents_mb(w, x, p).T


def currents(w: jax.Array, x: jax.Array, p: float) -> jax.Array:
    """Input currents ``I_muA = <W_mu, x_A>_mu = sum_i sign(W_mu,i) |W_mu,i|^(p-1) x_Ai``.

    Args:
      w: (m, d) weights.
      x: (B, d) samples.
      p: the p of the metric (p = 2: ``x @ w.T``).

    Returns:
      (B, m) float32 currents.
    """
    w, x = _as_pair(w, x)
    _check_p(p)
    return _currents(w, x, float(p))


def _partial(w: jax.Array, x: jax.Array, rule: _Rule):
    """The sparse partial update of one minibatch slice ``x`` (b, d), eq. (1)-(2).

    Returns ``(units, gx, gi)`` for the K = b (or 2 b if Delta != 0) active (sample, unit) pairs,
    sample-major: unit index (K,), ``g x_A`` (K, d) and ``g I_muA`` (K,). Summing ``gx`` and ``gi``
    per unit gives the rows of ``G X`` and ``sum_A G_muA I_muA``.
    """
    cur = _currents_mb(w, x, rule.p).T  # (b, m)
    if rule.delta == 0.0:  # only the winner learns (the rank-r row of G is -0)
        vals, units = jax.lax.top_k(cur, 1)
        g = jnp.ones((1,), jnp.float32)
    else:  # top_k returns ranks 1..r in order: keep rank 1 and rank r
        vals, units = jax.lax.top_k(cur, rule.r)
        keep = np.asarray([0, rule.r - 1])
        vals, units = vals[:, keep], units[:, keep]
        g = jnp.asarray([1.0, -rule.delta], jnp.float32)
    gx = (g[None, :, None] * x[:, None, :]).reshape(-1, x.shape[1])
    gi = (g[None, :] * vals).reshape(-1)
    return units.reshape(-1), gx, gi


def _rows(w: jax.Array, units: jax.Array, gx: jax.Array, gi: jax.Array):
    """``dW`` from the (summed over devices) sparse partial updates of K (sample, unit) pairs.

    Returns ``(rows, target)``. With K <= m: ``rows`` (K, d) are the rows of ``dW`` at ``units``
    (duplicates get identical rows) and ``target`` (K,) is each unit's index at its first
    occurrence and m (out of range: dropped) at later ones. With K > m: ``rows`` is the dense
    (m, d) ``dW`` and ``target`` is None. Sums go through one-hot matmuls, never scatter-adds,
    so they are deterministic on every backend.
    """
    m = w.shape[0]
    if units.shape[0] > m:  # more pairs than units: the dense (m, K) G is the smaller problem
        onehot = (jnp.arange(m)[:, None] == units[None, :]).astype(jnp.float32)
        coef = jnp.dot(onehot, gi, precision=_HIGHEST)  # sum_A G_muA I_muA
        return jnp.dot(onehot, gx, precision=_HIGHEST) - coef[:, None] * w, None
    same = (units[:, None] == units[None, :]).astype(jnp.float32)  # (K, K)
    coef = jnp.dot(same, gi, precision=_HIGHEST)
    rows = jnp.dot(same, gx, precision=_HIGHEST) - coef[:, None] * w[units]
    first = ~jnp.any(jnp.tril(same, -1) > 0, axis=1)
    return rows, jnp.where(first, units, m)


def _add(base: jax.Array, rows: jax.Array, target: jax.Array | None) -> jax.Array:
    """``base + dW`` for :func:`_rows`'s (rows, target) form of ``dW``."""
    return base + rows if target is None else base.at[target].add(rows, mode="drop")


def _apply(w, units, gx, gi, eps, precision: float) -> jax.Array:
    """``W + eps * dW / max(max|dW|, precision)`` from the sparse partial updates."""
    rows, target = _rows(w, units, gx, gi)
    nc = jnp.maximum(jnp.max(jnp.abs(rows)), precision)
    return _add(w, rows * (eps / nc), target)


@functools.partial(jax.jit, static_argnames="rule")
def _raw_update(w: jax.Array, x: jax.Array, rule: _Rule) -> jax.Array:
    units, gx, gi = _partial(w, x, rule)
    return _add(jnp.zeros_like(w), *_rows(w, units, gx, gi))


@functools.partial(jax.jit, static_argnames="rule")
def _step(w: jax.Array, x: jax.Array, eps: jax.Array, rule: _Rule) -> jax.Array:
    return _apply(w, *_partial(w, x, rule), eps, rule.precision)


def raw_update(w: jax.Array, x: jax.Array, cfg: RuleConfig) -> jax.Array:
    """The unnormalised update of one minibatch, BioHash eqs. (1)-(2).

    ``dW = G X - (sum_A G_muA I_muA)[:, None] * W`` with ``G`` (m, B): ``g = 1`` for each sample's
    top unit, ``-cfg.delta`` for its unit of rank ``cfg.r``.

    Args:
      w: (m, d) weights.
      x: (B, d) minibatch.
      cfg: uses ``p``, ``delta``, ``r``.

    Returns:
      (m, d) float32 ``dW``; rows of units that no sample activates are 0.
    """
    w, x = _as_pair(w, x)
    _check_rule(cfg, w.shape[0])
    return _raw_update(w, x, _rule(cfg))


def step(w: jax.Array, x: jax.Array, eps: jax.Array | float, cfg: RuleConfig) -> jax.Array:
    """One minibatch step: ``W + eps * dW / max(max|dW|, precision)`` (:func:`raw_update`'s dW).

    Args:
      w: (m, d) weights; x: (B, d) minibatch; eps: learning rate (scalar, traced: no recompile).
      cfg: uses ``p``, ``delta``, ``r``, ``precision``.

    Returns:
      (m, d) float32 updated weights.

    Example:
      >>> w = step(w, x[:100], 0.02, RuleConfig())
    """
    w, x = _as_pair(w, x)
    _check_rule(cfg, w.shape[0])
    return _step(w, x, jnp.asarray(eps, jnp.float32), _rule(cfg))


@functools.partial(jax.jit, static_argnames="p")
def _mean_norm(w: jax.Array, p: float) -> jax.Array:
    if p == 2.0:
        return jnp.mean(jnp.sqrt(jnp.sum(w * w, axis=1)))
    return jnp.mean(jnp.sum(jnp.abs(w) ** p, axis=1) ** (1.0 / p))


def mean_norm(w: jax.Array, p: float) -> jax.Array:
    """Mean over the m rows of ``(sum_i |W_mu,i|^p)^(1/p)``: (m, d) -> scalar float32."""
    _check_p(p)
    return _mean_norm(jnp.asarray(w, jnp.float32), float(p))


# --------------------------------------------------------------------------------------------
# Epochs, optionally data-parallel over a mesh
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _epoch_fn(rule: _Rule, batch: int, mesh: Mesh | None):
    """A jitted ``(w, x, order, eps) -> w``: one pass over ``x[order]`` (order: (steps * batch,)
    row indices) with lax.scan; one compilation per (rule, batch, mesh, shapes), not per epoch."""
    sharded = mesh is not None and mesh.shape[_AXIS] > 1

    def local(w, x, order, eps):  # order: (steps, batch / devices) rows of this device's slices
        def body(w, idx):
            units, gx, gi = _partial(w, x[idx], rule)
            if sharded:  # sum the devices' sparse partial updates before normalising
                gather = functools.partial(jax.lax.all_gather, axis_name=_AXIS, axis=0, tiled=True)
                units, gx, gi = gather(units), gather(gx), gather(gi)
            return _apply(w, units, gx, gi, eps, rule.precision), None

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
    """One pass over ``x_epoch`` in order, in minibatches of ``cfg.batch`` (a scan of :func:`step`).

    The last ``n % cfg.batch`` rows are dropped. With ``mesh`` (1-D, axis ``"data"``) every
    minibatch is split over the devices and their partial updates are summed before the
    max-normalisation, so the result equals the single-device one to float tolerance.

    Args:
      w: (m, d) weights.
      x_epoch: (n, d) samples, n >= cfg.batch.
      eps: learning rate of this epoch (traced: epochs do not recompile).
      cfg: uses ``p``, ``delta``, ``r``, ``precision``, ``batch``.
      mesh: optional device mesh from :func:`data_mesh`; cfg.batch must divide by its size.

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


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (default: all) with axis ``"data"``."""
    devices = jax.devices()
    num = len(devices) if num_devices is None else num_devices
    if not 1 <= num <= len(devices):
        raise InputError(f"num_devices must be in [1, {len(devices)}], got {num}")
    return Mesh(np.asarray(devices[:num]), (_AXIS,))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(
    key: jax.Array,
    x: np.ndarray,
    m: int,
    cfg: RuleConfig = RuleConfig(),  # noqa: B008  (an immutable NamedTuple)
    *,
    mesh: Mesh | None = None,
    progress: bool = True,
    init: jax.Array | None = None,
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
      mesh: optional 1-D device mesh (:func:`data_mesh`) to split each minibatch over devices.
      progress: show a tqdm bar per epoch with the mean norm.
      init: optional (m, d) initial weights instead of the N(0, 1) draw.

    Returns:
      :class:`TrainResult` with ``w`` (m, d) float32, ``epochs`` run, the final ``mean_norm``
      and ``history`` (mean norm after each epoch, length ``epochs``).

    Example:
      >>> res = train(jax.random.key(0), x - x.mean(0), m=400)
      >>> res.epochs, res.mean_norm
    """
    x = _check_data(x)
    check_training(cfg, m, x.shape[0], mesh=mesh)
    n, d = x.shape
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
    x_dev = jnp.asarray(x) if mesh is None else jax.device_put(x, NamedSharding(mesh, P()))
    used = (n // cfg.batch) * cfg.batch
    history: list[float] = []
    bar = _progress(min(cfg.max_epochs, cfg.tmax), progress)
    for t in bar:
        order = jax.random.permutation(jax.random.fold_in(key, t), n)[:used].astype(jnp.int32)
        eps = jnp.float32(cfg.eps0 * (1.0 - t / cfg.tmax))
        w = fn(w, x_dev, order, eps)
        norm = float(_mean_norm(w, float(cfg.p)))
        history.append(norm)
        if progress:
            bar.set_postfix(mean_norm=f"{norm:.4f}")
        if norm < cfg.norm_target:
            break
    if progress:
        bar.close()
    return TrainResult(w, len(history), history[-1], history)


def _progress(total: int, enabled: bool):
    if not enabled:
        return range(total)
    from tqdm.auto import tqdm

    return tqdm(range(total), desc="biohash", unit="epoch", leave=False)


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


def _as_pair(w, x) -> tuple[jax.Array, jax.Array]:
    """Shape checks shared by the jitted entry points; casts both to float32."""
    w, x = jnp.asarray(w), jnp.asarray(x)
    if w.ndim != 2:
        raise InputError(f"weights must be a 2-D (m, d) array, got shape {w.shape}")
    if x.ndim != 2:
        raise InputError(f"data must be a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[1] != w.shape[1]:
        raise InputError(f"data has {x.shape[1]} columns but the weights have {w.shape[1]}")
    if x.shape[0] < 1:
        raise InputError("data has 0 rows")
    return w.astype(jnp.float32), x.astype(jnp.float32)


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


def _check_p(p) -> None:
    if not (isinstance(p, (int, float, np.integer, np.floating)) and math.isfinite(p) and p >= 1):
        raise InputError(f"p must be a finite number >= 1, got {p!r}")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_rule(cfg: RuleConfig, m: int) -> None:
    if not isinstance(cfg, RuleConfig):
        raise InputError(f"cfg must be a RuleConfig, got {type(cfg).__name__}")
    _check_p(cfg.p)
    if not math.isfinite(cfg.delta):
        raise InputError(f"delta must be finite, got {cfg.delta!r}")
    if cfg.delta != 0 and not (_is_int(cfg.r) and 2 <= cfg.r <= m):
        raise InputError(f"r must be an integer in [2, m = {m}] when delta != 0, got {cfg.r!r}")
    if not _is_int(cfg.batch) or cfg.batch < 1:
        raise InputError(f"batch must be an integer >= 1, got {cfg.batch!r}")
    if not (math.isfinite(cfg.precision) and cfg.precision > 0):
        raise InputError(f"precision must be a finite number > 0, got {cfg.precision!r}")


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
    if mesh is None:
        return
    if not isinstance(mesh, Mesh) or mesh.axis_names != (_AXIS,):
        raise InputError(f"mesh must be a 1-D jax.sharding.Mesh with axis {_AXIS!r} (data_mesh())")
    ndev = mesh.shape[_AXIS]
    if cfg.batch % ndev:
        raise InputError(f"batch {cfg.batch} is not divisible by the {ndev} devices of the mesh")
