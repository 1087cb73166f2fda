"""Fuzzing the public entry points with generated bad inputs.

Every case feeds one deterministic input to ``retrieval.evaluate`` (and ``search`` /
``pairwise_distances``), ``hashing.fit`` / ``hashing.encode``, ``data.load`` or the CLI, and
states what must happen:

- ``OK``: the answer equals an independent numpy reference computed on the same inputs (float64
  distances; the exact expected AP over tie orders, as ``test_retrieval.np_exact_fixed``);
- ``ERROR``: :class:`hebbret.errors.InputError` with a one-line message (CLI: exit status 2, one
  line ``hebbret: error: ...`` on stderr and nothing written at ``--out``);
- ``EITHER``: an InputError, or else the reference answer.

Anything else (another exception type, a leaked warning, a wrong number) fails. The ~20 library
bugs this module first found (wrong answers on damaged archives, 16-bit images, huge offsets,
subnormal features, uint64 labels, ...) are fixed; :data:`INPUT_COUNTS` counts the distinct
inputs per entry point.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import pathlib
import posixpath
import struct
import tarfile
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from test_retrieval import np_exact_fixed, np_exact_retrieved

from hebbret import cli, data, hashing
from hebbret import retrieval as rt
from hebbret.errors import InputError
from hebbret.rules import biohash

OK, ERROR, EITHER = "ok", "error", "either"
ATOL = 1e-4


def one_line_input_error(call):
    """Runs ``call()``; it must raise InputError with a one-line message."""
    with pytest.raises(InputError) as err:
        call()
    assert "\n" not in str(err.value), repr(str(err.value))
    return err.value


def attempt(call, expect):
    """``call()`` under ``expect``: ERROR: a one-line InputError (returns None); OK: its result;
    EITHER: its result, or None after a one-line InputError."""
    if expect == ERROR:
        one_line_input_error(call)
        return None
    try:
        return call()
    except InputError as e:
        if expect != EITHER:
            raise
        assert "\n" not in str(e), repr(str(e))
        return None


# ============================================================================================
# retrieval.evaluate / search / pairwise_distances
# ============================================================================================

NQ, NB, D = 8, 40, 4
_rng = np.random.default_rng(20240917)
XQ = _rng.normal(size=(NQ, D)).astype(np.float32)
XB = _rng.normal(size=(NB, D)).astype(np.float32)
YQ = np.array([0, 1, 2, 0, 1, 2, 0, 1])
YB = np.tile([0, 1, 2, 2, 1], NB // 5)[_rng.permutation(NB)]
INT_Q = _rng.integers(-1, 2, (NQ, D))  # 3 levels: many exactly tied distances
INT_B = _rng.integers(-1, 2, (NB, D))
BITS_Q, BITS_B = _rng.integers(0, 2, (NQ, 12)), _rng.integers(0, 2, (NB, 12))
WIDE_Q, WIDE_B = _rng.integers(0, 2, (NQ, 300)), _rng.integers(0, 2, (NB, 300))
CODES_Q = rt.pack_bits(_rng.integers(0, 2, (NQ, 128)))  # (NQ, 4) uint32: the base's shape
CODES_B = rt.pack_bits(_rng.integers(0, 2, (NB, 128)))


def _both(f) -> dict:
    """The same transformation of the base queries and database (xq, xb)."""
    return dict(xq=f(XQ, 0), xb=f(XB, 1))


def _with(x: np.ndarray, index, value) -> np.ndarray:
    x = np.array(x, copy=True)
    x[index] = value
    return x


def _ints(dtype, lo, hi):
    return lambda x, side: np.random.default_rng(side).integers(lo, hi, x.shape, dtype=dtype)


def _scaled_to(peak, dtype):
    """Features whose largest magnitude is exactly ``peak`` (float64 arithmetic)."""
    top = max(np.abs(XQ).max(), np.abs(XB).max())

    def f(x, side):
        with np.errstate(over="ignore"):
            return (x.astype(np.float64) / top * peak).astype(dtype)

    return f


def _times(factor, dtype):
    return lambda x, side: (x.astype(np.float64) * factor).astype(dtype)


def _plus(offset, dtype):
    return lambda x, side: (x.astype(np.float64) + offset).astype(dtype)


_DUP = np.concatenate([XB[:20], XB[:20]])  # every database row twice: exact ties


_PD_MARKS: dict[str, object] = {}  # marks of search / pairwise_distances where they differ


def ev(case_id, expect=OK, *flags, marks=(), features=True, pd_marks=None, **changes):
    """One evaluate case: the base inputs with ``changes``. ``features``: whether the change
    touches the features / metric (those cases also go to search and pairwise_distances, with
    ``pd_marks`` if given, else ``marks``); ``flags`` may give ``features`` positionally (a bool)
    and ``marks`` (a bug mark)."""
    for flag in flags:
        if isinstance(flag, bool):
            features = flag
        else:
            marks = flag
    if pd_marks is not None:
        _PD_MARKS[case_id] = pd_marks
    case = dict(xq=XQ, xb=XB, yq=YQ, yb=YB, metric="sqeuclidean", R=10, at=())
    case.update(changes)
    return pytest.param(case, expect, features, id=case_id, marks=marks)


EVALUATE_CASES = [
    ev("base"),
    # ---- shapes
    ev("xq-1d", ERROR, xq=XQ[0]),
    ev("xb-1d", ERROR, xb=XB[:, 0]),
    ev("xq-3d", ERROR, xq=XQ[:, :, None]),
    ev("xb-3d", ERROR, xb=XB[None]),
    ev("xq-0d", ERROR, xq=np.float32(1.0)),
    ev("xq-empty-list", ERROR, xq=[]),
    ev("column-mismatch", ERROR, xq=XQ[:, :3]),
    ev("xb-transposed", ERROR, xb=XB.T),
    ev("zero-queries", ERROR, xq=XQ[:0], yq=YQ[:0]),
    ev("zero-database", ERROR, xb=XB[:0], yb=YB[:0]),
    ev("zero-columns", ERROR, xq=XQ[:, :0], xb=XB[:, :0]),
    ev(
        "ragged-list",
        ERROR,
        xq=[[0.0, 1.0, 2.0, 3.0], [1.0]] * 4,
    ),
    ev("one-column", xq=XQ[:, :1], xb=XB[:, :1]),
    ev("one-query", xq=XQ[:1], yq=YQ[:1]),
    ev("one-database-item", xb=XB[:1], yb=YB[:1]),
    ev("nested-lists", xq=XQ.tolist(), xb=XB.tolist()),
    ev("negative-strides", xb=XB[::-1], yb=YB[::-1]),
    ev("fortran-order", xq=np.asfortranarray(XQ), xb=np.asfortranarray(XB)),
    # ---- dtypes
    ev("bool", **_both(lambda x, s: x > 0)),
    ev(
        "int8-with-min",
        xq=_with(_ints(np.int8, -128, 128)(XQ, 0), (0, 0), -128),
        xb=_with(_ints(np.int8, -128, 128)(XB, 1), (3, 2), -128),
    ),
    ev("uint8", **_both(_ints(np.uint8, 0, 256))),
    ev("int16", **_both(_ints(np.int16, -(2**15), 2**15))),
    ev("int32-wide", **_both(_ints(np.int32, -(2**31), 2**31 - 1))),
    ev("int64-2**40", **_both(_ints(np.int64, -(2**40), 2**40))),
    ev("uint32", **_both(_ints(np.uint32, 0, 2**32 - 1))),
    ev(
        "uint64-near-2**64",
        **_both(
            lambda x, s: np.uint64(2**64 - 2**11) - np.uint64(2**11) * _ints(np.uint64, 0, 64)(x, s)
        ),
    ),
    ev("float16", **_both(lambda x, s: x.astype(np.float16))),
    ev("float64", **_both(lambda x, s: x.astype(np.float64))),
    ev("float16-vs-int8", xq=XQ.astype(np.float16), xb=_ints(np.int8, -3, 4)(XB, 1)),
    ev("complex-both", ERROR, **_both(lambda x, s: x + 1j)),
    ev("complex-query-only", ERROR, xq=XQ.astype(np.complex64)),
    ev("str", ERROR, **_both(lambda x, s: x.astype(str))),
    ev("bytes", ERROR, **_both(lambda x, s: x.astype("S"))),
    ev("object-numbers", ERROR, **_both(lambda x, s: x.astype(object))),
    ev("datetime64", ERROR, **_both(lambda x, s: np.zeros(x.shape, "datetime64[s]"))),
    ev("timedelta64", ERROR, **_both(lambda x, s: np.zeros(x.shape, "timedelta64[s]"))),
    ev("structured", ERROR, **_both(lambda x, s: np.zeros(x.shape, [("a", "f4")]))),
    # ---- values
    ev("nan-query", ERROR, xq=_with(XQ, (2, 1), np.nan)),
    ev("nan-database", ERROR, xb=_with(XB, (39, 3), np.nan)),
    ev("+inf-query", ERROR, xq=_with(XQ, (0, 0), np.inf)),
    ev("-inf-database", ERROR, xb=_with(XB, (5, 2), -np.inf)),
    ev("nan-float16", ERROR, xb=_with(XB.astype(np.float16), (0, 0), np.nan)),
    ev("float32-3e38", **_both(_scaled_to(3e38, np.float32))),
    ev("float32-max", **_both(_scaled_to(np.finfo(np.float32).max, np.float32))),
    ev(
        "float64-1e300",
        **_both(_times(1e300, np.float64)),
    ),
    ev("float64-1e300-manhattan", metric="manhattan", **_both(_times(1e300, np.float64))),
    ev("float64-1e300-cosine", metric="cosine", **_both(_times(1e300, np.float64))),
    ev(
        "float64-max-manhattan",
        metric="manhattan",
        **_both(_scaled_to(np.finfo(np.float64).max, np.float64)),
    ),
    ev(
        "float64-1e-300",
        **_both(_times(1e-300, np.float64)),
    ),
    ev(
        "float64-subnormal-1e-310",
        **_both(_times(1e-310, np.float64)),
    ),
    ev(
        "float64-subnormal-1e-310-manhattan",
        metric="manhattan",
        **_both(_times(1e-310, np.float64)),
    ),
    ev(
        "float64-subnormal-1e-310-cosine",
        metric="cosine",
        **_both(_times(1e-310, np.float64)),
    ),
    ev("float32-subnormal-1e-40", **_both(_times(1e-40, np.float32))),
    ev("float32-smallest-subnormal", **_both(_times(1e-45, np.float32))),
    ev("float32-scale-1e-30", **_both(_times(1e-30, np.float32))),
    ev("float32-scale-1e30", **_both(_times(1e30, np.float32))),
    ev("float64-scale-1e-30", **_both(_times(1e-30, np.float64))),
    ev("float64-scale-1e30", **_both(_times(1e30, np.float64))),
    ev("float32-offset-1e6", **_both(_plus(1e6, np.float32))),
    ev("float64-offset-1e6", **_both(_plus(1e6, np.float64))),
    ev(
        "float64-offset--1e15",
        **_both(_plus(-1e15, np.float64)),
    ),
    ev("float64-offset-1e30-swamps-data", **_both(_plus(1e30, np.float64))),
    ev("constant-column", xq=_with(XQ, (slice(None), 0), 7.0), xb=_with(XB, (slice(None), 0), 7.0)),
    ev("constant-database", xb=np.repeat(XB[:1], NB, 0)),
    ev("zero-query-row", xq=_with(XQ, 3, 0.0)),
    ev("negative-zero-rows", xq=_with(XQ, 1, -0.0), xb=_with(XB, 7, -0.0)),
    ev("duplicated-database-rows", xb=_DUP),
    ev("queries-are-database-rows", xq=XB[:NQ]),
    ev("integer-grid-ties", xq=INT_Q, xb=INT_B),
    # ---- labels (features unchanged)
    ev("labels-float-query", ERROR, False, yq=YQ.astype(float)),
    ev("labels-float-both", ERROR, False, yq=YQ.astype(float), yb=YB.astype(float)),
    ev("labels-integral-float32", ERROR, False, yq=YQ.astype(np.float32), yb=YB.astype(np.float32)),
    ev("labels-nan", ERROR, False, yq=_with(YQ.astype(float), 0, np.nan)),
    ev("labels-complex", ERROR, False, yq=YQ + 0j, yb=YB + 0j),
    ev("labels-str", features=False, yq=YQ.astype(str), yb=YB.astype(str)),
    ev("labels-bytes", features=False, yq=YQ.astype("S"), yb=YB.astype("S")),
    ev("labels-bytes-vs-str", features=False, yq=YQ.astype("S"), yb=YB.astype(str)),
    ev(
        "labels-unicode",
        features=False,
        yq=np.array(["ä", "猫", "🐝"])[YQ],
        yb=np.array(["ä", "猫", "🐝"])[YB],
    ),
    ev(
        "labels-empty-strings",
        features=False,
        yq=np.array(["", " ", "  "])[YQ],
        yb=np.array(["", " ", "  "])[YB],
    ),
    ev("labels-int64-beyond-int32", features=False, yq=YQ + 2**40, yb=YB + 2**40),
    ev("labels-equal-mod-2**32", features=False, yq=YQ * 2**32, yb=YB * 2**32),
    ev(
        "labels-uint64-top",
        features=False,
        yq=np.uint64(2**64 - 1) - YQ.astype(np.uint64),
        yb=np.uint64(2**64 - 1) - YB.astype(np.uint64),
    ),
    ev("labels-uint64-vs-int64-small", features=False, yq=YQ.astype(np.uint64), yb=YB),
    ev(
        "labels-uint64-vs-int64-beyond-2**53",
        features=False,
        yq=(YQ + 2**53).astype(np.uint64),
        yb=np.where(YB == 0, 2**53, 2**53 + 1),
    ),
    ev(
        "labels-int8-vs-int64",
        features=False,
        yq=np.array([-128, 1, 2, -128, 1, 2, -128, 1], np.int8),
        yb=np.where(YB == 0, -128, YB),
    ),
    ev("labels-negative", features=False, yq=-YQ - 1, yb=-YB - 1),
    ev("labels-bool", features=False, yq=YQ > 0, yb=YB > 0),
    ev("labels-bool-vs-int", features=False, yq=YQ > 0, yb=(YB > 0).astype(int)),
    ev("labels-2d-query", ERROR, False, yq=YQ[:, None]),
    ev("labels-row-vector", ERROR, False, yb=YB[None]),
    ev("labels-scalar", ERROR, False, yq=0),
    ev("labels-short-query", ERROR, False, yq=YQ[:-1]),
    ev("labels-long-database", ERROR, False, yb=np.append(YB, 0)),
    ev("labels-none-query", ERROR, False, yq=None),
    ev("labels-none-database", ERROR, False, yb=None),
    ev(
        "labels-none-both",
        ERROR,
        False,
        yq=None,
        yb=None,
    ),
    ev("labels-int-vs-str", ERROR, False, yb=YB.astype(str)),
    ev("labels-mixed-list", ERROR, False, yq=[0, "a", 1, 2, 0, 1, 2, 0]),
    ev(
        "labels-object-strings",
        ERROR,
        False,
        yq=YQ.astype(str).astype(object),
        yb=YB.astype(str).astype(object),
    ),
    ev("labels-python-int-beyond-int64", ERROR, False, yq=[2**70] * NQ),
    ev(
        "labels-datetime",
        ERROR,
        False,
        yq=YQ.astype("datetime64[D]"),
        yb=YB.astype("datetime64[D]"),
    ),
    ev("labels-python-lists", features=False, yq=YQ.tolist(), yb=YB.tolist()),
    ev("labels-class-absent-from-database", features=False, yq=_with(YQ, 0, 9)),
    ev("labels-one-class", features=False, yq=np.zeros(NQ, int), yb=np.zeros(NB, int)),
    ev("labels-all-distinct", features=False, yq=np.arange(NQ) * 5, yb=np.arange(NB)),
    # ---- R
    *[
        ev(f"R={r!r}", ERROR, False, R=r)
        for r in (
            0,
            -3,
            2.5,
            2.0,
            "some",
            "10",
            " all",
            True,
            np.True_,
            float("nan"),
            [5],
            -(2**70),
            np.int64(-1),
            1j,
        )
    ],
    # (the R = N cases share one compiled configuration with the at cases: at = (1, N))
    *[
        ev(f"R={r!r}", features=False, R=r, at=(1, NB))
        for r in (None, "all", "ALL", 10**12, 2**64, NB)
    ],
    *[ev(f"R={r!r}", features=False, R=r) for r in (np.int64(10), np.uint64(10), np.int8(10))],
    ev("R=1", features=False, R=1),
    # ---- at
    *[ev(f"at={a!r}", ERROR, False, at=a) for a in ((0,), (NB + 1,), (-1,), (1, 0))],
    ev("at=(1,N)", features=False, R=None, at=(1, NB)),
    ev("at=array", features=False, R=None, at=np.array([1, NB])),
    ev("at=[1,N]", features=False, R=None, at=[1, NB]),
    ev(
        "at=(10.5,)",
        ERROR,
        False,
        at=(10.5,),
    ),
    ev(
        "at=('10',)",
        ERROR,
        False,
        at=("10",),
    ),
    ev(
        "at=('x',)",
        ERROR,
        False,
        at=("x",),
    ),
    ev("at=10", ERROR, False, at=10),
    # ---- metrics and packed codes
    ev("metric-unknown", ERROR, metric="chebyshev"),
    ev("metric-None", ERROR, metric=None),
    ev("metric-capitalised", ERROR, metric="Euclidean"),
    ev("metric-empty", ERROR, metric=""),
    ev("tie-unknown", ERROR, False, tie="best"),
    ev("normaliser-unknown", ERROR, False, normaliser="all"),
    ev("euclidean", metric="euclidean"),
    ev("manhattan", metric="manhattan"),
    ev("cosine", metric="cosine"),
    ev("hamming-float-features", ERROR, metric="hamming"),
    ev("overlap-float-features", ERROR, metric="overlap"),
    ev("hamming-packed", metric="hamming", xq=rt.pack_bits(BITS_Q), xb=rt.pack_bits(BITS_B)),
    ev("overlap-packed", metric="overlap", xq=rt.pack_bits(BITS_Q), xb=rt.pack_bits(BITS_B)),
    ev("hamming-300-bits", metric="hamming", xq=rt.pack_bits(WIDE_Q), xb=rt.pack_bits(WIDE_B)),
    ev(
        "hamming-int32-codes",
        ERROR,
        metric="hamming",
        xq=rt.pack_bits(BITS_Q).view(np.int32),
        xb=rt.pack_bits(BITS_B).view(np.int32),
    ),
    ev(
        "hamming-uint64-codes",
        ERROR,
        metric="hamming",
        xq=rt.pack_bits(BITS_Q).astype(np.uint64),
        xb=rt.pack_bits(BITS_B).astype(np.uint64),
    ),
    ev(
        "hamming-width-mismatch",
        ERROR,
        metric="hamming",
        xq=rt.pack_bits(WIDE_Q),
        xb=rt.pack_bits(BITS_B),
    ),
    ev("hamming-bool-bits", ERROR, metric="hamming", xq=BITS_Q > 0, xb=BITS_B > 0),
    ev(
        "hamming-zero-words",
        EITHER,
        metric="hamming",
        xq=np.zeros((NQ, 0), np.uint32),
        xb=np.zeros((NB, 0), np.uint32),
    ),
    ev("sqeuclidean-on-packed-codes", xq=CODES_Q, xb=CODES_B),
    ev("cosine-zero-query-row", ERROR, metric="cosine", xq=_with(XQ, 3, 0.0)),
    ev("cosine-zero-database-row", ERROR, metric="cosine", xb=_with(XB, 0, 0.0)),
    ev("cosine-negative-zero-row", ERROR, metric="cosine", xb=_with(XB, 0, -0.0)),
    ev("cosine-bool-zero-row", ERROR, metric="cosine", **_both(lambda x, s: x > 10)),
    # ---- pairs of mutations
    ev("pair:offset-1e6+duplicates", **_both(_plus(1e6, np.float32)) | dict(xb=_DUP + 1e6)),
    ev(
        "pair:int8+str-labels",
        xq=INT_Q.astype(np.int8),
        xb=INT_B.astype(np.int8),
        yq=YQ.astype(str),
        yb=YB.astype(str),
    ),
    ev("pair:float16+R=all", R="all", at=(1, NB), **_both(lambda x, s: x.astype(np.float16))),
    ev("pair:scale-1e30+cosine", metric="cosine", **_both(_times(1e30, np.float64))),
    ev("pair:bool+manhattan", metric="manhattan", **_both(lambda x, s: x > 0)),
    ev("pair:uint8+at", R=None, at=(1, NB), **_both(_ints(np.uint8, 0, 256))),
    ev(
        "pair:float32-max+euclidean",
        metric="euclidean",
        **_both(_scaled_to(np.finfo(np.float32).max, np.float32)),
    ),
    ev("pair:int64-labels+duplicates", xb=_DUP, yq=YQ + 2**40, yb=YB + 2**40),
    ev("pair:nan+bad-R", ERROR, xq=_with(XQ, (0, 0), np.nan), R=0),
    ev("pair:3d+str-labels", ERROR, xq=XQ[:, :, None], yq=YQ.astype(str), yb=YB.astype(str)),
    ev("pair:cosine-zero-row+R=all", ERROR, metric="cosine", xb=_with(XB, 4, 0.0), R="all"),
    ev("pair:duplicates+cosine", metric="cosine", xb=_DUP),
    ev("pair:duplicates+manhattan", metric="manhattan", xb=_DUP),
    ev("pair:float32-subnormal+cosine", metric="cosine", **_both(_times(1e-40, np.float32))),
    ev("pair:one-class+R=1", features=False, R=1, yq=np.zeros(NQ, int), yb=np.zeros(NB, int)),
    ev("pair:absent-class+at", features=False, R=None, at=(1, NB), yq=_with(YQ, 0, 9)),
    ev(
        "pair:constant-database+str-labels",
        xb=np.repeat(XB[:1], NB, 0),
        yq=YQ.astype(str),
        yb=YB.astype(str),
    ),
    ev(
        "pair:hamming+bytes-labels",
        metric="hamming",
        xq=rt.pack_bits(BITS_Q),
        xb=rt.pack_bits(BITS_B),
        yq=YQ.astype("S"),
        yb=YB.astype("S"),
    ),
    ev(
        "pair:offset-1e15+manhattan",
        metric="manhattan",
        **_both(_plus(-1e15, np.float64)),
    ),
    ev("pair:integer-ties+euclidean", metric="euclidean", xq=INT_Q, xb=INT_B),
    ev("pair:integer-ties+manhattan+R=10", metric="manhattan", R=np.int64(10), xq=INT_Q, xb=INT_B),
]
FEATURE_CASES = [
    pytest.param(*p.values, id=p.id, marks=_PD_MARKS.get(p.id, p.marks))
    for p in EVALUATE_CASES
    if p.values[2]
]


# ---------------------------------------------------------------- numpy references


def _unpack(codes: np.ndarray) -> np.ndarray:
    codes = np.ascontiguousarray(codes, "<u4")
    return np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little").astype(np.int64)


def ref_distances(xq, xb, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(ranking keys, the metric's own float64 values) of every (query, item) pair; features are
    first multiplied by one power of two (exact), so float64 neither overflows nor underflows."""
    if metric in rt.BIT_METRICS:
        bq, bb = _unpack(xq), _unpack(xb)
        overlap = (bq[:, None, :] & bb[None, :, :]).sum(-1).astype(float)
        if metric == "overlap":
            return -overlap, overlap
        d = (bq[:, None, :] != bb[None, :, :]).sum(-1).astype(float)
        return d, d
    q, b = np.asarray(xq).astype(np.float64), np.asarray(xb).astype(np.float64)
    peak = max(np.abs(q).max(), np.abs(b).max())
    e = int(np.frexp(peak)[1]) if peak > 0 else 0
    q, b = np.ldexp(q, -e), np.ldexp(b, -e)
    diff = q[:, None, :] - b[None, :, :]
    with np.errstate(over="ignore", under="ignore"):
        if metric == "cosine":
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            bn = b / np.linalg.norm(b, axis=1, keepdims=True)
            sim = qn @ bn.T
            return 1.0 - sim, sim
        if metric == "manhattan":
            d = np.abs(diff).sum(-1)
            return d, np.ldexp(d, e)
        d = np.square(diff).sum(-1)
        if metric == "euclidean":
            return d, np.ldexp(np.sqrt(d), e)
        return d, np.ldexp(d, 2 * e)


