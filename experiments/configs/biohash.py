"""BioHash experiments (Ryali et al. 2020; docs/biohash.md). One config per table.

Commands (from the repository root; --quick shrinks everything for a 2-core CPU):

    python experiments/biohash.py --experiment table2 --quick   # ~15 min on 2 cores
    python experiments/biohash.py --experiment table2           # full: 10k queries x 50k, k=2..64
    python experiments/biohash.py --experiment table1           # MNIST via tfds (needs a prepared
                                                                # tfds mnist; cannot run offline)
    python experiments/biohash.py --experiment shadows          # Table 6
    python experiments/biohash.py --experiment activity         # Fig. 4: activity on validation

Paper numbers: hebbret.published.
"""

from hebbret.data.presets import cifar10_spec

METHODS = ("lsh", "pcahash", "sh", "itq", "flyhash", "naivebiohash", "biohash")


def get_config(experiment: str, quick: bool = False) -> dict:
    """Settings for one experiment; ``quick`` keeps the protocol but shrinks its size."""
    cifar = {
        "dataset": cifar10_spec(),
        "queries_per_class": 1000,
        "R": 1000,
        "activity": 0.005,
        "ks": (2, 4, 8, 16, 32, 64),
        "max_k": {"biohash": 32},  # the paper reports no BioHash k = 64 (m = 12,800)
        "methods": METHODS,
        "max_epochs": 100,
        "paper": "BIOHASH_CIFAR10_TABLE2",
        "shadows": False,
        "activities": (),
    }
    configs = {
        "table2": cifar,
        "table1": cifar
        | {
            "dataset": "mnist",
            "queries_per_class": 100,
            "R": None,
            "activity": 0.05,
            "paper": "BIOHASH_MNIST_TABLE1",
        },
        "shadows": cifar
        | {
            "shadows": True,
            "methods": ("lsh", "pcahash", "sh", "itq", "flyhash", "biohash"),  # Table 6's rows
            "paper": "BIOHASH_CIFAR10_TABLE6",
        },
        # Fig. 4: m varied at fixed k; trained on 49k, scored on 1k validation images (100/class)
        "activity": cifar
        | {
            "ks": (8,),
            "methods": ("biohash",),
            "validation": True,
            "paper": None,
            "activities": (0.0025, 0.005, 0.01, 0.02, 0.05),
        },
    }
    if experiment not in configs:
        raise KeyError(f"unknown experiment {experiment!r}: expected one of {sorted(configs)}")
    cfg = configs[experiment]
    if quick:  # same split, database and training set; 10 % of the queries, k <= 16, <= 30 epochs
        cfg = cfg | {
            "query_subset": cfg["queries_per_class"] // 10,
            "max_epochs": 30,
            "ks": tuple(k for k in cfg["ks"] if k <= 16),
        }
    return dict(cfg)
