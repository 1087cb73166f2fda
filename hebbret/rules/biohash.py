"""The Krotov-Hopfield learning rule that trains BioHash's hash layer, as pure jitted functions.

Weights ``W`` (m, d), one row per hidden unit mu; a minibatch ``X`` (B, d). BioHash (Ryali et al.
2020, eqs. (1)-(2); docs/biohash.md §Learning rule), after Krotov & Hopfield (2019) and their
reference notebook (DimaKrotov/Biological_Learning):

- currents ``I_muA = <W_mu, x_A>_mu = sum_i sign(W_mu,i) |W_mu,i|^(p-1) x_Ai`` (eq. 1's inner
  product with metric ``eta_ij = |W_mu,i|^(p-2) delta_ij``; for p = 2 it is ``X @ W.T``);
- eq. (2): per sample, rank the m currents; ``g = 1`` for the top unit, ``g = -Delta`` for the unit
  of rank r, 0 otherwise, giving the (m, B) matrix ``G``;
- eq. (1) summed over the minibatch: ``dW = G X - (sum_A G_muA I_muA)[:, None] * W``;
- the notebook's step: ``W <- W + eps * dW / max(max|dW|, precision)``.

:func:`reference_update` writes eqs. (1)-(2) directly with the dense ``G``. :func:`raw_update`
and :func:`step` compute the same ``dW`` faster: only the units that win (or rank r) for some
sample have a nonzero row, so when those K = B (2 B with Delta != 0) (sample, unit) pairs are
fewer than m, just their rows are computed (per-unit sums as a (K, K) one-hot matmul) and
scattered into ``W``; the (B, m) currents matmul is the only O(m d B) work. Zero rows leave ``W``
unchanged and cannot be the max, so this is the dense update exactly. With K > m the dense
(m, K) ``G`` is used instead. Ties between currents go to the lower unit index (``lax.top_k``).

Epochs, data-parallel devices and the training loop (eps_t schedule, stopping at mean norm
1.06): :mod:`hebbret.rules.biohash_train`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hebbret.errors import InputError

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


class _Rule(NamedTuple):
    """The fields of :class:`RuleConfig` that the compiled kernels depend on (their cache key)."""

    p: float
    delta: float
    r: int
    precision: float


def _rule(cfg: RuleConfig) -> _Rule:
    return _Rule(float(cfg.p), float(cfg.delta), int(cfg.r), float(cfg.precision))


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
    chex.assert_rank([w, x], 2)
    chex.assert_equal_shape([w, x], dims=1)
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


# --------------------------------------------------------------------------------------------
# Eqs. (1)-(2) as written: the dense (m, B) G
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="rule")
def _reference(w: jax.Array, x: jax.Array, rule: _Rule) -> jax.Array:
    (m, _), b = w.shape, x.shape[0]
    cur = _currents_mb(w, x, rule.p)  # I (m, B)
    rank = jnp.argsort(-cur, axis=0, stable=True)  # rank[k, A]: unit of rank k + 1 (ties: low mu)
    samples = jnp.arange(b)
    g = jnp.zeros((m, b), jnp.float32).at[rank[0], samples].set(1.0)  # eq. (2): the winner
    if rule.delta != 0.0:
        g = g.at[rank[rule.r - 1], samples].set(-rule.delta)  # eq. (2): rank r
    hebb = jnp.dot(g, x, precision=_HIGHEST)  # sum_A g_muA x_A
    decay = jnp.sum(g * cur, axis=1)  # sum_A g_muA <W_mu, x_A>_mu
    return hebb - decay[:, None] * w  # eq. (1) summed over the minibatch


def reference_update(w: jax.Array, x: jax.Array, cfg: RuleConfig) -> jax.Array:
    """BioHash eqs. (1)-(2) written directly, with the full (m, B) matrix ``G`` (a reference).

    ``G_muA = 1`` if unit mu has the largest current ``I_muA`` for sample A, ``-cfg.delta`` if
    it has the ``cfg.r``-th largest, else 0 (ties: the lower unit index ranks first); then
    ``dW = G X - (sum_A G_muA I_muA)[:, None] * W``. O(m B) memory: use :func:`raw_update`.

    Args:
      w: (m, d) weights.
      x: (B, d) minibatch.
      cfg: uses ``p``, ``delta``, ``r``.

    Returns:
      (m, d) float32 ``dW``, equal to :func:`raw_update`'s up to float summation order.
    """
    w, x = _as_pair(w, x)
    _check_rule(cfg, w.shape[0])
    return _reference(w, x, _rule(cfg))


# --------------------------------------------------------------------------------------------
# The fast path: only the rows of the active units
# --------------------------------------------------------------------------------------------


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


def _rows(w: jax.Array, units: jax.Array, gx: jax.Array, gi: jax.Array, block=None):
    """``dW`` from the (summed over devices) sparse partial updates of K (sample, unit) pairs.

    Returns ``(rows, target)``. With K <= m: ``rows`` (K, d) are the rows of ``dW`` at ``units``
    (duplicates get identical rows) and ``target`` (K,) is each unit's index at its first
    occurrence and m (out of range: dropped) at later ones. With K > m: ``rows`` is the dense
    (m, d) ``dW`` and ``target`` is None. Sums go through one-hot matmuls, never scatter-adds,
    so they are deterministic on every backend. ``block=(start, size)``: only those rows (of
    units when K > m, of pairs otherwise); ``target`` stays whole.
    """
    m, k = w.shape[0], units.shape[0]
    chex.assert_shape([units, gi], (k,))
    chex.assert_shape(gx, (k, w.shape[1]))

    def part(a):
        return a if block is None else jax.lax.dynamic_slice_in_dim(a, *block)

    if k > m:  # more pairs than units: the dense (m, K) G is the smaller problem
        onehot = (part(jnp.arange(m))[:, None] == units[None, :]).astype(jnp.float32)
        coef = jnp.dot(onehot, gi, precision=_HIGHEST)  # sum_A G_muA I_muA
        return jnp.dot(onehot, gx, precision=_HIGHEST) - coef[:, None] * part(w), None
    same = units[:, None] == units[None, :]  # (K, K)
    mine = part(same).astype(jnp.float32)
    coef = jnp.dot(mine, gi, precision=_HIGHEST)
    rows = jnp.dot(mine, gx, precision=_HIGHEST) - coef[:, None] * w[part(units)]
    first = ~jnp.any(jnp.tril(same, -1), axis=1)
    return rows, jnp.where(first, units, m)


def _add(base: jax.Array, rows: jax.Array, target: jax.Array | None) -> jax.Array:
    """``base + dW`` for :func:`_rows`'s (rows, target) form of ``dW``."""
    return base + rows if target is None else base.at[target].add(rows, mode="drop")


