"""Kuo et al.'s CNN: shapes per layer, the first layer taking given kernels, training lowers the
loss and resumes to the uninterrupted result, top-k accuracy by hand, the 5-channel input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbret.errors import InputError
from hebbret.nets import augment, kuo


def test_layer_shapes():
    model = kuo.KuoNet(10)
    params = kuo.init(model, jax.random.key(0), 5)
    shapes = {name: tuple(p["kernel"].shape) for name, p in params.items()}
    assert shapes == {
        "conv1": (5, 5, 5, 64),
        "conv2": (5, 5, 64, 64),
        "conv3": (5, 5, 64, 128),
        "fc4": (4 * 4 * 128, 400),
        "fc5": (400, 10),
    }
    x = np.zeros((2, 32, 32, 5), np.uint8)
    logits, feats = kuo.outputs(model, params, x, np.zeros(5), np.ones(5))
    assert logits.shape == (2, 10) and feats.shape == (2, 400) and (feats >= 0).all()
    with pytest.raises(InputError, match="3 \\(RGB\\) or 5"):
        kuo.init(model, jax.random.key(0), 4)


def test_first_layer_takes_given_kernels():
    model = kuo.KuoNet(3)
    params = kuo.init(model, jax.random.key(0), 3)
    kernel, bias = np.full((5, 5, 3, 64), 0.1, np.float32), np.arange(64, dtype=np.float32)
    new = kuo.with_first_layer(params, kernel, bias)
    np.testing.assert_array_equal(new["conv1"]["kernel"], kernel)
    np.testing.assert_array_equal(new["conv1"]["bias"], bias)
    assert new["conv2"] is params["conv2"]
    with pytest.raises(InputError, match="conv1 takes a \\(5, 5, 3, 64\\) kernel"):
        kuo.with_first_layer(params, kernel[:, :, :1], bias)


def test_five_channels_are_rgb_grey_equalised():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    five = kuo.prepare(images, 5)
    np.testing.assert_array_equal(five[..., :3], images)
    np.testing.assert_array_equal(five[..., 3], np.asarray(augment.grey(images)))
    np.testing.assert_array_equal(five[..., 4], np.asarray(augment.equalise(augment.grey(images))))
    assert kuo.prepare(images, 3) is images


def test_top_k_accuracy_by_hand():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert kuo.top_k_accuracy(logits, labels, 1) == pytest.approx(100 / 3)  # row 1
    assert kuo.top_k_accuracy(logits, labels, 2) == pytest.approx(200 / 3)  # rows 0, 1
    assert kuo.top_k_accuracy(logits, labels, 3) == pytest.approx(100.0)


def _tiny():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 48)
    x = (rng.integers(0, 80, (48, 32, 32, 3)) + 150 * y[:, None, None, None]).astype(np.uint8)
    return x, y, *kuo.channel_stats(x)


def test_training_lowers_the_loss_and_resumes(tmp_path, monkeypatch):
    x, y, mean, std = _tiny()
    model = kuo.KuoNet(2)
    params = kuo.init(model, jax.random.key(0), 3)
    cfg = kuo.TrainConfig(epochs=4, batch=16, lr=0.01)
    whole = kuo.train(jax.random.key(1), model, params, x, y, mean, std, cfg, progress=False)
    assert whole.losses[-1] < whole.losses[0]
    ckpt = tmp_path / "ckpt"
    real = kuo.lr_at_epoch

    def interrupt_at_epoch_2(c, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(c, epoch)

    monkeypatch.setattr(kuo, "lr_at_epoch", interrupt_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        kuo.train(jax.random.key(1), model, params, x, y, mean, std, cfg, checkpoint_dir=ckpt)
    monkeypatch.setattr(kuo, "lr_at_epoch", real)
    resumed = kuo.train(
        jax.random.key(1), model, params, x, y, mean, std, cfg, checkpoint_dir=ckpt, progress=False
    )
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    logits, _ = kuo.outputs(model, whole.params, x, mean, std)
    assert kuo.top_k_accuracy(logits, y, 1) > 90  # two easily separated classes


def test_learning_rate_steps():
    cfg = kuo.TrainConfig(epochs=20, lr=0.1)
    assert [kuo.lr_at_epoch(cfg, e) for e in (0, 11, 12, 16, 17, 19)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


@pytest.mark.parametrize("channels", [3, 5])
def test_grey_kernels_fold_into_the_standardised_input(channels):
    """A grey-level kernel and bias on g = luma / 255 equal, at every VALID position, the folded
    kernel on the standardised 3- or 5-channel input (5: on its grey channel)."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    k = rng.normal(size=(5, 5, 1, 6)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    images = kuo.prepare(raw, channels)
    mean, std = kuo.channel_stats(images)
    kernel, bias = kuo.grey_kernels_to_input(k, b, mean, std)
    assert kernel.shape == (5, 5, channels, 6)
    if channels == 3:
        g = (raw.astype(np.float64) / 255.0) @ np.array(kuo.LUMA)
    else:
        g = images[..., 3].astype(np.float64) / 255.0
        np.testing.assert_array_equal(kernel[:, :, [0, 1, 2, 4]], 0.0)
    x = (images.astype(np.float64) / 255.0 - mean) / std

    def conv(img, w):
        return np.asarray(
            jax.lax.conv_general_dilated(
                jnp.asarray(img, jnp.float32),
                jnp.asarray(w, jnp.float32),
                (1, 1),
                "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )  # fmt: skip
        )

    want = conv(g[..., None], k) + b
    np.testing.assert_allclose(conv(x, kernel) + bias, want, atol=2e-4 * np.abs(want).max())
    with pytest.raises(InputError, match="grey kernels"):
        kuo.grey_kernels_to_input(np.zeros((5, 5, 3, 6)), b, mean, std)
    with pytest.raises(InputError, match="mean and std"):
        kuo.grey_kernels_to_input(k, b, mean[:2], std[:2])


def test_unit_response_gives_every_filter_unit_output_std():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 32, 32, 3)).astype(np.float32)
    k = rng.normal(size=(5, 5, 3, 8)) * rng.uniform(0.01, 10.0, 8)
    scaled = kuo.unit_response(k, x)
    out = jax.lax.conv_general_dilated(
        jnp.asarray(x), jnp.asarray(scaled), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(out).reshape(-1, 8).std(0), 1.0, rtol=1e-4)
    ratio = scaled / k  # each filter only rescaled
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[0, 0, 0], k.shape), rtol=1e-5)
    with pytest.raises(InputError, match="no response"):
        kuo.unit_response(np.zeros((5, 5, 3, 2)), x)


def test_images_of_another_channel_count_are_refused():
    model = kuo.KuoNet(10)
    params = kuo.init(model, jax.random.key(0), 3)
    x5 = np.zeros((4, 32, 32, 5), np.uint8)
    with pytest.raises(InputError, match="built for 3 input channels, the images have 5"):
        kuo.outputs(model, params, x5, np.zeros(5), np.ones(5))
    with pytest.raises(InputError, match="built for 3 input channels"):
        kuo.train(jax.random.key(0), model, params, x5, np.zeros(4, int), np.zeros(5), np.ones(5))
    with pytest.raises(InputError, match="uint8"):
        kuo.outputs(model, params, np.zeros((4, 32, 32, 3)), np.zeros(3), np.ones(3))
    with pytest.raises(InputError, match="mean and std"):
        kuo.outputs(model, params, x5[..., :3], np.zeros(5), np.ones(5))
