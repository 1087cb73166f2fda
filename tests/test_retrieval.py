"""The retrieval kernel against independent numpy implementations (and scikit-learn)."""

import itertools
import math

import chex
import jax
import numpy as np
import pytest
from scipy.stats import hypergeom
from sklearn.metrics import average_precision_score

import hebbret.mesh
from hebbret import InputError
from hebbret import retrieval as rt
from hebbret.retrieval import distances, kernel

TOL = 1e-6


# ---------------------------------------------------------------- independent numpy references


def np_distances(xq, xb, metric, num_bits=None):
    xq, xb = np.asarray(xq, np.float64), np.asarray(xb, np.float64)
    if metric == "sqeuclidean":
        return ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
    if metric == "euclidean":
        return np.sqrt(((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1))
    if metric == "manhattan":
        return np.abs(xq[:, None, :] - xb[None, :, :]).sum(-1)
    if metric == "cosine":  # distance for ranking: 1 - similarity
        qn = xq / np.linalg.norm(xq, axis=1, keepdims=True)
        bn = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        return 1.0 - qn @ bn.T
    raise AssertionError(metric)


def np_bits_distance(bq, bb, metric):
    bq, bb = bq.astype(int), bb.astype(int)
    if metric == "hamming":
        return (bq[:, None, :] != bb[None, :, :]).sum(-1).astype(float)
    return (bq.shape[1] - (bq[:, None, :] & bb[None, :, :]).sum(-1)).astype(float)


def np_ap(rel_sorted, r, total, normaliser):
    rel = np.asarray(rel_sorted[:r], float)
    hits = np.cumsum(rel)
    s = float((hits / np.arange(1, len(rel) + 1) * rel).sum())
    z = {"retrieved": hits[-1], "relevant": total, "min": min(r, total)}[normaliser]
    return s / z if z > 0 else 0.0


def np_ranked(d, tie, perm):
    if tie == "stable":
        return np.argsort(d, kind="stable")
    return perm[np.argsort(d[perm], kind="stable")]


def np_exact_by_enumeration(d, rel, r, normaliser):
    """Mean AP over every equally likely arrangement of relevant items inside each tie group."""
    values = np.unique(d)
    groups = [np.flatnonzero(d == v) for v in values]
    choices = []
    for idx in groups:
        n, g = len(idx), int(rel[idx].sum())
        choices.append([np.isin(np.arange(n), c) for c in itertools.combinations(range(n), g)])
    total = int(rel.sum())
    aps = [np_ap(np.concatenate(c), r, total, normaliser) for c in itertools.product(*choices)]
    return float(np.mean(aps))


def np_exact_fixed(d, rel, r):
    """McSherry & Najork expected sum_{l<=R} P(l) rel(l), written position by position."""
    order = np.argsort(d, kind="stable")
    ds = d[order]
    out, pos = 0.0, 0
    for v in np.unique(ds):
        members = d == v
        n, g = members.sum(), rel[members].sum()
        rb = rel[d < v].sum()
        s = pos
        for l_ in range(s + 1, s + n + 1):
            if l_ > r:
                break
            pair = (g - 1) / (n - 1) if n > 1 else 0.0
            out += g / n * (rb + 1 + (l_ - s - 1) * pair) / l_
        pos += n
    return out


def np_exact_retrieved(d, rel, r):
    """Expected AP with the 'retrieved' normaliser: hypergeometric over the group cut at R."""
    order = np.argsort(d, kind="stable")
    v = d[order][r - 1]
    s = int((d < v).sum())
    n, g, rb = int((d == v).sum()), int(rel[d == v].sum()), int(rel[d < v].sum())
    t = r - s
    complete = np_exact_fixed(np.where(d < v, d, np.inf), np.where(d < v, rel, False), s)
    total = 0.0
    for x in range(max(0, t - (n - g)), min(g, t) + 1):
        p = hypergeom(n, g, t).pmf(x)
        if rb + x == 0:
            continue
        # given x relevant among the t slots, each arrangement is equally likely
        cond = 0.0
        for j in range(1, t + 1):
            pj = x / t
            before = (j - 1) * (x - 1) / (t - 1) if t > 1 else 0.0
            cond += pj * (rb + 1 + before) / (s + j)
        total += p * (complete + cond) / (rb + x)
    return total


# ---------------------------------------------------------------- data


def tied_features(rng, nq, nb, d=3, levels=3, classes=3):
    """Small integer features: many exactly tied (and exactly representable) distances."""
    xq = rng.integers(0, levels, (nq, d)).astype(np.float32)
    xb = rng.integers(0, levels, (nb, d)).astype(np.float32)
    return xq, xb, rng.integers(0, classes, nq), rng.integers(0, classes, nb)


# ---------------------------------------------------------------- distances


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "manhattan", "cosine"])
def test_float_distances_match_numpy(metric):
    rng = np.random.default_rng(0)
    xq, xb = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    got = rt.pairwise_distances(xq, xb, metric)
    want = np_distances(xq, xb, metric)
    if metric == "cosine":
        want = 1.0 - want  # pairwise_distances reports the similarity
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nq", [1, distances.MANHATTAN_GROUP, 2 * distances.MANHATTAN_GROUP + 3])
def test_manhattan_groups_match_numpy(nq):
    rng = np.random.default_rng(nq)
    q, b = rng.normal(size=(nq, 13)), rng.normal(size=(37, 13))  # 13: not a multiple of unroll
    got = jax.jit(distances.manhattan)(q.astype(np.float32), b.astype(np.float32))
    chex.assert_shape(got, (nq, 37))
    np.testing.assert_allclose(got, np.abs(q[:, None] - b[None]).sum(-1), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("metric", ["hamming", "overlap"])
@pytest.mark.parametrize("bits", [5, 64, 300])  # matmul path (<= 256 bits) and popcount path
def test_bit_distances_match_numpy(metric, bits):
    rng = np.random.default_rng(bits)
    bq, bb = rng.integers(0, 2, (6, bits)), rng.integers(0, 2, (9, bits))
    got = rt.pairwise_distances(rt.pack_bits(bq), rt.pack_bits(bb), metric)
    want = np_bits_distance(bq, bb, metric)
    if metric == "overlap":
        want = bits - want
    np.testing.assert_array_equal(got, want)


def test_pack_unpack_roundtrip():
    bits = np.random.default_rng(1).integers(0, 2, (4, 70)).astype(np.uint8)
    packed = rt.pack_bits(bits)
    assert packed.shape == (4, 3) and packed.dtype == np.uint32
    np.testing.assert_array_equal(rt.unpack_bits(packed, 70), bits)
    assert rt.pack_bits(np.array([[1, 0, 1]]))[0, 0] == 0b101


# ---------------------------------------------------------------- ranking metrics


@pytest.mark.parametrize("tie", ["random", "stable"])
@pytest.mark.parametrize("metric", ["sqeuclidean", "manhattan", "cosine"])
@pytest.mark.parametrize("r", [1, 7, 40, None])
def test_ap_random_and_stable_match_numpy(tie, metric, r):
    rng = np.random.default_rng(3)
    xq, xb, yq, yb = tied_features(rng, 13, 40)
    if metric == "cosine":  # float32 normalisation breaks exact ties of parallel vectors
        xq, xb = rng.normal(size=xq.shape), rng.normal(size=xb.shape)
    at = (1, 5, 40)
    out = rt.evaluate(xq, xb, yq, yb, metric=metric, R=r, tie=tie, seed=5, at=at, chunk_size=4)
    d = np_distances(xq, xb, metric)
    perm = np.random.default_rng(5).permutation(len(xb))
    rr = len(xb) if r is None else r
    for normaliser in rt.NORMALISERS:
        want = []
        for i in range(len(xq)):
            rel = (yb == yq[i])[np_ranked(d[i], tie, perm)]
            want.append(np_ap(rel, rr, (yb == yq[i]).sum(), normaliser))
        np.testing.assert_allclose(out["ap"][normaliser], want, atol=TOL)
    for n in at:
        hits = [((yb == yq[i])[np_ranked(d[i], tie, perm)][:n]).sum() for i in range(len(xq))]
        np.testing.assert_allclose(out["precision_at"][n], np.mean(hits) / n, atol=TOL)
        np.testing.assert_allclose(out["top_n_score"][n], np.mean(hits), atol=TOL)
        tot = np.array([(yb == q).sum() for q in yq])
        rec = np.where(tot > 0, np.array(hits) / np.maximum(tot, 1), 0)
        np.testing.assert_allclose(out["recall_at"][n], rec.mean(), atol=TOL)


@pytest.mark.parametrize("normaliser", rt.NORMALISERS)
@pytest.mark.parametrize("r", [1, 3, 5, 8])
def test_exact_ties_equal_enumeration_over_all_orders(normaliser, r):
    rng = np.random.default_rng(r)
    for trial in range(6):
        nb = 8
        xq, xb, yq, yb = tied_features(rng, 3, nb, d=1, levels=3, classes=2)
        out = rt.evaluate(xq, xb, yq, yb, metric="sqeuclidean", R=r, chunk_size=2)
        d = np_distances(xq, xb, "sqeuclidean")
        want = [np_exact_by_enumeration(d[i], yb == yq[i], r, normaliser) for i in range(3)]
        np.testing.assert_allclose(out["ap"][normaliser], want, atol=TOL, err_msg=f"{trial}")


@pytest.mark.parametrize("metric", ["sqeuclidean", "hamming"])  # top_k and histogram paths
def test_exact_ties_heavy_ties_at_scale(metric):
    rng = np.random.default_rng(11)
    nq, nb, r = 20, 300, 50
    if metric == "hamming":
        bq, bb = rng.integers(0, 2, (nq, 3)), rng.integers(0, 2, (nb, 3))  # only 4 distances
        xq, xb, d = rt.pack_bits(bq), rt.pack_bits(bb), np_bits_distance(bq, bb, "hamming")
    else:
        xq, xb, _, _ = tied_features(rng, nq, nb, d=2, levels=3)
        d = np_distances(xq, xb, metric)
    yq, yb = rng.integers(0, 4, nq), rng.integers(0, 4, nb)
    yq[0] = 9  # a query with no relevant item
    out = rt.evaluate(xq, xb, yq, yb, metric=metric, R=r, at=(10, r), chunk_size=8)
    for i in range(nq):
        rel = yb == yq[i]
        total = rel.sum()
        fixed = np_exact_fixed(d[i], rel, r)
        assert out["ap"]["relevant"][i] == pytest.approx(fixed / total if total else 0, abs=TOL)
        assert out["ap"]["min"][i] == pytest.approx(fixed / min(r, total) if total else 0, abs=TOL)
        assert out["ap"]["retrieved"][i] == pytest.approx(np_exact_retrieved(d[i], rel, r), abs=TOL)
    assert out["ap"]["retrieved"][0] == 0.0


def test_sklearn_average_precision_without_ties():
    rng = np.random.default_rng(4)
    xq, xb = rng.normal(size=(9, 6)), rng.normal(size=(120, 6))
    yq, yb = rng.integers(0, 3, 9), rng.integers(0, 3, 120)
    out = rt.evaluate(xq, xb, yq, yb, metric="euclidean", R=None, normaliser="relevant")
    d = np_distances(xq, xb, "euclidean")
    want = [average_precision_score(yb == yq[i], -d[i]) for i in range(9)]
    np.testing.assert_allclose(out["ap"]["relevant"], want, atol=TOL)
    # With R = All every normaliser is the number of relevant items in the database.
    np.testing.assert_allclose(out["ap"]["retrieved"], want, atol=TOL)
    assert out["map"] == pytest.approx(np.mean(want), abs=TOL)


def test_r_larger_than_relevant_and_database():
    rng = np.random.default_rng(8)
    xq, xb, yq, yb = tied_features(rng, 5, 12)
    big = rt.evaluate(xq, xb, yq, yb, metric="sqeuclidean", R=10_000, tie="stable")
    full = rt.evaluate(xq, xb, yq, yb, metric="sqeuclidean", R=None, tie="stable")
    assert big["settings"]["R"] == 12
    np.testing.assert_allclose(big["ap"]["min"], full["ap"]["min"], atol=TOL)


@pytest.mark.parametrize("tie", rt.TIES)
def test_single_item_database(tie):
    yq, yb = np.array([0, 1, 0]), np.array([0])
    out = rt.evaluate(
        np.ones((3, 2)), np.ones((1, 2)), yq, yb, metric="sqeuclidean", R=5, tie=tie, at=(1,)
    )
    # By hand: the one item is every query's top 1, relevant to queries 0 and 2 only.
    top1_relevant = yq == yb[0]
    np.testing.assert_allclose(out["ap"]["retrieved"], top1_relevant.astype(float))
    assert list(out["precision_at"]) == [1]
    assert out["precision_at"][1] == pytest.approx(top1_relevant.mean())  # 2/3
    assert out["precision_at"][1] == pytest.approx(2 / 3)


def test_pr_curves_match_numpy():
    rng = np.random.default_rng(6)
    xq, xb = rng.normal(size=(6, 4)), rng.normal(size=(30, 4))
    yq, yb = rng.integers(0, 2, 6), rng.integers(0, 2, 30)
    out = rt.evaluate(xq, xb, yq, yb, metric="sqeuclidean", R=None)
    d = np_distances(xq, xb, "sqeuclidean")
    precs, recs, p11 = [], [], []
    for i in range(6):
        rel = (yb == yq[i])[np.argsort(d[i])]
        hits = np.cumsum(rel)
        p, rc = hits / np.arange(1, 31), hits / rel.sum()
        precs.append(p)
        recs.append(rc)
        p11.append(
            [
                p[rc >= lv - 1e-9].max() if (rc >= lv - 1e-9).any() else 0
                for lv in np.linspace(0, 1, 11)
            ]
        )
    np.testing.assert_allclose(out["pr_curve"]["precision"], np.mean(precs, 0), atol=TOL)
    np.testing.assert_allclose(out["pr_curve"]["recall"], np.mean(recs, 0), atol=TOL)
    np.testing.assert_allclose(out["pr11"], np.mean(p11, 0), atol=TOL)


# ---------------------------------------------------------------- search, devices, compilation


@pytest.mark.parametrize("metric", ["sqeuclidean", "hamming"])
def test_search_returns_nearest_with_ties_broken_by_policy(metric):
    rng = np.random.default_rng(2)
    bq, bb = rng.integers(0, 2, (5, 6)), rng.integers(0, 2, (50, 6))
    if metric == "hamming":
        xq, xb, d = rt.pack_bits(bq), rt.pack_bits(bb), np_bits_distance(bq, bb, metric)
    else:
        xq, xb, d = bq.astype(float), bb.astype(float), np_distances(bq, bb, metric)
    dist, idx = rt.search(xq, xb, 7, metric=metric, tie="stable")
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(dist, np.take_along_axis(d, idx, 1), atol=1e-5)
    _, idx_r = rt.search(xq, xb, 7, metric=metric, tie="random", seed=1)
    perm = np.random.default_rng(1).permutation(50)
    want = np.stack([perm[np.argsort(row[perm], kind="stable")][:7] for row in d])
    np.testing.assert_array_equal(idx_r, want)


@pytest.mark.parametrize("metric", ["sqeuclidean", "hamming", "overlap"])
@pytest.mark.parametrize("tie", rt.TIES)
def test_sharded_database_equals_single_device(metric, tie):
    assert jax.device_count() == 8
    rng = np.random.default_rng(9)
    nb = 203  # not a multiple of 8: the last shard is padded
    if metric in rt.BIT_METRICS:
        xq, xb = (
            rt.pack_bits(rng.integers(0, 2, (17, 8))),
            rt.pack_bits(rng.integers(0, 2, (nb, 8))),
        )
    else:
        xq, xb, _, _ = tied_features(rng, 17, nb)
    yq, yb = rng.integers(0, 3, 17), rng.integers(0, 3, nb)
    kw = dict(metric=metric, R=30, tie=tie, at=(5, 30), seed=3, chunk_size=8)
    one = rt.evaluate(xq, xb, yq, yb, **kw)
    eight = rt.evaluate(xq, xb, yq, yb, mesh=rt.database_mesh(8), **kw)
    chex.assert_trees_all_close(eight["ap"], one["ap"], atol=TOL)
    chex.assert_trees_all_close(eight["precision_at"], one["precision_at"], atol=TOL)
    chex.assert_trees_all_close(eight["pr_curve"], one["pr_curve"], atol=TOL)  # summed
    chex.assert_trees_all_close(eight["pr11"], one["pr11"], atol=TOL)
    if metric != "overlap" or tie != "exact":
        d1, i1 = rt.search(xq, xb, 9, metric=metric, tie="random" if tie == "exact" else tie)
        d8, i8 = rt.search(
            xq,
            xb,
            9,
            metric=metric,
            tie="random" if tie == "exact" else tie,
            mesh=rt.database_mesh(8),
        )
        np.testing.assert_array_equal(i8, i1)


def test_sharded_chunks_round_up_to_the_device_count():
    # 3 queries a chunk on 8 devices: each chunk is padded to 8 (one query per device), R = All
    rng = np.random.default_rng(4)
    xq, xb, _, _ = tied_features(rng, 11, 37)
    yq, yb = rng.integers(0, 3, 11), rng.integers(0, 3, 37)
    kw = dict(metric="sqeuclidean", R=None, at=(5,), chunk_size=3)
    one = rt.evaluate(xq, xb, yq, yb, **kw)
    eight = rt.evaluate(xq, xb, yq, yb, mesh=rt.database_mesh(8), **kw)
    chex.assert_trees_all_close(eight["ap"], one["ap"], atol=TOL)
    chex.assert_trees_all_close(eight["pr_curve"], one["pr_curve"], atol=TOL)


def test_no_recompilation_across_chunks(monkeypatch):
    traces = []
    body = kernel.shard_body
    monkeypatch.setattr(kernel, "shard_body", lambda *a: traces.append(1) or body(*a))
    kernel.compiled_chunk.cache_clear()
    rng = np.random.default_rng(0)
    xq, xb, yq, yb = tied_features(rng, 50, 64)
    rt.evaluate(xq, xb, yq, yb, metric="sqeuclidean", R=10, chunk_size=8)  # 7 chunks
    rt.evaluate(xq[:20], xb, yq[:20], yb, metric="sqeuclidean", R=10, chunk_size=8)
    assert len(traces) == 1
    kernel.compiled_chunk.cache_clear()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(xq=np.ones((2, 3)), xb=np.ones((4, 2))), "columns"),
        (dict(yq=[0]), "query labels"),
        (dict(yb=[0, 1]), "database labels"),
        (dict(xq=np.full((2, 3), np.nan)), "NaN"),
        (dict(xb=np.full((4, 3), np.inf)), "NaN or inf"),
        (dict(xb=np.ones((0, 3)), yb=np.zeros(0, int)), "empty database"),
        (dict(R=0), "R must be a positive integer"),
        (dict(metric="chebyshev"), "unknown metric"),
        (dict(tie="best"), "unknown tie"),
        (dict(normaliser="all"), "unknown normaliser"),
        (dict(metric="hamming"), "packed uint32"),
        (dict(at=(5,)), "precision@N"),
        (dict(xq=np.ones(3)), "2-D"),
        (dict(yq=[0.5, 1.0]), "integers"),
    ],
)
def test_bad_input_is_one_line_input_error(kwargs, message):
    args = dict(xq=np.ones((2, 3)), xb=np.ones((4, 3)), yq=[0, 1], yb=[0, 1, 0, 1])
    args.update(kwargs)
    metric = args.pop("metric", "sqeuclidean")
    with pytest.raises(InputError, match=message) as err:
        rt.evaluate(
            args.pop("xq"), args.pop("xb"), args.pop("yq"), args.pop("yb"), metric=metric, **args
        )
    assert "\n" not in str(err.value)


