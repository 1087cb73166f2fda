"""BioConvHash's front end: patch normalisation, inhibition and pooling against hand-computed
examples and a numpy loop over patches; filters learned on patches; bad input."""

import jax
import numpy as np
import pytest

from hebbret.errors import InputError
from hebbret.hashing import bioconv
from hebbret.mesh import data_mesh
from hebbret.rules import biohash


def patch_loop(images, w, k):
    """Reference: explicit loop over every K x K patch, (row, column, channel) order."""
    n, h, wd, c = images.shape
    out = np.zeros((n, h - k + 1, wd - k + 1, w.shape[0]))
    for i in range(n):
        for y in range(h - k + 1):
            for x in range(wd - k + 1):
                patch = images[i, y : y + k, x : x + k, :].reshape(-1).astype(np.float64)
                norm = np.linalg.norm(patch)
                out[i, y, x] = w @ patch / norm if norm > 0 else 0.0
    return out


def test_normalise_patches_unit_rows_and_zero_rows_stay_zero():
    p = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(
        bioconv.normalise_patches(p), [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6
    )


def test_normalised_currents_match_a_loop_over_patches():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 7, 6, 2)).astype(np.uint8)
    images[0, :3, :3] = 0  # an all-zero patch gives 0, not NaN
    w = rng.normal(size=(5, 3 * 3 * 2)).astype(np.float32)
    got = np.asarray(bioconv.normalised_currents(images, w))
    np.testing.assert_allclose(got, patch_loop(images, w, 3), rtol=1e-5, atol=1e-6)
    assert got[0, 0, 0].tolist() == [0.0] * 5


def test_inhibition_keeps_the_top_k_ci_channels():
    a = np.array([[1.0, 3.0, 2.0, -1.0], [5.0, -1.0, 0.5, 4.0]], np.float32)
    np.testing.assert_array_equal(bioconv.inhibit(a, 1), [[0, 3, 0, 0], [5, 0, 0, 0]])
    np.testing.assert_array_equal(bioconv.inhibit(a, 2), [[0, 3, 2, 0], [5, 0, 0, 4]])
    np.testing.assert_array_equal(bioconv.inhibit(a, 4), a)


def test_max_pool_kernel_3_stride_2_by_hand():
    a = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    a[0, 0, 0, 0] = 100.0
    # windows start at rows/cols 0 and 2: maxima at their bottom-right corners, but (0, 0)
    np.testing.assert_array_equal(bioconv.max_pool(a, 3, 2)[0, :, :, 0], [[100, 14], [22, 24]])


def test_feature_map_composes_the_steps_in_chunks():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 12, 12, 3)).astype(np.uint8)
    cfg = bioconv.ConvConfig(filters=6, kernels=(3, 4), k_ci=2, pool=3, stride=2)
    banks = [rng.normal(size=(6, k * k * 3)).astype(np.float32) for k in cfg.kernels]
    expect = []
    for k, w in zip(cfg.kernels, banks, strict=True):
        a = bioconv.inhibit(patch_loop(images, w, k).astype(np.float32), cfg.k_ci)
        expect.append(np.asarray(bioconv.max_pool(a, 3, 2)).reshape(5, -1))
    expect = np.concatenate(expect, axis=1)
    assert expect.shape[1] == bioconv.feature_dim((12, 12, 3), cfg) == (4 * 4 + 4 * 4) * 6
    for chunk in (2, 5, 64):
        got = bioconv.feature_map(banks, images, cfg, chunk_size=chunk)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    for devices in (2, 8):  # images split over a device mesh: the same features
        mesh = data_mesh(devices)
        got = bioconv.feature_map(banks, images, cfg, chunk_size=3, mesh=mesh)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


def test_paper_cifar_feature_dim():
    assert bioconv.feature_dim((32, 32, 3), bioconv.ConvConfig()) == (144 + 144 + 81) * 400


