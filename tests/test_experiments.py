"""The experiment scripts run end to end on small data (tfds mock data for the MNIST protocol)."""

import contextlib
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_data import mock_getitems, write_tfds_metadata

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def mock_mnist(tmp_path, monkeypatch):
    """tfds ``mnist`` answered by mock data (700 examples a split) while the block runs."""
    write_tfds_metadata("mnist", tmp_path / "tfds", "array_record")
    monkeypatch.setattr("tensorflow_datasets.testing.mocking._getitems", mock_getitems)
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=700, policy=policy, data_dir=str(tmp_path / "tfds")):
        yield


def test_biohash_table1_protocol_on_tfds_mock_mnist(tmp_path, monkeypatch):
    """Table 1 (MNIST via tfds) runs unchanged: 100 queries per class, mAP@All, paper numbers."""
    script = load_script("biohash")
    out = tmp_path / "t1"
    with mock_mnist(tmp_path, monkeypatch):
        argv = ["--experiment", "table1", "--quick", "--methods", "lsh,biohash", "--out", str(out)]
        assert script.main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    rows = record["metrics"]["rows"]
    assert [(r["method"], r["k"]) for r in rows] == [
        (m, k) for m in ("lsh", "biohash") for k in (2, 4, 8, 16)
    ]
    assert record["config"]["R"] is None and record["dataset"]["spec"] == "mnist"
    assert "100 queries" in record["metrics"]["protocol"]  # 10 per class in --quick
    table = out.with_suffix(".md").read_text()
    assert "| BioHash |" in table and "(44.38)" in table  # the paper's MNIST k=2 number
    assert all(0 <= r["map"] <= 100 for r in rows)


@pytest.mark.parametrize("experiment", ["table2", "table1", "shadows", "activity"])
def test_configs_quick_presets_keep_the_protocol(experiment):
    import sys
    from importlib import import_module

    sys.path.insert(0, str(ROOT / "experiments"))
    cfg = import_module("configs.biohash").get_config(experiment, quick=True)
    full = import_module("configs.biohash").get_config(experiment)
    assert cfg["R"] == full["R"] and cfg["activity"] == full["activity"]
    assert max(cfg["ks"]) <= 16 and cfg["max_epochs"] <= full["max_epochs"]


@pytest.mark.parametrize("experiment", ["shadows", "activity"])
def test_biohash_shadows_and_activity_sweep_run_on_digits(experiment, tmp_path, monkeypatch):
    """Table 6 and Fig. 4 end to end on the embedded digits (fewer queries per class than
    CIFAR's 1,000): shadows print Table 6's numbers, the sweep scores every activity on the
    validation split and plots it."""
    script = load_script("biohash")
    real = script.get_config

    def small(name, quick=False):
        return real(name, quick) | {"queries_per_class": 20, "query_subset": None}

    monkeypatch.setattr(script, "get_config", small)
    out = tmp_path / experiment
    argv = ["--experiment", experiment, "--quick", "--dataset", "digits", "--out", str(out)]
    if experiment == "shadows":
        argv += ["--methods", "lsh,biohash", "--ks", "2,4"]
    assert script.main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    rows, table = record["metrics"]["rows"], out.with_suffix(".md").read_text()
    assert record["metrics"]["complete"] and "Partial" not in table
    if experiment == "shadows":
        assert "shadows" in record["metrics"]["protocol"] and "(10.62)" in table
        assert [(r["method"], r["k"]) for r in rows] == [
            (m, k) for m in ("lsh", "biohash") for k in (2, 4)
        ]
    else:
        assert "1000 queries (validation" in record["metrics"]["protocol"]
        assert [r["activity"] for r in rows] == [0.0025, 0.005, 0.01, 0.02, 0.05]
        assert [r["bits"] for r in rows] == [3200, 1600, 800, 400, 160]
        assert "Best on validation" in table and out.with_suffix(".png").stat().st_size > 0