def _label_list(y) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(y).tolist()]


def ref_relevance(yq, yb) -> np.ndarray:
    """(nq, N) relevance by exact Python equality of the labels (bytes read as text)."""
    lq, lb = _label_list(yq), _label_list(yb)
    return np.array([[a == b for b in lb] for a in lq], bool)


def _expected_hits(d: np.ndarray, rel: np.ndarray, a: int) -> float:
    """Expected number of relevant items in the top a over all orders of tied items."""
    hits, pos = 0.0, 0
    for v in np.unique(d):
        members = d == v
        n, g = int(members.sum()), int(rel[members].sum())
        hits += min(max(a - pos, 0), n) * g / n
        pos += n
    return hits


def ref_evaluate(case: dict) -> dict:
    keys, _ = ref_distances(case["xq"], case["xb"], case["metric"])
    rel = ref_relevance(case["yq"], case["yb"])
    n = keys.shape[1]
    big_r = case["R"]
    r = n if big_r is None or (isinstance(big_r, str) and big_r.lower() == "all") else big_r
    r = min(int(r), n)
    ap = {k: [] for k in rt.NORMALISERS}
    at = [int(a) for a in case["at"]]
    hits = np.zeros((len(keys), len(at)))
    totals = rel.sum(1)
    for i in range(len(keys)):
        total = int(totals[i])
        fixed = np_exact_fixed(keys[i], rel[i], r)
        ap["relevant"].append(fixed / total if total else 0.0)
        ap["min"].append(fixed / min(r, total) if total else 0.0)
        ap["retrieved"].append(np_exact_retrieved(keys[i], rel[i], r))
        hits[i] = [_expected_hits(keys[i], rel[i], a) for a in at]
    recall = np.where(totals[:, None] > 0, hits / np.maximum(totals[:, None], 1), 0.0)
    return {
        "R": r,
        "ap": {k: np.array(v) for k, v in ap.items()},
        "precision_at": {a: hits[:, j].mean() / a for j, a in enumerate(at)},
        "recall_at": {a: recall[:, j].mean() for j, a in enumerate(at)},
        "one_class": bool(rel.all()),
    }


