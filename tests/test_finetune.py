"""Supervised fine-tuning, the network's shapes and the layer-wise retrieval evaluation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hebbret.errors import InputError
from hebbret.nets import convnet, finetune, layerwise


def test_layer_shapes_and_feature_dims():
    """docs/hebbian_pca.md §Network: 14x14x96, 12x12x128, 5x5x192, 3x3x256 (2,304), 4,096."""
    assert [convnet.feature_dim(depth) for depth in range(1, 6)] == [
        14 * 14 * 96, 12 * 12 * 128, 5 * 5 * 192, 2304, 4096,
    ]  # fmt: skip
    x = np.zeros((2, 32, 32, 3), np.uint8)
    for depth in (1, 4, 5):
        model = convnet.Net(7, depth=depth)
        v = convnet.init(model, jax.random.key(0))
        feats = convnet.features(model, v, x, np.zeros(3), np.ones(3))
        assert feats.shape == (2, convnet.feature_dim(depth))
    assert "conv1" in v["params"] and "bias" not in v["params"]["conv1"]
    assert v["params"]["head"]["kernel"].shape == (4096, 7)


def test_hebbian_init_is_uniform_within_one_over_sqrt_fan_in():
    v = convnet.init(convnet.Net(10, init_scheme="hebbian"), jax.random.key(1))
    k = np.asarray(v["params"]["conv2"]["kernel"])
    bound = 1 / np.sqrt(3 * 3 * 96)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound


def test_keep_variance_rescales_bn3_to_bn5_by_relative_running_std():
    """The authors' modified_bn: out = BN(x) * sqrt((var_c + eps) / (mean(var) + eps)) with the
    running variance (updated by this step in training), on bn3-bn5 only."""
    x = jax.random.normal(jax.random.key(1), (6, 32, 32, 3))
    plain, kept = convnet.Net(4, depth=3), convnet.Net(4, depth=3, keep_variance=True)
    v = convnet.init(kept, jax.random.key(0))
    spread = np.random.default_rng(0).uniform(0.1, 4.0, 192).astype(np.float32)
    v["batch_stats"]["bn3"] = v["batch_stats"]["bn3"] | {"var": spread}
    (_, f_train), state = kept.apply(
        v, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
    )
    (_, f_plain), _ = plain.apply(
        v, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
    )
    var = np.asarray(state["batch_stats"]["bn3"]["var"], np.float64) + 1e-5
    scale = np.sqrt(var / var.mean())
    assert scale.std() > 0.1  # the channels' running variances differ
    want = np.asarray(f_plain).reshape(6, 5, 5, 192) * scale
    np.testing.assert_allclose(
        np.asarray(f_train).reshape(6, 5, 5, 192), want, rtol=1e-4, atol=1e-5
    )
    variables = {"params": v["params"], "batch_stats": state["batch_stats"]}
    _, f_eval = kept.apply(variables, x)
    _, f_eval_plain = plain.apply(variables, x)
    np.testing.assert_allclose(
        np.asarray(f_eval).reshape(6, 5, 5, 192),
        np.asarray(f_eval_plain).reshape(6, 5, 5, 192) * scale, rtol=1e-4, atol=1e-5,
    )  # fmt: skip
    shallow = convnet.Net(4, depth=2, keep_variance=True)  # bn1, bn2 are plain
    variables = convnet.transplant(variables, convnet.init(shallow, jax.random.key(3)))
    _, a = shallow.apply(variables, x)
    _, b = convnet.Net(4, depth=2).apply(variables, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_keep_variance_scale_carries_no_gradient():
    """As a PyTorch buffer, the running variance is a constant for backprop: the gradient equals
    that of the plain network's features times the (fixed) scale."""
    x = jax.random.normal(jax.random.key(1), (6, 32, 32, 3))
    plain, kept = convnet.Net(4, depth=3), convnet.Net(4, depth=3, keep_variance=True)
    v = convnet.init(kept, jax.random.key(0))
    w = jax.random.normal(jax.random.key(5), (6, 4800))

    def loss(model, x, scale=1.0):
        (_, f), state = model.apply(
            v, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
        )
        return jnp.sum(f * scale * w), state

    (_, state), grad_kept = jax.value_and_grad(loss, argnums=1, has_aux=True)(kept, x)
    var = state["batch_stats"]["bn3"]["var"] + 1e-5
    scale = jnp.tile(jnp.sqrt(var / var.mean()), 25)[None, :]  # (5, 5, 192) flattened
    grad_plain = jax.grad(lambda x: loss(plain, x, scale)[0])(x)
    np.testing.assert_allclose(grad_kept, grad_plain, rtol=1e-4, atol=1e-6)


def test_lr_schedule_holds_then_halves_every_two_epochs():
    cfg = finetune.FinetuneConfig()
    lrs = [float(finetune.lr_at_epoch(cfg, e)) for e in range(20)]
    np.testing.assert_allclose(lrs[:10], [1e-3] * 10)
    np.testing.assert_allclose(lrs[10:14], [5e-4, 5e-4, 2.5e-4, 2.5e-4])
    np.testing.assert_allclose(lrs[19], 1e-3 / 2**5)


