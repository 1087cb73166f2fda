"""Trustworthy answers (issue 12): inputs that once gave a plausible wrong number must now give
the right one or a one-line InputError."""

import json

import numpy as np
import pytest

from hebbret import InputError
from hebbret import retrieval as rt


def clustered(rng, n_per_class=30, classes=4, d=64, spread=0.6):
    centres = rng.normal(size=(classes, d))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), d))
    return x.astype(np.float32), y


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_euclidean_ranking_ignores_a_large_common_offset(metric, offset):
    """|q|^2 + |b|^2 - 2 q.b in float32 loses the ranking when features share a large offset."""
    rng = np.random.default_rng(0)
    x, y = clustered(rng)
    xq, yq, xb, yb = x[::5], y[::5], np.delete(x, np.s_[::5], 0), np.delete(y, np.s_[::5])
    centred = rt.evaluate(xq, xb, yq, yb, metric=metric, R=20)["map"]
    shifted = rt.evaluate(xq + offset, xb + offset, yq, yb, metric=metric, R=20)["map"]
    # float32 input at offset 1e4 keeps ~3 decimals of the unit-scale data: rankings can only
    # move between items whose distances agree to that precision
    assert shifted == pytest.approx(centred, abs=2e-3)
    d0 = rt.pairwise_distances(xq, xb, metric)
    d1 = rt.pairwise_distances(xq + offset, xb + offset, metric)
    np.testing.assert_allclose(d1, d0, rtol=2e-2, atol=offset * 1e-4)


def test_labels_are_not_truncated_to_int32():
    """Distinct int64 labels that agree modulo 2**32 once all became class 0 (mAP 100)."""
    rng = np.random.default_rng(1)
    x, y = clustered(rng, classes=4, spread=5.0)
    big = np.array([0, 2**32, 2**33, 3 * 2**32], np.int64)[y]
    small = rt.evaluate(x[:20], x[20:], y[:20], y[20:], metric="sqeuclidean")["map"]
    wide = rt.evaluate(x[:20], x[20:], big[:20], big[20:], metric="sqeuclidean")["map"]
    assert wide == pytest.approx(small, abs=1e-7)
    assert wide < 0.9


def test_string_labels_work():
    rng = np.random.default_rng(2)
    x, y = clustered(rng, classes=3)
    names = np.array(["cat", "dog", "ship"])[y]
    a = rt.evaluate(x[:15], x[15:], y[:15], y[15:], metric="cosine", R=10)["map"]
    b = rt.evaluate(x[:15], x[15:], names[:15], names[15:], metric="cosine", R=10)["map"]
    assert a == b


@pytest.mark.parametrize("labels", [np.array([0.5, 1.5]), np.array([np.nan, 1.0])])
def test_float_labels_are_rejected(labels):
    x = np.eye(2, dtype=np.float32)
    with pytest.raises(InputError, match="labels"):
        rt.evaluate(x, x, labels, labels, metric="sqeuclidean")


def test_r_all_and_non_integer_r():
    rng = np.random.default_rng(3)
    x, y = clustered(rng, classes=3)
    a = rt.evaluate(x[:9], x[9:], y[:9], y[9:], metric="sqeuclidean", R=None)["map"]
    for r in ("all", "All", "ALL"):
        assert rt.evaluate(x[:9], x[9:], y[:9], y[9:], metric="sqeuclidean", R=r)["map"] == a
    assert rt.evaluate(x[:9], x[9:], y[:9], y[9:], metric="sqeuclidean", R=np.int64(5))
    for bad in (2.7, 2.0, "10", True, "some"):
        with pytest.raises(InputError, match="R must be"):
            rt.evaluate(x[:9], x[9:], y[:9], y[9:], metric="sqeuclidean", R=bad)


def test_one_class_warns_every_item_is_relevant():
    x = np.random.default_rng(4).normal(size=(10, 3)).astype(np.float32)
    y = np.zeros(10, int)
    with pytest.warns(UserWarning, match="every database item is relevant"):
        m = rt.evaluate(x[:3], x[3:], y[:3], y[3:], metric="sqeuclidean")
    assert m["map"] == 1.0


# ------------------------------------------------------------------ hashers and the command line

import jax  # noqa: E402

from hebbret import cli, hashing  # noqa: E402
from hebbret.data import splits  # noqa: E402
from hebbret.pipelines import compare  # noqa: E402


def one_line_error(capsys, fragment):
    err = capsys.readouterr().err
    assert err.startswith("hebbret: error: ") and err.count("\n") == 1, err
    assert fragment in err, err
    return err


def test_encode_rejects_params_of_another_method():
    x = np.random.default_rng(5).normal(size=(120, 6)).astype(np.float32)
    key = jax.random.key(0)
    lsh = hashing.fit("lsh", x, hashing.HashConfig(k=4), key=key)
    with pytest.raises(InputError, match="params of 'lsh'"):
        hashing.encode("itq", lsh, x)
    naive = hashing.fit("naivebiohash", x, hashing.HashConfig(k=4, rule=fast_rule()), key=key)
    with pytest.raises(InputError, match="params of 'naivebiohash'"):
        hashing.encode("biohash", naive, x)


def fast_rule():
    from hebbret.rules import biohash

    return biohash.RuleConfig(max_epochs=2)


