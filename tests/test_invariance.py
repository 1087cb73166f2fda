"""Invariances of the retrieval kernel: transformations that cannot change a ranking must not
change mAP.

Tolerances: transformations that are exact in float32 (power-of-two scalings, integer shifts of
integer-valued features, permutations, relabelling) must give the same mAP to 1e-12; shifts and
scalings that round (an offset of 1e3 or a factor of 3.7 on random float features) can only
swap items whose distances agree to float32 precision, so they must agree to 1e-3 (measured:
at most a few 1e-5 on these sets).
"""

import numpy as np
import pytest

from hebbret import retrieval as rt

EXACT, ROUNDED = 1e-12, 1e-3


def clustered(seed, n=240, classes=6, d=16, integer=False):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, size=(classes, d))
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, d))
    if integer:  # small integers: many exactly tied distances
        x = np.round(x)
    return x.astype(np.float32), y


def evaluate(x, y, metric, nq=40, **kwargs):
    return rt.evaluate(x[:nq], x[nq:], y[:nq], y[nq:], metric=metric, R=50, **kwargs)["map"]


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "manhattan"])
@pytest.mark.parametrize("offset", [3.0, -250.0, 1e4])
def test_integer_shift_of_integer_features_is_exact(metric, offset):
    x, y = clustered(0, integer=True)
    assert evaluate(x + offset, y, metric) == pytest.approx(evaluate(x, y, metric), abs=EXACT)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "manhattan"])
@pytest.mark.parametrize("offset", [0.37, 1e3, -1e4])
def test_shift_by_any_vector(metric, offset):
    x, y = clustered(1)
    shift = offset * np.random.default_rng(2).uniform(0.5, 1.5, x.shape[1])
    shifted = (x.astype(np.float64) + shift).astype(np.float32)
    tol = ROUNDED if metric != "manhattan" or abs(offset) < 1e3 else 5e-3
    assert evaluate(shifted, y, metric) == pytest.approx(evaluate(x, y, metric), abs=tol)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("factor", [2.0**-40, 0.25, 2.0**30])
def test_power_of_two_scaling_is_exact(metric, factor):
    x, y = clustered(3, integer=True)
    scaled = x.astype(np.float64) * factor
    assert evaluate(scaled, y, metric) == pytest.approx(evaluate(x, y, metric), abs=EXACT)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("factor", [1e-25, 3.7, 1e25])
def test_any_scaling(metric, factor):
    x, y = clustered(4)
    scaled = x.astype(np.float64) * factor
    assert evaluate(scaled, y, metric) == pytest.approx(evaluate(x, y, metric), abs=ROUNDED)


def test_cosine_ignores_each_rows_scale():
    x, y = clustered(5)
    factors = np.random.default_rng(6).uniform(1e-3, 1e3, (len(x), 1))
    scaled = x.astype(np.float64) * factors
    assert evaluate(scaled, y, "cosine") == pytest.approx(evaluate(x, y, "cosine"), abs=ROUNDED)


@pytest.mark.parametrize("metric", ["sqeuclidean", "manhattan", "cosine", "hamming"])
def test_permuting_the_database_with_exact_ties(metric):
    x, y = clustered(7, integer=True)
    if metric == "hamming":
        x = rt.pack_bits(x[:, :12] > 0)
    xq, yq, xb, yb = x[:40], y[:40], x[40:], y[40:]
    perm = np.random.default_rng(8).permutation(len(xb))
    a = rt.evaluate(xq, xb, yq, yb, metric=metric, R=50, at=(10,))
    b = rt.evaluate(xq, xb[perm], yq, yb[perm], metric=metric, R=50, at=(10,))
    for normaliser in rt.NORMALISERS:
        np.testing.assert_allclose(a["ap"][normaliser], b["ap"][normaliser], atol=1e-6)
    assert a["precision_at"][10] == pytest.approx(b["precision_at"][10], abs=1e-6)


@pytest.mark.parametrize("metric", ["sqeuclidean", "hamming"])
def test_relabelling_classes(metric):
    x, y = clustered(9, integer=True)
    if metric == "hamming":
        x = rt.pack_bits(x[:, :12] > 0)
    relabel = np.random.default_rng(10).permutation(6) * 2**40 + 7  # int64, beyond int32
    names = np.array(["plane", "car", "bird", "cat", "deer", "dog"])
    want = evaluate(x, y, metric)
    assert evaluate(x, relabel[y], metric) == pytest.approx(want, abs=EXACT)
    assert evaluate(x, names[y], metric) == pytest.approx(want, abs=EXACT)