def _apply(w, units, gx, gi, eps, precision: float, axis: str | None = None) -> jax.Array:
    """``W + eps * dW / max(max|dW|, precision)`` from the sparse partial updates.

    ``axis``: inside ``shard_map``, with every device holding all K pairs, each device builds
    1/n of dW's rows and the blocks are all-gathered, so the O(m K d) (or O(K^2 d)) merge is
    divided over the devices, not repeated on each (the same per-row sums by a smaller matmul:
    equal to float rounding; replicated when the rows do not split evenly)."""
    chex.assert_rank(eps, 0)
    n = 1 if axis is None else jax.lax.axis_size(axis)
    count = w.shape[0] if units.shape[0] > w.shape[0] else units.shape[0]
    if n == 1 or count % n:
        rows, target = _rows(w, units, gx, gi)
        nc = jnp.maximum(jnp.max(jnp.abs(rows)), precision)
    else:
        size = count // n
        rows, target = _rows(w, units, gx, gi, (jax.lax.axis_index(axis) * size, size))
        nc = jnp.maximum(jax.lax.pmax(jnp.max(jnp.abs(rows)), axis), precision)
        rows = jax.lax.all_gather(rows, axis, tiled=True)
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
    chex.assert_rank(w, 2)
    if p == 2.0:
        return jnp.mean(jnp.sqrt(jnp.sum(w * w, axis=1)))
    return jnp.mean(jnp.sum(jnp.abs(w) ** p, axis=1) ** (1.0 / p))


def mean_norm(w: jax.Array, p: float) -> jax.Array:
    """Mean over the m rows of ``(sum_i |W_mu,i|^p)^(1/p)``: (m, d) -> scalar float32."""
    _check_p(p)
    return _mean_norm(jnp.asarray(w, jnp.float32), float(p))


# --------------------------------------------------------------------------------------------
# Input checks (one-line InputErrors)
# --------------------------------------------------------------------------------------------


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
