"""The BioHash learning rule against a numpy transcription of Krotov & Hopfield's notebook."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbret import InputError
from hebbret.mesh import data_mesh
from hebbret.rules import biohash as bh
from hebbret.rules import biohash_train as bt

TOL = 1e-5


# ---------------------------------------------------------------- numpy reference (the notebook)


def np_raw_update(w, x, p, delta, r):
    """Krotov & Hopfield, Biological_Learning notebook: argsort ranks, dense (m, B) activations."""
    synapses, inputs = w.astype(np.float64), x.T.astype(np.float64)  # (m, d), (d, B)
    hid, num = synapses.shape[0], inputs.shape[1]
    tot_input = np.dot(np.sign(synapses) * np.absolute(synapses) ** (p - 1), inputs)
    y = np.argsort(tot_input, axis=0)
    yl = np.zeros((hid, num))
    yl[y[hid - 1, :], np.arange(num)] = 1.0
    yl[y[hid - r], np.arange(num)] = -delta
    xx = np.sum(np.multiply(yl, tot_input), 1)
    return np.dot(yl, np.transpose(inputs)) - xx[:, None] * synapses


def np_step(w, x, eps, p, delta, r, prec=1e-30):
    ds = np_raw_update(w, x, p, delta, r)
    nc = max(np.amax(np.absolute(ds)), prec)
    return w.astype(np.float64) + eps * ds / nc


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def data(m, d, n, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, d)).astype(np.float32)
    return w, rng.standard_normal((n, d)).astype(np.float32)


RULES = list(itertools.product([2.0, 3.0], [0.0, 0.4], [2, 3]))


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("p,delta,r", RULES)
# K = batch (2 batch with delta) active pairs: K <= m takes the row-sparse path (with repeated
# winners at these sizes), K > m the dense-G path; (5, 32): every unit wins many times.
@pytest.mark.parametrize("m,batch", [(40, 16), (200, 64), (5, 32)])
def test_raw_update_and_step_match_notebook(p, delta, r, m, batch):
    w, x = data(m, 12, batch, seed=int(p * 10 + delta * 10 + r + m))
    cfg = bh.RuleConfig(p=p, delta=delta, r=r)
    assert rel_err(bh.raw_update(w, x, cfg), np_raw_update(w, x, p, delta, r)) < TOL
    assert rel_err(bh.step(w, x, 0.02, cfg), np_step(w, x, 0.02, p, delta, r)) < TOL


# ---------------------------------------------------------------- the fast path vs eqs. (1)-(2)


def close(got, want, rel=TOL):
    """All close, tolerance relative to the largest |want| (float32 sums in another order)."""
    chex.assert_trees_all_close(
        np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=0.0, atol=rel * scale(want)
    )


def scale(a) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64)))) or 1.0


@pytest.mark.parametrize("p", [2.0, 3.0])
@pytest.mark.parametrize("delta,r", [(0.0, 2), (0.4, 2), (0.4, 3)])
# (40, 16): K <= m, the row-sparse path with repeated winners; (5, 32): K > m, the dense-G path
@pytest.mark.parametrize("m,batch", [(40, 16), (5, 32)])
def test_fast_update_equals_the_dense_reference(p, delta, r, m, batch):
    w, x = data(m, 12, batch, seed=int(p + 10 * delta + r + m))
    cfg = bh.RuleConfig(p=p, delta=delta, r=r)
    ref = np.asarray(bh.reference_update(w, x, cfg))
    close(bh.raw_update(w, x, cfg), ref)
    close(bh.step(w, x, 0.02, cfg), w + 0.02 * ref / np.max(np.abs(ref)))
    if delta == 0.0:  # only winners learn: at most `batch` nonzero rows
        assert 0 < np.count_nonzero(np.any(ref != 0, axis=1)) <= min(m, batch)


def test_reference_is_eq_2_by_hand():
    """Two units, two samples, p = 2: currents I = W X^T, ranks and G written out."""
    w = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    x = np.array([[3.0, 1.0], [1.0, 4.0]], np.float32)
    # I = [[3, 1], [2, 8]]: sample 0 -> unit 0 wins (3 > 2), unit 1 is rank 2;
    # sample 1 -> unit 1 wins (8 > 1), unit 0 is rank 2. G = [[1, -d], [-d, 1]] with d = 0.5.
    g = np.array([[1.0, -0.5], [-0.5, 1.0]])
    cur = np.array([[3.0, 1.0], [2.0, 8.0]])
    want = g @ x - np.sum(g * cur, axis=1)[:, None] * w
    got = bh.reference_update(w, x, bh.RuleConfig(delta=0.5, r=2))
    chex.assert_trees_all_close(np.asarray(got, np.float64), want, rtol=1e-6)


@pytest.mark.parametrize("p", [2.0, 3.0])
@pytest.mark.parametrize("delta", [0.0, 0.4])
@pytest.mark.parametrize("batch", [2, 8])  # K <= m = 6 (row-sparse) and K > m (dense G)
def test_ties_go_to_the_lower_unit_in_both_paths(p, delta, batch):
    """Units mu and mu + 3 are identical, so every winner ties with its twin: the lower index
    ranks first (wins), the twin ranks second (gets -delta with r = 2)."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((3, 6)).astype(np.float32)
    w = np.concatenate([base, base])
    x = rng.standard_normal((batch, 6)).astype(np.float32)
    cfg = bh.RuleConfig(p=p, delta=delta, r=2)
    ref = np.asarray(bh.reference_update(w, x, cfg))
    close(bh.raw_update(w, x, cfg), ref)
    winners = np.flatnonzero(np.any(ref[:3] != 0, axis=1))
    assert winners.size > 0
    if delta == 0.0:
        assert np.all(ref[3:] == 0)  # a twin never wins
    else:  # each winner's twin is its rank-2 unit: -delta (x - I w) summed over its samples
        assert np.all(np.any(ref[winners + 3] != 0, axis=1))