def test_exact_expected_ap_is_between_best_and_worst_tie_orders():
    # Sanity at the scale where ties matter: 2-bit codes, many items per distance value.
    rng = np.random.default_rng(12)
    bq, bb = rng.integers(0, 2, (30, 2)), rng.integers(0, 2, (500, 2))
    yq, yb = bq[:, 0] * 2 + rng.integers(0, 2, 30), bb[:, 0] * 2 + rng.integers(0, 2, 500)
    exact = rt.evaluate(rt.pack_bits(bq), rt.pack_bits(bb), yq, yb, metric="hamming", R=100)
    rand = [
        rt.evaluate(
            rt.pack_bits(bq),
            rt.pack_bits(bb),
            yq,
            yb,
            metric="hamming",
            R=100,
            tie="random",
            seed=s,
        )["map"]
        for s in range(8)
    ]
    assert min(rand) - 0.02 < exact["map"] < max(rand) + 0.02
    assert math.isfinite(exact["map"])


def sparse_codes(rng, n, m, k):
    bits = np.zeros((n, m), np.uint8)
    for i in range(n):
        bits[i, rng.choice(m, k + (i % 3 == 0), replace=False)] = 1  # some rows have k + 1
    return bits


@pytest.mark.parametrize("kind", ["sparse", "dense"])  # set-bit gather vs popcount over words
@pytest.mark.parametrize("metric", rt.BIT_METRICS)
@pytest.mark.parametrize("tie", ["exact", "stable"])
def test_wide_codes_match_numpy(kind, metric, tie):
    rng = np.random.default_rng(21)
    m = 600  # > 256 bits: neither the matmul path nor (for the dense kind) the gather path
    if kind == "sparse":
        bq, bb = sparse_codes(rng, 15, m, 4), sparse_codes(rng, 120, m, 4)
    else:
        bq, bb = rng.integers(0, 2, (15, m)), rng.integers(0, 2, (120, m))
    assert (distances.max_active(metric, rt.pack_bits(bq), m) > 0) == (kind == "sparse")
    yq, yb = rng.integers(0, 3, 15), rng.integers(0, 3, 120)
    out = rt.evaluate(rt.pack_bits(bq), rt.pack_bits(bb), yq, yb, metric=metric, R=20, tie=tie)
    d = np_bits_distance(bq, bb, metric)
    for i in range(15):
        rel = yb == yq[i]
        if tie == "stable":
            want = np_ap(rel[np.argsort(d[i], kind="stable")], 20, rel.sum(), "relevant")
        else:
            want = np_exact_fixed(d[i], rel, 20) / rel.sum()
        assert out["ap"]["relevant"][i] == pytest.approx(want, abs=TOL)
    mesh = rt.database_mesh(8)
    sharded = rt.evaluate(
        rt.pack_bits(bq), rt.pack_bits(bb), yq, yb, metric=metric, R=20, tie=tie, mesh=mesh
    )
    np.testing.assert_allclose(sharded["ap"]["retrieved"], out["ap"]["retrieved"], atol=TOL)
    dist, idx = rt.search(rt.pack_bits(bq), rt.pack_bits(bb), 5, metric=metric, tie="stable")
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1, kind="stable")[:, :5])


