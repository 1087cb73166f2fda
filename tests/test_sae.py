"""Sparse auto-encoder kernels (hebbret.nets.sae): patches, ZCA, loss and gradient, sparsity,
training and resume, the fold into convolution kernels, input errors."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hebbret.errors import InputError
from hebbret.nets import sae, zca


def _images(seed: int, shape=(6, 12, 14, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_sample_patches_order_and_scale():
    # pixel value encodes (image, row, column, channel): each patch must be one image slice
    n_img, h, w, c = 3, 9, 11, 2
    code = np.arange(n_img * h * w * c, dtype=np.float32).reshape(n_img, h, w, c)
    patches = zca.sample_patches(jax.random.key(0), code, 50, size=4)
    assert patches.shape == (50, 4 * 4 * c) and patches.dtype == np.float32
    seen = set()
    for p in patches:
        i, rest = divmod(int(p[0]), h * w * c)
        r, rest = divmod(rest, w * c)
        col = rest // c
        np.testing.assert_array_equal(p, code[i, r : r + 4, col : col + 4, :].reshape(-1))
        seen.add((i, r, col))
    assert len({s[0] for s in seen}) == n_img and len(seen) > 20  # positions vary
    # deterministic in the key; uint8 scaled to [0, 1]
    imgs = _images(1)
    a = zca.sample_patches(jax.random.key(2), imgs, 100)
    np.testing.assert_array_equal(a, zca.sample_patches(jax.random.key(2), imgs, 100))
    assert a.shape == (100, 75) and 0.0 <= a.min() and a.max() <= 1.0 and a.max() > 0.9
    assert not np.array_equal(a, zca.sample_patches(jax.random.key(3), imgs, 100))


def _correlated(rng: np.random.Generator, n: int, d: int, mix: np.ndarray) -> np.ndarray:
    return (rng.normal(size=(n, d)) @ mix + 3.0).astype(np.float32)


def test_zca_whitens_held_out_patches():
    rng = np.random.default_rng(0)
    d = 12
    # covariance with eigenvalues in [0.1, 10] and strong correlations
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mix = (q * np.sqrt(np.geomspace(0.1, 10.0, d))) @ q.T
    fit, held = _correlated(rng, 6000, d, mix), _correlated(rng, 6000, d, mix)
    w = zca.fit_zca(fit, eps=1e-6, normalise=False)
    assert w.contrast_eps is None and w.mean.shape == (d,) and w.matrix.shape == (d, d)
    np.testing.assert_array_equal(w.matrix, w.matrix.T)
    out = np.asarray(zca.whiten(w, held), np.float64)
    assert np.asarray(zca.whiten(w, held)).dtype == np.float32
    cov = np.cov(out, rowvar=False)
    assert np.abs(cov - np.eye(d)).max() < 0.1
    assert np.abs(out.mean(axis=0)).max() < 0.1
    # the raw patches were far from white
    assert np.abs(np.cov(held, rowvar=False) - np.eye(d)).max() > 1.0
    # ZCA is the symmetric whitening: W = S^(-1/2) (S the fit covariance)
    lam, u = np.linalg.eigh(np.cov(fit.astype(np.float64), rowvar=False, bias=True))
    np.testing.assert_allclose(w.matrix, (u / np.sqrt(lam + 1e-6)) @ u.T, rtol=1e-4, atol=1e-5)


def test_zca_with_patch_normalisation():
    rng = np.random.default_rng(1)
    d = 9
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mix = (q * np.sqrt(np.geomspace(0.5, 5.0, d))) @ q.T
    fit, held = _correlated(rng, 6000, d, mix), _correlated(rng, 6000, d, mix)
    w = zca.fit_zca(fit, eps=1e-4)
    assert w.contrast_eps == zca.CONTRAST_EPS
    np.testing.assert_array_equal(w.matrix, w.matrix.T)
    out = np.asarray(zca.whiten(w, held), np.float64)
    # normalised patches have zero mean: whitening is the identity on the other D - 1 directions
    proj = np.eye(d) - np.full((d, d), 1.0 / d)
    assert np.abs(np.cov(out, rowvar=False) - proj).max() < 0.1
    # whiten is jit-compatible and takes any leading axes
    jitted = jax.jit(zca.whiten)(w, held[:6].reshape(2, 3, d))
    np.testing.assert_allclose(np.asarray(jitted).reshape(6, d), out[:6], rtol=1e-4, atol=1e-4)
    # constant patches (zero variance everywhere) stay finite
    flat = zca.fit_zca(np.ones((50, d), np.float32))
    assert np.all(np.isfinite(flat.matrix))
    assert np.all(np.isfinite(np.asarray(zca.whiten(flat, np.ones((3, d), np.float32)))))


def _np_loss(p, x, rho, beta, lam):
    n = x.shape[0]
    h = 1.0 / (1.0 + np.exp(-(x @ p["W1"] + p["b1"])))
    xh = h @ p["W2"] + p["b2"]
    q = h.mean(axis=0)
    kl = np.sum(rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q)))
    wd = 0.5 * lam * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
    return 0.5 * np.sum((xh - x) ** 2) / n + beta * kl + wd


def _np_grad(p, x, rho, beta, lam):
    """Back-propagation by hand (UFLDL's sparse auto-encoder with a linear decoder)."""
    n = x.shape[0]
    h = 1.0 / (1.0 + np.exp(-(x @ p["W1"] + p["b1"])))
    xh = h @ p["W2"] + p["b2"]
    q = h.mean(axis=0)
    d3 = (xh - x) / n  # (N, D)
    sparse = beta * (-rho / q + (1 - rho) / (1 - q)) / n  # (H,)
    d2 = (d3 @ p["W2"].T + sparse) * h * (1 - h)  # (N, H)
    return {
        "W1": x.T @ d2 + lam * p["W1"],
        "b1": d2.sum(axis=0),
        "W2": h.T @ d3 + lam * p["W2"],
        "b2": d3.sum(axis=0),
    }


def test_loss_and_gradient_match_numpy():
    d, hid, n = 4, 3, 5
    rho, beta, lam = 0.1, 2.5, 0.03
    params = sae.init(jax.random.key(0), d, hid)
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (d, hid), "b1": (hid,), "W2": (hid, d), "b2": (d,),
    }  # fmt: skip
    r = np.sqrt(6.0 / (d + hid + 1))
    assert np.abs(params["W1"]).max() <= r and not np.any(params["b1"])
    rng = np.random.default_rng(0)
    params = {
        k: jnp.asarray(rng.normal(scale=0.5, size=v.shape), jnp.float32) for k, v in params.items()
    }
    x = rng.normal(size=(n, d)).astype(np.float32)
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x64 = x.astype(np.float64)
    kw = {"rho": rho, "beta": beta, "weight_decay": lam}
    got = float(jax.jit(sae.loss)(params, jnp.asarray(x), **kw))
    np.testing.assert_allclose(got, _np_loss(p64, x64, rho, beta, lam), rtol=1e-5)
    want = _np_grad(p64, x64, rho, beta, lam)
    # the hand-derived gradient agrees with central differences of the numpy loss
    for k in p64:
        fd = np.zeros_like(p64[k])
        for i in np.ndindex(p64[k].shape):
            plus = {**p64, k: p64[k].copy()}
            minus = {**p64, k: p64[k].copy()}
            plus[k][i] += 1e-6
            minus[k][i] -= 1e-6
            fd[i] = (
                _np_loss(plus, x64, rho, beta, lam) - _np_loss(minus, x64, rho, beta, lam)
            ) / 2e-6
        np.testing.assert_allclose(fd, want[k], rtol=1e-6, atol=1e-8)
    grads = jax.jit(jax.grad(sae.loss))(params, jnp.asarray(x), **kw)
    for k in p64:
        scale = np.abs(want[k]).max()
        np.testing.assert_allclose(np.asarray(grads[k]), want[k], rtol=1e-5, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def white() -> np.ndarray:
    """1024 whitened 5x5 grey patches of noise images smoothed so that neighbours correlate."""
    imgs = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 1)).astype(np.float32)
    smooth = (imgs + np.roll(imgs, 1, 1) + np.roll(imgs, 1, 2)) / 3.0
    patches = zca.sample_patches(jax.random.key(0), smooth.astype(np.uint8), 1024)
    return np.asarray(zca.whiten(zca.fit_zca(patches), patches))