CHUNK = NQ  # queries per kernel call: one small compiled shape per configuration


def _call_evaluate(case: dict) -> dict:
    kwargs = {k: case[k] for k in ("metric", "R", "at", "tie", "normaliser") if k in case}
    return rt.evaluate(case["xq"], case["xb"], case["yq"], case["yb"], chunk_size=CHUNK, **kwargs)


def _warns_if(condition: bool, match: str):
    return pytest.warns(UserWarning, match=match) if condition else contextlib.nullcontext()


@pytest.mark.parametrize("case, expect, features", EVALUATE_CASES)
def test_evaluate_fuzz(case, expect, features):
    want = ref_evaluate(case) if expect != ERROR else None

    def call():
        with _warns_if(want is not None and want["one_class"], "every database item is relevant"):
            return _call_evaluate(case)

    out = attempt(call, expect)
    if out is None:
        return
    assert out["settings"]["R"] == want["R"]
    for name in rt.NORMALISERS:
        np.testing.assert_allclose(out["ap"][name], want["ap"][name], atol=ATOL, err_msg=name)
        assert out["map_by_normaliser"][name] == pytest.approx(want["ap"][name].mean(), abs=ATOL)
    for a, p in want["precision_at"].items():
        assert out["precision_at"][a] == pytest.approx(p, abs=ATOL)
        assert out["recall_at"][a] == pytest.approx(want["recall_at"][a], abs=ATOL)


def _robust_order(keys: np.ndarray, k: int) -> bool:
    """Whether the first k ranks of a row are decided: consecutive sorted keys are exactly tied
    (stable order) or apart by more than float32 can confuse."""
    s = np.sort(keys)[: k + 1]
    gaps = np.diff(s)
    scale = np.abs(s).max() + 1e-300
    return bool(np.all((gaps == 0) | (gaps > 1e-5 * scale)))


@pytest.mark.parametrize("case, expect, features", FEATURE_CASES)
def test_search_and_pairwise_distances_fuzz(case, expect, features):
    xq, xb, metric = case["xq"], case["xb"], case["metric"]
    got = attempt(lambda: rt.pairwise_distances(xq, xb, metric), expect)
    if got is None:  # then search must refuse the input too
        one_line_input_error(lambda: rt.search(xq, xb, 1, metric=metric, tie="stable"))
        return
    keys, values = ref_distances(xq, xb, metric)
    with np.errstate(over="ignore", under="ignore"):
        want = values.astype(np.float32)
    finite = np.abs(want[np.isfinite(want)])
    atol = 1e-5 * (finite.max() if finite.size else 0.0) + 1e-30
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)
    k = min(5, keys.shape[1])
    dist, idx = rt.search(xq, xb, k, metric=metric, tie="stable", chunk_size=CHUNK)
    assert dist.shape == idx.shape == (keys.shape[0], k)
    np.testing.assert_allclose(dist, np.take_along_axis(want, idx, 1), rtol=1e-4, atol=atol)
    for i in range(len(keys)):
        if _robust_order(keys[i], k):
            np.testing.assert_array_equal(idx[i], np.argsort(keys[i], kind="stable")[:k])


# ============================================================================================
# hashing.fit / hashing.encode
# ============================================================================================

HX = (np.random.default_rng(7).normal(size=(120, 8)) * np.arange(8, 0, -1)).astype(np.float32)
FAST_RULE = biohash.RuleConfig(max_epochs=2)
KEY = jax.random.key(0)
BASE_CFG = {
    "lsh": hashing.HashConfig(k=4),
    "pcahash": hashing.HashConfig(k=4),
    "sh": hashing.HashConfig(k=4),
    "itq": hashing.HashConfig(k=4),
    "flyhash": hashing.HashConfig(k=4),
    "naivebiohash": hashing.HashConfig(k=2, rule=FAST_RULE),
    "biohash": hashing.HashConfig(k=2, activity=0.25, rule=FAST_RULE),
}
METHODS = tuple(BASE_CFG)


def hc(case_id, method, expect=OK, marks=(), x=HX, stage="fit", key=KEY, **cfg):
    """A hashing case: fit ``method`` on x with ``key`` and the base config plus ``cfg`` (stage
    "fit"); or encode x with params fitted on HX (stage "encode", see ``enc``)."""
    case = dict(method=method, x=x, cfg=BASE_CFG[method]._replace(**cfg), stage=stage, key=key)
    return pytest.param(case, expect, id=f"{method}:{case_id}", marks=marks)