def test_currents_and_norm():
    w, x = data(7, 5, 3)
    np.testing.assert_allclose(bh.currents(w, x, 2.0), x @ w.T, rtol=1e-5, atol=1e-5)
    ref3 = x.astype(np.float64) @ (np.sign(w) * np.abs(w) ** 2).T
    np.testing.assert_allclose(bh.currents(w, x, 3), ref3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bh.currents(w, x, 2.5), x @ (np.sign(w) * np.abs(w) ** 1.5).T, 1e-5)
    for p in (2.0, 3.0):
        ref = np.mean(np.sum(np.abs(w.astype(np.float64)) ** p, 1) ** (1 / p))
        assert abs(float(bh.mean_norm(w, p)) - ref) < 1e-5 * ref


def test_epoch_is_steps_in_order_and_drops_tail():
    w, x = data(30, 8, 70)
    cfg = bh.RuleConfig(batch=16, delta=0.3, r=3)
    ref = w.astype(np.float64)
    for s in range(70 // 16):  # 4 full minibatches; the last 6 rows are dropped
        ref = np_step(ref, x[s * 16 : (s + 1) * 16], 0.05, 2.0, 0.3, 3)
    assert rel_err(bt.epoch(w, x, 0.05, cfg), ref) < TOL


@pytest.mark.parametrize("devices", [2, 8])
@pytest.mark.parametrize("delta,r", [(0.0, 2), (0.4, 3)])
@pytest.mark.parametrize("m", [24, 20])  # 20 units on 8 devices: dW's rows do not split evenly
def test_epoch_on_a_mesh_equals_one_device(devices, delta, r, m):
    w, x = data(m, 10, 16 * 6 + 5)
    cfg = bh.RuleConfig(batch=16, delta=delta, r=r)
    one = np.asarray(bt.epoch(w, x, 0.05, cfg))
    many = np.asarray(bt.epoch(w, x, 0.05, cfg, mesh=data_mesh(devices)))
    chex.assert_trees_all_close(one, many, atol=TOL)
    assert np.max(np.abs(one - w)) > 0.05  # it did learn


def test_epoch_compiles_once_across_epochs():
    cfg = bh.RuleConfig(batch=20, tmax=10, max_epochs=4, norm_target=0.0)
    x = data(6, 9, 100, seed=3)[1]
    bt.train(jax.random.key(0), x, 6, cfg, progress=False)
    fn = bt._epoch_fn(bh._rule(cfg), cfg.batch, None)
    assert fn._cache_size() == 1  # 4 epochs, different eps and shuffles: one trace


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def toy():
    return np.random.default_rng(0).standard_normal((2000, 20)).astype(np.float32)


def test_train_converges_and_is_deterministic(toy):
    a = bt.train(jax.random.key(0), toy, 10, progress=False)
    b = bt.train(jax.random.key(0), toy, 10, progress=False)
    c = bt.train(jax.random.key(1), toy, 10, progress=False)
    chex.assert_trees_all_equal(a.w, b.w)
    assert a.history == b.history
    assert not np.allclose(np.asarray(a.w), np.asarray(c.w))
    # Norms start near sqrt(20) = 4.5 and fall every epoch; the run stops below 1.06 (9 epochs).
    assert len(a.history) == a.epochs < 20 and a.mean_norm == a.history[-1]
    assert np.all(np.diff(a.history) < 0) and a.history[0] > 3.0
    assert 0.9 < a.mean_norm < 1.06 and all(h >= 1.06 for h in a.history[:-1])
    assert abs(float(bh.mean_norm(a.w, 2.0)) - a.mean_norm) < 1e-6
    # Every unit ends near the unit sphere, not only on average.
    norms = np.linalg.norm(np.asarray(a.w), axis=1)
    assert np.all((norms > 0.8) & (norms < 1.3))


def test_train_on_a_mesh_and_with_init(toy):
    cfg = bh.RuleConfig(batch=40, max_epochs=3)
    init = jax.random.normal(jax.random.key(5), (10, 20))
    one = bt.train(jax.random.key(0), toy, 10, cfg, progress=False, init=init)
    many = bt.train(jax.random.key(0), toy, 10, cfg, progress=False, init=init, mesh=data_mesh())
    assert one.epochs == many.epochs == 3
    chex.assert_trees_all_close(one.w, many.w, atol=1e-4)
    chex.assert_trees_all_close(np.asarray(one.history), np.asarray(many.history), atol=1e-5)


def test_train_stops_at_tmax_and_max_epochs(toy):
    cfg = bh.RuleConfig(eps0=1e-4, tmax=3)
    assert bt.train(jax.random.key(0), toy, 10, cfg, progress=False).epochs == 3
    cfg = bh.RuleConfig(eps0=1e-4, max_epochs=2)
    res = bt.train(jax.random.key(0), toy, 10, cfg, progress=True)
    assert res.epochs == 2 and res.mean_norm > 1.06


# ---------------------------------------------------------------- bad input


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "mutate,kwargs,match",
    [
        (lambda x: np.where(np.arange(20)[None, :] == 3, np.nan, x), {}, "NaN or inf"),
        (lambda x: np.where(np.arange(20)[None, :] == 3, np.inf, x), {}, "NaN or inf"),
        (lambda x: x[:, 0], {}, "2-D"),
        (lambda x: x.astype(np.int32), {}, "floating point"),
        (lambda x: x[:50], {}, "fewer than one minibatch"),
        (lambda x: x, {"m": 0}, "m .* >= 1"),
        (lambda x: x, {"cfg": bh.RuleConfig(batch=0)}, "batch must be"),
        (lambda x: x, {"cfg": bh.RuleConfig(p=0.5)}, "p must be"),
        (lambda x: x, {"cfg": bh.RuleConfig(delta=0.4, r=11)}, "r must be"),
        (lambda x: x, {"cfg": bh.RuleConfig(delta=0.4, r=1)}, "r must be"),
        (lambda x: x, {"cfg": bh.RuleConfig(eps0=0.0)}, "eps0"),
        (lambda x: x, {"cfg": bh.RuleConfig(max_epochs=0)}, "max_epochs"),
        (lambda x: x, {"cfg": bh.RuleConfig(batch=100), "mesh": "8"}, "not divisible"),
        (lambda x: x, {"init": np.zeros((3, 20))}, "init must have shape"),
    ],
)
def test_bad_input(mutate, kwargs, match):
    x = np.random.default_rng(0).standard_normal((200, 20)).astype(np.float32)
    kwargs = {"m": 10, **kwargs}
    if kwargs.get("mesh") == "8":
        kwargs["mesh"] = data_mesh(8)  # 100 rows per batch over 8 devices
    with pytest.raises(InputError, match=match) as exc:
        bt.train(jax.random.key(0), mutate(x), progress=False, **kwargs)
    one_line(exc)


