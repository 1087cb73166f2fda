"""Study pipelines end to end on tiny data, shrunk by config overrides, through
``experiments/main.py`` and ``hebbret.pipelines.*.run``; numbers checked against values computed
here independently (numpy codes, numpy AP, scipy confidence intervals)."""

import contextlib
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest
import scipy.stats
import tensorflow_datasets as tfds
from test_data import mock_getitems, write_tfds_metadata
from test_retrieval import np_bits_distance, np_exact_retrieved

from hebbret import data, hashing
from hebbret.data import splits
from hebbret.errors import InputError
from hebbret.hashing import bioconv
from hebbret.pipelines import bioconvhash as bioconvhash_pipeline
from hebbret.pipelines import biohash as biohash_pipeline
from hebbret.pipelines import hpca as hpca_pipeline
from hebbret.rules.biohash import RuleConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _module(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(name: str, arg: str):
    """``experiments/configs/<name>.py:<arg>`` as a ConfigDict."""
    return _module(ROOT / "experiments" / "configs" / f"{name}.py", f"config_{name}").get_config(
        arg
    )


def main(argv: list[str]) -> int:
    return _module(ROOT / "experiments" / "main.py", "experiments_main").main(argv)


@contextlib.contextmanager
def mock_mnist(tmp_path, monkeypatch):
    """tfds ``mnist`` answered by mock data (700 examples a split) while the block runs."""
    write_tfds_metadata("mnist", tmp_path / "tfds", "array_record")
    monkeypatch.setattr("tensorflow_datasets.testing.mocking._getitems", mock_getitems)
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=700, policy=policy, data_dir=str(tmp_path / "tfds")):
        yield


def np_hamming_map(codes_q, codes_b, yq, yb, r):
    """mAP@R (percent), expected AP over tie orders, from a plain numpy Hamming matrix."""
    d = np_bits_distance(codes_q, codes_b, "hamming")
    r = min(r or len(yb), len(yb))
    return 100 * np.mean([np_exact_retrieved(d[i], yb == yq[i], r) for i in range(len(yq))])


# ------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("arg", ["table2", "table1", "shadows", "activity"])
def test_biohash_quick_presets_keep_the_protocol(arg):
    quick, full = config("biohash", f"{arg},quick"), config("biohash", arg)
    assert quick.R == full.R and quick.activity == full.activity
    assert quick.queries_per_class == full.queries_per_class and quick.dataset == full.dataset
    assert max(quick.ks) <= 16 and quick.rule.max_epochs <= full.rule.max_epochs


def test_config_files_reject_unknown_arguments():
    for name in ("biohash", "bioconvhash", "hpca"):
        with pytest.raises(ValueError, match="unknown config"):
            config(name, "nonsense")


def test_main_rejects_options_a_study_does_not_take(tmp_path):
    cfg = f"{ROOT}/experiments/configs/biohash.py:table2,quick"
    with pytest.raises(InputError, match="takes no --checkpoints"):
        main(["--config", cfg, "--checkpoints", str(tmp_path), "--out", str(tmp_path / "x")])


# ------------------------------------------------------------------------------ BioHash