@pytest.mark.parametrize("experiment", ["table2", "kci"])
def test_bioconvhash_experiments_run_on_digits(experiment, tmp_path, monkeypatch):
    """Table 2 + shadows + BioHash baseline, and the k_CI sweep, end to end on the embedded digits
    with a small front end; the paper's numbers sit beside ours; the filters are plotted."""
    script = load_script("bioconvhash")
    real = script.get_config

    def small(name, quick=False):
        conv = {"filters": 16, "kernels": (3,), "k_ci": 1, "pool": 2, "stride": 1}
        return real(name, quick) | {
            "queries_per_class": 20,
            "query_subset": None,
            "conv": conv | {"patches": 5000},
            "k_cis": (1, 4) if name == "kci" else (1,),
        }

    monkeypatch.setattr(script, "get_config", small)
    out = tmp_path / experiment
    argv = ["--experiment", experiment, "--quick", "--dataset", "digits", "--out", str(out)]
    devices = ["--devices", "2"] if experiment == "kci" else []  # data-parallel path
    assert script.main([*argv, "--ks", "2,4", *devices]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    rows, table = record["metrics"]["rows"], out.with_suffix(".md").read_text()
    assert record["metrics"]["complete"]
    assert [f["kernel"] for f in record["metrics"]["filters"]] == [3]
    assert (tmp_path / f"{experiment}_filters_K3.png").stat().st_size > 0
    with np.load(tmp_path / f"{experiment}_filters.npz", allow_pickle=False) as banks:
        assert list(banks) == ["K3"] and banks["K3"].shape == (16, 3 * 3 * 1)
        np.testing.assert_allclose(np.linalg.norm(banks["K3"], axis=1).mean(), 1.0, atol=0.5)
    conv = [r for r in rows if r["method"] == "bioconvhash"]
    if experiment == "table2":
        assert [r["k"] for r in rows] == [2, 4, 2, 4]  # BioConvHash, then BioHash on pixels
        assert all("shadows" in r and 0 <= r["shadows"] <= 100 for r in rows)
        assert "| BioConvHash | " in table and "(26.94)" in table and "(26.84)" in table
        assert "BioHash (pixels), shadows" in table and "(11.05)" in table
    else:
        assert [(r["k_ci"], r["k"]) for r in conv] == [(1, 2), (1, 4), (4, 2), (4, 4)]
        line = {
            int(x.split("k_CI = ")[1].split(" ")[0]): x for x in table.splitlines() if "k_CI =" in x
        }
        assert "(26.94)" in line[1] and "(" not in line[4].split("|", 2)[2]  # Table 3 has no 4
        assert "shadows" not in conv[0]
        # an interrupted sweep (k_CI = 4 missing) rerun with the same command adds only k_CI = 4
        cut = record | {"metrics": record["metrics"] | {"rows": rows[:2], "complete": False}}
        out.with_suffix(".json").write_text(json.dumps(cut))
        fits = []
        real_fit = script.hashing.fit
        monkeypatch.setattr(
            script.hashing, "fit", lambda *a, **kw: fits.append(a[2].k) or real_fit(*a, **kw)
        )
        assert script.main([*argv, "--ks", "2,4", *devices]) == 0
        again = json.loads(out.with_suffix(".json").read_text())
        assert fits == [2, 4] and again["metrics"]["complete"]
        assert [(r["k_ci"], r["k"]) for r in again["metrics"]["rows"]] == [
            (1, 2), (1, 4), (4, 2), (4, 4),
        ]  # fmt: skip
        assert again["metrics"]["rows"][:2] == rows[:2]
        assert again["wall_time_s"] > record["wall_time_s"]
    assert all(0 <= r["clean"] <= 100 and r["epochs"] >= 1 for r in rows)


def test_bioconvhash_mnist_protocol_on_tfds_mock_mnist(tmp_path, monkeypatch):
    """The MNIST protocol (Table 3's MNIST row: F = 500, K = 3, 4, k_CI = 10) runs unchanged
    through the tfds loader on mock data, with a front end shrunk to fit the test."""
    script = load_script("bioconvhash")
    real = script.get_config
    full = real("mnist")
    assert full["conv"]["filters"] == 500 and full["conv"]["kernels"] == (3, 4)
    assert full["k_cis"] == (10,) and full["R"] is None and full["dataset"] == "mnist"

    def small(name, quick=False):
        cfg = real(name, quick)
        return cfg | {"conv": cfg["conv"] | {"filters": 12, "patches": 3000}, "k_cis": (4,)}

    monkeypatch.setattr(script, "get_config", small)
    out = tmp_path / "mnist"
    with mock_mnist(tmp_path, monkeypatch):
        argv = ["--experiment", "mnist", "--quick", "--ks", "2", "--out", str(out)]
        assert script.main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["dataset"]["spec"] == "mnist" and record["config"]["R"] is None
    assert "100 queries" in record["metrics"]["protocol"]  # 10 per class in --quick
    rows = record["metrics"]["rows"]
    assert [(r["method"], r["k"]) for r in rows] == [("bioconvhash", 2), ("biohash", 2)]
    # 28 x 28 greyscale: (28 - K + 1) conv, pool 7 stride 2 -> 10 x 10 and 10 x 10 per filter
    assert record["metrics"]["features"][0]["dim"] == 12 * (10 * 10 + 10 * 10)
    with np.load(tmp_path / "mnist_filters.npz", allow_pickle=False) as banks:
        assert banks["K3"].shape == (12, 9) and banks["K4"].shape == (12, 16)
    assert all(0 <= r["clean"] <= 100 for r in rows)


def test_hpca_experiment_runs_and_resumes(tmp_path, monkeypatch):
    """Lagani's study end to end on a tiny image set: pre-training once per seed (checkpointed),
    every (regime, method, layer) row, the layer chosen on validation, the paper beside ours;
    a second run with the same command finds every row done and trains nothing."""
    rng = np.random.default_rng(0)

    def images(n):
        y = rng.integers(0, 2, n)
        x = rng.integers(0, 100, (n, 32, 32, 3)) + 120 * y[:, None, None, None]
        return x.astype(np.uint8), y

    (xtr, ytr), (xte, yte) = images(96), images(20)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    script = load_script("hpca")
    real = script.get_config
    full = real("cifar10")
    assert full["regimes"] == (1, 2, 3, 4, 5, 10, 25, 100) and len(full["seeds"]) == 5
    assert full["finetune"]["weight_decay"] == 5e-2 and real("cifar100")["dataset"] == "cifar100"

    def tiny(name, quick=False):
        cfg = real(name, quick)
        return cfg | {
            "num_validation": 32,
            "regimes": (25, 100),
            "layers": (2, 5),
            "methods": ("none", "none_full", "vae", "hpca"),
            "seeds": (0,),
            "hebbian": cfg["hebbian"] | {"epochs": 1, "batch": 16},
            "vae": cfg["vae"] | {"epochs": 1, "batch": 16},
            "finetune": cfg["finetune"] | {"epochs": 1, "batch": 16},
            "nystroem": 16,
        }

    monkeypatch.setattr(script, "get_config", tiny)
    out, ckpt = tmp_path / "hpca", tmp_path / "ckpt"
    argv = ["--quick", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out", str(out)]
    assert script.main([*argv, "--checkpoints", str(ckpt)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    rows = record["metrics"]["rows"]
    methods = ("none", "none_full", "vae", "hpca")
    assert [(r["regime"], r["method"], r["layer"]) for r in rows] == [
        (p, m, layer) for p in (25, 100) for m in methods for layer in (2, 5)
    ]
    assert [r["labelled"] for r in rows[:1] + rows[-1:]] == [16, 64]  # of 64 training images
    for r in rows:  # Table 1's metric is mAP@k, k = min(100, database of 64) = 50 here
        assert r["map"] == r["map_at"]["50"] and r["map_R"] == r["map_by_normaliser"]["min"]
    full = [r for r in rows if r["method"] == "none_full"]  # one network a regime, every layer
    assert full[0]["val_accuracy_history"] == full[1]["val_accuracy_history"]
    summary = record["metrics"]["summary"]
    assert len(summary) == 8 and all(s["layers"][0] in (2, 5) for s in summary)
    table = out.with_suffix(".md").read_text()
    assert "| HPCA |" in table and "[27.29]" in table and "[80.01]" in table  # paper, 25 / 100 %
    assert "| None (full net) |" in table and "mAP@100" in table
    assert (ckpt / "seed0" / "hpca_lr0.001_b16_kv").is_dir() and (ckpt / "seed0" / "vae").is_dir()
    timing = record["metrics"]["timing"]
    assert timing["hpca_epochs_restored"] == [0] and len(timing["hebbian_epoch_s"]) == 1

    # a new study on the same checkpoints restores the pre-training: no per-epoch time for it
    other = tmp_path / "other"
    small = ["--regimes", "25", "--layers", "2", "--methods", "hpca"]
    argv2 = [*argv[:-1], str(other), *small, "--checkpoints", str(ckpt)]
    assert script.main(argv2) == 0
    timing = json.loads(other.with_suffix(".json").read_text())["metrics"]["timing"]
    assert timing["hpca_epochs_restored"] == [1] and timing["hebbian_epoch_s"] == []
    assert "hpca_epochs_restored: 1" in other.with_suffix(".md").read_text()

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(script.layerwise, "evaluate_layer", fail)
    monkeypatch.setattr(script.layerwise, "evaluate_full_network", fail)
    monkeypatch.setattr(script.hpca, "pretrain", fail)
    assert script.main([*argv, "--checkpoints", str(ckpt)]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["metrics"]["rows"] == rows and again["metrics"]["complete"]
