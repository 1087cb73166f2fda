"""Protocol splits: pure, seeded, disjoint, shuffled."""

import numpy as np
import pytest

from hebbret import InputError, data
from hebbret.data import splits


def test_per_class_queries_counts_disjoint_and_shuffled():
    labels = np.repeat(np.arange(4), 50)  # sorted by class, as image folders arrive
    a = splits.per_class_queries(labels, 5, seed=1)
    assert np.bincount(labels[a.queries]).tolist() == [5, 5, 5, 5]
    assert len(a.database) == 180 and not set(a.queries) & set(a.database)
    assert sorted(np.concatenate(a)) == list(range(200))
    assert not np.all(np.diff(labels[a.database]) >= 0)  # database no longer sorted by class
    b = splits.per_class_queries(labels, 5, seed=1)
    np.testing.assert_array_equal(a.queries, b.queries)
    np.testing.assert_array_equal(a.database, b.database)
    c = splits.per_class_queries(labels, 5, seed=2)
    assert not np.array_equal(a.queries, c.queries)


def test_per_class_queries_too_small_class():
    with pytest.raises(InputError, match="class 1 has 3 items"):
        splits.per_class_queries(np.array([0] * 10 + [1] * 3), 3, seed=0)


def test_labelled_split_matches_lagani_protocol():
    s = splits.labelled_split(50_000, 0.01, seed=0)
    order = np.random.default_rng(0).permutation(50_000)
    np.testing.assert_array_equal(s.validation, order[40_000:])
    np.testing.assert_array_equal(s.train, order[:40_000])
    assert len(s.labelled) == 400 and np.array_equal(s.labelled, s.train[:400])
    assert len(splits.labelled_split(50_000, 0.25, seed=0).labelled) == 10_000
    with pytest.raises(InputError, match="fraction"):
        splits.labelled_split(100, 0.0, seed=0)


def test_random_queries():
    q = splits.random_queries(10_000, 1_000, seed=3)
    assert len(np.unique(q)) == 1_000 and q.max() < 10_000
    with pytest.raises(InputError, match="cannot draw"):
        splits.random_queries(5, 6, seed=0)


def test_default_protocol_on_digits():
    ds = data.load("digits")
    p = splits.default_protocol(ds, seed=0)
    assert p.xq.shape == (100, 64) and p.xb.shape == (1697, 64) and p.R is None
    assert p.xq.dtype == np.float32 and 0 <= p.xq.min() and p.xq.max() <= 1
    assert np.bincount(p.yq).tolist() == [10] * 10


def test_default_protocol_indices_point_at_the_pooled_items():
    ds = data.load("digits")
    p = splits.default_protocol(ds, seed=3)
    pooled = ds.pooled()
    np.testing.assert_array_equal(p.xq, splits.features(pooled.x[p.queries]))
    np.testing.assert_array_equal(p.yb, pooled.y[p.database])
