"""Query expansion (eq. 15) and spatial verification + QE against numpy definitions."""

import numpy as np
import pytest

from hebbret import InputError
from hebbret import retrieval as rt
from hebbret.retrieval import expansion as qe


def np_distances(xq, xb, metric):
    """Distances for ranking (smaller = closer), float64; cosine as 1 - similarity."""
    xq, xb = np.asarray(xq, np.float64), np.asarray(xb, np.float64)
    diff = xq[:, None, :] - xb[None, :, :]
    if metric == "sqeuclidean":
        return (diff**2).sum(-1)
    if metric == "euclidean":
        return np.sqrt((diff**2).sum(-1))
    if metric == "manhattan":
        return np.abs(diff).sum(-1)
    qn = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    return 1.0 - qn @ (xb / np.linalg.norm(xb, axis=1, keepdims=True)).T


def mean_pixels(images):
    """embed: the per-channel mean of each image, (n, H, W, C) -> (n, C)."""
    return np.asarray(images, np.float32).mean((1, 2))


def linear_embed(shape, d, seed=0):
    """embed: a fixed random linear map of the flattened pixels, (n, H, W, C) -> (n, d)."""
    proj = np.random.default_rng(seed).normal(size=(int(np.prod(shape)), d)).astype(np.float32)
    return lambda images: np.asarray(images, np.float32).reshape(len(images), -1) @ proj


# ---------------------------------------------------------------- QE (eq. 15)


@pytest.mark.parametrize("metric", rt.FLOAT_METRICS)
def test_query_expansion_is_the_mean_of_query_and_its_top_results(metric):
    rng = np.random.default_rng(0)
    xq, xb = rng.normal(size=(6, 5)), rng.normal(size=(40, 5))
    idx = np.argsort(np_distances(xq, xb, metric), axis=1)[:, :4]
    want = (xq + xb[idx].sum(1)) / 5
    got = qe.query_expansion(xq, xb, top=4, metric=metric)
    assert got.shape == (6, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_query_expansion_with_top_one_averages_query_and_nearest():
    rng = np.random.default_rng(1)
    xq, xb = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(10, 4))
    nearest = np.argmin(np_distances(xq, xb, "euclidean"), axis=1)
    got = qe.query_expansion(xq, xb, top=1)
    np.testing.assert_allclose(got, (xq + xb[nearest]) / 2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top": 0}, "top must be a positive integer"),
        ({"top": 11}, "top must be at most the database size 10"),
        ({"top": 2.0}, "top must be an integer"),
        ({"metric": "hamming"}, "metric must be one of"),
        ({"metric": "l2"}, "metric must be one of"),
    ],
)
def test_query_expansion_rejects_bad_settings(kwargs, match):
    xq, xb = np.zeros((2, 3)), np.arange(30.0).reshape(10, 3)
    with pytest.raises(InputError, match=match):
        qe.query_expansion(xq, xb, **{"top": 3, **kwargs})


def test_query_expansion_rejects_bad_features():
    xb = np.arange(30.0).reshape(10, 3)
    with pytest.raises(InputError, match="NaN"):
        qe.query_expansion(np.full((1, 3), np.nan), xb, top=2)
    with pytest.raises(InputError, match="2-D"):
        qe.query_expansion(np.zeros((1, 3)), xb[0], top=1)


# ---------------------------------------------------------------- crops


def test_crops_are_the_half_size_three_by_three_grid():
    h, w = 8, 12  # crops of 4 x 6 at rows 0, 2, 4 and columns 0, 3, 6, each resized x2
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    bright = ((ys < 4) & (xs < 6)).astype(float)  # the top-left quadrant
    images = np.stack([ys, xs, bright], -1)[None].astype(np.float32)
    out = qe.crops(images)
    assert out.shape == (1, 9, h, w, 3) and out.dtype == np.float32
    # bilinear x2 upsampling keeps a crop's mean: the means give each crop's centre and overlap
    overlap_rows, overlap_cols = {0: 4, 2: 2, 4: 0}, {0: 6, 3: 3, 6: 0}
    want = [
        (y + 1.5, x + 2.5, overlap_rows[y] * overlap_cols[x] / 24)
        for y in (0, 2, 4)
        for x in (0, 3, 6)
    ]
    np.testing.assert_allclose(mean_pixels(out[0]), want, atol=1e-5)
    np.testing.assert_allclose(out[0, 0, ..., 2], 1.0)  # the top-left crop is all bright


def test_crops_of_integer_images_are_rounded_and_clipped():
    images = np.random.default_rng(2).integers(0, 256, (2, 6, 10, 3)).astype(np.uint8)
    out = qe.crops(images)
    assert out.dtype == np.uint8
    want = np.clip(np.round(qe.crops(images.astype(np.float32))), 0, 255)
    np.testing.assert_array_equal(out, want)
    with pytest.raises(InputError, match="H, W >= 2"):
        qe.crops(images[0])
    with pytest.raises(InputError, match="integers or floats"):
        qe.crops(images > 0)