_OWN = object()  # encode with the params the case's own method fitted on HX


def enc(case_id, method, expect=ERROR, marks=(), x=HX[:16], params_of=_OWN, chunk_size=None):
    """Encode x with ``method`` using the params ``params_of`` names (a method's fit on HX) or
    the literal object ``params_of`` (None, a dict, ...)."""
    case = dict(method=method, x=x, stage="encode", params_of=params_of, chunk_size=chunk_size)
    return pytest.param(case, expect, id=f"{method}:encode:{case_id}", marks=marks)


_BAD_FEATURES = {
    "nan": _with(HX, (5, 3), np.nan),
    "+inf": _with(HX, (0, 0), np.inf),
    "-inf": _with(HX, (119, 7), -np.inf),
    "1d": HX[:, 0],
    "3d": HX[:, :, None],
    "0d": np.float32(1.0),
    "zero-rows": HX[:0],
    "zero-columns": HX[:, :0],
    "one-row": HX[:1],
    "object": HX.astype(object),
    "str": HX.astype(str),
    "datetime": np.zeros(HX.shape, "datetime64[s]"),
}

HASH_CASES = [
    *[hc("base", m) for m in METHODS],
    *[hc(name, m, ERROR, x=x) for m in METHODS for name, x in _BAD_FEATURES.items()],
    # dtypes and magnitudes
    hc("bool", "lsh", x=HX > 0),
    hc("int8", "lsh", x=np.clip(HX * 16, -128, 127).astype(np.int8)),
    hc("uint64-huge", "lsh", x=np.uint64(2**63) + (HX > 0).astype(np.uint64) * np.uint64(2**50)),
    hc("float16", "lsh", x=HX.astype(np.float16)),
    hc("float64", "pcahash", x=HX.astype(np.float64)),
    hc("offset-1e6", "lsh", x=HX.astype(np.float64) + 1e6),
    hc("offset-1e6", "pcahash", x=HX.astype(np.float64) + 1e6),
    hc("scale-1e-30", "lsh", x=HX * np.float32(1e-30)),
    hc("scale-1e20", "lsh", x=HX * np.float32(1e20)),
    hc("scale-1e20", "flyhash", x=HX * np.float32(1e20)),
    hc("scale-1e-30", "biohash", x=HX * np.float32(1e-30)),
    hc("two-rows", "lsh", x=HX[:2]),
    hc("two-rows", "pcahash", x=HX[:2], k=2),
    hc("constant-features", "lsh", x=np.ones((120, 8), np.float32)),
    hc(
        "complex",
        "lsh",
        ERROR,
        x=HX + 1j,
    ),
    hc(
        "float64-1e300",
        "lsh",
        ERROR,
        x=HX.astype(np.float64) * 1e300,
    ),
    hc(
        "scale-1e-30",
        "pcahash",
        x=HX * np.float32(1e-30),
    ),
    hc(
        "scale-1e-30",
        "itq",
        x=HX * np.float32(1e-30),
    ),
    hc(
        "scale-1e20",
        "pcahash",
        x=HX * np.float32(1e20),
    ),
    hc(
        "scale-1e20",
        "sh",
        x=HX * np.float32(1e20),
    ),
    # k
    *[hc(f"k={k!r}", "lsh", ERROR, k=k) for k in (0, -1, 2.5, True, "4", None, np.float64(2.0))],
    hc("k=True", "biohash", ERROR, k=True),
    hc("k=np.int64(4)", "lsh", k=np.int64(4)),
    hc("k=1", "lsh", k=1),
    hc("k=100>d", "lsh", k=100),
    hc("k=d", "pcahash", k=8),
    hc("k=d+1", "pcahash", ERROR, k=9),
    hc("k=d", "itq", k=8),
    hc("k=d+1", "itq", ERROR, k=9),
    hc("k=12>d", "sh", k=12),
    hc("k=m-1", "flyhash", k=79),
    hc("k=m", "flyhash", ERROR, k=80),
    # activity and the rule
    *[
        hc(f"activity={a!r}", "biohash", ERROR, activity=a)
        for a in (0, 1, float("nan"), -0.1, float("inf"), None, "0.5", True, 0.9)
    ],
    *[
        hc(f"rule-{name}", m, ERROR, rule=FAST_RULE._replace(**{name.split("=")[0]: v}))
        for m in ("biohash", "naivebiohash")
        for name, v in (
            ("batch=200>n", 200),
            ("batch=0", 0),
            ("max_epochs=0", 0),
            ("p=nan", float("nan")),
            ("eps0=-1", -1.0),
            ("tmax=0", 0),
            ("precision=0", 0.0),
        )
    ],
    # FlyHash / ITQ settings
    *[hc(f"fly_expansion={v!r}", "flyhash", ERROR, fly_expansion=v) for v in (0, 2.5)],
    *[
        hc(f"fly_sampling={v!r}", "flyhash", ERROR, fly_sampling=v)
        for v in (0.0, 1.5, float("nan"))
    ],
    *[hc(f"itq_iterations={v!r}", "itq", ERROR, itq_iterations=v) for v in (-1, 2.5)],
    hc("itq_iterations=0", "itq", itq_iterations=0),
    # PRNG keys: a new-style key or a legacy PRNGKey; nothing else
    hc("key=PRNGKey(3)", "lsh", key=jax.random.PRNGKey(3)),
    *[
        hc(f"key={name}", "lsh", ERROR, key=k)
        for name, k in (
            ("3", 3),
            ("None", None),
            ("np.int64(3)", np.int64(3)),
            ("split-pair", jax.random.split(jax.random.key(0))),
            ("uint32x3", jnp.zeros(3, jnp.uint32)),
            ("str", "0"),
        )
    ],
    # method names
    *[
        pytest.param(
            dict(method=name, x=HX, cfg=hashing.HashConfig(k=4), stage="fit"),
            ERROR,
            id=f"unknown-method:{name!r}",
        )
        for name in ("LSH", "nope", "")
    ],
    # bioconvhash: every check fails before any filter is learned
    pytest.param(
        dict(method="bioconvhash", x=HX, cfg=hashing.HashConfig(k=2), stage="fit"),
        ERROR,
        id="bioconvhash:rows-without-image_shape",
    ),
    pytest.param(
        dict(
            method="bioconvhash",
            x=_with(np.zeros((120, 12, 12, 1), np.float32), 0, np.nan),
            cfg=hashing.HashConfig(k=2),
            stage="fit",
        ),
        ERROR,
        id="bioconvhash:nan-images",
    ),
    pytest.param(
        dict(
            method="bioconvhash",
            x=np.zeros((120, 12, 12, 1), object),
            cfg=hashing.HashConfig(k=2),
            stage="fit",
        ),
        ERROR,
        id="bioconvhash:object-images",
    ),
    pytest.param(
        dict(
            method="bioconvhash",
            x=np.zeros((120, 12, 12, 1), np.float32),
            cfg=hashing.HashConfig(k=2, image_shape=(6, 24, 1)),
            stage="fit",
        ),
        ERROR,
        id="bioconvhash:image_shape-mismatch",
    ),
    pytest.param(
        dict(
            method="bioconvhash",
            x=np.zeros((120, 6, 6, 1), np.float32),
            cfg=hashing.HashConfig(k=2),
            stage="fit",
        ),
        ERROR,
        id="bioconvhash:kernel-larger-than-images",
    ),
    # encode
    *[enc("wrong-columns", m, x=HX[:16, :7]) for m in ("lsh", "pcahash", "biohash", "flyhash")],
    *[
        enc(name, "lsh", x=x)
        for name, x in _BAD_FEATURES.items()
        if name != "one-row" and name != "zero-rows"
    ],
    enc("zero-rows", "lsh", EITHER, x=HX[:0]),
    enc("one-row", "lsh", OK, x=HX[:1]),
    enc("int8", "lsh", OK, x=np.clip(HX[:16] * 16, -128, 127).astype(np.int8)),
    enc("chunk_size=1", "lsh", OK, chunk_size=1),
    enc("chunk_size=0", "lsh", chunk_size=0),
    enc("chunk_size=-1", "lsh", chunk_size=-1),
    enc("params-of-lsh", "itq", params_of="lsh"),
    enc("params-of-pcahash", "flyhash", params_of="pcahash"),
    enc("params-of-naivebiohash", "biohash", params_of="naivebiohash"),
    enc("params-of-biohash", "naivebiohash", params_of="biohash"),
    enc("params-None", "lsh", params_of=None),
    enc("params-dict", "lsh", params_of={"mean": np.zeros(8)}),
    enc("params-of-sh", "nope", params_of="sh"),
]


@functools.cache
def _fitted(method: str):
    return hashing.fit(method, HX, BASE_CFG[method], key=KEY)


def _params(method, params_of):
    if params_of is _OWN:
        return _fitted(method)
    if isinstance(params_of, str) and params_of in BASE_CFG:
        return _fitted(params_of)
    return params_of


def _assert_sign_bits(bits, z, err, strict=True):
    """bits == (z > 0) (ITQ: >= 0) wherever |z| exceeds its error bound ``err``."""
    want = z > 0 if strict else z >= 0
    clear = np.abs(z) > err + 1e-300
    assert bits.dtype == np.uint8 and bits.shape == z.shape
    np.testing.assert_array_equal(bits[clear], want[clear].astype(np.uint8))


def _centred(params, x):
    """float64 (x32 - mean), and a bound on the error of the float32 centring done on device
    (the mean rounded to float32, float32 products) per element."""
    x32 = np.asarray(x).astype(np.float32).astype(np.float64)
    mean = np.asarray(params.mean, np.float64)
    return x32 - mean, 1e-5 * np.abs(x32 - mean) + 2.0**-22 * np.abs(mean)


def _pca_reference(x, num):
    x64 = np.asarray(x).astype(np.float32).astype(np.float64)
    xc = x64 - x64.mean(0)
    values, vectors = np.linalg.eigh(xc.T @ xc / len(xc))
    return vectors[:, ::-1][:, :num].T, values[::-1]


