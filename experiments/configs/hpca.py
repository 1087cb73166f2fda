"""Hebbian PCA pre-training + fine-tuning for retrieval (Lagani et al.).

Commands (from the repository root):

    python experiments/hpca.py --quick                # CPU preset, < 40 min on 2 cores
    python experiments/hpca.py                        # Table 1, CIFAR-10 (JPEG), full protocol
    python experiments/hpca.py --experiment cifar100  # Table 2 via tfds (prepared data)

Full protocol: 5 data seeds; labelled fractions 1, 2, 3, 4, 5, 10, 25, 100 % of the 40k training
images; layers 1-5; no pre-training / beta-VAE / HPCA; 20 Hebbian epochs, 20 VAE epochs, 20
fine-tuning epochs; database = the 40k training images, queries = the 10k test images, layer chosen
on the 10k validation images. That is 5 x 8 x 5 x 3 = 600 fine-tuning runs: about 140 h on a 2-core
CPU, estimated from measured per-epoch throughput (results/hpca_benchmark.md); not timed on a GPU.

``--quick`` (one seed, layers 3 and 5, no pre-training vs HPCA) keeps the split, the labelled
counts (400 / 2,000 / 4,000 images), the network and the rules, and shrinks: 1 Hebbian epoch, 10
fine-tuning epochs (lr 1e-3 for 5, then halved every epoch), 2,000 validation images for early
stopping and layer choice, a 10,000-image database (R = 1,000) and 2,000 test queries. Regime 25 %
(10k labelled images) alone would cost ~35 min of fine-tuning on 2 cores, so the quick preset stops
at 10 %, which still shows the paper's crossover region.
"""

from hebbret.data.presets import cifar10_spec

PAPER_FINETUNE = {"epochs": 20, "batch": 64, "lr": 1e-3, "hold": 10, "halve_every": 2}


def get_config(experiment: str = "cifar10", quick: bool = False) -> dict:
    """Settings for one experiment; ``quick`` shrinks the epochs, seeds, regimes and sets."""
    cifar10 = {
        "dataset": cifar10_spec(),
        "num_validation": 10_000,
        "regimes": (1, 2, 3, 4, 5, 10, 25, 100),
        "layers": (1, 2, 3, 4, 5),
        # none: a fresh head on layer L (the paper's text); none_full: the whole network trained
        # once and scored at bn_L (the authors' code)
        "methods": ("none", "none_full", "vae", "hpca"),
        # Table 1's metric: the authors' MAPMetric at the paper's tag, mAP@100 normalised by
        # min(100, relevant) (hebbret.nets.layerwise); mAP@R and mAP@All are extra columns
        "metric": "mAP@100 (min)",
        "seeds": (0, 1, 2, 3, 4),
        "hebbian": {"lr": 1e-3, "epochs": 20, "batch": 64},
        # the authors' Hebbian network: bn3-bn5 keep relative channel variance (their
        # modified_bn), in pre-training and in fine-tuning the HPCA network
        "hpca_keep_variance": True,
        "vae": {"epochs": 20, "batch": 64, "lr": 1e-3, "beta": 0.5},
        "finetune": PAPER_FINETUNE | {"weight_decay": 5e-2},
        "database": None,  # None: all training images
        "queries": None,  # None: all test images
        "val_queries": None,  # None: all validation images
        "nystroem": 1000,
        "paper": "cifar10",
    }
    configs = {
        "cifar10": cifar10,
        "cifar100": cifar10
        | {
            "dataset": "cifar100",
            "finetune": PAPER_FINETUNE | {"weight_decay": 1e-2},
            "paper": "cifar100",
        },
    }
    if experiment not in configs:
        raise KeyError(f"unknown experiment {experiment!r}: expected one of {sorted(configs)}")
    cfg = configs[experiment]
    if quick:
        cfg = cfg | {
            "regimes": (1, 5, 10),
            "layers": (3, 5),
            "methods": ("none", "none_full", "hpca"),
            "seeds": (0,),
            "hebbian": cfg["hebbian"] | {"epochs": 1},
            "finetune": cfg["finetune"] | {"epochs": 10, "hold": 5, "halve_every": 1},
            "database": 10_000,
            "queries": 2_000,
            "val_queries": 2_000,
        }
    return dict(cfg)
