"""Gosthipaty's auto-encoder and cluster-then-rank retrieval: shapes, the loss against numpy,
reconstruction of a tiny set, resume, the mAP convention for items outside the query's cluster,
NMI / Rand index by hand, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_retrieval import np_ap

from hebbret import retrieval
from hebbret.errors import InputError
from hebbret.nets import autoencoder as ae
from hebbret.retrieval import clusters


def _tiny(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    base = np.where(y[:, None, None, None] == 1, 200, 40)
    x = base + rng.integers(0, 30, (n, 32, 32, 3)) * np.linspace(0, 1, 32)[None, :, None, None]
    return x.astype(np.uint8), y


def test_shapes_of_every_layer():
    model = ae.ConvAE(num_classes=10)
    v = ae.init(model, jax.random.key(0))
    shapes = {k: p["kernel"].shape for k, p in v["params"].items() if "kernel" in p}
    assert shapes["enc1_conv"] == (3, 3, 3, 32) and shapes["enc3_conv"] == (3, 3, 64, 128)
    assert shapes["bottleneck_conv"] == (3, 3, 128, 16) and shapes["dec3_conv"] == (3, 3, 16, 128)
    assert shapes["dec1_conv"] == (3, 3, 64, 32) and shapes["out"] == (3, 3, 32, 3)
    assert shapes["head"] == (256, 10)
    recon, emb, logits = model.apply(v, jnp.zeros((2, 32, 32, 3)))
    assert recon.shape == (2, 32, 32, 3) and emb.shape == (2, 256) and logits.shape == (2, 10)
    vanilla = ae.ConvAE()
    assert "head" not in ae.init(vanilla, jax.random.key(0))["params"]


def test_loss_matches_numpy():
    rng = np.random.default_rng(1)
    r, t = rng.uniform(size=(3, 4, 4, 3)), rng.uniform(size=(3, 4, 4, 3))
    logits, y = rng.normal(size=(3, 5)), np.array([0, 4, 2])
    mse = np.mean((r - t) ** 2)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ce = -np.mean(np.log(p[np.arange(3), y]))
    assert float(ae.loss(jnp.asarray(r), jnp.asarray(t))) == pytest.approx(mse, rel=1e-5)
    got = ae.loss(jnp.asarray(r), jnp.asarray(t), jnp.asarray(logits), jnp.asarray(y), 0.5)
    assert float(got) == pytest.approx(mse + 0.5 * ce, rel=1e-5)


def test_reconstructs_a_tiny_set_and_resumes(tmp_path, monkeypatch):
    """16 epochs on 64 images cut the reconstruction loss at least 4-fold; an interrupted run
    resumed from its checkpoint equals the uninterrupted one; the supervised variant learns."""
    x, y = _tiny()
    model = ae.ConvAE()
    v0 = ae.init(model, jax.random.key(0))
    cfg = ae.AEConfig(epochs=16, batch=16, lr=3e-3)
    v, losses = ae.train(jax.random.key(1), model, v0, x, cfg=cfg, progress=False)
    assert losses[-1] < losses[0] / 4
    recon, emb, logits = ae.apply(model, v, x[:8])
    assert logits is None and emb.shape == (8, 256) and 0 <= recon.min() <= recon.max() <= 1
    short = cfg._replace(epochs=3)
    whole = ae.train(jax.random.key(1), model, v0, x, cfg=short, progress=False)
    ckpt = tmp_path / "ckpt"
    ae.train(jax.random.key(1), model, v0, x, cfg=short._replace(epochs=2), checkpoint_dir=ckpt)
    resumed = ae.train(jax.random.key(1), model, v0, x, cfg=short, checkpoint_dir=ckpt)
    np.testing.assert_allclose(resumed[1], whole[1], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(resumed[0]), jax.tree.leaves(whole[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    sup = ae.ConvAE(num_classes=2)
    vs, _ = ae.train(jax.random.key(1), sup, ae.init(sup, jax.random.key(0)), x, y, cfg,
                     progress=False)  # fmt: skip
    _, _, logits = ae.apply(sup, vs, x)
    assert np.mean(logits.argmax(1) == y) > 0.9
    with pytest.raises(InputError, match="needs"):
        ae.train(jax.random.key(1), sup, vs, x, None, cfg, progress=False)


def test_one_cluster_equals_plain_ranking():
    rng = np.random.default_rng(2)
    xb, xq = rng.normal(size=(80, 6)), rng.normal(size=(9, 6))
    yb, yq = rng.integers(0, 3, 80), rng.integers(0, 3, 9)
    c = clusters.fit(xb, k=1)
    q, b, cq = clusters.penalised(xq, xb, c)
    assert (cq == 0).all()
    kw = dict(metric="sqeuclidean", R=None, normaliser="relevant")
    got = retrieval.evaluate(q, b, yq, yb, **kw)["ap"]["relevant"]
    want = retrieval.evaluate(xq, xb, yq, yb, **kw)["ap"]["relevant"]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_items_outside_the_cluster_come_after_it_by_distance():
    """Two clusters on a line; the query at 0.9 is nearer to 1.2 (the other cluster) than to 0,
    yet the cluster's members come first: ranking 0.0, 0.1, 0.5, then 1.2, 3.0, 3.1."""
    xb = np.array([[0.0], [0.1], [0.5], [3.0], [3.1], [1.2]])
    c = clusters.Clusters(np.array([[0.2], [2.4]]), np.array([0, 0, 0, 1, 1, 1]))
    xq = np.array([[0.9]])
    q, b, cq = clusters.penalised(xq, xb, c)
    assert list(cq) == [0]
    _, idx = retrieval.search(q, b, 6, metric="sqeuclidean", tie="stable")
    assert list(idx[0]) == [2, 1, 0, 5, 3, 4]
    yb, yq = np.array([1, 0, 0, 0, 1, 1]), np.array([1])
    m = retrieval.evaluate(q, b, yq, yb, metric="sqeuclidean", R=None, normaliser="relevant")
    ranked = yb[[2, 1, 0, 5, 3, 4]] == 1
    assert m["map"] == pytest.approx(np_ap(ranked, 6, 3, "relevant"))  # (1/3 + 2/4 + 3/6) / 3


def test_nmi_and_rand_index_by_hand():
    labels = np.array([0, 0, 1, 1])
    assert clusters.scores(labels, np.array([1, 1, 0, 0])) == {"nmi": 1.0, "ri": 1.0}
    # pairs: same class (0,1), (2,3); same cluster (0,2), (1,3): TP 0, FP 2, FN 2, TN 2
    s = clusters.scores(labels, np.array([0, 1, 0, 1]))
    assert s["ri"] == pytest.approx(2 / 6) and s["nmi"] == pytest.approx(0.0, abs=1e-12)


def test_bad_input():
    xb = np.zeros((5, 3))
    with pytest.raises(InputError, match="more clusters than items"):
        clusters.fit(xb, k=6)
    c = clusters.fit(np.random.default_rng(0).normal(size=(20, 3)), k=2)
    with pytest.raises(InputError, match="columns"):
        clusters.assign(c, np.zeros((2, 4)))
    with pytest.raises(InputError, match="2-D"):
        clusters.assign(c, np.zeros(3))
    with pytest.raises(InputError, match="NaN"):
        clusters.fit(np.array([[0.0, np.nan]] * 4), k=2)
    with pytest.raises(InputError, match="labels and clusters"):
        clusters.scores(np.zeros(3), np.zeros(4))