def _check_codes(method, params, fit_x, x, codes):
    """Codes of x against numpy with the fitted params (and PCA directions against numpy's
    eigenvectors of the covariance of the training data ``fit_x``)."""
    n = np.shape(x)[0]
    xc, err = _centred(params, x)
    assert codes.bits.ndim == 2 and codes.bits.shape[0] == n
    np.testing.assert_array_equal(codes.packed, rt.pack_bits(codes.bits))
    if method in ("lsh", "pcahash", "itq"):
        proj = params.projection if method == "lsh" else params.components
        proj = np.asarray(proj, np.float64)
        if method == "itq":
            rot = np.asarray(params.rotation, np.float64)
            np.testing.assert_allclose(rot @ rot.T, np.eye(len(rot)), atol=1e-6)
            proj = rot.T @ proj
        _assert_sign_bits(codes.bits, xc @ proj.T, err @ np.abs(proj).T, strict=method != "itq")
        assert codes.active is None
    if method in ("pcahash", "itq"):
        want, values = _pca_reference(fit_x, len(params.components))
        gaps = np.diff(values[: len(params.components) + 1])
        if np.all(np.abs(gaps) > 1e-3 * values[0]):  # well-separated eigenvalues: unique axes
            dots = np.abs(np.sum(np.asarray(params.components) * want, 1))
            np.testing.assert_allclose(dots, 1.0, atol=1e-3)
    if method == "sh":
        comps = np.asarray(params.components, np.float64)
        xpc = xc @ comps.T - params.mn[None, :]
        dims = np.argmax(params.modes != 0, axis=1)
        freqs = params.modes[np.arange(len(dims)), dims] * np.pi / (params.mx - params.mn)[dims]
        u = np.sin(np.pi / 2 + xpc[:, dims] * freqs[None, :])
        _assert_sign_bits(codes.bits, u, 1e-4 + (err @ np.abs(comps).T)[:, dims] * freqs)
    if method in ("naivebiohash", "biohash"):
        w = np.asarray(params.w, np.float64)
        currents = xc @ (np.sign(w) * np.abs(w) ** (params.p - 1)).T
        if method == "naivebiohash":
            _assert_sign_bits(codes.bits, currents, err @ np.abs(w).T)
    if method in ("flyhash", "biohash"):
        m = params.projection.shape[0] if method == "flyhash" else params.w.shape[0]
        act = xc @ np.asarray(params.projection, np.float64).T if method == "flyhash" else currents
        assert codes.bits.shape == (n, m) and codes.active.shape == (n, params.k)
        assert np.all(codes.bits.sum(1) == params.k)
        assert np.all(np.diff(codes.active, axis=1) > 0)
        np.testing.assert_array_equal(np.take_along_axis(codes.bits, codes.active, 1), 1)
        on = np.where(codes.bits == 1, act, np.inf).min(1)
        off = np.where(codes.bits == 0, act, -np.inf).max(1)
        tol = 1e-4 * np.abs(act).max(1) + 1e-30  # float32 currents
        assert np.all(on >= off - tol), (on, off)


@pytest.mark.parametrize("case, expect", HASH_CASES)
def test_hashing_fuzz(case, expect):
    method, x = case["method"], case["x"]
    if case["stage"] == "fit":
        if expect == ERROR:
            one_line_input_error(
                lambda: hashing.fit(method, x, case["cfg"], key=case.get("key", KEY))
            )
            return
        params = hashing.fit(method, x, case["cfg"], key=case.get("key", KEY))
        _check_codes(method, params, x, x, hashing.encode(method, params, x))
        return
    params = _params(method, case["params_of"])
    codes = attempt(
        lambda: hashing.encode(method, params, x, chunk_size=case["chunk_size"]), expect
    )
    if codes is not None:
        _check_codes(method, params, HX, x, codes)


# ============================================================================================
# data.load
# ============================================================================================

_GREY = frozenset({"1", "L", "LA", "I", "I;16", "F"})


