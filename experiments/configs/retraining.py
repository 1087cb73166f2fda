"""Tzelepi & Tefas' retraining for retrieval (Tables 7 / 8 / 10) on CIFAR-10.

    python experiments/main.py --config experiments/configs/retraining.py:cifar10,quick  # ~30 min
    python experiments/main.py --config experiments/configs/retraining.py:cifar10        # GPU

Any field can be overridden, e.g. ``--config.schemes=fu,rri --config.starts=supervised``.
Pipeline: ``hebbret.pipelines.retraining``; protocol: docs/retraining.md.

Paper (CIFAR-10, FC7, mAP / mAP@50): CaffeNet 25.33 / 52.10, FU 28.62 / 53.93, RRI 42.97 / 59.42,
RF 27.66 / 62.32, FU+RRI 45.85 / 60.44 (Table 7); KevinNet 60.24 / 84.70, RRI 69.89 / 85.19,
FU+RRI 72.85 / 85.32 (Table 8) (``hebbret.published.TZELEPI_CIFAR10``).

Full protocol: database = the 50k training images, 5 sets of 1,000 random test queries; starting
networks trained on all 50k training images (supervised: Lagani's recipe, 20 epochs; HPCA: 20
Hebbian epochs); cuts (FC6,FC7; FC7) = ``conv4+fc5:fc5`` and (FC6; FC6) = ``conv4:conv4``; Adam lr
1e-5, batch 64, 50 epochs per stage; FU n = 2, eta = 0.5; RRI beta = 0.2, 5 nearest irrelevant;
RF 1,000 users, 12 relevant + 1 irrelevant each, alpha = 0.5; QE top 10; SVQE on the baseline and
FU+RRI rows, shortlist 100.

``quick`` keeps every rule and setting above and shrinks the data and the training: a
5,000-image database and starting networks trained on 10,000 images (supervised 4 epochs, HPCA 1
Hebbian epoch), 200 queries in one set, 200 RF users, the (FC6,FC7; FC7) cut only, 5 retraining
epochs at lr 1e-4 (390 Adam steps a stage where the paper takes ~39,000 at 1e-5; the FU loss is
still falling at the end: ``--config.retrain.epochs=25`` trains five times longer), SVQE shortlist
20 on the baseline only. About 30 min on 2 CPU cores.
"""

from ml_collections import config_dict

from hebbret.data.presets import cifar10_spec


def get_config(arg: str = "cifar10") -> config_dict.ConfigDict:
    """``arg``: ``cifar10``, optionally followed by ``,quick``."""
    experiment, *flags = arg.split(",")
    if experiment != "cifar10" or set(flags) - {"quick"}:
        raise ValueError(f"unknown config {arg!r}: expected cifar10[,quick]")
    quick = "quick" in flags
    c = config_dict.ConfigDict()
    c.experiment, c.quick = experiment, quick
    c.dataset = cifar10_spec()
    c.seed = 0
    c.database = 5_000 if quick else 50_000
    c.queries = 200 if quick else 1_000
    c.query_sets = 1 if quick else 5
    c.starts = ("supervised", "hpca")
    # images the starting networks are trained on (0: all training images); validation images for
    # the supervised network's early stopping are the first of them
    c.train_images = 10_000 if quick else 0
    c.validation = 5_000
    c.supervised = {
        "epochs": 4 if quick else 20,
        "batch": 64,
        "lr": 1e-3,
        "hold": 2 if quick else 10,
    }
    c.supervised.halve_every = 1 if quick else 2
    c.hebbian = {"lr": 1e-3, "epochs": 1 if quick else 20, "batch": 64}
    c.cuts = ("conv4+fc5:fc5",) if quick else ("conv4+fc5:fc5", "conv4:conv4")
    c.schemes = ("fu", "rri", "rf", "fu+rri", "fu+rf", "fu+rri+rf")
    c.fu = {"n": 2, "eta": 0.5}
    c.rri = {"n": 5, "beta": 0.2, "theta": 0.5}
    c.rf = {"users": 200 if quick else 1_000, "relevant": 12, "irrelevant": 1, "alpha": 0.5}
    c.rf.depth = 1_000
    # iterative RF (§5.5: 3 rounds of 3 relevant + 3 irrelevant, 2 epochs a round); 0 rounds: off
    c.iterative_rf = {"rounds": 3, "relevant": 3, "irrelevant": 3, "epochs": 2}
    c.retrain = {"epochs": 5 if quick else 50, "batch": 64, "lr": 1e-4 if quick else 1e-5}
    c.qe_top = 10
    # QE with other list lengths, reported beside QE@qe_top (an ablation: QE helps when the top
    # of the list is mostly relevant)
    c.qe_ablation = ()
    c.svqe = ("baseline",) if quick else ("baseline", "fu+rri")
    c.svqe_shortlist = 20 if quick else 100
    return c