# ---------------------------------------------------------------- spatial verification + QE


def test_image_whose_crop_matches_the_query_moves_to_the_top():
    rng = np.random.default_rng(3)
    q = np.array([[0.2, 0.5, 0.8]])
    values = q + rng.normal(scale=0.3, size=(6, 3))  # constant images near the query
    images = np.broadcast_to(values[:, None, None, :], (6, 8, 8, 3)).copy()
    target = 3
    images[target] = q + 5.0  # far from the query as a whole ...
    images[target, :4, :4] = q  # ... but its top-left crop is the query
    xb = mean_pixels(images)
    _, before = rt.search(q, xb, 6, metric="euclidean")
    assert before[0, -1] == target
    order = qe.rerank_shortlist(q, xb, images, mean_pixels, shortlist=6)
    np.testing.assert_array_equal(order[0], [target, *before[0, :-1]])
    got = qe.spatial_verification_qe(q, xb, images, mean_pixels, top=2, shortlist=6)
    np.testing.assert_allclose(got, (q + xb[target] + xb[before[0, 0]]) / 3, rtol=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_reranking_and_expansion_equal_their_definitions(metric):
    rng = np.random.default_rng(4)
    images = rng.uniform(size=(20, 6, 6, 2)).astype(np.float32)
    embed = linear_embed((6, 6, 2), 5)
    xb, xq = embed(images), rng.normal(size=(4, 5))
    shortlist = np.argsort(np_distances(xq, xb, metric), axis=1)[:, :8]
    crop_features = embed(qe.crops(images).reshape(-1, 6, 6, 2)).reshape(20, 9, 5)
    want = []
    for q, cand in zip(xq, shortlist, strict=True):
        reps = np.concatenate([xb[cand, None], crop_features[cand]], 1)  # (8, 10, 5)
        best = np_distances(q[None], reps.reshape(-1, 5), metric).reshape(8, 10).min(1)
        want.append(cand[np.argsort(best, kind="stable")])
    order = qe.rerank_shortlist(xq, xb, images, embed, shortlist=8, metric=metric)
    np.testing.assert_array_equal(order, want)
    got = qe.spatial_verification_qe(xq, xb, images, embed, top=3, shortlist=8, metric=metric)
    np.testing.assert_allclose(got, (xq + xb[order[:, :3]].sum(1)) / 4, rtol=1e-5, atol=1e-6)


def test_each_shortlisted_image_is_embedded_once_in_bounded_batches():
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(30, 4, 4, 1)).astype(np.float32)
    embed = linear_embed((4, 4, 1), 3)
    xb = embed(images)
    xq = xb[:5] + rng.normal(scale=0.01, size=(5, 3))  # neighbouring queries share shortlists
    calls = []

    def counting(crops):
        calls.append(crops)
        return embed(crops)

    qe.rerank_shortlist(xq, xb, images, counting, shortlist=6, batch_size=4)
    unique = np.unique(rt.search(xq, xb, 6, metric="euclidean")[1])
    assert len(unique) < 5 * 6  # the shortlists overlap
    assert [len(c) for c in calls] == [9 * len(unique[i : i + 4]) for i in range(0, len(unique), 4)]
    # the crops themselves (bilinear resizes) may differ in the last bit with the batch size
    np.testing.assert_allclose(
        np.concatenate(calls), qe.crops(images[unique]).reshape(-1, 4, 4, 1), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"shortlist": 2}, r"shortlist \(2\) must be at least top \(3\)"),
        ({"shortlist": 11}, "shortlist must be at most the database size 10"),
        ({"db_images": np.zeros((9, 4, 4, 1))}, r"db_images must be \(10, H, W, C\)"),
        ({"db_images": np.zeros((10, 4, 4))}, r"db_images must be \(10, H, W, C\)"),
        ({"embed": lambda x: np.zeros((len(x), 3))}, r"embed returned shape \(90, 3\)"),
        ({"embed": lambda x: np.zeros((len(x) - 1, 2))}, r"embed returned shape \(89, 2\)"),
        ({"embed": lambda x: np.full((len(x), 2), np.nan)}, "embed returned NaN"),
        ({"metric": "overlap"}, "metric must be one of"),
    ],
)
def test_spatial_verification_rejects_bad_inputs(change, match):
    rng = np.random.default_rng(6)
    args = {
        "db_images": rng.uniform(size=(10, 4, 4, 1)),
        "embed": linear_embed((4, 4, 1), 2),
        "shortlist": 10,
        "metric": "euclidean",
    } | change
    xb = rng.normal(size=(10, 2))
    with pytest.raises(InputError, match=match):
        qe.spatial_verification_qe(xb[:2], xb, top=3, **args)