def test_wide_code_chunks_are_bounded():
    cfg = kernel.KernelConfig(
        metric="hamming",
        tie="exact",
        r=10,
        depth=10,
        at=(10,),
        num_bits=30720,
        use_histogram=False,
        search_only=False,
        num_db=50_000,
        active=16,
    )
    chunk = kernel.queries_per_chunk(cfg, 50_000, 960, None)
    assert chunk > 1 and chunk * 50_000 * 16 <= 2**24  # (C, N, active) within ~64 MB
    dense = cfg._replace(active=0)
    assert kernel.queries_per_chunk(dense, 50_000, 960, None) == 1


def test_map_at_several_depths_in_one_pass_hand_example():
    """One query; database ranked by distance 1..6 with relevance 1 0 1 0 0 1 (3 relevant):
    AP@2 (min) = 1 / min(2, 3) = 1/2; AP@4 (min) = (1 + 2/3) / 3; AP@4 (retrieved) = (1 + 2/3) / 2
    (Lagani's MAPMetric is the 'min' normaliser)."""
    xb = np.arange(1, 7, dtype=np.float32)[:, None]
    yb = np.array([1, 0, 1, 0, 0, 1])
    out = rt.evaluate(np.zeros((1, 1)), xb, [1], yb, metric="sqeuclidean", R=6, more_R=(2, 4))
    assert out["map_at"][2]["min"] == pytest.approx(0.5)
    assert out["map_at"][4]["min"] == pytest.approx((1 + 2 / 3) / 3)
    assert out["map_at"][4]["retrieved"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["map_by_normaliser"]["relevant"] == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    for r in (2, 4):  # the same as separate calls
        alone = rt.evaluate(np.zeros((1, 1)), xb, [1], yb, metric="sqeuclidean", R=r)
        chex.assert_trees_all_close(out["map_at"][r], alone["map_by_normaliser"])


def test_map_at_several_depths_with_ties_matches_separate_calls():
    rng = np.random.default_rng(12)
    xq, xb, yq, yb = tied_features(rng, 9, 60)
    out = rt.evaluate(xq, xb, yq, yb, metric="manhattan", R=40, more_R=(5, 20, "all"))
    for r in (5, 20, 60):
        alone = rt.evaluate(xq, xb, yq, yb, metric="manhattan", R=r)["map_by_normaliser"]
        chex.assert_trees_all_close(out["map_at"][r], alone, atol=1e-6)


# ---------------------------------------------------------------- the package split changed nothing


def np_expected_hits(d, rel, n):
    """Expected number of relevant items in the top n over all orders of tied items."""
    v = np.sort(d)[n - 1]
    before, tied = d < v, d == v
    return rel[before].sum() + (n - before.sum()) * rel[tied].sum() / tied.sum()


KERNEL_PATHS = [  # (metric, features, tie): every branch of the chunk kernel
    ("sqeuclidean", "tied", "exact"),  # top_k, exact tie groups
    ("manhattan", "tied", "stable"),  # top_k, singletons
    ("cosine", "normal", "random"),  # normalised rows, permuted database
    ("hamming", 12, "exact"),  # +-1 matmul keys, histogram
    ("overlap", 12, "random"),  # popcount keys, top_k
    ("hamming", 300, "exact"),  # wide dense codes: popcount over words
    ("overlap", "sparse", "exact"),  # wide sparse codes: set-bit gather
    ("hamming", "sparse", "stable"),
]


@pytest.mark.parametrize("num_devices", [1, 8])
@pytest.mark.parametrize("metric, features, tie", KERNEL_PATHS)
def test_every_kernel_path_matches_numpy_reference(metric, features, tie, num_devices):
    """evaluate and search through every module of the package (bits, distances, inputs, ap,
    kernel), on one device and sharded, against the numpy references above."""
    rng = np.random.default_rng(31)
    nq, nb, r, at = 11, 61, 15, (1, 10)
    if features == "tied":
        xq, xb, _, _ = tied_features(rng, nq, nb)
        d = np_distances(xq, xb, metric)
    elif features == "normal":
        xq, xb = rng.normal(size=(nq, 5)), rng.normal(size=(nb, 5))
        d = np_distances(xq, xb, metric)
    else:
        if features == "sparse":
            bq, bb = sparse_codes(rng, nq, 600, 3), sparse_codes(rng, nb, 600, 3)
        else:
            bq, bb = rng.integers(0, 2, (nq, features)), rng.integers(0, 2, (nb, features))
        xq, xb, d = rt.pack_bits(bq), rt.pack_bits(bb), np_bits_distance(bq, bb, metric)
        length = bq.shape[1]
    yq, yb = rng.integers(0, 3, nq), rng.integers(0, 3, nb)
    mesh = rt.database_mesh(num_devices)
    out = rt.evaluate(xq, xb, yq, yb, metric=metric, R=r, tie=tie, at=at, seed=4, mesh=mesh)
    perm = np.random.default_rng(4).permutation(nb)
    want_ap = {k: [] for k in rt.NORMALISERS}
    hits = {n: [] for n in at}
    for i in range(nq):
        rel = yb == yq[i]
        total = rel.sum()
        if tie == "exact":
            fixed = np_exact_fixed(d[i], rel, r)
            want_ap["relevant"].append(fixed / total if total else 0.0)
            want_ap["min"].append(fixed / min(r, total) if total else 0.0)
            want_ap["retrieved"].append(np_exact_retrieved(d[i], rel, r))
            for n in at:
                hits[n].append(np_expected_hits(d[i], rel, n))
        else:
            ranked = rel[np_ranked(d[i], tie, perm)]
            for k in rt.NORMALISERS:
                want_ap[k].append(np_ap(ranked, r, total, k))
            for n in at:
                hits[n].append(ranked[:n].sum())
    got = {k: out[k] for k in ("ap", "precision_at", "top_n_score")}
    want = {
        "ap": {k: np.array(v) for k, v in want_ap.items()},
        "precision_at": {n: np.mean(hits[n]) / n for n in at},
        "top_n_score": {n: float(np.mean(hits[n])) for n in at},
    }
    chex.assert_trees_all_close(got, want, atol=TOL)
    if tie != "exact":
        dist, idx = rt.search(xq, xb, 7, metric=metric, tie=tie, seed=4, mesh=mesh)
        order = np.stack([np_ranked(row, tie, perm)[:7] for row in d])
        np.testing.assert_array_equal(idx, order)
        want_d = np.take_along_axis(d, order, 1)
        if metric == "cosine":
            want_d = 1.0 - want_d  # search reports the similarity
        elif metric == "overlap":
            want_d = length - want_d  # and the overlap count
        np.testing.assert_allclose(dist, want_d, atol=1e-5)


def test_public_names_are_reexported():
    for name in rt.__all__:
        assert hasattr(rt, name), name
    assert rt.database_mesh is hebbret.mesh.database_mesh
    assert set(rt.METRICS) == set(rt.FLOAT_METRICS) | set(rt.BIT_METRICS)
    kw = dict(metric="sqeuclidean", mesh=hebbret.mesh.data_mesh(1))
    with pytest.raises(InputError, match="axis 'db'"):
        rt.evaluate(np.ones((2, 3)), np.ones((4, 3)), [0, 1], [0, 1, 0, 1], **kw)


@pytest.mark.parametrize("num_devices", [1, 8])
@pytest.mark.parametrize(
    "metric, tie, r",
    [
        ("sqeuclidean", "exact", 15),  # top_k path, tie group may cross the list end
        ("sqeuclidean", "exact", None),  # the whole database: N - 1 items per query
        ("manhattan", "random", 15),  # permuted database: the left-out index maps through it
        ("cosine", "stable", None),
        ("hamming", "exact", None),  # histogram path
    ],
)
def test_leave_one_out_equals_deleting_the_query_from_the_database(metric, tie, r, num_devices):
    """Queries drawn from the database (test-vs-test retrieval): each query's ranking is the one
    of a database without its own row, for every normaliser and precision@N."""
    rng = np.random.default_rng(12)
    nb = 43
    if metric == "hamming":
        x = rt.pack_bits(rng.integers(0, 2, (nb, 6)))
    elif metric == "cosine":  # float rounding would break cosine's ties in no defined order
        x = rng.normal(size=(nb, 4)).astype(np.float32)
    else:
        x, _, _, _ = tied_features(rng, nb, 1)
    y = rng.integers(0, 3, nb)
    q = np.array([0, 5, 17, 42, 5])  # any rows, repeats allowed
    kw = dict(metric=metric, R=r, tie=tie, at=(1, 10), seed=2)
    got = rt.evaluate(x[q], x, y[q], y, leave_out=q, mesh=rt.database_mesh(num_devices), **kw)
    for i, j in enumerate(q):
        keep = np.arange(nb) != j
        want = rt.evaluate(x[j : j + 1], x[keep], y[j : j + 1], y[keep], **(kw | {"tie": "exact"}))
        if tie == "exact":
            for k in rt.NORMALISERS:
                np.testing.assert_allclose(got["ap"][k][i], want["ap"][k][0], atol=TOL)
        assert got["num_relevant"][i] == want["num_relevant"][0] == (y[keep] == y[j]).sum()
    if tie != "exact":  # the same with the permutation / index order the policy uses
        for i, j in enumerate(q):
            keep = np.flatnonzero(np.arange(nb) != j)
            d = np_distances(x[j : j + 1], x[keep], metric)[0]
            order = (
                np.argsort(d, kind="stable")
                if tie == "stable"
                else _permuted_order(d, keep, nb, seed=2)
            )
            ranked = (y[keep] == y[j])[order]
            for k in rt.NORMALISERS:
                want = np_ap(ranked, r or nb - 1, ranked.sum(), k)
                np.testing.assert_allclose(got["ap"][k][i], want, atol=TOL)


def _permuted_order(d, keep, nb, seed):
    """Ranking of the kept rows under the random policy: the full database's permutation, with
    the left-out row removed, then a stable sort."""
    perm = np.random.default_rng(seed).permutation(nb)
    position = np.searchsorted(keep, perm[np.isin(perm, keep)])
    return position[np.argsort(d[position], kind="stable")]


def test_leave_out_bad_input():
    x, y = np.eye(4, dtype=np.float32), np.arange(4)
    with pytest.raises(InputError, match="leave_out must be"):
        rt.evaluate(x, x, y, y, metric="euclidean", leave_out=np.arange(3))
    with pytest.raises(InputError, match="lie in"):
        rt.evaluate(x, x, y, y, metric="euclidean", leave_out=np.array([0, 1, 2, 4]))
    with pytest.raises(InputError, match="at least 2"):
        rt.evaluate(x[:1], x[:1], y[:1], y[:1], metric="euclidean", leave_out=np.array([0]))
