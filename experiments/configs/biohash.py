"""BioHash (Ryali et al. 2020; docs/biohash.md): hashing mAP on raw pixels, methods x hash length.

    python experiments/main.py --config experiments/configs/biohash.py:table2,quick  # ~15 min here
    python experiments/main.py --config experiments/configs/biohash.py:table2  # 10k q x 50k, k 2-64
    python experiments/main.py --config experiments/configs/biohash.py:table1   # MNIST (tfds)
    python experiments/main.py --config experiments/configs/biohash.py:shadows  # Table 6
    python experiments/main.py --config experiments/configs/biohash.py:activity # Fig. 4

Overrides, e.g. ``--config.methods=lsh,biohash --config.ks=2,4 --config.rule.eps0=0.01
--config.seed=1``. Pipeline: ``hebbret.pipelines.biohash``.

Paper's numbers (Table 2, CIFAR-10 mAP@1000, k = 2 / 4 / 8 / 16 / 32 / 64): BioHash 20.47 /
21.61 / 22.61 / 23.35 / 24.02 / -, ITQ 12.85 ... (all rows: ``hebbret.published``).
``quick`` keeps the split, database and training set and shrinks: 10 % of the queries, k <= 16,
at most 30 BioHash epochs.
"""

from ml_collections import config_dict

from hebbret.data.presets import cifar10_spec
from hebbret.rules.biohash import RuleConfig

METHODS = ("lsh", "pcahash", "sh", "itq", "flyhash", "naivebiohash", "biohash")
EXPERIMENTS = ("table2", "table1", "shadows", "activity")


def get_config(arg: str = "table2") -> config_dict.ConfigDict:
    """``arg``: one of EXPERIMENTS, optionally followed by ``,quick``."""
    experiment, *flags = arg.split(",")
    if experiment not in EXPERIMENTS or set(flags) - {"quick"}:
        raise ValueError(f"unknown config {arg!r}: expected {'|'.join(EXPERIMENTS)}[,quick]")
    quick = "quick" in flags
    c = config_dict.ConfigDict()
    c.experiment, c.quick, c.seed = experiment, quick, 0
    c.dataset = cifar10_spec()
    c.queries_per_class = 1000
    c.R = config_dict.placeholder(int)
    c.R = 1000
    c.activity = 0.005
    c.ks = (2, 4, 8, 16, 32, 64)
    c.max_k = {"biohash": 32}  # the paper reports no BioHash k = 64 (m = 12,800)
    c.methods = METHODS
    c.paper = config_dict.placeholder(str)  # a table of hebbret.published, if any
    c.paper = "BIOHASH_CIFAR10_TABLE2"
    c.shadows = False
    c.activities = config_dict.placeholder(tuple)  # Fig. 4: sweep these activities instead
    c.validation = False  # score on 100 validation images per class of the training set
    c.query_subset = config_dict.placeholder(int)  # keep the first n queries of each class
    c.rule = RuleConfig()._asdict()
    c.rule.init_norm = config_dict.placeholder(float)
    if experiment == "table1":
        c.dataset, c.queries_per_class, c.R = "mnist", 100, None
        c.activity, c.paper = 0.05, "BIOHASH_MNIST_TABLE1"
    elif experiment == "shadows":
        c.shadows, c.paper = True, "BIOHASH_CIFAR10_TABLE6"
        c.methods = ("lsh", "pcahash", "sh", "itq", "flyhash", "biohash")  # Table 6's rows
    elif experiment == "activity":  # Fig. 4: m varied at fixed k, on validation images
        c.ks, c.methods, c.validation, c.paper = (8,), ("biohash",), True, None
        c.activities = (0.0025, 0.005, 0.01, 0.02, 0.05)
    if quick:
        c.query_subset = c.queries_per_class // 10
        c.rule.max_epochs = 30
        c.ks = tuple(k for k in c.ks if k <= 16)
    return c
