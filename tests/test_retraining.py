"""Tzelepi & Tefas retraining: target rules against hand-computed examples, toy 2-D geometry,
the cut network, the regression loop (loss goes down, resume equals an uninterrupted run), stage
chaining, and the study end to end on tiny images."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_pipelines import _tiny_images

from hebbret.errors import InputError
from hebbret.nets import convnet
from hebbret.pipelines import retraining as pipeline
from hebbret.retraining import network, regress, stages, targets

ROOT = pathlib.Path(__file__).resolve().parent.parent


# --- targets ------------------------------------------------------------------------------


def test_fu_targets_by_hand():
    """1-D points 0, 1, 3, 10 with n = 2: the neighbours' means are 2, 1.5, 0.5, 2 (each point's
    two nearest others); eta = 0.5 gives those means, eta = 0.25 the midpoints."""
    x = np.array([[0.0], [1.0], [3.0], [10.0]], np.float32)
    mu = np.array([[2.0], [1.5], [0.5], [2.0]])
    full = targets.fu_targets(x, n=2, eta=0.5)
    np.testing.assert_array_equal(full.index, np.arange(4))
    np.testing.assert_allclose(full.target, mu, atol=1e-6)
    half = targets.fu_targets(x, n=2, eta=0.25)
    np.testing.assert_allclose(half.target, x - 0.5 * (x - mu), atol=1e-6)


def test_rri_targets_by_hand():
    """Two classes on a line: a: 0, 2, 4; b: 10, 11. With n = 1 and beta = 0.2, item 0 has
    mu+ = (2 + 4) / 2 = 3 and mu- = 10 (its nearest irrelevant), so its target is
    0 - 0.8 (0 - 3) + 0.2 (0 - 10) = 0.4; item 10: mu+ = 11, mu- = 4: 10 + 0.8 + 1.2 = 12."""
    x = np.array([[0.0], [2.0], [4.0], [10.0], [11.0]], np.float32)
    y = np.array([0, 0, 0, 1, 1])
    t = targets.rri_targets(x, y, n=1, beta=0.2)
    mu_plus = np.array([3.0, 2.0, 1.0, 11.0, 10.0])
    mu_minus = np.array([10.0, 10.0, 10.0, 4.0, 4.0])
    want = x[:, 0] - 0.8 * (x[:, 0] - mu_plus) + 0.2 * (x[:, 0] - mu_minus)
    np.testing.assert_allclose(t.target[:, 0], want, atol=1e-5)
    assert t.target[0, 0] == pytest.approx(0.4) and t.target[3, 0] == pytest.approx(12.0)
    # beta = 0: the target is the mean of the other relevant items
    np.testing.assert_allclose(targets.rri_targets(x, y, n=1, beta=0.0).target[:, 0], mu_plus)


def test_rri_distractors_are_pushed_away_from_the_images_they_disturb():
    """A distractor (label -1) at 5 is the nearest irrelevant item of the images at 4 and 6: it
    gets one eq.-10 pair per such image, d + 2 theta (d - x), and no RRI target of its own."""
    x = np.array([[0.0], [4.0], [5.0], [6.0], [20.0]], np.float32)
    y = np.array([0, 0, -1, 1, 1])
    t = targets.rri_targets(x, y, n=1, beta=0.2, theta=0.5, distractor=-1)
    assert list(t.index[:4]) == [0, 1, 3, 4]
    pairs = sorted(zip(t.index[4:], t.target[4:, 0], strict=True), key=lambda p: p[1])
    assert [int(i) for i, _ in pairs] == [2, 2, 2, 2]  # every image's nearest irrelevant is it
    want = sorted(5.0 + 1.0 * (5.0 - v) for v in (0.0, 4.0, 6.0, 20.0))
    np.testing.assert_allclose([v for _, v in pairs], want, atol=1e-5)


def test_rf_targets_by_hand_and_on_toy_geometry():
    """alpha = 0.25: a relevant x moves half way to q, an irrelevant one as far again away."""
    q = np.array([[0.0, 0.0]], np.float32)
    x = np.array([[2.0, 0.0], [0.0, 4.0], [1.0, 1.0]], np.float32)
    t = targets.rf_targets(q, x, np.array([[0, -1]]), np.array([[1]]), alpha=0.25)
    np.testing.assert_array_equal(t.index, [0, 1])
    np.testing.assert_allclose(t.target, [[1.0, 0.0], [0.0, 6.0]])
    rng = np.random.default_rng(0)
    qs, xs = rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=(40, 2)).astype(np.float32)
    rel, irr = rng.integers(0, 40, (5, 3)), rng.integers(0, 40, (5, 2))
    t = targets.rf_targets(qs, xs, rel, irr, alpha=0.3)
    users = np.repeat(np.arange(5), 3)
    before = np.linalg.norm(xs[rel.ravel()] - qs[users], axis=1)
    after = np.linalg.norm(t.target[:15] - qs[users], axis=1)
    np.testing.assert_allclose(after, 0.4 * before, rtol=1e-5)  # 1 - 2 alpha
    users = np.repeat(np.arange(5), 2)
    before = np.linalg.norm(xs[irr.ravel()] - qs[users], axis=1)
    np.testing.assert_allclose(
        np.linalg.norm(t.target[15:] - qs[users], axis=1), 1.6 * before, rtol=1e-5
    )


def test_nearest_equals_brute_force_over_several_chunks(monkeypatch):
    monkeypatch.setattr(targets, "CHUNK", 7)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(30, 5)) + 100.0).astype(np.float32)  # a large offset costs nothing
    y = rng.integers(0, 3, 30)
    d = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    for exclude, mask in (("self", np.eye(30, dtype=bool)), ("class", y[:, None] == y[None])):
        dist, idx = targets.nearest(x, x, 4, exclude=exclude, yq=y, yb=y)
        want = np.argsort(np.where(mask, np.inf, d), axis=1, kind="stable")[:, :4]
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_allclose(dist, np.take_along_axis(d, want, 1), rtol=1e-4, atol=1e-3)


def test_simulated_users_mark_their_first_relevant_and_irrelevant_results():
    """On a line, user at 0 (class 0) sees 1 (class 1), 2 (0), 3 (0), 4 (1): marks 2, 3 relevant
    and 1 irrelevant; already judged items are passed over."""
    x = np.array([[1.0], [2.0], [3.0], [4.0], [9.0]], np.float32)
    y = np.array([1, 0, 0, 1, 0])
    rel, irr = targets.simulate_feedback(
        np.zeros((1, 1), np.float32), np.array([0]), x, y, relevant=2, irrelevant=1
    )
    assert rel.tolist() == [[1, 2]] and irr.tolist() == [[0]]
    rel, irr = targets.simulate_feedback(
        np.zeros((1, 1), np.float32),
        np.array([0]),
        x,
        y,
        relevant=2,
        irrelevant=1,
        skip=np.array([[1, 0]]),
    )
    assert rel.tolist() == [[2, 4]] and irr.tolist() == [[3]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, y: targets.rri_targets(x, None), "needs the database labels"),
        (lambda x, y: targets.rri_targets(x, np.zeros(6, int)), "single class"),
        (lambda x, y: targets.fu_targets(x, n=6), "k must be an integer in [1, 5]"),
        (lambda x, y: targets.fu_targets(x, eta=0.7), "eta must be in [0, 0.5]"),
        (lambda x, y: targets.fu_targets(np.full((6, 2), np.nan)), "NaN"),
        (
            lambda x, y: targets.rf_targets(x[:1], x, np.array([[-1, -1]]), np.array([[2]])),
            "user 0 marked no relevant",
        ),
        (
            lambda x, y: targets.rf_targets(x[:1], x, np.array([[9]]), np.array([[2]])),
            "database indices",
        ),
    ],
)
def test_bad_target_inputs_are_one_line_errors(call, message):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(x, None)


# --- the cut network ----------------------------------------------------------------------


def test_cut_names_and_errors():
    assert network.cut(["fc5", "conv4"], "fc5") == network.Cut((4, 5), 5)
    assert network.cut(["conv4"], "fc5").label() == "(conv4; fc5)"
    with pytest.raises(InputError, match="unknown layers"):
        network.cut(["fc7"], "fc5")
    with pytest.raises(InputError, match="comes before"):
        network.cut(["fc5"], "conv4")
    with pytest.raises(InputError, match="a cut is"):
        stages.parse_cut("conv4+fc5")
    with pytest.raises(InputError, match="unknown scheme"):
        stages.parse("fu+fu")


@pytest.fixture(scope="module")
def net():
    model = convnet.Net(10, depth=5)
    variables = convnet.init(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    mean, std = convnet.channel_stats(images)
    return model, jax.tree.map(np.asarray, variables), images, mean, std


@pytest.mark.parametrize("layers", [("conv4", "fc5"), ("fc5",), ("conv3",)])
def test_block_with_a_zero_slope_gives_the_networks_own_features(net, layers):
    model, variables, images, mean, std = net
    c = network.cut(layers, "fc5")
    inputs = network.prefix_inputs(variables, c, images, mean, std)
    base, frozen = network.split_params(variables, c, slope=None)
    got = network.features(network.block_apply(c, frozen), base, inputs)
    np.testing.assert_allclose(
        got, convnet.features(model, variables, images, mean, std), atol=2e-4
    )
    fresh, _ = network.split_params(variables, c)
    assert set(fresh) == {
        *layers,
        *(f"bn{network.NAMES.index(n) + 1}" for n in layers),
        "fc5_prelu",
    }
    np.testing.assert_array_equal(fresh["fc5_prelu"], np.full(4096, 0.25, np.float32))


# --- retraining ---------------------------------------------------------------------------


def _toy_regression():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(50, 4)).astype(np.float32)
    w_true = rng.normal(size=(4, 3)).astype(np.float32)
    pairs = targets.TrainingSet(np.arange(50), inputs @ w_true)

    def apply(p, x):
        return x @ p["w"]

    return apply, {"w": jnp.zeros((4, 3))}, inputs, pairs


def test_retraining_lowers_its_loss():
    apply, params, inputs, pairs = _toy_regression()
    out = regress.retrain(
        apply,
        params,
        inputs,
        pairs,
        regress.RetrainConfig(8, 10, 0.05),
        key=jax.random.key(0),
        progress=False,
    )
    assert out.losses[-1] < 0.2 * out.losses[0]
    assert np.asarray(params["w"]).sum() == 0  # the caller's parameters are not changed


def test_resumed_retraining_equals_the_uninterrupted_run(tmp_path):
    apply, params, inputs, pairs = _toy_regression()
    key = jax.random.key(3)
    whole = regress.retrain(
        apply, params, inputs, pairs, regress.RetrainConfig(4, 16, 0.01), key=key, progress=False
    )
    ckpt = tmp_path / "ckpt"
    regress.retrain(
        apply,
        params,
        inputs,
        pairs,
        regress.RetrainConfig(2, 16, 0.01),
        key=key,
        checkpoint_dir=ckpt,
        progress=False,
    )
    resumed = regress.retrain(
        apply,
        params,
        inputs,
        pairs,
        regress.RetrainConfig(4, 16, 0.01),
        key=key,
        checkpoint_dir=ckpt,
        progress=False,
    )
    np.testing.assert_allclose(resumed.params["w"], whole.params["w"], rtol=1e-6)
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-6)


def test_retraining_checks_its_inputs():
    apply, params, inputs, pairs = _toy_regression()
    key = jax.random.key(0)
    with pytest.raises(InputError, match="features, the targets"):
        regress.retrain(apply, params, inputs, pairs._replace(target=np.zeros((50, 2))), key=key)
    with pytest.raises(InputError, match="pair indices"):
        regress.retrain(apply, params, inputs, pairs._replace(index=np.arange(50) + 1), key=key)
    with pytest.raises(InputError, match="lr must be a positive"):
        regress.retrain(apply, params, inputs, pairs, regress.RetrainConfig(1, 8, 0.0), key=key)


# --- the study ----------------------------------------------------------------------------


def _config(arg: str):
    spec = importlib.util.spec_from_file_location(
        "config_retraining", ROOT / "experiments/configs/retraining.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_study_chains_stages_resumes_and_reports(tmp_path, monkeypatch):
    """Both starting networks, FU -> RRI sharing the FU stage, RF, QE and SVQE on 80 tiny images;
    the second stage starts from the first's parameters; a rerun trains nothing."""
    full = _config("cifar10")
    assert full.database == 50_000 and full.retrain.lr == 1e-5 and full.retrain.epochs == 50
    cfg = _config("cifar10,quick")
    cfg.update({"dataset": _tiny_images(tmp_path), "database": 60, "queries": 10, "query_sets": 2})
    cfg.update({"train_images": 0, "validation": 10, "schemes": ("fu", "fu+rri", "rf")})
    cfg.update({"svqe": ("baseline",), "svqe_shortlist": 12, "qe_top": 3})
    cfg.supervised.update({"epochs": 1, "batch": 16})
    cfg.hebbian.update({"epochs": 1, "batch": 16})
    cfg.retrain.update({"epochs": 2, "batch": 16})
    cfg.rf.update({"users": 5, "relevant": 3, "depth": 60})
    cfg.iterative_rf.update({"rounds": 2, "relevant": 2, "irrelevant": 1, "epochs": 1})
    calls = []
    real = regress.retrain

    def spy(apply, params, *args, **kwargs):
        calls.append((kwargs["desc"], jax.tree.map(np.asarray, params)))
        out = real(apply, params, *args, **kwargs)
        calls[-1] += (out.params,)
        return out

    monkeypatch.setattr(stages.regress, "retrain", spy)
    out, ckpt = tmp_path / "rt", tmp_path / "ckpt"
    record = pipeline.run(cfg, str(out), checkpoint_root=ckpt)  # log: print
    rows = record["metrics"]["rows"]
    schemes = ("baseline", "fu", "fu+rri", "rf", "iterative rf")
    assert [(r["start"], r["scheme"]) for r in rows] == [
        (s, m) for s in ("supervised", "hpca") for m in schemes
    ]
    rounds = ["rf round 1", "rf round 2"]
    assert [c[0] for c in calls] == (["fu", "fu+rri", "rf"] + rounds) * 2  # fu trained once
    np.testing.assert_array_equal(calls[4][1]["fc5"]["kernel"], calls[3][2]["fc5"]["kernel"])
    for r in (rows[4], rows[9]):
        assert len(r["precision_at_3"]) == 3 and all(0 <= v <= 100 for v in r["precision_at_3"])
    fu, fu_rri = calls[0], calls[1]
    for name in fu[2]:
        np.testing.assert_array_equal(fu_rri[1][name], fu[2][name])  # the chain's hand-over
    np.testing.assert_array_equal(fu[1]["fc5_prelu"], 0.25)  # a fresh PReLU starts the chain
    for r in rows[:4] + rows[5:9]:
        assert 0 <= r["map"] <= 100 and 0 <= r["qe_map"] <= 100 and "map_std" in r
    assert "svqe_map" in rows[0] and "svqe_map" not in rows[1]
    text = out.with_suffix(".md").read_text()
    assert (
        "supervised net (all labels)" in text
        and "QE mAP" in text
        and "Spatial verification" in text
    )
    assert (tmp_path / "rt_grid_before.png").stat().st_size > 0
    assert (tmp_path / "rt_grid_after.png").stat().st_size > 0

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(stages.regress, "retrain", fail)
    monkeypatch.setattr(pipeline.finetune, "finetune", fail)
    again = pipeline.run(cfg, str(out), checkpoint_root=ckpt, log=lambda line: None)
    assert again["metrics"]["rows"] == rows
    monkeypatch.setattr(stages.regress, "retrain", real)  # a new record, stages from checkpoints
    cfg.update({"qe_top": 2, "starts": ("hpca",), "svqe": ()})
    cfg.iterative_rf.rounds = 0
    third = pipeline.run(cfg, str(tmp_path / "rt2"), checkpoint_root=ckpt, log=lambda line: None)
    for r, s in zip(rows[5:9], third["metrics"]["rows"], strict=True):
        assert r["map"] == s["map"]  # the same networks
        assert s.get("epochs_restored", 0) == (2 if r["scheme"] != "baseline" else 0)
    assert "| restored |" in (tmp_path / "rt2.md").read_text()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schemes", ("fu+xx",), "unknown scheme"),
        ("cuts", ("conv4+fc7:fc7",), "unknown layers"),
        ("cuts", ("fc5:conv4",), "comes before"),
        ("starts", ("imagenet",), "unknown starting networks"),
        ("queries", 0, "config.queries must be"),
        (
            "iterative_rf",
            {"rounds": -1, "relevant": 3, "irrelevant": 3, "epochs": 2},
            "rounds must",
        ),
    ],
)
def test_bad_settings_fail_before_any_data_is_loaded(field, value, message, tmp_path):
    cfg = _config("cifar10,quick")
    cfg.update({"dataset": "npz:/nonexistent.npz", field: value})
    with pytest.raises(InputError, match=message):
        pipeline.run(
            cfg, str(tmp_path / "x"), checkpoint_root=tmp_path / "c", log=lambda line: None
        )


