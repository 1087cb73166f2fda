"""Kuo et al.'s augmentation: grey and equalised-grey channels (bit-exact with Pillow), flips."""

import jax
import numpy as np
import pytest
from PIL import Image, ImageOps

from hebbret import InputError
from hebbret.nets.augment import equalise, five_channels, flip_mask, grey, random_flip


def _pil_grey(images: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in images])


def _pil_equalise(grey_images: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(ImageOps.equalize(Image.fromarray(x))) for x in grey_images])


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_grey_matches_pil_on_random_images():
    x = _rng().integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    g = grey(x)
    assert g.dtype == np.uint8 and g.shape == (8, 32, 32)
    np.testing.assert_array_equal(np.asarray(g), _pil_grey(x))


def test_grey_matches_pil_on_every_colour():
    # all 2**24 RGB colours as one 4096x4096 image: Pillow's fixed-point rounding, bit for bit
    c = np.arange(2**24, dtype=np.uint32)
    x = np.stack([c >> 16, (c >> 8) & 255, c & 255], axis=-1).astype(np.uint8)
    x = x.reshape(1, 4096, 4096, 3)
    np.testing.assert_array_equal(np.asarray(grey(x)), _pil_grey(x))


def _random_greys() -> np.ndarray:
    """Grey images with varied histograms: uniform, skewed, few levels, dark, bright."""
    rng = _rng(1)
    shape = (24, 32)
    images = [
        rng.integers(0, 256, shape),
        (255 * rng.beta(0.5, 3.0, shape)).round(),
        (255 * rng.beta(4.0, 0.7, shape)).round(),
        rng.choice([3, 77, 78, 200, 254], shape, p=[0.1, 0.4, 0.2, 0.2, 0.1]),
        rng.integers(0, 12, shape),
        rng.integers(240, 256, shape),
        rng.normal(128, 30, shape).clip(0, 255).round(),
        rng.integers(0, 256, shape) // 32 * 32,
    ]
    return np.stack(images).astype(np.uint8)


def test_equalise_matches_pil_on_random_images():
    g = _random_greys()
    out = equalise(g)
    assert out.dtype == np.uint8 and out.shape == g.shape
    np.testing.assert_array_equal(np.asarray(out), _pil_equalise(g))


def test_equalise_matches_pil_on_cifar_sized_images_of_rgb():
    x = _rng(2).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    g = np.asarray(grey(x))
    np.testing.assert_array_equal(np.asarray(equalise(g)), _pil_equalise(g))


def test_equalise_constant_image_unchanged():
    g = np.stack([np.full((32, 32), v, np.uint8) for v in (0, 17, 255)])
    out = np.asarray(equalise(g))
    np.testing.assert_array_equal(out, _pil_equalise(g))
    np.testing.assert_array_equal(out, g)


def test_equalise_two_grey_levels():
    rng = _rng(3)
    # share of the brighter level: about 1/2 (step 1), about 1/10 (step 3), 780 of 1024 pixels
    # (1024 - 780 = 244 < 255: step 0, unchanged) and a lone bright pixel (step 4; it maps to
    # (2 + 1023) // 4 = 256, clipped to 255)
    images = []
    for p in (0.5, 0.1):
        images.append(np.where(rng.random((32, 32)) < p, 200, 40))
    few = np.full(1024, 40)
    few[:780] = 200
    images.append(rng.permutation(few).reshape(32, 32))
    lone = np.full((32, 32), 10)
    lone[5, 7] = 11
    images.append(lone)
    g = np.stack(images).astype(np.uint8)
    out = np.asarray(equalise(g))
    np.testing.assert_array_equal(out, _pil_equalise(g))
    np.testing.assert_array_equal(out[2], g[2])
    # the lower level maps to 0: no pixel is darker than it
    assert (out[0][g[0] == 40] == 0).all() and (out[3][g[3] == 10] == 0).all()
    assert out[3][5, 7] == 255


def test_equalise_low_contrast_image():
    g = _rng(4).integers(100, 110, (3, 32, 32)).astype(np.uint8)
    out = np.asarray(equalise(g))
    np.testing.assert_array_equal(out, _pil_equalise(g))
    assert out.min() == 0 and out.max() > 200  # stretched to (almost) the full range