def test_biohash_table1_on_tfds_mock_mnist_through_main(tmp_path, monkeypatch):
    """Table 1 (MNIST via tfds) runs unchanged: 100 queries per class, mAP@All, the paper's
    numbers beside ours; the LSH row equals numpy sign codes ranked by a numpy AP."""
    out = tmp_path / "t1"
    argv = [
        "--config",
        f"{ROOT}/experiments/configs/biohash.py:table1,quick",
        "--config.methods=lsh,biohash",
        "--config.ks=2,8",
        "--out",
        str(out),
    ]
    with mock_mnist(tmp_path, monkeypatch):
        assert main(argv) == 0
        ds = data.load("mnist", progress=False)
    record = json.loads(out.with_suffix(".json").read_text())
    rows = record["metrics"]["rows"]
    assert [(r["method"], r["k"]) for r in rows] == [("lsh", 2), ("lsh", 8)] + [
        ("biohash", 2),
        ("biohash", 8),
    ]
    assert record["config"]["R"] is None and record["dataset"]["spec"] == "mnist"
    assert "100 queries" in record["metrics"]["protocol"]  # 10 per class in quick
    table = out.with_suffix(".md").read_text()
    assert "| BioHash |" in table and "(44.38)" in table  # the paper's MNIST k=2 number
    assert table.startswith("`python experiments/main.py --config")

    proto = biohash_pipeline.protocol(ds, dict(record["config"]))
    xb = proto.xb.astype(np.float64)
    proj = np.asarray(jax.random.normal(jax.random.key(0), (8, xb.shape[1])), np.float64)
    mean = proto.xb.astype(np.float32).mean(0, dtype=np.float64)
    cq, cb = ((x - mean) @ proj.T > 0 for x in (proto.xq.astype(np.float64), xb))
    expected = np_hamming_map(cq, cb, proto.yq, proto.yb, None)
    assert rows[1]["map"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("experiment", ["shadows", "activity"])
def test_biohash_shadows_and_activity_sweep_on_digits(experiment, tmp_path):
    """Table 6 and Fig. 4 on the embedded digits: shadows print Table 6's numbers, the sweep
    scores every activity on the validation split and plots it; a rerun resumes (no new row)."""
    cfg = config("biohash", f"{experiment},quick")
    cfg.update({"dataset": "digits", "queries_per_class": 20, "query_subset": None})
    if experiment == "shadows":
        cfg.update({"methods": ("lsh", "biohash"), "ks": (2, 4)})
    out = str(tmp_path / experiment)
    record = biohash_pipeline.run(cfg, out, log=lambda line: None)
    rows, table = record["metrics"]["rows"], pathlib.Path(f"{out}.md").read_text()
    assert record["metrics"]["complete"] and "Partial" not in table
    assert "scikit-learn digits" in table
    if experiment == "shadows":
        assert "shadows" in record["metrics"]["protocol"] and "(10.62)" in table
        assert [(r["method"], r["k"]) for r in rows] == [
            (m, k) for m in ("lsh", "biohash") for k in (2, 4)
        ]
    else:
        assert "1000 queries (validation" in record["metrics"]["protocol"]
        assert [r["activity"] for r in rows] == [0.0025, 0.005, 0.01, 0.02, 0.05]
        assert [r["bits"] for r in rows] == [3200, 1600, 800, 400, 160]
        assert "Best on validation" in table and pathlib.Path(f"{out}.png").stat().st_size > 0
    again = biohash_pipeline.run(cfg, out, log=lambda line: None)
    assert again["metrics"]["rows"] == rows


# ------------------------------------------------------------------------------ HPCA


def _tiny_images(tmp_path) -> str:
    rng = np.random.default_rng(0)

    def images(n):
        y = rng.integers(0, 2, n)
        x = rng.integers(0, 100, (n, 32, 32, 3)) + 120 * y[:, None, None, None]
        return x.astype(np.uint8), y

    (xtr, ytr), (xte, yte) = images(96), images(20)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return f"npz:{tmp_path / 'd.npz'}"


def test_hpca_study_runs_resumes_and_summarises(tmp_path, monkeypatch):
    """Lagani's study end to end on 96 tiny images, two seeds: pre-training once per seed
    (checkpointed), every (regime, method, layer) row, the layer chosen on validation, mean and
    95 % CI over seeds equal to a scipy computation from the rows; a rerun trains nothing."""
    full = config("hpca", "cifar10")
    assert full.regimes == (1, 2, 3, 4, 5, 10, 25, 100) and len(full.seeds) == 5
    assert full.finetune.weight_decay == 5e-2 and config("hpca", "cifar100").dataset == "cifar100"
    cfg = config("hpca", "cifar10,quick")
    cfg.update({"dataset": _tiny_images(tmp_path), "num_validation": 32, "regimes": (100,)})
    cfg.update({"layers": (2, 5), "methods": ("none", "none_full", "vae", "hpca")})
    cfg.update({"seeds": (0, 1), "nystroem": 16})
    cfg.hebbian.update({"epochs": 1, "batch": 16})
    cfg.vae.update({"epochs": 1, "batch": 16})
    cfg.finetune.update({"epochs": 1, "batch": 16})
    out, ckpt = tmp_path / "hpca", tmp_path / "ckpt"
    record = hpca_pipeline.run(cfg, str(out), checkpoint_root=ckpt, log=lambda line: None)
    rows = record["metrics"]["rows"]
    methods = ("none", "none_full", "vae", "hpca")
    assert [(r["seed"], r["method"], r["layer"]) for r in rows] == [  # baselines of all seeds first
        (s, m, layer) for part in (methods[:2], methods[2:]) for s in (0, 1) for m in part
        for layer in (2, 5)
    ]  # fmt: skip
    assert {r["labelled"] for r in rows} == {64}  # 100 % of 96 - 32 validation images
    for r in rows:  # Table 1's metric is mAP@k, k = min(100, database of 64) = 50 here
        assert r["map"] == r["map_at"]["50"] and r["map_R"] == r["map_by_normaliser"]["min"]
    net = [r for r in rows if r["method"] == "none_full" and r["seed"] == 0]
    assert net[0]["val_accuracy_history"] == net[1]["val_accuracy_history"]  # one network

    for entry in record["metrics"]["summary"]:
        chosen = []
        for seed in (0, 1):
            mine = [r for r in rows if (r["method"], r["seed"]) == (entry["method"], seed)]
            chosen.append(max(mine, key=lambda r: (r["val_map"], -r["layer"])))
        assert entry["layers"] == [r["layer"] for r in chosen]
        values = np.array([r["map"] for r in chosen])
        half = scipy.stats.t.ppf(0.975, 1) * values.std(ddof=1) / np.sqrt(2)
        assert entry["map"] == pytest.approx(values.mean(), abs=1e-9)
        assert entry["map_ci95"] == pytest.approx(half, abs=1e-9)
    table = out.with_suffix(".md").read_text()
    assert "| HPCA |" in table and "[80.01]" in table  # the paper's 100 % number
    assert "| None (full net) |" in table and "mAP@100" in table
    assert (ckpt / "seed0" / "hpca_lr0.001_b16_kv").is_dir() and (ckpt / "seed1" / "vae").is_dir()
    assert record["metrics"]["timing"]["hpca_epochs_restored"] == [0, 0]

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    for name in ("evaluate_layer", "evaluate_full_network"):
        monkeypatch.setattr(hpca_pipeline.layerwise, name, fail)
    monkeypatch.setattr(hpca_pipeline.hpca_train, "pretrain", fail)
    again = hpca_pipeline.run(cfg, str(out), checkpoint_root=ckpt, log=lambda line: None)
    assert again["metrics"]["rows"] == rows and again["metrics"]["complete"]


def test_hpca_new_study_restores_pretraining_from_checkpoints(tmp_path):
    """A second study on the same checkpoint folder restores the Hebbian network (no epoch
    run, so no per-epoch time), through experiments/main.py."""
    dataset = _tiny_images(tmp_path)
    common = [
        "--config",
        f"{ROOT}/experiments/configs/hpca.py:cifar10,quick",
        f"--config.dataset={dataset}",
        "--config.num_validation=32",
        "--config.regimes=100",
        "--config.layers=2",
        "--config.methods=hpca",
        "--config.nystroem=16",
        "--config.hebbian.batch=16",
        "--config.finetune.epochs=1",
        "--config.finetune.batch=16",
        "--checkpoints",
        str(tmp_path / "ckpt"),
    ]
    for name, restored in (("first", 0), ("second", 1)):
        out = tmp_path / name
        assert main([*common, "--out", str(out)]) == 0
        timing = json.loads(out.with_suffix(".json").read_text())["metrics"]["timing"]
        assert timing["hpca_epochs_restored"] == [restored]
        assert len(timing["hebbian_epoch_s"]) == 1 - restored
    assert "hpca_epochs_restored: 1" in (tmp_path / "second.md").read_text()


# ------------------------------------------------------------------------------ BioConvHash


def _small_conv(cfg, kci: bool = False):
    cfg.update({"dataset": "digits", "queries_per_class": 20, "query_subset": None, "ks": (2, 4)})
    cfg.conv.update({"filters": 16, "kernels": (3,), "k_ci": 1, "pool": 2, "stride": 1})
    cfg.conv.patches = 5000
    cfg.k_cis = (1, 4) if kci else (1,)
    return cfg


def test_bioconvhash_table2_on_digits_equals_the_one_shot_hasher(tmp_path):
    """Table 2 + shadows + BioHash on pixels on digits with a small front end; the paper's
    numbers beside ours; the filters saved and plotted; the BioConvHash row (front end learned
    once, one layer per k) equals ``hashing.fit("bioconvhash")`` ranked by a numpy AP."""
    cfg = _small_conv(config("bioconvhash", "table2,quick"))
    out = tmp_path / "table2"
    record = bioconvhash_pipeline.run(cfg, str(out), log=lambda line: None)
    rows, table = record["metrics"]["rows"], out.with_suffix(".md").read_text()
    assert record["metrics"]["complete"]
    assert [(r["method"], r["k"]) for r in rows] == [
        ("bioconvhash", 2),
        ("bioconvhash", 4),
        ("biohash", 2),
        ("biohash", 4),
    ]
    assert all("shadows" in r and 0 <= r["shadows"] <= 100 for r in rows)
    assert "| BioConvHash | " in table and "(26.94)" in table and "(26.84)" in table
    assert "BioHash (pixels), shadows" in table and "(11.05)" in table
    assert [f["kernel"] for f in record["metrics"]["filters"]] == [3]
    assert (tmp_path / "table2_filters_K3.png").stat().st_size > 0
    with np.load(tmp_path / "table2_filters.npz", allow_pickle=False) as banks:
        assert list(banks) == ["K3"] and banks["K3"].shape == (16, 3 * 3 * 1)
        filters = banks["K3"]

    ds = data.load("digits", progress=False)
    proto = splits.class_query_protocol(ds, 20, cfg.R, 0)
    images = ds.pooled().x
    hcfg = hashing.HashConfig(
        k=2,
        activity=cfg.activity,
        rule=RuleConfig(**cfg.rule.to_dict()),
        conv=bioconv.ConvConfig(**cfg.conv.to_dict()),
    )
    params = hashing.fit("bioconvhash", images[proto.database], hcfg, key=jax.random.key(0))
    np.testing.assert_array_equal(params.filters[0], filters)
    cq = hashing.encode("bioconvhash", params, images[proto.queries]).bits
    cb = hashing.encode("bioconvhash", params, images[proto.database]).bits
    expected = np_hamming_map(cq, cb, proto.yq, proto.yb, proto.R)
    assert rows[0]["clean"] == pytest.approx(expected, abs=1e-4)


def test_bioconvhash_kci_sweep_resumes_on_two_devices(tmp_path, monkeypatch):
    """The k_CI sweep on digits, minibatches split over 2 devices: Table 3's numbers where the
    paper has a k_CI; an interrupted sweep rerun with the same config adds only what is missing."""
    cfg = _small_conv(config("bioconvhash", "kci,quick"), kci=True)
    out = tmp_path / "kci"
    record = bioconvhash_pipeline.run(cfg, str(out), devices=2, log=lambda line: None)
    rows, table = record["metrics"]["rows"], out.with_suffix(".md").read_text()
    assert [(r["k_ci"], r["k"]) for r in rows] == [(1, 2), (1, 4), (4, 2), (4, 4)]
    line = {
        int(x.split("k_CI = ")[1].split(" ")[0]): x for x in table.splitlines() if "k_CI =" in x
    }
    assert "(26.94)" in line[1] and "(" not in line[4].split("|", 2)[2]  # Table 3 has no 4
    assert "shadows" not in rows[0]

    cut = record | {"metrics": record["metrics"] | {"rows": rows[:2], "complete": False}}
    out.with_suffix(".json").write_text(json.dumps(cut))
    fits = []
    real_fit = hashing.fit
    monkeypatch.setattr(
        bioconvhash_pipeline.hashing,
        "fit",
        lambda *a, **kw: fits.append(a[2].k) or real_fit(*a, **kw),
    )

    def relearn(*args, **kwargs):
        raise AssertionError("the filters of the resumed run are learned again")

    monkeypatch.setattr(bioconvhash_pipeline.conv_hash, "learn_front_end", relearn)
    again = bioconvhash_pipeline.run(cfg, str(out), devices=2, log=lambda line: None)
    assert fits == [2, 4] and again["metrics"]["complete"]
    assert again["metrics"]["filters"] == record["metrics"]["filters"]  # read back, not learned
    assert [(r["k_ci"], r["k"]) for r in again["metrics"]["rows"]] == [
        (1, 2),
        (1, 4),
        (4, 2),
        (4, 4),
    ]
    assert again["metrics"]["rows"][:2] == rows[:2]
    # the restored filters give the rows the learned ones gave
    assert [r["clean"] for r in again["metrics"]["rows"][2:]] == [r["clean"] for r in rows[2:]]
    assert again["wall_time_s"] > record["wall_time_s"]


def test_bioconvhash_mnist_protocol_on_tfds_mock_mnist(tmp_path, monkeypatch):
    """The MNIST protocol (Table 3's MNIST row: F = 500, K = 3, 4, k_CI = 10) runs unchanged
    through the tfds loader on mock data, with a front end shrunk by config overrides."""
    full = config("bioconvhash", "mnist")
    assert full.conv.filters == 500 and full.conv.kernels == (3, 4)
    assert full.k_cis == (10,) and full.R is None and full.dataset == "mnist"
    out = tmp_path / "mnist"
    argv = [
        "--config",
        f"{ROOT}/experiments/configs/bioconvhash.py:mnist,quick",
        "--config.conv.filters=12",
        "--config.conv.patches=3000",
        "--config.k_cis=4",
        "--config.ks=2",
        "--out",
        str(out),
    ]
    with mock_mnist(tmp_path, monkeypatch):
        assert main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["dataset"]["spec"] == "mnist" and record["config"]["R"] is None
    assert "100 queries" in record["metrics"]["protocol"]  # 10 per class in quick
    rows = record["metrics"]["rows"]
    assert [(r["method"], r["k"]) for r in rows] == [("bioconvhash", 2), ("biohash", 2)]
    # 28 x 28 greyscale: (28 - K + 1) conv, pool 7 stride 2 -> 10 x 10 and 10 x 10 per filter
    assert record["metrics"]["features"][0]["dim"] == 12 * (10 * 10 + 10 * 10)
    with np.load(tmp_path / "mnist_filters.npz", allow_pickle=False) as banks:
        assert banks["K3"].shape == (12, 9) and banks["K4"].shape == (12, 16)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["biohash.py:table2", "--config.ks=a,b"], "config.ks must be integers"),
        (["bioconvhash.py:kci", "--config.k_cis=0"], "config.k_cis must be integers"),
        (["hpca.py:cifar10", "--config.layers=0"], "config.layers must be integers"),
        (["hpca.py:cifar10", "--config.methods=none,hebbian"], "unknown methods"),
        (["biohash.py:table2", "--config.nope=1"], "no such config field"),
    ],
)
def test_bad_overrides_fail_before_any_data_is_loaded(argv, message, tmp_path):
    """The dataset named here does not exist: the error must be about the override."""
    spec, *overrides = argv
    args = ["--config", f"{ROOT}/experiments/configs/{spec}", *overrides]
    args += ["--config.dataset=npz:/nonexistent.npz", "--out", str(tmp_path / "x")]
    with pytest.raises(InputError, match=message):
        main(args)