@functools.cache
def img(seed: int, size=(4, 4), mode="RGB", fmt="PNG") -> bytes:
    """A tiny deterministic image file."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 2**16, size[::-1], dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), np.uint8)).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds no pixel data."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))


def _corrupt_crc(payload: bytes) -> bytes:
    out = bytearray(payload)
    out[30] ^= 0xFF  # inside IHDR: its CRC no longer matches
    return bytes(out)


class Link(str):
    """A symbolic link member (its target)."""


class HardLink(str):
    """A tar hard-link member (its target)."""


class Dir:
    """A directory member."""


BASE_MEMBERS = [
    ("train/ant/0.png", img(0)),
    ("train/ant/1.png", img(1)),
    ("train/bee/2.png", img(2)),
    ("test/ant/3.png", img(3)),
    ("test/bee/4.png", img(4)),
]
BASE_NAMES = [name for name, _ in BASE_MEMBERS]


def dc(
    case_id,
    extra=(),
    kept=None,
    expect=OK,
    sources=("folder", "archive"),
    warn=None,
    marks=(),
    members=None,
    want=None,
):
    """A data.load case: the base members (or ``members``) plus ``extra``; ``kept``: the
    normalised member names the dataset must hold (default: the base's plus ``extra``'s);
    ``warn``: the warning the first load must give; ``want``: {split: expected x} overriding
    the PIL reference."""
    members = list(BASE_MEMBERS if members is None else members) + list(extra)
    if kept is None and expect == OK:
        kept = [posixpath.normpath(n) for n, p in members if isinstance(p, bytes)]
    return [
        pytest.param(
            source, members, expect, kept, warn, want, id=f"{source}:{case_id}", marks=marks
        )
        for source in sources
    ]


_OUTSIDE = "skipped {} archive members? outside the archive root"
_CROSS_SPLIT = [("train/ant/0.png", img(0)), ("test/bee/1.png", img(1))]
with Image.open(io.BytesIO(img(5, mode="I;16"))) as _image:
    _SIXTEEN = np.asarray(_image, np.float64)  # 16-bit pixels; 8-bit: round(v / 257)

DATA_CASES = [
    *dc("base"),
    *dc("top-level-folder", members=[(f"top/{n}", p) for n, p in BASE_MEMBERS]),
    *dc("greyscale", members=[(n, img(i, mode="L")) for i, n in enumerate(BASE_NAMES)]),
    *dc("grey-and-colour", extra=[("train/bee/9.png", img(9, mode="L"))]),
    *dc(
        "rgba-palette-la-1bit",
        extra=[
            ("train/bee/a.png", img(10, mode="RGBA")),
            ("train/bee/b.png", img(11, mode="P")),
            ("train/bee/c.png", img(12, mode="LA")),
            ("train/bee/d.png", img(13, mode="1")),
        ],
    ),
    *dc(
        "jpeg-bmp-gif-tiff",
        extra=[
            ("train/bee/a.jpg", img(14, fmt="JPEG")),
            ("train/bee/b.bmp", img(15, fmt="BMP")),
            ("train/bee/c.gif", img(16, fmt="GIF")),
            ("train/bee/d.tif", img(17, fmt="TIFF")),
        ],
    ),
    *dc("jpeg-named-png", extra=[("train/bee/x.png", img(18, fmt="JPEG"))]),
    *dc(
        "hidden-files-skipped",
        extra=[
            (".DS_Store", b"\0"),
            ("train/ant/._0.png", b"junk"),
            ("train/.git/x", b"junk"),
            (".hidden/a/b/c.png", b"x"),
        ],
        kept=BASE_NAMES,
    ),
    *dc(
        "unicode-and-spaces",
        extra=[
            ("train/ant/ü x.png", img(19)),
            ("train/cat dog 猫/0.png", img(20)),
            ("test/cat dog 猫/1.png", img(21)),
        ],
    ),
    *dc("one-pixel-images", members=[(n, img(i, size=(1, 1))) for i, n in enumerate(BASE_NAMES)]),
    *dc("one-image", members=[("all/only/0.png", img(22))]),
    *dc(
        "split-order",
        members=[
            (f"{s}/ant/{i}.png", img(30 + i))
            for i, s in enumerate(("zzz", "test", "val", "train", "aaa", "validation"))
        ],
    ),
    # corrupt and odd images
    *dc("truncated-png", [("train/ant/t.png", img(23)[:40])], expect=ERROR),
    *dc("truncated-jpeg", [("train/ant/t.jpg", img(24, fmt="JPEG")[:-10])], expect=ERROR),
    *dc("half-jpeg", [("train/ant/t.jpg", img(24, fmt="JPEG")[:200])], expect=ERROR),
    *dc("zero-byte-file", [("train/ant/t.png", b"")], expect=ERROR),
    *dc("text-named-jpg", [("train/ant/t.jpg", b"hello, not an image\n")], expect=ERROR),
    *dc("png-bad-crc", [("train/ant/t.png", _corrupt_crc(img(25)))], expect=ERROR),
    *dc("different-size", [("train/ant/t.png", img(26, size=(5, 4)))], expect=ERROR),
    *dc("bomb-60000x60000", [("train/ant/t.png", png_header(60000, 60000))], expect=ERROR),
    *dc(
        "bomb-2**32-1-square", [("train/ant/t.png", png_header(2**32 - 1, 2**32 - 1))], expect=ERROR
    ),
    *dc(
        "bomb-10000x10000",
        [("train/ant/t.png", png_header(10000, 10000))],
        expect=ERROR,
    ),
    *dc("header-only-1x1", [("train/ant/t.png", png_header(1, 1))], expect=ERROR),
    *dc("header-0x0", [("train/ant/t.png", png_header(0, 0))], expect=ERROR),
    *dc(
        "16-bit-greyscale",
        members=[("all/a/0.png", img(5, mode="I;16"))],
        want={"all": np.round(_SIXTEEN / 257)[None, :, :, None]},
    ),
    # layout
    *dc("too-deep", [("train/ant/x/y/0.png", img(27))], expect=ERROR),
    *dc("too-shallow", [("train/0.png", img(27))], expect=ERROR),
    *dc("file-at-root", [("0.png", img(27))], expect=ERROR),
    *dc("mixed-depths", [("top/train/ant/9.png", img(27))], expect=ERROR),
    *dc("classes-differ-across-splits", members=_CROSS_SPLIT, expect=ERROR),
    *dc("empty", members=[], expect=ERROR),
    *dc(
        "only-hidden-files",
        members=[(".a/b/c/d.png", img(0)), ("train/ant/.x.png", img(1))],
        expect=ERROR,
    ),
    # archive member names
    *dc(
        "member-../x.png",
        [("../x.png", img(28))],
        sources=("archive",),
        kept=BASE_NAMES,
        warn=_OUTSIDE.format(1),
    ),
    *dc(
        "member-absolute",
        [("/abs/train/ant/x.png", img(28))],
        sources=("archive",),
        kept=BASE_NAMES,
        warn=_OUTSIDE.format(1),
    ),
    *dc(
        "member-escapes-via-..",
        [("train/../../x.png", img(28))],
        sources=("archive",),
        kept=BASE_NAMES,
        warn=_OUTSIDE.format(1),
    ),
    *dc(
        "member-..",
        [("..", img(28))],
        sources=("archive",),
        kept=BASE_NAMES,
        warn=_OUTSIDE.format(1),
    ),
    *dc(
        "four-members-outside",
        [(f"../{i}.png", img(28)) for i in range(4)],
        sources=("archive",),
        kept=BASE_NAMES,
        warn=_OUTSIDE.format(4) + r".*\.\.\.",
    ),
    *dc("member-./", [("train/ant/./x.png", img(29))], sources=("archive",)),
    *dc("member-//", [("train//ant//y.png", img(29))], sources=("archive",)),
    *dc("member-leading-./", [("./train/bee/z.png", img(29))], sources=("archive",)),
    *dc("member-..-inside-root", [("train/../train/bee/w.png", img(29))], sources=("archive",)),
    *dc("member-trailing-slash", [("train/bee/v.png/", img(29))], sources=("archive",)),
    *dc("member-backslashes", [("train\\ant\\x.png", img(29))], sources=("archive",), expect=ERROR),
    *dc(
        "member-duplicate-later-wins",
        [("train/ant/0.png", img(40))],
        sources=("archive",),
        kept=BASE_NAMES,
    ),
    *dc(
        "members-dir-symlink-hardlink",
        [
            ("train/cat", Dir()),
            ("train/ant/l.png", Link("0.png")),
            ("train/ant/h.png", HardLink("train/ant/0.png")),
        ],
        sources=("archive",),
        kept=BASE_NAMES,
    ),
    *dc(
        "member-newline-in-name",
        [("train/bad\nname.png", img(29))],
        sources=("archive",),
        expect=ERROR,
    ),
    # folder links
    *dc(
        "symlinked-image",
        [("train/bee/l.png", Link("../ant/0.png"))],
        sources=("folder",),
        kept=BASE_NAMES + ["train/bee/l.png"],
    ),
    *dc(
        "broken-symlink",
        [("train/bee/l.png", Link("nowhere.png"))],
        sources=("folder",),
        expect=ERROR,
    ),
    *dc("symlink-loop", [("train/bee/loop", Link(".."))], sources=("folder",), expect=ERROR),
]


def _build(source: str, members, tmp_path: pathlib.Path) -> str:
    if source == "folder":
        root = tmp_path / "images"
        root.mkdir()
        for name, payload in members:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(payload, Link):
                path.symlink_to(str(payload))
            elif isinstance(payload, Dir):
                path.mkdir(exist_ok=True)
            else:
                path.write_bytes(payload)
        return f"folder:{root}"
    path = tmp_path / "images.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            if isinstance(payload, Dir):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(payload, Link | HardLink):
                info.type = tarfile.SYMTYPE if isinstance(payload, Link) else tarfile.LNKTYPE
                info.linkname = str(payload)
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return f"archive:{path}"


def _decode(payload: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image.convert("L" if image.mode in _GREY else "RGB"))


def _split_key(name: str):
    order = ("train", "validation", "val", "test")
    return (order.index(name) if name in order else len(order), name)


def ref_dataset(members, kept):
    """{split: (x, y)} and class names the layout <split>/<class>/<image> gives ``kept``."""
    files = {}
    for name, payload in members:
        if isinstance(payload, bytes):
            files[posixpath.normpath(name)] = payload
    for name, payload in members:  # followed folder links read their target's bytes
        if isinstance(payload, Link):
            files[name] = files[
                posixpath.normpath(posixpath.join(posixpath.dirname(name), payload))
            ]
    names = sorted(kept)
    parts = [n.split("/")[-3:] for n in names]
    classes = sorted({p[1] for p in parts})
    images = {n: _decode(files[n]) for n in names}
    channels = 3 if any(i.ndim == 3 for i in images.values()) else 1
    out = {}
    for split in sorted({p[0] for p in parts}, key=_split_key):
        xs, ys = [], []
        for c, cls in enumerate(classes):
            for n, p in zip(names, parts, strict=True):
                if p[0] == split and p[1] == cls:
                    image = images[n] if images[n].ndim == 3 else images[n][..., None]
                    xs.append(np.broadcast_to(image, (*image.shape[:2], channels)))
                    ys.append(c)
        out[split] = (np.stack(xs), np.array(ys))
    return out, tuple(classes)


def _check_dataset(ds, members, kept, want):
    splits, classes = ref_dataset(members, kept)
    assert ds.class_names == classes
    assert list(ds.splits) == list(splits)
    for name, (x, y) in splits.items():
        got = ds.splits[name]
        assert got.x.dtype == np.uint8 and got.y.dtype == np.int32
        np.testing.assert_array_equal(got.y, y)
        np.testing.assert_array_equal(got.x, x if want is None else want[name])


@pytest.mark.parametrize("source, members, expect, kept, warn, want", DATA_CASES)
def test_data_folder_and_archive_fuzz(tmp_path, source, members, expect, kept, warn, want):
    spec = _build(source, members, tmp_path)
    cache = tmp_path / "cache"
    if expect == ERROR:
        one_line_input_error(lambda: data.load(spec, cache_dir=cache, progress=False))
        assert not cache.exists() or not any(cache.iterdir())  # nothing cached
        return
    warns = pytest.warns(UserWarning, match=warn) if warn else contextlib.nullcontext()
    with warns:
        first = data.load(spec, cache_dir=cache, progress=False)
    _check_dataset(first, members, kept, want)
    second = data.load(spec, cache_dir=cache, progress=False)  # cache hit: no warning again
    assert second.cache_hit and second.checksum == first.checksum
    _check_dataset(second, members, kept, want)


def _save_npz(path: pathlib.Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


_NX = np.random.default_rng(3).normal(size=(6, 3))
_NY = np.array([0, 1, 2, 0, 1, 2])
_NIMG = np.random.default_rng(4).integers(0, 256, (6, 2, 2), np.uint8)


def nz(case_id, expect=OK, marks=(), **arrays):
    return pytest.param(arrays, expect, id=f"npz:{case_id}", marks=marks)


NPZ_CASES = [
    nz("features", x=_NX, y=_NY),
    nz("features-float16", x=_NX.astype(np.float16), y=_NY),
    nz("features-int", x=(_NX * 10).astype(np.int64), y=_NY),
    nz("features-bool", x=_NX > 0, y=_NY),
    nz("images-3d", x=_NIMG, y=_NY),
    nz("images-4d-rgb", x=np.repeat(_NIMG[..., None], 3, -1), y=_NY),
    nz("images-5-channels", x=np.repeat(_NIMG[..., None], 5, -1), y=_NY),
    nz("labels-uint8", x=_NX, y=_NY.astype(np.uint8)),
    nz("label-2**20", x=_NX[:1], y=np.array([2**20])),
    nz("splits", x_train=_NX, y_train=_NY, x_test=_NX[:2], y_test=_NY[:2]),
    nz("class-names", x=_NX, y=_NY, class_names=np.array(["a", "b", "c", "unused"])),
    nz("class-names-unicode", x=_NX, y=_NY, class_names=np.array(["ä", "猫", "a b"])),
    nz("zero-columns", EITHER, x=_NX[:, :0], y=_NY),
    nz("zero-size-images", EITHER, x=np.zeros((6, 0, 0), np.uint8), y=_NY),
    nz("object-x", ERROR, x=np.array([None] * 6, object), y=_NY),
    nz("object-y", ERROR, x=_NX, y=_NY.astype(object)),
    nz("float-labels", ERROR, x=_NX, y=_NY.astype(float)),
    nz("bool-labels", ERROR, x=_NX, y=_NY > 0),
    nz("str-labels", ERROR, x=_NX, y=_NY.astype(str)),
    nz("negative-labels", ERROR, x=_NX, y=-_NY),
    nz("labels-2**31", ERROR, x=_NX, y=np.full(6, 2**31)),
    nz("labels-uint64-top", ERROR, x=_NX, y=np.full(6, 2**64 - 1, np.uint64)),
    nz("labels-2d", ERROR, x=_NX, y=_NY[:, None]),
    nz("labels-scalar", ERROR, x=_NX, y=np.int64(1)),
    nz("x-5d", ERROR, x=np.zeros((6, 1, 1, 1, 1), np.uint8), y=_NY),
    nz("x-1d", ERROR, x=_NX[:, 0], y=_NY),
    nz("x-scalar", ERROR, x=np.float64(1.0), y=_NY),
    nz("length-mismatch", ERROR, x=_NX[:5], y=_NY),
    nz("zero-items", ERROR, x=_NX[:0], y=_NY[:0]),
    nz("missing-y", ERROR, x=_NX),
    nz("missing-x", ERROR, y=_NY),
    nz("split-missing-y", ERROR, x_train=_NX, y_train=_NY, x_test=_NX[:2]),
    nz("split-shapes-differ", ERROR, x_train=_NX, y_train=_NY, x_test=_NX[:2, :2], y_test=_NY[:2]),
    nz("empty-split-names", ERROR, x_=_NX, y_=_NY),
    nz("no-known-arrays", ERROR, a=_NX),
    nz("no-arrays", ERROR),
    nz("complex-features", ERROR, x=_NX + 1j, y=_NY),
    nz("str-features", ERROR, x=_NX.astype(str), y=_NY),
    nz("nan-features", ERROR, x=_with(_NX, (0, 0), np.nan), y=_NY),
    nz("inf-features", ERROR, x=_with(_NX, (0, 0), -np.inf), y=_NY),
    nz("features-beyond-float32", ERROR, x=_NX * 1e300, y=_NY),
    nz("float-images", ERROR, x=_NIMG.astype(float), y=_NY),
    nz("int16-images", ERROR, x=_NIMG.astype(np.int16)[..., None], y=_NY),
    nz("class-names-too-few", ERROR, x=_NX, y=_NY, class_names=np.array(["a"])),
    nz("class-names-int", ERROR, x=_NX, y=_NY, class_names=np.arange(3)),
    nz("class-names-bytes", ERROR, x=_NX, y=_NY, class_names=np.array([b"a", b"b", b"c"])),
    nz("class-names-2d", ERROR, x=_NX, y=_NY, class_names=np.array([["a", "b", "c"]])),
    nz("label-2**31-1", x=_NX[:2], y=np.array([0, 2**31 - 1])),
]


@pytest.mark.parametrize("arrays, expect", NPZ_CASES)
def test_data_npz_fuzz(tmp_path, arrays, expect):
    path = tmp_path / "d.npz"
    _save_npz(path, arrays)
    ds = attempt(functools.partial(data.load, f"npz:{path}", progress=False), expect)
    if ds is None:
        return
    names = sorted({k[2:] for k in arrays if k.startswith("x_")}) or ["all"]
    assert sorted(ds.splits) == names
    labels = np.concatenate([arrays["y" if n == "all" else f"y_{n}"] for n in names])
    values = np.unique(labels)  # without class_names, labels become dense ids named by value
    if "class_names" in arrays:
        assert ds.class_names == tuple(arrays["class_names"].tolist())
    else:
        assert ds.class_names == tuple(str(v) for v in values)
    for n in names:
        x = arrays["x" if n == "all" else f"x_{n}"]
        y = arrays["y" if n == "all" else f"y_{n}"]
        got = ds.splits[n]
        want = y if "class_names" in arrays else np.searchsorted(values, y)
        np.testing.assert_array_equal(got.y, want)
        assert got.y.dtype == np.int32
        if x.ndim == 2:
            assert ds.kind == "features" and got.x.dtype == np.float32
            np.testing.assert_array_equal(got.x, x.astype(np.float32))
        else:
            assert ds.kind == "images" and got.x.dtype == np.uint8
            np.testing.assert_array_equal(got.x, x if x.ndim == 4 else x[..., None])


def _write(path: pathlib.Path, payload: bytes) -> pathlib.Path:
    path.write_bytes(payload)
    return path


def _tar_bytes(tmp_path: pathlib.Path, mode: str) -> bytes:
    path = tmp_path / f"t.{mode}"
    with tarfile.open(path, f"w:{mode}" if mode else "w") as tar:
        for name, payload in BASE_MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path.read_bytes()


def _valid_npz_bytes(tmp_path: pathlib.Path) -> bytes:
    _save_npz(tmp_path / "v.npz", {"x": _NX, "y": _NY})
    return (tmp_path / "v.npz").read_bytes()


def _flip(payload: bytes, at: float | int) -> bytes:
    """``payload`` with the byte at fraction ``at`` (a float) or index ``at`` (an int) flipped."""
    out = bytearray(payload)
    out[int(len(out) * at) if isinstance(at, float) else at] ^= 0xFF
    return bytes(out)


def _member_end(index: int) -> int:
    """Offset just after member ``index`` of the plain tar of BASE_MEMBERS (header + data)."""
    return sum(512 + -(-len(p) // 512) * 512 for _, p in BASE_MEMBERS[: index + 1])


def _cut_tar(t: pathlib.Path) -> bytes:
    """The plain tar cut right after its second member (a download stopped at a boundary)."""
    return _tar_bytes(t, "")[: _member_end(1)]


def _bad_third_header(t: pathlib.Path) -> bytes:
    """The tar.gz whose third member header has a wrong checksum."""
    raw = bytearray(_tar_bytes(t, ""))
    raw[_member_end(1) + 148] ^= 0xFF  # the header's checksum field
    return gzip.compress(bytes(raw))


def _zip_with(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return out.getvalue()


_ZEROS = bytes(1024)  # an empty tar: two zero blocks
_BAD_NPY = b"\x93NUMPY" + b"garbage"


# (id, builder(tmp_path) -> spec, expect[, marks]): whole-file and spec-string cases
SOURCE_CASES = [
    ("spec:empty", lambda t: "", ERROR),
    *[
        (f"spec:{s!r}", lambda t, s=s: s, ERROR)
        for s in (
            "folder:",
            "archive:",
            "npz:",
            "FOLDER:x",
            "foo",
            "mnist:",
            "digits:x",
            "digits:",
            ":",
            "folder",
            "npz",
            "Digits",
            " digits",
            "imagenet",
        )
    ],
    ("folder:missing", lambda t: f"folder:{t / 'nope'}", ERROR),
    ("folder:is-a-file", lambda t: f"folder:{_write(t / 'f.png', img(0))}", ERROR),
    ("folder:empty-dir", lambda t: (t / "e").mkdir() or f"folder:{t / 'e'}", ERROR),
    ("archive:missing", lambda t: f"archive:{t / 'nope.tar.gz'}", ERROR),
    ("archive:is-a-directory", lambda t: f"archive:{t}", ERROR),
    ("archive:zero-bytes", lambda t: f"archive:{_write(t / 'a.tar.gz', b'')}", ERROR),
    ("archive:garbage", lambda t: f"archive:{_write(t / 'a.tar.gz', b'garbage' * 100)}", ERROR),
    (
        "archive:gzip-of-garbage",
        lambda t: f"archive:{_write(t / 'a.tar.gz', zlib.compress(b'x' * 1000, wbits=31))}",
        ERROR,
    ),
    (
        "archive:truncated-gz",
        lambda t: f"archive:{_write(t / 'a.tgz', _tar_bytes(t, 'gz')[:300])}",
        ERROR,
    ),
    (
        "archive:truncated-tar",
        lambda t: f"archive:{_write(t / 'a.tar', _tar_bytes(t, '')[:1000])}",
        ERROR,
    ),
    (
        "archive:flipped-gz-byte",
        lambda t: f"archive:{_write(t / 'a.tgz', _flip(_tar_bytes(t, 'gz'), 0.5))}",
        ERROR,
    ),
    (
        "archive:tar-cut-at-member-boundary",
        lambda t: f"archive:{_write(t / 'a.tar', _cut_tar(t))}",
        ERROR,
    ),
    (
        "archive:corrupt-member-header",
        lambda t: f"archive:{_write(t / 'a.tgz', _bad_third_header(t))}",
        ERROR,
    ),
    (
        "archive:gzip-crc-flipped",
        lambda t: f"archive:{_write(t / 'a.tgz', _flip(_tar_bytes(t, 'gz'), -6))}",
        EITHER,
    ),
    ("archive:zip-file", lambda t: f"archive:{_write(t / 'a.zip', _zip_with({'a': b'x'}))}", ERROR),
    ("archive:empty-tar", lambda t: f"archive:{_write(t / 'a.tar', _ZEROS)}", ERROR),
    ("archive:plain-tar", lambda t: f"archive:{_write(t / 'a.tar', _tar_bytes(t, ''))}", OK),
    ("archive:bz2", lambda t: f"archive:{_write(t / 'a.tar.bz2', _tar_bytes(t, 'bz2'))}", OK),
    ("archive:xz", lambda t: f"archive:{_write(t / 'a.tar.xz', _tar_bytes(t, 'xz'))}", OK),
    ("npz:missing", lambda t: f"npz:{t / 'nope.npz'}", ERROR),
    ("npz:directory", lambda t: f"npz:{t}", ERROR),
    ("npz:single-npy", lambda t: (np.save(t / "a.npy", _NX), f"npz:{t / 'a.npy'}")[1], ERROR),
    ("npz:zero-bytes", lambda t: f"npz:{_write(t / 'a.npz', b'')}", ERROR),
    ("npz:junk", lambda t: f"npz:{_write(t / 'a.npz', b'junk')}", ERROR),
    ("npz:truncated", lambda t: f"npz:{_write(t / 'a.npz', _valid_npz_bytes(t)[:200])}", ERROR),
    (
        "npz:flipped-byte",
        lambda t: f"npz:{_write(t / 'a.npz', _flip(_valid_npz_bytes(t), 0.4))}",
        ERROR,
    ),
    (
        "npz:bad-member",
        lambda t: f"npz:{_write(t / 'a.npz', _zip_with({'x.npy': _BAD_NPY}))}",
        ERROR,
    ),
    (
        "npz:pickle",
        lambda t: (
            np.save(t / "p.npy", np.array([{"a": 1}], object), allow_pickle=True),
            f"npz:{t / 'p.npy'}",
        )[1],
        ERROR,
    ),
]


@pytest.mark.parametrize(
    "builder, expect", [pytest.param(b, e, id=i, marks=m) for i, b, e, *m in SOURCE_CASES]
)
def test_data_sources_fuzz(tmp_path, builder, expect):
    spec = builder(tmp_path)
    call = functools.partial(data.load, spec, cache_dir=tmp_path / "cache", progress=False)
    ds = attempt(call, expect)
    if ds is not None:
        _check_dataset(ds, BASE_MEMBERS, BASE_NAMES, None)


# ============================================================================================
# The command line
# ============================================================================================


@pytest.fixture
def cli_dir(tmp_path, monkeypatch):
    """Input files for the CLI cases, in the working directory."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(11)
    arrays = {
        "q.npy": rng.normal(size=(5, 4)),
        "d.npy": rng.normal(size=(30, 4)),
        "ql.npy": rng.integers(0, 3, 5),
        "dl.npy": rng.integers(0, 3, 30),
        "dl-short.npy": rng.integers(0, 3, 29),
        "dl-float.npy": rng.integers(0, 3, 30).astype(float),
        "dl-str.npy": rng.integers(0, 3, 30).astype(str),
        "q-1d.npy": rng.normal(size=5),
        "q-nan.npy": _with(rng.normal(size=(5, 4)), (0, 0), np.nan),
        "q-str.npy": rng.normal(size=(5, 4)).astype(str),
        "q-cols.npy": rng.normal(size=(5, 3)),
        "f.npy": rng.normal(size=(120, 6)).astype(np.float32),
        "f-1d.npy": rng.normal(size=120),
        "f-3d.npy": rng.normal(size=(120, 2, 3)),
        "f-nan.npy": _with(rng.normal(size=(120, 6)), (3, 3), np.nan),
        "f-str.npy": rng.normal(size=(120, 6)).astype(str),
        "f-empty.npy": np.zeros((0, 6)),
        "f-complex.npy": rng.normal(size=(120, 6)) + 1j,
    }
    for name, array in arrays.items():
        np.save(name, array)
    np.savez("q-nox.npz", y=np.zeros(5, int))
    np.savez("q-noy.npz", x=rng.normal(size=(5, 4)))
    np.savez("small.npz", x=rng.normal(size=(18, 10)), y=np.repeat(np.arange(3), 6))
    np.save("obj.npy", np.array([{"a": 1}], object), allow_pickle=True)
    pathlib.Path("junk.npy").write_bytes(b"not numpy at all")
    pathlib.Path("outdir").mkdir()
    (tmp_path / "img" / "train" / "a").mkdir(parents=True)
    (tmp_path / "img" / "train" / "a" / "0.png").write_bytes(b"broken")
    return tmp_path


