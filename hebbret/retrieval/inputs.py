"""Checks and conditions the user's inputs: features or codes, labels, list depths, ranks.

:func:`check_inputs` returns float32 features (or uint32 packed codes) and dense int32 class ids;
any invalid input raises one one-line :class:`hebbret.errors.InputError`. Float features are
conditioned by :func:`conditioned` without changing any ranking: Euclidean / Manhattan features
are centred on the database mean (both distances are translation invariant,
``d(q - m, b - m) = d(q, b)``), and magnitudes outside ``2^+-32`` are multiplied by an exact
power of two ``2**e`` (``d(2^e q, 2^e b) = 2^(p e) d(q, b)`` with ``p = 2`` for squared Euclidean,
1 for Euclidean and Manhattan, 0 for cosine), which :func:`hebbret.retrieval.distances.unscaled`
undoes. :func:`list_depth` maps ``R`` (or "all") to a list depth <= N, :func:`ranks` checks the
ranks N of precision@N.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from hebbret.errors import InputError
from hebbret.retrieval.distances import BIT_METRICS, METRICS


def check_inputs(xq, xb, yq, yb, metric):
    """Checked ``(xq, xb, yq, yb, exponent)``: float32 features conditioned for the metric by
    :func:`conditioned` (multiplied by ``2**exponent``), or uint32 codes (exponent 0), and
    labels as dense int32 class ids (or None)."""
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    xq, xb = _array(xq, "queries"), _array(xb, "database")
    for name, x in (("queries", xq), ("database", xb)):
        if x.ndim != 2:
            raise InputError(f"{name} must be a 2-D (n, d) array, got shape {x.shape}")
    if xb.shape[0] == 0:
        raise InputError("empty database: xb has 0 rows")
    if xq.shape[0] == 0:
        raise InputError("no queries: xq has 0 rows")
    if xq.shape[1] != xb.shape[1]:
        raise InputError(f"queries have {xq.shape[1]} columns but the database has {xb.shape[1]}")
    exponent = 0
    if metric in BIT_METRICS:
        for name, x in (("queries", xq), ("database", xb)):
            if x.dtype != np.uint32:
                raise InputError(
                    f"metric {metric!r} needs packed uint32 codes (hebbret.retrieval.pack_bits); "
                    f"{name} are {x.dtype}"
                )
    else:
        if xb.shape[1] == 0:
            raise InputError("features have 0 columns")
        for name, x in (("queries", xq), ("database", xb)):
            if x.dtype.kind not in "biuf":
                raise InputError(f"{name} features must be real numbers, got {x.dtype}")
            if not _all_finite(x):
                raise InputError(f"{name} contain NaN or inf")
            if metric == "cosine" and np.any(~np.any(x != 0, axis=1)):
                raise InputError(f"{name} contain an all-zero row: cosine similarity is undefined")
        xq, xb, exponent = conditioned(metric, xq, xb)
    if yq is None and yb is None:
        return xq, xb, None, None, exponent
    if yq is None or yb is None:
        raise InputError("labels are needed for both queries and database")
    yq, yb = class_ids(_array(yq, "query labels"), _array(yb, "database labels"), len(xq), len(xb))
    return xq, xb, yq, yb, exponent


def _array(x, what: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what} are not a rectangular array: {str(e).splitlines()[0]}") from None


def _all_finite(x: np.ndarray, rows: int = 4096) -> bool:
    return all(np.isfinite(x[i : i + rows]).all() for i in range(0, len(x), rows))


_SAFE = (-32, 32)  # binary exponents of magnitudes whose squares and sums float32 holds


def _exponent(peak) -> np.ndarray:
    """e such that ``peak * 2**e`` lies in [1, 2) when ``peak`` is outside [2^-32, 2^32], else 0
    (and 0 where peak is 0), elementwise; from the binary exponent, so it never overflows."""
    _, e = np.frexp(np.asarray(peak, np.float64))  # peak = m 2^e, m in [0.5, 1)
    return np.where((peak > 0) & ((e - 1 < _SAFE[0]) | (e - 1 > _SAFE[1])), 1 - e, 0)


def conditioned(
    metric: str, xq: np.ndarray, xb: np.ndarray, rows: int = 4096
) -> tuple[np.ndarray, np.ndarray, int]:
    """Float32 features whose distances float32 can compute: ``(xq', xb', e)``.

    The kernel computes ``|q|^2 + |b|^2 - 2 q.b`` (Euclidean), ``sum |q - b|`` (Manhattan) and
    ``q.b / (|q| |b|)`` (cosine) in float32. Nothing done here changes a ranking, but without it
    float32 arithmetic fails on legitimate inputs:

    - Euclidean and Manhattan (translation invariant): both sides minus the database's
      per-column mean (float64, Chan's stable update), rounded to a multiple of the largest power
      of two not above the column's standard deviation. A common offset of 1e3 on unit-scale
      features otherwise cancels the digits that separate near neighbours; a mean small against
      the spread rounds to 0 (nothing to do), and small-integer features stay exact, so exactly
      tied distances stay tied. Features beyond 2^+-32 in magnitude, before or after centring,
      are multiplied by one power of two ``2**e`` (exact, ``np.ldexp``) into [1, 2), so squares
      neither overflow (1e20) nor underflow (1e-30).
    - Cosine: each row beyond 2^+-32 in magnitude times its own power of two.
    """

    def chunks(x: np.ndarray):
        for i in range(0, len(x), rows):
            yield i, x[i : i + rows].astype(np.float64)

    if metric == "cosine":

        def unit_rows(x: np.ndarray) -> np.ndarray:
            e = np.concatenate([_exponent(np.abs(c).max(1)) for _, c in chunks(x)])
            if not np.any(e):
                return x.astype(np.float32)
            out = np.empty(x.shape, np.float32)
            for i, c in chunks(x):
                out[i : i + rows] = np.ldexp(c, e[i : i + rows, None])
            return out

        return unit_rows(xq), unit_rows(xb), 0
    lo = np.minimum(xq.min(0), xb.min(0)).astype(np.float64)  # per-column range of both sides
    hi = np.maximum(xq.max(0), xb.max(0)).astype(np.float64)
    e0 = int(_exponent(max(np.abs(lo).max(), np.abs(hi).max())))
    count, mean, m2 = 0, np.zeros(xb.shape[1]), np.zeros(xb.shape[1])
    for _, c in chunks(xb):  # mean and variance of the database in units of 2**-e0
        c = np.ldexp(c, e0) if e0 else c
        cm = c.mean(0)
        delta, count = cm - mean, count + len(c)
        mean += delta * len(c) / count
        m2 += np.square(c - cm).sum(0) + np.square(delta) * len(c) * (count - len(c)) / count
    std = np.sqrt(m2 / count)
    grid = np.ldexp(1.0, np.frexp(std)[1] - 1)  # the largest power of two <= std
    shift = np.where(std > 0, np.round(mean / np.where(std > 0, grid, 1.0)) * grid, mean)
    lo, hi = np.ldexp(lo, e0) - shift, np.ldexp(hi, e0) - shift
    e1 = int(_exponent(max(np.abs(lo).max(), np.abs(hi).max())))
    if not np.any(shift) and e0 == 0 and e1 == 0:
        return xq.astype(np.float32), xb.astype(np.float32), 0

    def convert(x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, np.float32)
        for i, c in chunks(x):
            out[i : i + rows] = np.ldexp(np.ldexp(c, e0) - shift, e1)
        return out

    return convert(xq), convert(xb), e0 + e1


def class_ids(yq: np.ndarray, yb: np.ndarray, nq: int, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """Any integer or string labels -> dense int32 class ids shared by queries and database (so
    int64 labels that agree modulo 2**32 stay distinct)."""
    kinds = set()
    for name, y, n in (("query", yq, nq), ("database", yb, nb)):
        if y.ndim != 1 or y.shape[0] != n:
            raise InputError(f"{name} labels have shape {y.shape} but there are {n} {name} items")
        if y.dtype.kind not in "biuUS":
            raise InputError(f"{name} labels must be integers or strings, got {y.dtype}")
        kinds.add("text" if y.dtype.kind in "US" else "int")
    if len(kinds) > 1:
        raise InputError(
            f"query labels ({yq.dtype}) and database labels ({yb.dtype}) are not comparable: "
            "give both as integers or both as strings"
        )
    if yq.dtype.kind == "S" or yb.dtype.kind == "S":
        yq, yb = yq.astype(str), yb.astype(str)
    elif kinds == {"int"} and {yq.dtype.kind, yb.dtype.kind} - {"b"} == {"i", "u"}:
        # int64 with uint64 would promote to float64 and merge labels above 2**53
        big = max((int(y.max()) for y in (yq, yb) if y.dtype.kind == "u" and y.size), default=0)
        common = np.int64 if big <= np.iinfo(np.int64).max else object
        yq, yb = yq.astype(common), yb.astype(common)
    _, ids = np.unique(np.concatenate([yq, yb]), return_inverse=True)
    ids = ids.astype(np.int32)
    return ids[:nq], ids[nq:]


def check_leave_out(leave_out, nq: int, n: int) -> np.ndarray:
    """``leave_out`` checked: (nq,) integer database indices in [0, n), with n >= 2."""
    idx = _array(leave_out, "leave_out")
    if idx.shape != (nq,) or idx.dtype.kind not in "iu":
        raise InputError(
            f"leave_out must be ({nq},) integer database indices (one per query), "
            f"got {idx.dtype} {idx.shape}"
        )
    if n < 2:
        raise InputError("leave-one-out needs a database of at least 2 items")
    if nq and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"leave_out indices must lie in [0, {n}), the database rows")
    return idx.astype(np.int64)


def list_depth(R, n: int) -> int:  # noqa: N803  (the literature's name)
    """R (a positive integer, or None / "all" for the whole database) -> a list depth <= n."""
    if R is None or (isinstance(R, str) and R.lower() == "all"):
        return n
    if isinstance(R, bool | np.bool_) or not isinstance(R, int | np.integer):
        raise InputError(f"R must be a positive integer or 'all', got {R!r}")
    if R < 1:
        raise InputError(f"R must be a positive integer or 'all', got {R}")
    return min(int(R), n)


def ranks(at, n: int) -> tuple[int, ...]:
    """``at`` (a sequence of ranks N for precision@N) checked: integers in [1, n]."""
    if isinstance(at, str) or not isinstance(at, Sequence | np.ndarray):
        raise InputError(f"at must be a sequence of ranks, e.g. (10, 100), got {at!r}")
    for a in at:
        if isinstance(a, bool | np.bool_) or not isinstance(a, int | np.integer):
            raise InputError(f"ranks in at must be integers, got {a!r}")
        if not 1 <= a <= n:
            raise InputError(f"precision@N needs 1 <= N <= database size {n}, got N = {a}")
    return tuple(int(a) for a in at)


def more_depths(depths) -> tuple:
    """``more_R`` checked as a sequence (its items are checked by :func:`list_depth`)."""
    if isinstance(depths, str) or not isinstance(depths, Sequence | np.ndarray):
        raise InputError(f"more_R must be a sequence of list depths, got {depths!r}")
    return tuple(depths)


def warn_if_all_relevant(yq: np.ndarray, yb: np.ndarray) -> None:
    """UserWarning when every item has the one label: every ranking then scores 100."""
    if np.all(yb == yb[0]) and np.all(yq == yb[0]):
        warnings.warn(
            "every database item is relevant to every query (one class): mAP is 100 "
            "whatever the ranking",
            UserWarning,
            stacklevel=3,
        )
