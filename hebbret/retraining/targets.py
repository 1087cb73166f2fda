"""Target representations for retraining (Tzelepi & Tefas 2018, §3.1; docs/retraining.md).

Each rule moves the layer-L representations ``x`` (N, D) of the database to where they should be
given the information at hand; the network is then regressed onto the moved points
(:mod:`hebbret.retraining.regress`). A rule returns a :class:`TrainingSet`: which database item
each training pair's input is (``index``) and its target (``target``), so a rule may give an item
no pair (RF) or several (an image judged by several users).

- FU (eq. 3): ``x_i - 2 eta (x_i - mu_i)``, mu_i the mean of the n nearest other representations.
- RRI (eq. 8): ``x_i - (1 - beta)(x_i - mu+_i) + beta (x_i - mu-_i)``, mu+_i the mean of all other
  items of i's class, mu-_i the mean of the n nearest items of other classes; distractors d_j (no
  class) among those n get the pair ``d_j + 2 theta (d_j - x_i)`` (eq. 10).
- RF (eqs. 13-14): per query q, relevant x: ``x - 2 alpha (x - q)``; irrelevant:
  ``x + 2 alpha (x - q)``.

Nearest neighbours are exact, squared Euclidean, found by one jitted function per chunk of rows
(distances to the whole database, then ``lax.top_k`` on float32), so memory stays at
``chunk x N`` distances whatever N is.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hebbret import progress
from hebbret.errors import InputError

CHUNK = 256  # rows per kernel call: 256 x 50k float32 distances = 51 MB


class TrainingSet(NamedTuple):
    """Regression pairs: input ``index`` (M,) into the database, ``target`` (M, D) float32."""

    index: np.ndarray
    target: np.ndarray


def check_features(x: np.ndarray, name: str = "representations") -> np.ndarray:
    """(N, D) finite float32, N >= 1, or InputError naming the problem."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name} must have shape (N, D) with N, D >= 1, got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{name} must be floating point, got {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{name} contain NaN or infinite values")
    return x


def _check_step(value: float, name: str, high: float) -> float:
    if not 0.0 <= float(value) <= high:
        raise InputError(f"{name} must be in [0, {high}], got {value}")
    return float(value)


@functools.partial(jax.jit, static_argnames=("k", "exclude"))
def _chunk_nearest(q, q_index, q_label, xb, xb_sq, yb, *, k: int, exclude: str):
    """(c, k) squared distances and indices of the k nearest database rows of each query row;
    ``exclude`` "self" skips the row itself (q_index), "class" every row of its label."""
    d = jnp.sum(q * q, 1, keepdims=True) - 2.0 * q @ xb.T + xb_sq[None, :]
    if exclude == "self":
        d = jnp.where(jnp.arange(xb.shape[0])[None, :] == q_index[:, None], jnp.inf, d)
    elif exclude == "class":
        d = jnp.where(yb[None, :] == q_label[:, None], jnp.inf, d)
    neg, idx = jax.lax.top_k(-d, k)
    return jnp.maximum(-neg, 0.0), idx