def test_transplant_copies_layers_keeps_head():
    src = convnet.init(convnet.Net(10, init_scheme="hebbian"), jax.random.key(0))
    dst = convnet.init(convnet.Net(3, depth=3), jax.random.key(1))
    out = convnet.transplant(src, dst)
    assert set(out["params"]) == set(dst["params"])  # no conv4 / fc5 in a depth-3 net
    got, src, dst = out["params"], src["params"], dst["params"]
    np.testing.assert_array_equal(got["conv3"]["kernel"], src["conv3"]["kernel"])
    np.testing.assert_array_equal(got["head"]["kernel"], dst["head"]["kernel"])


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two easy classes: dark and bright images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int32)
    x = rng.integers(0, 100, (n, 32, 32, 3)) + 120 * y[:, None, None, None]
    return x.astype(np.uint8), y


def test_finetune_learns_and_keeps_the_best_epoch():
    train, val = _blobs(64, 0), _blobs(32, 1)
    model = convnet.Net(2, depth=2)
    v = convnet.init(model, jax.random.key(0))
    mean, std = convnet.channel_stats(train[0])
    cfg = finetune.FinetuneConfig(epochs=3, batch=16, lr=1e-2)
    start = jax.tree.map(np.array, v)
    res = finetune.finetune(jax.random.key(1), model, v, train, val, mean, std, cfg)
    chex.assert_trees_all_equal(v, start)  # the caller's variables are neither donated nor changed
    assert len(res.val_accuracy) == 3 and len(res.train_loss) == 3
    assert res.val_accuracy[res.best_epoch - 1] == max(res.val_accuracy) >= 0.9
    pred = convnet.predict(model, res.variables, val[0], mean, std)
    assert np.mean(pred == val[1]) == res.val_accuracy[res.best_epoch - 1]


@pytest.mark.parametrize(
    "labels, problem",
    [(None, "missing training labels"), (np.zeros(5), "shape"), (np.full(8, 2), "lie in")],
)
def test_finetune_bad_labels(labels, problem):
    x = np.zeros((8, 32, 32, 3), np.uint8)
    model = convnet.Net(2, depth=1)
    v = convnet.init(model, jax.random.key(0))
    with pytest.raises(InputError, match=problem):
        finetune.finetune(
            jax.random.key(0), model, v, (x, labels), (x, np.zeros(8, int)), np.zeros(3), np.ones(3)
        )


