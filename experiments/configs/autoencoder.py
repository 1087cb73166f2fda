"""Gosthipaty's auto-encoder latent retrieval: NMI / RI of k-means clusters, cluster-then-rank.

    python experiments/main.py --config experiments/configs/autoencoder.py:cifar10,quick  # 35 min
    python experiments/main.py --config experiments/configs/autoencoder.py:cifar10  # ~16 h here

Any field can be overridden, e.g. ``--config.protocols=paper --config.train.weight=0.1``.
Pipeline: ``hebbret.pipelines.autoencoder``; method and our choices: docs/autoencoder_retrieval.md.

Report's numbers (CIFAR-10, 57k / 3k split, k-means with 10 clusters on the training
embeddings): vanilla NMI 0.074, RI 0.811; with a classification head ("a hint of supervision")
NMI 0.433, RI 0.876 (``hebbret.published.GOSTHIPATY_CIFAR10``). No mAP is reported.

Full protocol: the report's split (300 queries per class, 57k database) and the library's
CIFAR-10 protocol (1,000 per class, 50k), each with its own two auto-encoders trained for 20
epochs on its database. ``quick``: the report's split only, a 10,000-image random subset of its
database, 5 epochs, t-SNE of 1,000 points.
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
    c.protocols = ("paper",) if quick else ("paper", "biohash")
    c.variants = ("vanilla", "supervised")
    c.database = 10_000 if quick else 0  # 0: the protocol's whole database
    c.clusters = 10
    c.tsne_points = 1_000 if quick else 2_000  # 0: no t-SNE
    # ours where the report gives "Adam with default settings" only (autoencoder.AEConfig)
    c.train = {"epochs": 5 if quick else 20, "batch": 64, "lr": 1e-3, "weight": 1.0}
    return c