def test_bioconvhash_layer_epoch_cap_and_no_paper(tmp_path):
    """``layer_max_epochs`` stops the BioHash layers early (a CPU budget, said in the report)
    and leaves the filters' rule alone; ``paper="none"`` puts no published numbers beside ours
    (a stand-in dataset); bad values are refused before any data is loaded."""
    cfg = _small_conv(config("bioconvhash", "table2,quick"))
    cfg.update({"ks": (2,), "shadows": False, "baseline": False, "layer_max_epochs": 1})
    cfg.paper = "none"
    out = tmp_path / "capped"
    record = bioconvhash_pipeline.run(cfg, str(out), log=lambda line: None)
    assert [r["epochs"] for r in record["metrics"]["rows"]] == [1]
    assert record["metrics"]["filters"][0]["epochs"] > 1
    table = out.with_suffix(".md").read_text()
    assert "stopped after at most 1 epochs" in table and "No paper's numbers" in table
    assert "(26.94)" not in table
    cfg.dataset = "no-such-dataset"
    for field, bad in (("layer_max_epochs", 0), ("paper", "cifar100")):
        wrong = cfg.to_dict() | {field: bad}
        with pytest.raises(InputError, match=field):
            bioconvhash_pipeline.run(wrong, str(tmp_path / "bad"), log=lambda line: None)
