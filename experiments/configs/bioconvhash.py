"""BioConvHash (Ryali et al. 2020, §2.4, appendices B and D; docs/biohash.md).

    python experiments/main.py --config experiments/configs/bioconvhash.py:table2,quick  # ~25 min
    python experiments/main.py --config experiments/configs/bioconvhash.py:table2  # F=400, K=3,4,10
    python experiments/main.py --config experiments/configs/bioconvhash.py:kci     # Table 3: k_CI
    python experiments/main.py --config experiments/configs/bioconvhash.py:mnist   # MNIST (tfds)

``table2`` also scores the shadowed queries (Table 6) with the same filters, hash layer and
database codes, and runs BioHash on pixels on the same protocol (``baseline``). Overrides, e.g.
``--config.ks=16 --config.conv.filters=64 --config.baseline=False``. Pipeline:
``hebbret.pipelines.bioconvhash``.

Paper's numbers (CIFAR-10 mAP@1000, k = 2 / 4 / 8 / 16 / 32): BioConvHash 26.94 / 27.82 / 29.34 /
29.74 / 30.10 (Table 2), shadows 26.84 / ... (Table 6): ``hebbret.published``.

The paper's front end gives D = 369 F = 147,600 features an image on CIFAR-10: 29.5 GB of float32
for the 50k database and ~0.9 TFLOP a BioHash-layer epoch at m = 400. ``quick`` keeps the protocol
(same split, 50k database and training set, 100 of the 1,000 queries per class), the kernel
sizes, k_CI and pooling, but learns F = 32 filters per kernel size (D = 11,808) from 200k patches,
stops BioHash at 30 epochs and k <= 8.
"""

from ml_collections import config_dict

from hebbret.data.presets import cifar10_spec
from hebbret.rules.biohash import RuleConfig

PAPER_CONV = {"filters": 400, "kernels": (3, 4, 10), "k_ci": 1, "pool": 7, "stride": 2}
EXPERIMENTS = ("table2", "kci", "mnist")


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
    c.query_subset = config_dict.placeholder(int)  # keep the first n queries of each class
    c.activity = 0.005
    c.ks = (2, 4, 8, 16, 32)
    c.conv = PAPER_CONV | {"patches": 500_000}
    c.k_cis = (1,)
    c.shadows = True
    c.baseline = True  # BioHash on pixels, same protocol
    c.paper = "cifar10"  # whose published numbers go beside ours: cifar10, mnist or none
    c.rule = RuleConfig()._asdict()
    c.rule.init_norm = config_dict.placeholder(float)
    # cap on the BioHash layers' epochs (the filters keep rule.max_epochs); None: the rule's
    c.layer_max_epochs = config_dict.placeholder(int)
    if experiment == "kci":
        c.ks, c.k_cis, c.shadows, c.baseline = (2, 4, 8, 16), (1, 5, 10, 25, 100), False, False
    elif experiment == "mnist":
        c.dataset, c.queries_per_class, c.R, c.activity = "mnist", 100, None, 0.05
        c.conv = {"filters": 500, "kernels": (3, 4), "k_ci": 10, "pool": 7, "stride": 2}
        c.conv.patches = 500_000
        c.k_cis, c.shadows, c.paper = (10,), False, "mnist"
    if quick:
        c.query_subset = c.queries_per_class // 10
        c.rule.max_epochs = 30
        c.ks = tuple(k for k in c.ks if k <= 8)
        c.conv.update({"filters": 32, "patches": 200_000})
        c.k_cis = tuple(k for k in c.k_cis if k <= 32)
    return c
