"""Gosthipaty's study end to end on tiny images: both variants, NMI / RI and both mAPs in range,
one cluster giving plain ranking's mAP, the figures, resuming, bad settings."""

import numpy as np
import pytest
from test_pipelines import config

from hebbret.errors import InputError
from hebbret.pipelines import autoencoder as pipeline


def _images(tmp_path):
    rng = np.random.default_rng(0)

    def images(n):
        y = np.repeat(np.arange(3), n // 3)
        x = rng.integers(0, 60, (len(y), 32, 32, 3)) + 90 * y[:, None, None, None]
        return x.astype(np.uint8), y

    (xtr, ytr), (xte, yte) = images(120), images(30)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return f"npz:{tmp_path / 'd.npz'}"


def _small(tmp_path, monkeypatch, **changes):
    monkeypatch.setitem(pipeline.PROTOCOLS, "paper", 4)  # 12 queries, 138 database items
    cfg = config("autoencoder", "cifar10,quick")
    cfg.update({"dataset": _images(tmp_path), "database": 0, "clusters": 3, "tsne_points": 30})
    cfg.update(changes)
    cfg.train.update({"epochs": 2, "batch": 16})
    return cfg


def test_study_both_variants_resumes_and_reports(tmp_path, monkeypatch):
    full = config("autoencoder", "cifar10")
    assert full.protocols == ("paper", "biohash") and full.train.epochs == 20
    cfg = _small(tmp_path, monkeypatch)
    out = tmp_path / "ae"
    record = pipeline.run(cfg, str(out), checkpoint_root=tmp_path / "ck", log=lambda s: None)
    rows = record["metrics"]["rows"]
    assert [(r["protocol"], r["variant"]) for r in rows] == [
        ("paper", "vanilla"),
        ("paper", "supervised"),
    ]
    for r in rows:
        assert r["queries"] == 12 and r["database"] == 138 and len(r["losses"]) == 2
        for k in ("nmi_db", "ri_db", "nmi_queries", "ri_queries", "scanned"):
            assert 0 <= r[k] <= 1
        assert 0 <= r["map"] <= 100 and 0 <= r["cluster_map"] <= 100
    assert "head_accuracy" in rows[1] and "head_accuracy" not in rows[0]
    text = out.with_suffix(".md").read_text()
    assert "(0.074)" in text and "(0.876)" in text and "cluster-then-rank" in text
    for suffix in ("_paper_tsne.png", "_paper_reconstructions.png", "_paper_vanilla_grid.png"):
        assert (tmp_path / f"ae{suffix}").stat().st_size > 0

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(pipeline.ae, "train", fail)
    again = pipeline.run(cfg, str(out), checkpoint_root=tmp_path / "ck", log=lambda s: None)
    assert again["metrics"]["rows"] == rows


def test_one_cluster_scores_like_plain_ranking(tmp_path, monkeypatch):
    cfg = _small(tmp_path, monkeypatch, clusters=1, variants=("vanilla",), tsne_points=0)
    record = pipeline.run(cfg, str(tmp_path / "one"), checkpoint_root=tmp_path / "ck",
                          log=lambda s: None)  # fmt: skip
    (row,) = record["metrics"]["rows"]
    assert row["cluster_map"] == pytest.approx(row["map"], abs=1e-4) and row["scanned"] == 1.0
    assert row["nmi_db"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("protocols", ("cifar",), "config.protocols"),
        ("variants", ("denoising",), "config.variants"),
        ("clusters", 0, "config.clusters"),
        ("database", -1, "config.database"),
    ],
)
def test_bad_settings_fail_before_loading_data(field, value, message):
    cfg = config("autoencoder", "cifar10,quick")
    cfg.update({"dataset": "npz:/nonexistent.npz", field: value})
    with pytest.raises(InputError, match=message):
        pipeline.run(cfg, "/tmp/never", log=lambda s: None)


def test_more_clusters_than_database_items(tmp_path, monkeypatch):
    cfg = _small(tmp_path, monkeypatch, clusters=500, variants=("vanilla",), tsne_points=0)
    with pytest.raises(InputError, match="more clusters than items"):
        pipeline.run(cfg, str(tmp_path / "k"), checkpoint_root=tmp_path / "ck", log=lambda s: None)
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())  # nothing trained