def test_bad_input_to_the_jitted_functions():
    w, x = data(10, 6, 20)
    cfg = bh.RuleConfig(batch=10)
    cases = [
        (lambda: bh.step(w[0], x, 0.1, cfg), "weights must be a 2-D"),
        (lambda: bh.step(w, x[:, :5], 0.1, cfg), "5 columns"),
        (lambda: bh.raw_update(w, x, bh.RuleConfig(delta=1.0, r=20)), "r must be"),
        (lambda: bt.epoch(w, x, 0.1, bh.RuleConfig(batch=21)), "fewer than one minibatch"),
        (lambda: bt.epoch(w, x, 0.1, bh.RuleConfig(batch=10), mesh=data_mesh(4)), "divisible"),
        (lambda: bh.currents(w, x, float("nan")), "p must be"),
        (lambda: data_mesh(len(jax.devices()) + 1), "num_devices"),
    ]
    for call, match in cases:
        with pytest.raises(InputError, match=match) as exc:
            call()
        one_line(exc)


def test_precision_floor_keeps_zero_update_finite():
    w = jnp.zeros((4, 3))
    x = jnp.zeros((2, 3))
    out = bh.step(w, x, 0.1, bh.RuleConfig())
    chex.assert_trees_all_equal(out, jnp.zeros((4, 3)))


def test_init_norm_starts_on_the_sphere():
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    cfg = bh.RuleConfig(init_norm=1.0, max_epochs=1, p=3.0)
    res = bt.train(jax.random.key(0), x, 5, cfg, progress=False)
    w0 = jax.random.normal(jax.random.key(0), (5, 8), jnp.float32)
    w0 = w0 / jnp.sum(jnp.abs(w0) ** 3, axis=1, keepdims=True) ** (1 / 3)
    assert res.epochs == 1
    first = bt.train(jax.random.key(0), x, 5, cfg._replace(max_epochs=1), progress=False, init=w0)
    chex.assert_trees_all_close(res.w, first.w, atol=1e-6)