def test_scaling_an_image_leaves_its_features_unchanged():
    """Patch normalisation: a uniformly darker image has the same features (the shadows claim)."""
    rng = np.random.default_rng(2)
    images = rng.uniform(1, 255, (3, 10, 10, 3)).astype(np.float32)
    cfg = bioconv.ConvConfig(filters=4, kernels=(3,), k_ci=1, pool=3, stride=2)
    banks = [rng.normal(size=(4, 27)).astype(np.float32)]
    np.testing.assert_allclose(
        bioconv.feature_map(banks, 0.3 * images, cfg),
        bioconv.feature_map(banks, images, cfg),
        rtol=1e-4,
        atol=1e-6,
    )


def test_sample_patches_are_unit_patches_of_the_images():
    rng = np.random.default_rng(3)
    images = rng.integers(1, 256, (4, 8, 9, 3)).astype(np.uint8)
    p = bioconv.sample_patches(jax.random.key(0), images, 3, 200)
    assert p.shape == (200, 27)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-5)
    every = {
        tuple(np.round(v, 5))
        for v in bioconv.normalise_patches(
            np.stack(
                [
                    images[i, y : y + 3, x : x + 3].reshape(-1).astype(np.float32)
                    for i in range(4)
                    for y in range(6)
                    for x in range(7)
                ]
            )
        ).tolist()
    }
    assert all(tuple(np.round(v, 5)) in every for v in p.tolist())
    again = bioconv.sample_patches(jax.random.key(0), images, 3, 200)
    np.testing.assert_array_equal(p, again)


def test_learned_filters_reach_the_sphere_and_point_at_the_patches_they_win():
    """Two colours of flat patches: every winning filter ends near the unit sphere, pointing at
    the mean of the patches it wins (eq. 1's fixed point for p = 2, Delta = 0)."""
    images = np.zeros((20, 6, 6, 3), np.float32)
    images[:10] = [1.0, 0.2, 0.0]
    images[10:] = [0.0, 0.3, 1.0]
    cfg = bioconv.ConvConfig(filters=8, kernels=(3,), k_ci=1, pool=2, stride=2, patches=2000)
    rule = biohash.RuleConfig(eps0=0.05, max_epochs=40, init_norm=1.0, norm_target=0.0)
    res = bioconv.learn_filters(jax.random.key(0), images, 3, cfg, rule)
    w = np.asarray(res.w)
    assert w.shape == (8, 27)
    patches = bioconv.sample_patches(jax.random.key(1), images, 3, 100)
    winners = (patches @ w.T).argmax(axis=1)
    for unit in np.unique(winners):
        target = patches[winners == unit].mean(axis=0)
        cos = w[unit] @ target / np.linalg.norm(w[unit]) / np.linalg.norm(target)
        assert cos > 0.99 and abs(np.linalg.norm(w[unit]) - 1.0) < 0.1
    again = bioconv.learn_filters(jax.random.key(0), images, 3, cfg, rule)
    np.testing.assert_array_equal(res.w, again.w)
    mesh = data_mesh(4)
    sharded = bioconv.learn_filters(jax.random.key(0), images, 3, cfg, rule, mesh=mesh)
    np.testing.assert_allclose(sharded.w, res.w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cfg": bioconv.ConvConfig(filters=4, kernels=(9,), pool=1)}, "does not fit"),
        ({"cfg": bioconv.ConvConfig(filters=4, kernels=(3,), k_ci=5, pool=2)}, "k_ci"),
        ({"channels": 1}, "colour / greyscale"),
        ({"nan": True}, "NaN"),
        ({"cfg": bioconv.ConvConfig(filters=4, kernels=(3,), pool=7)}, "fewer than the 7"),
    ],
)
def test_bad_input(kwargs, match):
    cfg = kwargs.get("cfg", bioconv.ConvConfig(filters=4, kernels=(3,), k_ci=1, pool=2))
    images = np.ones((2, 8, 8, 3), np.float32)
    if kwargs.get("nan"):
        images[0, 0, 0, 0] = np.nan
    c = kwargs.get("channels", 3)
    banks = [np.ones((4, k * k * c), np.float32) for k in cfg.kernels]
    with pytest.raises(InputError, match=match):
        bioconv.feature_map(banks, images, cfg)
