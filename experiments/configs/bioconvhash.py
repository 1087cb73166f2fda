"""BioConvHash experiments (Ryali et al. 2020, §2.4, appendices B and D; docs/biohash.md).

Commands (from the repository root):

    python experiments/bioconvhash.py --experiment table2 --quick   # CPU preset, see below
    python experiments/bioconvhash.py --experiment table2           # paper: F = 400, K = 3,4,10
    python experiments/bioconvhash.py --experiment kci [--quick]    # Table 3: k_CI sweep
    python experiments/bioconvhash.py --experiment mnist            # MNIST via tfds (offline: no)

``table2`` also scores the shadowed queries (Table 6) with the same filters, hash layer and
database codes, and runs BioHash on pixels on the same protocol for comparison.

The paper's front end gives D = 369 F = 147,600 features an image on CIFAR-10: 29.5 GB of float32
for the 50k database and ~0.9 TFLOP a BioHash-layer epoch at m = 400. ``--quick`` keeps the
protocol (same split and 50k database and training set, 100 of the 1,000 queries per class) and
the kernel sizes, k_CI and pooling, but learns F = 32 filters per kernel size (D = 11,808) from
200k patches, stops BioHash at 30 epochs and k <= 8 (a BioHash layer at k = 16, m = 3,200 on
11,808 features measured 23 s an epoch on 2 cores: run k = 16 with `--ks 16`).
"""

from configs.biohash import get_config as biohash_config

PAPER_CONV = {"filters": 400, "kernels": (3, 4, 10), "k_ci": 1, "pool": 7, "stride": 2}


def get_config(experiment: str, quick: bool = False) -> dict:
    """Settings for one experiment; ``quick`` shrinks F, the queries and the epochs."""
    protocol = ("dataset", "queries_per_class", "R", "activity", "max_epochs")
    cifar = {key: biohash_config("table2")[key] for key in protocol} | {
        "ks": (2, 4, 8, 16, 32),
        "conv": PAPER_CONV | {"patches": 500_000},
        "k_cis": (1,),
        "shadows": True,
        "baseline": True,
        "paper": "cifar10",
    }
    configs = {
        "table2": cifar,
        "kci": cifar
        | {"ks": (2, 4, 8, 16), "k_cis": (1, 5, 10, 25, 100), "shadows": False, "baseline": False},
        "mnist": cifar
        | {
            "dataset": "mnist",
            "queries_per_class": 100,
            "R": None,
            "activity": 0.05,
            "conv": {"filters": 500, "kernels": (3, 4), "k_ci": 10, "pool": 7, "stride": 2}
            | {"patches": 500_000},
            "k_cis": (10,),
            "shadows": False,
            "paper": "mnist",
        },
    }
    if experiment not in configs:
        raise KeyError(f"unknown experiment {experiment!r}: expected one of {sorted(configs)}")
    cfg = configs[experiment]
    if quick:
        filters = 32
        cfg = cfg | {
            "query_subset": cfg["queries_per_class"] // 10,
            "max_epochs": 30,
            "ks": tuple(k for k in cfg["ks"] if k <= 8),
            "conv": cfg["conv"] | {"filters": filters, "patches": 200_000},
            "k_cis": tuple(k for k in cfg["k_cis"] if k <= filters),
        }
    return dict(cfg)
