"""BioConvHash in bounded memory: sparse (CSR) features, and the BioHash rule streamed over them
in centred chunks, give what the dense features give."""

import weakref

import chex
import jax
import numpy as np
import pytest
import scipy.sparse

from hebbret import data, hashing
from hebbret.errors import InputError, all_finite
from hebbret.hashing import bioconv, csr_rows, inputs
from hebbret.hashing import conv as conv_hash
from hebbret.mesh import data_mesh
from hebbret.rules import biohash, biohash_train

RULE = biohash.RuleConfig(batch=40, max_epochs=4)


def _sparse_rows(n=600, d=50, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x * (rng.uniform(size=(n, d)) < density)


@pytest.mark.parametrize(("devices", "batches"), [(None, 3), (8, 3), (None, 4)])
def test_streamed_rule_equals_dense(monkeypatch, devices, batches):
    x = _sparse_rows()
    mean = x.mean(0, dtype=np.float64)
    mesh = data_mesh(devices) if devices else None
    key = jax.random.key(0)
    dense = biohash_train.train(key, (x - mean).astype(np.float32), 12, RULE, progress=False,
                                mesh=mesh)  # fmt: skip
    rows = 40 * batches  # 120 rows a chunk (5 an epoch), or 160 (3, then 120 rows)
    monkeypatch.setattr(biohash_train, "STREAM_BYTES", 4 * 50 * rows)
    calls = []
    real = biohash_train._epoch_fn

    def counting(*args):
        fn = real(*args)
        return lambda w, x, order, eps: calls.append(x.shape) or fn(w, x, order, eps)

    monkeypatch.setattr(biohash_train, "_epoch_fn", counting)
    streamed = biohash_train.train(key, scipy.sparse.csr_array(x), 12, RULE, progress=False,
                                   centre=mean, mesh=mesh)  # fmt: skip
    per_epoch = [(rows, 50)] * (600 // rows) + [(600 % rows, 50)] * (600 % rows > 0)
    assert calls[: len(per_epoch)] == per_epoch  # never (600, 50)
    assert streamed.history == dense.history
    np.testing.assert_array_equal(np.asarray(streamed.w), np.asarray(dense.w))


def test_centre_of_dense_data_is_subtracted_first():
    x = _sparse_rows()
    mean = x.mean(0, dtype=np.float64)
    want = biohash_train.train(jax.random.key(1), (x - mean).astype(np.float32), 8, RULE,
                               progress=False)  # fmt: skip
    got = biohash_train.train(jax.random.key(1), x, 8, RULE, progress=False, centre=mean)
    np.testing.assert_array_equal(np.asarray(got.w), np.asarray(want.w))
    with pytest.raises(InputError, match=r"centre must be a finite \(50,\) vector"):
        biohash_train.train(jax.random.key(1), x, 8, RULE, centre=mean[:-1])


def test_biohash_hasher_takes_sparse_features():
    x = _sparse_rows(seed=2)
    cfg = hashing.HashConfig(k=4, activity=0.1, rule=RULE)
    key = jax.random.key(3)
    dense = hashing.fit("biohash", x, cfg, key=key)
    csr = scipy.sparse.csr_array(x)
    sparse = hashing.fit("biohash", csr, cfg, key=key)
    np.testing.assert_allclose(sparse.mean, dense.mean, rtol=1e-12)
    np.testing.assert_array_equal(sparse.w, dense.w)
    np.testing.assert_array_equal(
        hashing.encode("biohash", sparse, csr[:100]).active,
        hashing.encode("biohash", dense, x[:100]).active,
    )


def test_sparse_feature_map_and_layer_equal_dense():
    images = data.load("digits").pooled().x[:400]
    conv = bioconv.ConvConfig(filters=8, kernels=(3, 4), k_ci=1, pool=2, stride=2, patches=2000)
    cfg = hashing.HashConfig(k=2, activity=0.05, rule=RULE._replace(max_epochs=3), conv=conv)
    key = jax.random.key(4)
    front = hashing.learn_front_end(images, cfg, key=key)
    dense = conv_hash.features(front, images)
    sparse = conv_hash.features(front, images, sparse=True, chunk_size=64)
    assert scipy.sparse.issparse(sparse) and sparse.nnz < dense.size / 2  # k_CI = 1: sparse
    np.testing.assert_array_equal(sparse.toarray(), dense)
    chex.assert_trees_all_equal(
        conv_hash.fit_layer(front, sparse, cfg, key=key),
        conv_hash.fit_layer(front, dense, cfg, key=key),
    )


def test_fit_bioconvhash_goes_sparse_past_the_limit(monkeypatch):
    images = data.load("digits").pooled().x[:200]
    conv = bioconv.ConvConfig(filters=8, kernels=(3,), k_ci=1, pool=2, stride=2, patches=1000)
    cfg = hashing.HashConfig(k=2, activity=0.05, rule=RULE._replace(max_epochs=2), conv=conv)
    key = jax.random.key(5)
    want = hashing.fit("bioconvhash", images, cfg, key=key)
    seen = []
    real = conv_hash.fit_layer
    monkeypatch.setattr(conv_hash, "DENSE_LIMIT", 1000)
    monkeypatch.setattr(
        conv_hash, "fit_layer", lambda fe, f, *a, **kw: seen.append(f) or real(fe, f, *a, **kw)
    )
    got = conv_hash.fit_bioconvhash(images, cfg, key=key)
    assert scipy.sparse.issparse(seen[0])
    chex.assert_trees_all_equal(got, want)


def test_sparse_input_errors():
    x = scipy.sparse.csr_array(_sparse_rows())
    cfg = hashing.HashConfig(k=4, activity=0.1, rule=RULE)
    with pytest.raises(InputError, match="scipy.sparse features are taken by biohash"):
        hashing.fit("lsh", x, cfg, key=jax.random.key(0))
    bad = x.copy()
    bad.data[0] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        hashing.fit("biohash", bad, cfg, key=jax.random.key(0))
    with pytest.raises(InputError, match="NaN or inf"):
        biohash_train.train(jax.random.key(0), bad, 8, RULE)


@pytest.mark.parametrize("block", [5, 2**24])  # chunks spanning blocks; one block
def test_row_builder_equals_scipy_and_releases_blocks(block):
    rng = np.random.default_rng(0)
    dense = [rng.standard_normal((r, 7)).astype(np.float32) for r in (3, 1, 4, 0, 2)]
    for a in dense:
        a[np.abs(a) < 1.0] = 0.0
    dense[1][:] = 0.0  # an all-zero chunk (and a chunk of no rows)
    builder = csr_rows.RowBuilder(7, block=block)
    for a in dense:
        builder.append(a)
    want = scipy.sparse.csr_array(np.concatenate(dense))
    assert (builder.rows, builder.nnz) == (10, want.nnz)
    blocks = [weakref.ref(a) for pair in builder._blocks for a in pair]
    assert len(blocks) == 2 * -(-want.nnz // block)
    got = builder.build()
    assert all(ref() is None for ref in blocks)  # every block released
    assert got.shape == (10, 7) and got.dtype == np.float32 and got.has_canonical_format
    assert got.indices.dtype == got.indptr.dtype == np.int32
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)
    assert builder.rows == 0 and builder._blocks == []  # emptied
    with pytest.raises(InputError, match=r"shape \(r, 7\)"):
        builder.append(np.zeros((2, 5), np.float32))
    with pytest.raises(InputError, match="no rows"):
        builder.build()


def test_feature_map_sparse_equals_dense_across_blocks(monkeypatch):
    images = np.random.default_rng(1).uniform(size=(9, 12, 12, 1)).astype(np.float32)
    cfg = bioconv.ConvConfig(filters=6, kernels=(3, 4), k_ci=2, pool=3, stride=2, patches=100)
    filters = [np.random.default_rng(k).standard_normal((6, k * k)) for k in (3, 4)]
    monkeypatch.setattr(csr_rows, "BLOCK", 37)  # features of every chunk spill over blocks
    dense = bioconv.feature_map(filters, images, cfg, chunk_size=4)
    sparse = bioconv.feature_map(filters, images, cfg, chunk_size=4, sparse=True)
    assert scipy.sparse.issparse(sparse) and sparse.nnz == np.count_nonzero(dense)
    np.testing.assert_array_equal(sparse.toarray(), dense)


def test_column_mean_and_finite_check_a_slice_at_a_time(monkeypatch):
    monkeypatch.setattr(inputs, "STAT_NONZEROS", 7)  # slices that split rows
    x = _sparse_rows(n=50, d=9)
    csr = scipy.sparse.csr_array(x)
    want = x.mean(0, dtype=np.float64)
    np.testing.assert_allclose(inputs.column_mean(csr), want, rtol=1e-12, atol=1e-15)
    assert all_finite(csr.data, step=7)
    for at in (0, 13, csr.nnz - 1):  # first, middle and last slice
        bad = csr.copy()
        bad.data[at] = np.inf
        assert not all_finite(bad.data, step=7)
        with pytest.raises(InputError, match="NaN or inf"):
            inputs.sparse_features(bad)