_FILES = [
    "--queries",
    "q.npy",
    "--database",
    "d.npy",
    "--query-labels",
    "ql.npy",
    "--database-labels",
    "dl.npy",
]
_HASH = ["hash", "--method", "lsh", "--k", "2", "--features", "f.npy", "--no-progress"]
_CMP = ["compare", "--no-progress"]


def _argv(base, *extra):
    """``base`` with each (flag, value) of ``extra`` replacing that flag's value or appended."""
    argv = list(base)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def _eval(*extra):
    return _argv(["eval", *_FILES], *extra)


def _hash(*extra):
    return _argv(_HASH, *extra)


def cl(case_id, argv, expect=ERROR, marks=(), out="out/result.json"):
    return pytest.param(argv, expect, out, id=case_id, marks=marks)


_BIG_SEED = str(2**70)
CLI_CASES = [
    # eval
    cl("eval:no-input", ["eval"]),
    cl("eval:queries-only", ["eval", "--queries", "q.npy"]),
    cl("eval:dataset-and-files", _eval("--dataset", "digits")),
    cl("eval:queries-missing", _eval("--queries", "nope.npy")),
    cl("eval:queries-is-directory", _eval("--queries", "outdir")),
    cl("eval:queries-pickle", _eval("--queries", "obj.npy")),
    cl("eval:queries-junk", _eval("--queries", "junk.npy")),
    cl("eval:queries-npz-without-x", _eval("--queries", "q-nox.npz")),
    cl(
        "eval:npz-without-labels",
        ["eval", "--queries", "q-noy.npz", "--database", "d.npy", "--database-labels", "dl.npy"],
    ),
    cl("eval:queries-1d", _eval("--queries", "q-1d.npy")),
    cl("eval:queries-nan", _eval("--queries", "q-nan.npy")),
    cl("eval:queries-str", _eval("--queries", "q-str.npy")),
    cl("eval:column-mismatch", _eval("--queries", "q-cols.npy")),
    cl("eval:labels-float", _eval("--database-labels", "dl-float.npy")),
    cl("eval:labels-short", _eval("--database-labels", "dl-short.npy")),
    cl("eval:labels-str-vs-int", _eval("--database-labels", "dl-str.npy")),
    cl("eval:R=0", _eval("--R", "0")),
    cl("eval:R=-3", _eval("--R", "-3")),
    cl("eval:at>N", _eval("--at", "100")),
    cl("eval:hamming-on-floats", _eval("--metric", "hamming")),
    cl("eval:devices=0", _eval("--devices", "0")),
    cl("eval:devices=9", _eval("--devices", "9")),
    cl("eval:devices=-1", _eval("--devices", "-1")),
    cl("eval:unknown-dataset", ["eval", "--dataset", "imagenet"]),
    cl("eval:missing-folder", ["eval", "--dataset", "folder:nope"]),
    cl("eval:bad-npz-dataset", ["eval", "--dataset", "npz:junk.npy"]),
    cl(
        "eval:broken-image-folder",
        ["eval", "--dataset", "folder:img", "--no-progress"],
    ),
    cl("eval:out-is-directory", _eval(), out="outdir"),
    cl("eval:usage:seed=-1-random-ties", _eval("--seed", "-1", "--tie", "random"), "usage"),
    cl("eval:usage:seed=-1-dataset", ["eval", "--dataset", "digits", "--seed", "-1"], "usage"),
    *[
        cl(f"eval:usage:{'/'.join(extra)}", _eval(*extra), "usage")
        for extra in (
            ("--R", "x"),
            ("--at", "0"),
            ("--at", "abc"),
            ("--metric", "chebyshev"),
            ("--tie", "best"),
            ("--seed", "x"),
            ("--devices", "1.5"),
        )
    ],
    # hash
    cl("hash:k=0", _hash("--k", "0")),
    cl("hash:k=-1", _hash("--k", "-1")),
    cl("hash:features-missing", _hash("--features", "nope.npy")),
    cl("hash:features-junk", _hash("--features", "junk.npy")),
    cl("hash:features-1d", _hash("--features", "f-1d.npy")),
    cl("hash:features-3d", _hash("--features", "f-3d.npy")),
    cl("hash:features-nan", _hash("--features", "f-nan.npy")),
    cl("hash:features-str", _hash("--features", "f-str.npy")),
    cl("hash:features-empty", _hash("--features", "f-empty.npy")),
    cl("hash:features-npz-without-x", _hash("--features", "q-nox.npz")),
    cl("hash:pcahash-k>d", _hash("--method", "pcahash", "--k", "7")),
    cl("hash:itq-k>d", _hash("--method", "itq", "--k", "7")),
    cl("hash:flyhash-k=m", _hash("--method", "flyhash", "--k", "60")),
    cl("hash:activity=nan", _hash("--method", "biohash", "--activity", "nan")),
    cl("hash:activity=0", _hash("--method", "biohash", "--activity", "0")),
    cl("hash:activity=1.5", _hash("--method", "biohash", "--activity", "1.5")),
    cl("hash:max-epochs=0", _hash("--method", "biohash", "--activity", "0.5", "--max-epochs", "0")),
    cl("hash:activity-unused", _hash("--activity", "0.5")),
    cl("hash:filters-unused", _hash("--method", "biohash", "--filters", "8")),
    cl("hash:unknown-dataset", ["hash", "--method", "lsh", "--k", "2", "--dataset", "nope"]),
    cl(
        "hash:npz-too-few-rows",
        ["hash", "--method", "biohash", "--k", "2", "--dataset", "npz:small.npz", "--no-progress"],
    ),
    cl("hash:out-is-directory", _hash(), out="outdir"),
    cl("hash:usage:seed=2**70", _hash("--seed", _BIG_SEED), "usage"),
    cl(
        "hash:features-complex",
        _hash("--features", "f-complex.npy"),
    ),
    *[
        cl(f"hash:usage:{'/'.join(extra)}", _hash(*extra), "usage")
        for extra in (
            ("--k", "2.5"),
            ("--method", "nope"),
            ("--dataset", "digits"),
            ("--kernels", "0"),
        )
    ],
    cl("hash:usage:no-out", _HASH, "usage", out=None),
    # compare
    cl("compare:unknown-method", [*_CMP, "--methods", "nope"]),
    cl("compare:one-unknown-method", [*_CMP, "--methods", "lsh,nope"]),
    cl("compare:pcahash-k>d", [*_CMP, "--methods", "pcahash", "--k", "65"]),
    cl("compare:activity-unused", [*_CMP, "--methods", "lsh", "--activity", "0.5"]),
    cl("compare:activity=2", [*_CMP, "--methods", "biohash", "--activity", "2"]),
    cl("compare:unknown-dataset", [*_CMP, "--methods", "lsh", "--dataset", "nope"]),
    cl("compare:too-few-rows", [*_CMP, "--methods", "biohash", "--dataset", "npz:small.npz"]),
    cl("compare:out-is-directory", [*_CMP, "--methods", "lsh", "--k", "2"], out="outdir"),
    cl(
        "compare:no-methods",
        [*_CMP, "--methods", ""],
    ),
    cl("compare:usage:seed=-1", [*_CMP, "--methods", "lsh", "--k", "2", "--seed", "-1"], "usage"),
    cl("compare:usage:seed=2**70", [*_CMP, "--methods", "lsh", "--seed", _BIG_SEED], "usage"),
    *[
        cl(f"compare:usage:{'/'.join(extra)}", [*_CMP, *extra], "usage")
        for extra in (("--k", "0"), ("--k", "a,b"), ("--k", ""))
    ],
    # data
    cl("data:unknown", ["data", "nope"], out=None),
    cl("data:missing-folder", ["data", "folder:/nonexistent/dir"], out=None),
    cl("data:single-npy", ["data", "npz:q.npy"], out=None),
    cl("data:not-a-tar", ["data", "archive:q.npy"], out=None),
    cl("data:folder-is-file", ["data", "folder:q.npy"], out=None),
    cl("data:npz-is-directory", ["data", "npz:outdir"], out=None),
    cl("data:broken-image", ["data", "folder:img", "--no-progress"], out=None),
    cl("data:usage:no-spec", ["data"], "usage", out=None),
]