# one learning rate, batch and width for every training test: they share one compilation
TRAIN = sae.SAEConfig(hidden=16, rho=0.05, lr=3e-2, batch=64, epochs=25)


def test_sparsity_penalty_pulls_activation_to_rho(white):
    gaps = {}
    for beta in (0.0, 3.0):
        params, _ = sae.train(
            jax.random.key(1), white, TRAIN._replace(beta=beta, epochs=80), progress=False
        )
        mean_act = np.asarray(sae.encode(params, jnp.asarray(white))).mean(axis=0)
        gaps[beta] = np.abs(mean_act - TRAIN.rho).mean()
    # without the penalty the units sit near 0.5; with it they approach rho
    assert gaps[0.0] > 0.3 and gaps[3.0] < 0.05 and gaps[3.0] < 0.1 * gaps[0.0], gaps


def test_train_lowers_loss_and_resumes(white, tmp_path, monkeypatch):
    cfg = TRAIN._replace(epochs=3)
    key = jax.random.key(5)
    kw = {"rho": cfg.rho, "beta": cfg.beta, "weight_decay": cfg.weight_decay}
    start = sae.init(jax.random.fold_in(key, 0xFFFFFFFF), white.shape[1], cfg.hidden)
    straight, losses = sae.train(key, white, cfg, progress=False)
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[2] < losses[1] < losses[0]
    before = float(sae.loss(start, jnp.asarray(white), **kw))
    after = float(sae.loss(straight, jnp.asarray(white), **kw))
    assert after < 0.6 * before, (before, after)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in straight.values())
    # interrupted after epoch 1, then resumed to 3: the same numbers as straight through
    sae.train(key, white, cfg._replace(epochs=1), checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["1"]
    got, history = sae.train(key, white, cfg, checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["3"]
    # (bit-identical on CPU; a tolerance for backends with non-deterministic reductions)
    chex.assert_trees_all_close(np.asarray(history), np.asarray(losses), rtol=1e-5)
    chex.assert_trees_all_close(got, straight, rtol=1e-5, atol=1e-6)
    # a rerun finds epoch 3 saved and trains no more
    monkeypatch.setattr(sae, "_epoch_fn", lambda *a: pytest.fail("trained again"))
    again, history2 = sae.train(key, white, cfg, checkpoint_dir=tmp_path, progress=False)
    assert history2 == history
    chex.assert_trees_all_equal(again, got)


def _image_patches(img: np.ndarray, size: int) -> np.ndarray:
    """(H - size + 1, W - size + 1, size * size * C) patches of one (H, W, C) image."""
    h, w, _ = img.shape
    return np.stack(
        [
            np.stack([img[r : r + size, c : c + size, :].reshape(-1) for c in range(w - size + 1)])
            for r in range(h - size + 1)
        ]
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_conv_kernels_fold(channels):
    imgs = _images(channels, (10, 12, 12, channels))
    patches = zca.sample_patches(jax.random.key(0), imgs, 2000)
    rng = np.random.default_rng(channels)
    hid = 7
    params = sae.init(jax.random.key(1), patches.shape[1], hid)
    params = {**params, "b1": jnp.asarray(rng.normal(size=hid), jnp.float32)}
    image = (_images(99, (1, 9, 10, channels)) / 255.0).astype(np.float32)
    windows = _image_patches(image[0], 5)  # (5, 6, D)

    # without normalisation the fold is exact
    w = zca.fit_zca(patches, eps=1e-3, normalise=False)
    kernel, bias = sae.conv_kernels(params, w, channels=channels)
    assert kernel.shape == (5, 5, channels, hid) and bias.shape == (hid,)
    assert kernel.dtype == bias.dtype == np.float32
    conv = jax.lax.conv_general_dilated(
        jnp.asarray(image), jnp.asarray(kernel), (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    want = np.asarray(zca.whiten(w, windows)) @ np.asarray(params["W1"]) + np.asarray(params["b1"])
    got = np.asarray(conv[0]) + bias
    assert got.shape == want.shape == (5, 6, hid)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the same through a Flax Conv layer
    layer = nn.Conv(hid, (5, 5), padding="VALID")
    flax_out = layer.apply({"params": {"kernel": kernel, "bias": bias}}, jnp.asarray(image))
    np.testing.assert_allclose(
        np.asarray(flax_out[0]), want, rtol=1e-4, atol=1e-4 * np.abs(want).max()
    )
    # channels inferred from D
    chex.assert_trees_all_equal(sae.conv_kernels(params, w), (kernel, bias))
    # filters for filter_grid: kernel rows back in (row, column, channel) order
    np.testing.assert_allclose(
        kernel.reshape(-1, hid),
        np.asarray(w.matrix, np.float64) @ np.asarray(params["W1"]),
        rtol=1e-5,
        atol=1e-6,
    )

    # with normalisation the linear term is exact up to each patch's contrast s(p)
    wn = zca.fit_zca(patches)
    kernel, bias = sae.conv_kernels(params, wn)
    conv = jax.lax.conv_general_dilated(
        jnp.asarray(image), jnp.asarray(kernel), (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    s = np.sqrt(windows.var(axis=-1, keepdims=True) + wn.contrast_eps)
    want = np.asarray(zca.whiten(wn, windows)) @ np.asarray(params["W1"]) + np.asarray(params["b1"])
    got = np.asarray(conv[0]) / s + bias
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_input_errors():
    imgs = _images(0, (4, 8, 8, 3))
    key = jax.random.key(0)
    with pytest.raises(InputError, match="larger than the images"):
        zca.sample_patches(key, imgs, 10, size=9)
    with pytest.raises(InputError, match="no images"):
        zca.sample_patches(key, imgs[:0], 10)
    with pytest.raises(InputError, match=r"\(N, H, W, C\)"):
        zca.sample_patches(key, imgs[..., 0], 10)
    with pytest.raises(InputError, match="positive integer"):
        zca.sample_patches(key, imgs, 0)
    bad_imgs = imgs.astype(np.float32)
    bad_imgs[:] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        zca.sample_patches(key, bad_imgs, 10)
    patches = zca.sample_patches(key, imgs, 300)
    bad = patches.copy()
    bad[3, 4] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        zca.fit_zca(bad)
    with pytest.raises(InputError, match="non-finite"):
        sae.train(key, bad, sae.SAEConfig(batch=16), progress=False)
    with pytest.raises(InputError, match="at least 2 patches"):
        zca.fit_zca(patches[:1])
    with pytest.raises(InputError, match="eps"):
        zca.fit_zca(patches, eps=0.0)
    with pytest.raises(InputError, match="at least batch"):
        sae.train(key, patches, sae.SAEConfig(batch=512), progress=False)
    w = zca.fit_zca(patches)
    params = sae.init(key, patches.shape[1], 4)
    with pytest.raises(InputError, match="channel"):
        sae.conv_kernels(params, w, channels=1)
    with pytest.raises(InputError, match="the whitening expects 75"):
        zca.whiten(w, patches[:, :25])
    grey = zca.fit_zca(patches[:, :25])
    with pytest.raises(InputError, match="whitening is for D=25"):
        sae.conv_kernels(params, grey)