def test_cli_retrains_a_saved_network_reindexes_and_takes_its_own_output(tmp_path, capsys):
    """``hebbret retrain``: FU on a saved network writes the database's new features (and labels)
    and the retrained network, which ``--network`` reads again (its PReLU included)."""
    from hebbret import cli, data

    spec = _tiny_images(tmp_path)
    model = convnet.Net(2, depth=5)
    variables = convnet.init(model, jax.random.key(0))
    network.save_network(tmp_path / "start", variables, np.full(3, 0.4), np.full(3, 0.2), False)
    common = ["--dataset", spec, "--database-size", "40", "--queries", "8", "--epochs", "1"]
    argv = ["retrain", "--network", str(tmp_path / "start"), *common, "--out", str(tmp_path / "a")]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "before (conv4,fc5; fc5): mAP" in printed and "after fu (conv4,fc5; fc5)" in printed
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    train = data.load(spec).splits["train"]
    db = np.sort(np.random.default_rng(0).permutation(len(train.x))[:40])
    assert x.shape == (40, 4096) and np.array_equal(y, train.y[db])
    again, mean, std, kv = network.load_network(tmp_path / "a.network", 2)
    assert "fc5_prelu" in again["params"] and not kv
    np.testing.assert_allclose(mean, 0.4)
    argv = ["retrain", "--network", str(tmp_path / "a.network"), *common, "--scheme", "rri"]
    assert cli.main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b.npz").is_file()
    assert cli.main([*argv, "--layers", "fc6", "--out", str(tmp_path / "c")]) == 2
    assert "unknown layers ['fc6']" in capsys.readouterr().err
    assert cli.main(["retrain", "--network", str(tmp_path / "none"), *common, "--out", "x"]) == 2