@pytest.mark.parametrize("argv, expect, out", CLI_CASES)
def test_cli_fuzz(cli_dir, capsys, argv, expect, out):
    argv = list(argv) + (["--out", out] if out else [])
    before = sorted(p.name for p in (cli_dir / "outdir").iterdir())
    if expect == "usage":  # argparse's own errors: usage and 'hebbret <cmd>: error: ...'
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("hebbret") and ": error: " in err[-1], err
    else:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("hebbret: error: ") and err.count("\n") == 1, err
    assert not (cli_dir / "out").exists()
    assert sorted(p.name for p in (cli_dir / "outdir").iterdir()) == before


# ============================================================================================
# How many distinct inputs
# ============================================================================================

INPUT_COUNTS = {
    "retrieval.evaluate": len(EVALUATE_CASES),
    "retrieval.search + pairwise_distances": len(FEATURE_CASES),
    "hashing.fit / encode": len(HASH_CASES),
    "data.load": len(DATA_CASES) + len(NPZ_CASES) + len(SOURCE_CASES),
    "cli.main": len(CLI_CASES),
}
TOTAL_INPUTS = sum(INPUT_COUNTS.values())


def test_the_fuzz_catalogue_is_large():
    assert INPUT_COUNTS["retrieval.evaluate"] >= 150
    assert INPUT_COUNTS["hashing.fit / encode"] >= 150
    assert INPUT_COUNTS["data.load"] >= 150
    assert INPUT_COUNTS["cli.main"] >= 60
    assert TOTAL_INPUTS >= 600


if __name__ == "__main__":  # python tests/test_fuzz.py: the counts
    print(INPUT_COUNTS, "total", TOTAL_INPUTS)