def nearest(
    xq: np.ndarray,
    xb: np.ndarray,
    k: int,
    *,
    exclude: str = "none",
    q_index: np.ndarray | None = None,
    yq: np.ndarray | None = None,
    yb: np.ndarray | None = None,
    show: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database rows (squared Euclidean), nearest first: ``(dist, idx)`` (nq, k).

    ``exclude``: "none"; "self" (row ``q_index[i]`` of xb is query i itself, e.g. xq is xb); or
    "class" (only rows whose label ``yb`` differs from ``yq[i]``: the nearest irrelevant items).
    Both sides are centred on the database mean first, so a common offset costs no precision.
    """
    xq, xb = check_features(xq, "query representations"), check_features(xb)
    if xq.shape[1] != xb.shape[1]:
        raise InputError(f"queries have {xq.shape[1]} dimensions, the database {xb.shape[1]}")
    if exclude not in ("none", "self", "class"):
        raise InputError(f"exclude must be 'none', 'self' or 'class', got {exclude!r}")
    n = xb.shape[0]
    available = n - (exclude == "self")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= available:
        raise InputError(f"k must be an integer in [1, {available}] (database of {n}), got {k!r}")
    nq = xq.shape[0]
    q_index = np.arange(nq) if q_index is None else np.asarray(q_index)
    if exclude == "class":
        if yq is None or yb is None:
            raise InputError("nearest irrelevant items need labels for both sides")
        yq, yb = np.asarray(yq), np.asarray(yb)
        if yq.shape != (nq,) or yb.shape != (n,):
            raise InputError(f"labels must have shapes ({nq},) and ({n},)")
        others = n - np.bincount(np.searchsorted(np.unique(yb), yb)).max()
        if others < k:
            raise InputError(f"only {others} items of another class exist for some query, k={k}")
    else:
        yq, yb = np.zeros(nq, np.int32), np.zeros(n, np.int32)
    _, codes = np.unique(np.concatenate([yb, yq]), return_inverse=True)
    yb_c, yq_c = codes[:n].astype(np.int32), codes[n:].astype(np.int32)
    centre = xb.astype(np.float64).mean(0).astype(np.float32)
    db = jnp.asarray(xb - centre)
    db_sq = jnp.sum(db * db, 1)
    yb_j = jnp.asarray(yb_c)
    dist, idx = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
    for s in progress.bar(range(0, nq, CHUNK), desc="nearest", unit="chunk", enabled=show):
        e = min(s + CHUNK, nq)
        pad = CHUNK - (e - s) if nq > CHUNK else 0  # one compiled shape for every chunk

        d, i = _chunk_nearest(
            jnp.asarray(_pad(xq[s:e] - centre, pad)),
            jnp.asarray(_pad(q_index[s:e].astype(np.int32), pad)),
            jnp.asarray(_pad(yq_c[s:e], pad)),
            db, db_sq, yb_j, k=int(k), exclude=exclude,
        )  # fmt: skip
        dist[s:e], idx[s:e] = np.asarray(d)[: e - s], np.asarray(i)[: e - s]
    return dist, idx


def _neighbour_mean(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(N, D) float32 means of the rows ``idx`` (N, k) of x, one neighbour column at a time (no
    (N, k, D) gather)."""
    total = np.zeros((len(idx), x.shape[1]), np.float32)
    for j in range(idx.shape[1]):
        total += x[idx[:, j]]
    return total / idx.shape[1]


def _pad(a: np.ndarray, pad: int) -> np.ndarray:
    """``a`` with its last row repeated ``pad`` times (one compiled chunk shape)."""
    return np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a


def fu_targets(x: np.ndarray, *, n: int = 2, eta: float = 0.5, show: bool = False) -> TrainingSet:
    """FU (eq. 3): every item i gets ``x_i - 2 eta (x_i - mu_i)``, mu_i the mean of its n nearest
    other items; eta in [0, 0.5] (0.5: the target is mu_i)."""
    x = check_features(x)
    eta = _check_step(eta, "eta", 0.5)
    _, idx = nearest(x, x, n, exclude="self", show=show)
    mu = _neighbour_mean(x, idx)
    return TrainingSet(np.arange(len(x)), (x - 2.0 * eta * (x - mu)).astype(np.float32))


def rri_targets(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    n: int = 5,
    beta: float = 0.2,
    theta: float = 0.5,
    distractor: int | None = None,
    show: bool = False,
) -> TrainingSet:
    """RRI (eq. 8) for every labelled item, plus the distractor pairs of eq. 10.

    Args:
      x: (N, D) representations; labels: (N,) integer class of each item, ``distractor`` marking
        items of no class (they are irrelevant to every query and get only eq.-10 pairs).
      n: how many nearest irrelevant items form mu-; beta in [0, 1]; theta in [0, 0.5].
    """
    x = check_features(x)
    if labels is None:
        raise InputError("RRI needs the database labels (relevance information); got none")
    labels = np.asarray(labels)
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be ({len(x)},) integers, got {labels.shape} {labels.dtype}")
    beta, theta = _check_step(beta, "beta", 1.0), _check_step(theta, "theta", 0.5)
    is_d = labels == distractor if distractor is not None else np.zeros(len(x), bool)
    keep = np.flatnonzero(~is_d)
    classes, inverse, counts = np.unique(labels[keep], return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise InputError(f"class {classes[counts.argmin()]} has one item: no other relevant item")
    if len(classes) < 2 and not is_d.any():
        raise InputError("RRI needs irrelevant items: the database has a single class")
    sums = np.stack([x[keep[inverse == k]].sum(0, dtype=np.float64) for k in range(len(classes))])
    # distractors get a label of their own, so "class" exclusion keeps them irrelevant to all
    _, idx = nearest(x[keep], x, n, exclude="class", yq=labels[keep], yb=labels, show=show)
    mu_minus = _neighbour_mean(x, idx)
    xi = x[keep]
    target = np.empty_like(xi)
    for s in range(0, len(keep), CHUNK * 16):  # float64 in chunks: memory stays O(chunk x D)
        rows = slice(s, s + CHUNK * 16)
        c = inverse[rows]
        mu_plus = (sums[c] - xi[rows]) / (counts[c] - 1)[:, None]
        target[rows] = (
            xi[rows] - (1.0 - beta) * (xi[rows] - mu_plus) + beta * (xi[rows] - mu_minus[rows])
        )
    index, targets = [keep], [target.astype(np.float32)]
    if is_d.any():
        rows, cols = np.nonzero(is_d[idx])
        d = idx[rows, cols]
        index.append(d)
        targets.append((x[d] + 2.0 * theta * (x[d] - xi[rows])).astype(np.float32))
    return TrainingSet(np.concatenate(index), np.concatenate(targets))


def rf_targets(
    xq: np.ndarray,
    x: np.ndarray,
    relevant: np.ndarray,
    irrelevant: np.ndarray,
    *,
    alpha: float = 0.5,
) -> TrainingSet:
    """RF (eqs. 13-14) from user feedback.

    Args:
      xq: (U, D) the users' query representations; x: (N, D) database representations.
      relevant, irrelevant: (U, r) and (U, s) database indices each user marked, -1 padding.
      alpha: in [0, 0.5] (0.5: a relevant item's target is the query itself).
    """
    xq, x = check_features(xq, "query representations"), check_features(x)
    alpha = _check_step(alpha, "alpha", 0.5)
    pairs_i, pairs_t = [], []
    for marks, sign, name in ((relevant, -1.0, "relevant"), (irrelevant, 1.0, "irrelevant")):
        marks = np.asarray(marks)
        if (
            marks.ndim != 2
            or marks.shape[0] != len(xq)
            or not np.issubdtype(marks.dtype, np.integer)
        ):
            raise InputError(f"{name} marks must be ({len(xq)}, m) integers, got {marks.shape}")
        if (marks < -1).any() or (marks >= len(x)).any():
            raise InputError(f"{name} marks must be database indices in [0, {len(x)}) or -1")
        if name == "relevant" and not (marks >= 0).any(1).all():
            user = int(np.flatnonzero(~(marks >= 0).any(1))[0])
            raise InputError(f"user {user} marked no relevant item among their results")
        users, cols = np.nonzero(marks >= 0)
        i = marks[users, cols]
        pairs_i.append(i)
        pairs_t.append(x[i] + sign * 2.0 * alpha * (x[i] - xq[users]))
    return TrainingSet(np.concatenate(pairs_i), np.concatenate(pairs_t).astype(np.float32))


def simulate_feedback(
    xq: np.ndarray,
    yq: np.ndarray,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    relevant: int = 12,
    irrelevant: int = 1,
    depth: int = 1000,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated users (the paper's CIFAR-10 protocol: 12 relevant + 1 irrelevant per user): user u
    reads its ranked results from the top and marks the first ``relevant`` items of its class and
    the first ``irrelevant`` of another, within the top ``depth`` (items in ``skip[u]``, (U, m)
    indices with -1 padding, already judged, are passed over). Returns the (U, relevant) and
    (U, irrelevant) marks, -1 where a user found fewer."""
    yq, labels = np.asarray(yq), np.asarray(labels)
    if yq.shape != (len(xq),) or labels.shape != (len(x),):
        raise InputError(f"labels must have shapes ({len(xq)},) and ({len(x)},)")
    _, idx = nearest(xq, x, min(depth, len(x)))
    if skip is not None:
        judged = (idx[:, :, None] == np.asarray(skip)[:, None, :]).any(-1)
        idx = np.where(judged, -1, idx)
    rel = np.where(idx >= 0, labels[idx] == yq[:, None], False)
    irr = np.where(idx >= 0, labels[idx] != yq[:, None], False)

    def first(mask: np.ndarray, m: int) -> np.ndarray:
        out = np.full((len(xq), m), -1, np.int64)
        for u in range(len(xq)):
            found = idx[u, mask[u]][:m]
            out[u, : len(found)] = found
        return out

    return first(rel, relevant), first(irr, irrelevant)