def numpy_map(xq, yq, xb, yb, k: int | None, normaliser: str) -> float:
    """mAP in percent written out: squared Euclidean distances in float64, the database ranked
    by distance; AP@k = sum_{i <= k} P(i) rel(i) / Z with Z = min(k, relevant) ("min", Lagani's
    MAPMetric) or Z = relevant in the database ("relevant"); k = None: the whole database."""
    centre = xb.astype(np.float64).mean(0)
    q, b = xq.astype(np.float64) - centre, xb.astype(np.float64) - centre
    dist = np.sum((q[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    rel = (yb[np.argsort(dist, axis=1, kind="stable")] == yq[:, None]).astype(np.float64)
    k = rel.shape[1] if k is None else k
    precision = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    total = rel.sum(axis=1)
    z = np.minimum(k, total) if normaliser == "min" else total
    ap = np.where(total > 0, np.sum((precision * rel)[:, :k], axis=1) / np.maximum(z, 1), 0.0)
    return 100 * float(ap.mean())


def test_evaluate_layer_scores_retrieval(monkeypatch):
    lab, val, db, q = _blobs(32, 0), _blobs(16, 1), _blobs(40, 2), _blobs(10, 3)
    mean, std = convnet.channel_stats(db[0])
    cfg = finetune.FinetuneConfig(epochs=2, batch=16, lr=1e-2)
    trained = []
    real = finetune.finetune

    def keeping(key, model, *args, **kwargs):
        res = real(key, model, *args, **kwargs)
        trained.append((model, res.variables))
        return res

    monkeypatch.setattr(finetune, "finetune", keeping)
    row = layerwise.evaluate_layer(
        jax.random.key(0), 3, None, lab, val, db, q, mean, std, cfg,
        num_classes=2, nystroem_components=8,
    )  # fmt: skip
    # the numbers, recomputed from the fine-tuned network the row was scored with
    ((model, variables),) = trained
    logits, _ = model.apply(variables, convnet.standardise(jnp.asarray(val[0]), mean, std))
    correct = int(np.sum(np.argmax(np.asarray(logits), axis=1) == val[1]))
    chex.assert_trees_all_close(row["val_accuracy"], 100 * correct / len(val[1]), rtol=1e-12)
    fq, fdb, fval = (
        convnet.features(model, variables, x, mean, std) for x in (q[0], db[0], val[0])
    )
    chex.assert_trees_all_close(row["map"], numpy_map(fq, q[1], fdb, db[1], 20, "min"), atol=1e-4)
    all_ = numpy_map(fq, q[1], fdb, db[1], None, "relevant")
    chex.assert_trees_all_close(row["map_all"], all_, atol=1e-4)
    val_map = numpy_map(fval, val[1], fdb, db[1], 20, "min")
    chex.assert_trees_all_close(row["val_map"], val_map, atol=1e-4)
    assert row["layer"] == 3 and row["R"] == 20 and row["dim"] == 4800
    assert row["map"] > 80 and row["map_all"] > 80  # the two classes are trivially separable
    assert row["map_nystroem"] > 50 and row["val_map"] > 80
    assert set(row["map_by_normaliser"]) == {"retrieved", "relevant", "min", "all"}
    # Table 1's number is mAP@k with k = min(100, database) = 40, normalised by min(k, relevant)
    assert set(row["map_at"]) == {20} and row["map"] == row["map_at"][20]
    assert row["map_R"] == row["map_by_normaliser"]["min"]


def test_score_layer_map_is_average_precision_by_hand():
    """A ranking that is far from perfect (random labels, 4 classes, an untrained network): every
    mAP of the row equals :func:`numpy_map` on the features the network gives."""
    rng = np.random.default_rng(5)

    def images(n):
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, n)

    db, q, val = images(40), images(12), images(8)
    model = convnet.Net(4, depth=4)
    v = convnet.init(model, jax.random.key(2))
    mean, std = convnet.channel_stats(db[0])
    row = layerwise.score_layer(
        model, v, val, db, q, mean, std, num_classes=4, nystroem_components=None
    )
    fq, fdb, fval = (convnet.features(model, v, x, mean, std) for x in (q[0], db[0], val[0]))
    assert row["R"] == 10 and set(row["map_at"]) == {20}
    want = {
        "map": numpy_map(fq, q[1], fdb, db[1], 20, "min"),
        "map_R": numpy_map(fq, q[1], fdb, db[1], 10, "min"),
        "map_all": numpy_map(fq, q[1], fdb, db[1], None, "relevant"),
        "val_map": numpy_map(fval, val[1], fdb, db[1], 20, "min"),
    }
    chex.assert_trees_all_close({k: row[k] for k in want}, want, atol=1e-4)
    assert 10 < row["map"] < 90 and row["map_R"] != row["map"]  # not a trivial ranking


def test_authors_none_scores_one_network_at_every_layer(monkeypatch):
    """The authors' None baseline: one training of the whole network per regime; layer L's
    features are that network's intermediate bn_L output."""
    lab, val, db, q = _blobs(32, 0), _blobs(16, 1), _blobs(40, 2), _blobs(10, 3)
    mean, std = convnet.channel_stats(db[0])
    cfg = finetune.FinetuneConfig(epochs=1, batch=16, lr=1e-2)
    trained = []
    real = finetune.finetune

    def counting(key, model, *args, **kwargs):
        res = real(key, model, *args, **kwargs)
        trained.append((model, res.variables))
        return res

    monkeypatch.setattr(finetune, "finetune", counting)
    rows = layerwise.evaluate_full_network(
        jax.random.key(0), (1, 3, 5), lab, val, db, q, mean, std, cfg,
        num_classes=2, nystroem_components=None, progress=False,
    )  # fmt: skip
    assert len(trained) == 1 and trained[0][0].depth == 5
    assert [r["layer"] for r in rows] == [1, 3, 5]
    assert len({r["val_accuracy"] for r in rows}) == 1  # the one network's
    full, variables = trained[0]
    x = convnet.standardise(jnp.asarray(q[0]), jnp.asarray(mean), jnp.asarray(std))
    _, state = full.apply(variables, x, capture_intermediates=True)
    for depth, row in zip((1, 3, 5), rows, strict=True):
        bn = np.asarray(state["intermediates"][f"bn{depth}"]["__call__"][0]).reshape(len(x), -1)
        cut = convnet.Net(2, depth=depth)
        cut_vars = convnet.transplant(variables, convnet.init(cut, jax.random.key(1)))
        chex.assert_trees_all_close(convnet.features(cut, cut_vars, q[0], mean, std), bn, atol=1e-5)
        assert row["dim"] == bn.shape[1]


def test_select_layer_and_confidence_interval():
    rows = [{"layer": 3, "val_map": 20.0}, {"layer": 5, "val_map": 25.0}]
    rows.append({"layer": 1, "val_map": 25.0})
    assert layerwise.select_layer(rows)["layer"] == 1
    vals = [10.0, 12.0, 14.0, 11.0, 13.0]
    mean, half = layerwise.confidence_interval(vals)
    assert mean == 12.0
    np.testing.assert_allclose(half, stats.t.ppf(0.975, 4) * np.std(vals, ddof=1) / np.sqrt(5))
    assert layerwise.confidence_interval([3.0]) == (3.0, 0.0)
    with pytest.raises(InputError):
        layerwise.select_layer([])