def features_file(tmp_path, n=120, d=12):
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(n, d)).astype(np.float32))
    return str(tmp_path / "f.npy")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--method", "biohash", "--activity", "0"], "activity must be in (0, 1)"),
        (["--method", "biohash", "--activity", "1.5"], "activity must be in (0, 1)"),
        (["--method", "flyhash", "--activity", "0.1"], "--activity is not used by flyhash"),
        (["--method", "lsh", "--max-epochs", "3"], "--max-epochs is not used by lsh"),
        (["--method", "biohash", "--filters", "8"], "--filters is not used by biohash"),
        (["--method", "biohash", "--max-epochs", "0"], "max_epochs must be an integer >= 1"),
    ],
)
def test_hash_options_are_never_silently_replaced_or_ignored(tmp_path, capsys, extra, fragment):
    out = tmp_path / "c.npz"
    argv = ["hash", "--k", "2", "--features", features_file(tmp_path), "--out", str(out)]
    assert cli.main([*argv, *extra, "--no-progress"]) == 2
    one_line_error(capsys, fragment)
    assert not out.exists()


def test_hash_records_the_activity_chosen(tmp_path):
    out = tmp_path / "c.npz"
    argv = ["hash", "--method", "biohash", "--k", "2", "--features", features_file(tmp_path)]
    assert cli.main([*argv, "--activity", "0.25", "--max-epochs", "2", "--out", str(out)]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert json.loads(str(z["config"]))["activity"] == 0.25
        assert z["bits"].shape == (120, 8)


def bad_outputs(tmp_path):
    (tmp_path / "file").write_text("x")
    return {
        "a directory": (str(tmp_path), "is a directory"),
        "under a file": (str(tmp_path / "file" / "out.json"), "not a directory"),
        "read-only place": ("/proc/hebbret-out/out.json", "cannot write"),
    }


@pytest.mark.parametrize("case", ["a directory", "under a file", "read-only place"])
@pytest.mark.parametrize("command", ["eval", "compare", "hash"])
def test_bad_out_fails_before_any_work(tmp_path, capsys, monkeypatch, case, command):
    path, fragment = bad_outputs(tmp_path)[case]

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(hashing, "fit", no_work)
    monkeypatch.setattr(cli.retrieval, "evaluate", no_work)
    argv = {
        "eval": ["eval", "--dataset", "digits"],
        "compare": ["compare", "--methods", "lsh", "--k", "2", "--no-progress"],
        "hash": ["hash", "--method", "lsh", "--k", "2", "--features", features_file(tmp_path)],
    }[command]
    assert cli.main([*argv, "--out", path]) == 2
    one_line_error(capsys, fragment)


def test_outputs_get_the_users_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        assert cli.main(["eval", "--dataset", "digits", "--out", str(tmp_path / "m.json")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def small_npz(tmp_path, n_per_class=6):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), n_per_class)
    np.savez(tmp_path / "small.npz", x=rng.normal(size=(len(y), 10)), y=y)
    return f"npz:{tmp_path / 'small.npz'}"


def test_compare_validates_the_whole_grid_first(tmp_path, capsys):
    """BioHash needs a minibatch of 100 rows: the error comes before the LSH row is fitted."""
    out = tmp_path / "c.json"
    argv = ["compare", "--dataset", small_npz(tmp_path), "--methods", "lsh,itq,biohash"]
    assert cli.main([*argv, "--k", "2,4", "--no-progress", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "lsh" not in captured.out
    assert "fewer than one minibatch of 100" in captured.err and "biohash" in captured.err
    assert not out.exists()
    argv = ["compare", "--dataset", small_npz(tmp_path), "--methods", "lsh,pcahash"]
    assert cli.main([*argv, "--k", "2,64", "--no-progress"]) == 2
    assert "k <= d" in capsys.readouterr().err


def test_compare_run_checks_before_fitting(monkeypatch):
    ds_x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    proto = splits.Protocol("toy", ds_x[:5], np.zeros(5, int), ds_x, np.zeros(50, int), None)
    calls = []
    monkeypatch.setattr(hashing, "fit", lambda *a, **k: calls.append(a))
    with pytest.raises(InputError, match="k <= d"):
        compare.run(
            proto,
            methods=["lsh", "pcahash"],
            ks=[2, 8],
            config=hashing.HashConfig(k=1),
            key=jax.random.key(0),
        )
    assert calls == []


@pytest.mark.parametrize("stop", [KeyboardInterrupt, InputError])
def test_compare_keeps_finished_rows_when_a_later_row_fails(tmp_path, capsys, monkeypatch, stop):
    real_fit = hashing.fit

    def fit(name, *args, **kwargs):
        if name == "itq":
            raise stop("singular covariance") if stop is InputError else stop()
        return real_fit(name, *args, **kwargs)

    monkeypatch.setattr(hashing, "fit", fit)
    out = tmp_path / "c.json"
    argv = ["compare", "--methods", "lsh,itq", "--k", "2,4", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == (130 if stop is KeyboardInterrupt else 2)
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert (
        "interrupted" in captured.err if stop is KeyboardInterrupt else "singular" in captured.err
    )
    assert "| LSH |" in captured.out  # the finished rows are still shown
    rec = json.loads(out.read_text())
    assert [(r["method"], r["k"]) for r in rec["metrics"]["rows"]] == [("lsh", 2), ("lsh", 4)]
    assert rec["metrics"]["complete"] is False and rec["metrics"]["stopped"]


def test_ctrl_c_in_hash_is_one_line(tmp_path, capsys, monkeypatch):
    def fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hashing, "fit", fit)
    argv = ["hash", "--method", "lsh", "--k", "2", "--features", features_file(tmp_path)]
    assert cli.main([*argv, "--out", str(tmp_path / "c.npz")]) == 130
    assert capsys.readouterr().err == "hebbret: interrupted\n"