def test_equalise_hand_example():
    # A 16x32 image (N = 512): 128 pixels at level 0, 256 at 100, 127 at 180, 1 at 255.
    # Highest level m = 255 with h[m] = 1, so step = (512 - 1) // 255 = 2 and step // 2 = 1.
    # Pixels darker than each level: 0 -> 0, 100 -> 128, 180 -> 384, 255 -> 511, so
    #   0 -> (1 + 0) // 2 = 0,      100 -> (1 + 128) // 2 = 64,
    #   180 -> (1 + 384) // 2 = 192, 255 -> (1 + 511) // 2 = 256, clipped to 255.
    flat = np.repeat(np.array([0, 100, 180, 255], np.uint8), [128, 256, 127, 1])
    g = _rng(5).permutation(flat).reshape(1, 16, 32)
    expected = np.select([g == 0, g == 100, g == 180], [0, 64, 192], 255).astype(np.uint8)
    out = np.asarray(equalise(g))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, _pil_equalise(g))
    # a tiny 2x3 image has N = 6 < 255 pixels, so step = 0: returned unchanged
    tiny = np.array([[[0, 5, 5], [9, 200, 9]]], np.uint8)
    np.testing.assert_array_equal(np.asarray(equalise(tiny)), tiny)
    np.testing.assert_array_equal(_pil_equalise(tiny), tiny)


def test_five_channels_layout():
    x = _rng(6).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    out = np.asarray(five_channels(x))
    assert out.dtype == np.uint8 and out.shape == (4, 32, 32, 5)
    np.testing.assert_array_equal(out[..., :3], x)
    g = _pil_grey(x)
    np.testing.assert_array_equal(out[..., 3], g)
    np.testing.assert_array_equal(out[..., 4], _pil_equalise(g))


def test_random_flip_flips_what_the_mask_says():
    key = jax.random.key(0)
    for x in (
        _rng(7).integers(0, 256, (16, 8, 6, 5), dtype=np.uint8),
        _rng(8).normal(size=(16, 4, 7, 1)).astype(np.float32),
    ):
        out = np.asarray(random_flip(key, x))
        assert out.dtype == x.dtype and out.shape == x.shape
        np.testing.assert_array_equal(out, np.asarray(random_flip(key, x)))  # deterministic
        mask = np.asarray(flip_mask(key, len(x)))
        assert 0 < mask.sum() < len(x)
        for b in range(len(x)):
            np.testing.assert_array_equal(out[b], np.flip(x[b], axis=1) if mask[b] else x[b])


def test_random_flip_flips_about_half():
    x = np.zeros((4000, 1, 2, 1), np.uint8)
    x[:, 0, 1, 0] = 1  # flipped iff the 1 moves to column 0
    out = np.asarray(random_flip(jax.random.key(1), x))
    flipped = out[:, 0, 0, 0] == 1
    assert abs(flipped.mean() - 0.5) < 0.04  # 5 standard deviations
    np.testing.assert_array_equal(flipped, np.asarray(flip_mask(jax.random.key(1), 4000)))
    other = np.asarray(random_flip(jax.random.key(2), x))[:, 0, 0, 0] == 1
    assert (other != flipped).any()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: grey(np.zeros((2, 4, 4), np.uint8)), r"grey needs \(B, H, W, 3\)"),
        (lambda: grey(np.zeros((2, 4, 4, 5), np.uint8)), r"grey needs \(B, H, W, 3\)"),
        (lambda: grey(np.zeros((2, 4, 4, 3), np.float32)), "grey needs uint8"),
        (lambda: grey(np.zeros((0, 4, 4, 3), np.uint8)), "grey needs a non-empty batch"),
        (lambda: equalise(np.zeros((2, 4, 4, 1), np.uint8)), r"equalise needs \(B, H, W\)"),
        (lambda: equalise(np.zeros((2, 4, 4), np.int32)), "equalise needs uint8"),
        (lambda: equalise(np.zeros((0, 4, 4), np.uint8)), "equalise needs a non-empty"),
        (lambda: five_channels(np.zeros((2, 4, 4, 1), np.uint8)), r"five_channels needs \("),
        (lambda: five_channels(np.zeros((4, 4, 3), np.uint8)), r"five_channels needs \("),
        (lambda: five_channels(np.zeros((1, 4, 4, 3), np.int64)), "five_channels needs uint8"),
        (lambda: random_flip(jax.random.key(0), np.zeros((4, 4, 3))), "random_flip needs"),
        (lambda: random_flip(jax.random.key(0), np.zeros((0, 4, 4, 3))), "random_flip needs"),
        (lambda: flip_mask(jax.random.key(0), 0), "flip_mask needs a positive"),
    ],
)
def test_bad_input_one_line(call, match):
    with pytest.raises(InputError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
