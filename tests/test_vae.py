"""beta-VAE baseline (hebbret.nets.vae): shapes, un-pooling, loss, transplant, pre-training."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbret.errors import InputError
from hebbret.nets import convnet, vae

MEAN = np.array([0.5, 0.4, 0.3], np.float32)
STD = np.array([0.25, 0.25, 0.25], np.float32)


@pytest.fixture(scope="module")
def variables():
    return vae.init(vae.VAE(), jax.random.key(0))


def test_shapes(variables):
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    model = vae.VAE()
    recon, mean, logvar = model.apply(variables, x)
    assert recon.shape == (2, 32, 32, 3)
    assert mean.shape == logvar.shape == (2, 256)
    (recon_t, mean_t, _), state = model.apply(
        variables, x, train=True, rngs={"sample": jax.random.key(2)}, mutable=["batch_stats"]
    )
    assert recon_t.shape == (2, 32, 32, 3) and mean_t.shape == (2, 256)
    assert set(state["batch_stats"]) == {"bn1", "bn2", "bn3", "bn4", "bn5"}
    assert np.all(np.isfinite(np.asarray(recon_t)))


def test_encoder_matches_net_layers(variables):
    params = variables["params"]
    for layer in convnet.LAYERS:
        assert "bias" not in params[layer.name]
    assert params["conv1"]["kernel"].shape == (5, 5, 3, 96)
    assert params["conv4"]["kernel"].shape == (3, 3, 192, 256)
    assert params["fc5"]["kernel"].shape == (2304, 4096)
    assert params["latent"]["kernel"].shape == (4096, 512)
    assert params["dec_fc2"]["kernel"].shape == (4096, 2304)
    assert params["dec_conv1"]["kernel"].shape == (5, 5, 96, 3)


def test_unpool_puts_values_at_argmax():
    pre = np.array(
        [[1.0, 5.0, 0.0, -1.0], [2.0, 3.0, 7.0, 4.0], [9.0, 0.0, 1.0, 1.5], [8.0, 8.5, 2.0, 3.0]],
        np.float32,
    ).reshape(1, 4, 4, 1)
    values = np.array([[10.0, 20.0], [30.0, 40.0]], np.float32).reshape(1, 2, 2, 1)
    want = np.zeros((4, 4), np.float32)
    want[0, 1], want[1, 2], want[2, 0], want[3, 3] = 10.0, 20.0, 30.0, 40.0
    out = np.asarray(vae.unpool(jnp.asarray(pre), jnp.asarray(values)))
    np.testing.assert_array_equal(out.reshape(4, 4), want)
    # channels and batch are independent
    pre2 = np.concatenate([pre, -pre], axis=-1)
    vals2 = np.concatenate([values, values], axis=-1)
    out2 = np.asarray(vae.unpool(jnp.asarray(pre2), jnp.asarray(vals2)))
    want_neg = np.zeros((4, 4), np.float32)
    want_neg[0, 0], want_neg[0, 3], want_neg[2, 1], want_neg[2, 2] = 10.0, 20.0, 30.0, 40.0
    np.testing.assert_array_equal(out2[0, :, :, 0], want)
    np.testing.assert_array_equal(out2[0, :, :, 1], want_neg)


def test_loss_matches_numpy():
    rng = np.random.default_rng(0)
    recon = rng.normal(size=(3, 4, 4, 3)).astype(np.float32)
    target = rng.normal(size=(3, 4, 4, 3)).astype(np.float32)
    mean = rng.normal(size=(3, 5)).astype(np.float32)
    logvar = rng.normal(size=(3, 5)).astype(np.float32)
    rec = ((recon - target) ** 2).reshape(3, -1).sum(1).mean()
    kl = (0.5 * (mean**2 + np.exp(logvar) - 1 - logvar)).sum(1).mean()
    got = vae.loss(*(jnp.asarray(a) for a in (recon, target, mean, logvar)), 0.5)
    chex.assert_trees_all_close(np.float64(got), rec + 0.5 * kl, rtol=1e-5)
    # KL vanishes for the prior itself
    zero = jnp.zeros((3, 5))
    assert float(vae.loss(jnp.asarray(target), jnp.asarray(target), zero, zero, 0.5)) == 0.0
    # shapes that would broadcast silently are refused
    with pytest.raises(AssertionError):
        vae.loss(jnp.asarray(recon[:1]), jnp.asarray(target), zero, zero, 0.5)
    with pytest.raises(AssertionError):
        vae.loss(jnp.asarray(recon), jnp.asarray(target), zero, zero[:, :1], 0.5)


def test_transplant_into_net(variables):
    net = convnet.Net(10)
    net_vars = convnet.init(net, jax.random.key(3))
    out = convnet.transplant(variables, net_vars)
    for name in [layer.name for layer in convnet.LAYERS]:
        np.testing.assert_array_equal(
            out["params"][name]["kernel"], variables["params"][name]["kernel"]
        )
    for i in range(1, 6):
        for coll in ("params", "batch_stats"):
            for leaf in out[coll][f"bn{i}"]:
                np.testing.assert_array_equal(
                    out[coll][f"bn{i}"][leaf], variables[coll][f"bn{i}"][leaf]
                )
    np.testing.assert_array_equal(
        out["params"]["head"]["kernel"], net_vars["params"]["head"]["kernel"]
    )
    assert set(out["params"]) == set(net_vars["params"])
    logits, feats = net.apply(out, jnp.zeros((2, 32, 32, 3)))
    assert logits.shape == (2, 10) and feats.shape == (2, 4096)


def test_pretrain_and_resume(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    cfg = vae.VAEConfig(epochs=2, batch=16)
    key = jax.random.key(4)
    before = vae.init(vae.VAE(), jax.random.split(jax.random.fold_in(key, 0xFFFFFFFF))[0])
    straight, straight_history = vae.pretrain_vae(key, images, MEAN, STD, cfg, progress=False)
    # interrupted after epoch 1, then resumed: the same numbers as straight through
    vae.pretrain_vae(
        key, images, MEAN, STD, cfg._replace(epochs=1), checkpoint_dir=tmp_path, progress=False
    )
    assert [p.name for p in tmp_path.iterdir()] == ["1"]
    got, history = vae.pretrain_vae(
        key, images, MEAN, STD, cfg, checkpoint_dir=tmp_path, progress=False
    )
    assert [p.name for p in tmp_path.iterdir()] == ["2"]
    # (bit-identical on CPU; a tolerance for backends with non-deterministic reductions)
    chex.assert_trees_all_close(np.asarray(history), np.asarray(straight_history), rtol=1e-5)
    chex.assert_trees_all_close(got, straight, rtol=1e-5, atol=1e-6)
    assert len(history) == 2 and all(np.isfinite(history))
    assert not np.array_equal(got["params"]["conv1"]["kernel"], before["params"]["conv1"]["kernel"])
    assert isinstance(got["params"]["fc5"]["kernel"], np.ndarray)
    # the rerun finds epoch 2 saved: it restores and never builds a training step
    monkeypatch.setattr(vae, "_step_fn", lambda *a: pytest.fail("trained again"))
    again, history2 = vae.pretrain_vae(
        key, images, MEAN, STD, cfg, checkpoint_dir=tmp_path, progress=False
    )
    assert history2 == history
    chex.assert_trees_all_equal(again, got)


def test_input_errors():
    with pytest.raises(InputError):
        vae.pretrain_vae(
            jax.random.key(0), np.zeros((20, 28, 28, 3), np.uint8), MEAN, STD, progress=False
        )
    with pytest.raises(InputError):
        vae.pretrain_vae(
            jax.random.key(0),
            np.zeros((8, 32, 32, 3), np.uint8),
            MEAN,
            STD,
            vae.VAEConfig(batch=16),
            progress=False,
        )
