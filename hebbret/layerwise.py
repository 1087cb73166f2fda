"""Layer-wise retrieval evaluation of a pre-trained network (Lagani et al. §4; SPEC §2).

For a layer L: cut the network after L, put a fresh head on it, fine-tune end to end on the
labelled images (:func:`hebbret.finetune.finetune`), then rank the database by distance between
layer-L features (after BN). The metric is AP@R with R = database items per class (4,000 for the
40k CIFAR-10 training images) normalised by ``min(R, relevant)`` (the authors' ``MAPMetric``),
ranked by Euclidean distance (the paper's text) and, as the authors' code does, by Euclidean
distance after a Nystroem RBF feature map with 1,000 components fitted on the database (sklearn's
default ``gamma = 1 / D``). The layer is chosen on validation queries (:func:`select_layer`); runs
over data seeds are summarised with a t-based 95 % confidence interval
(:func:`confidence_interval`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from scipy import stats
from sklearn.kernel_approximation import Nystroem

from hebbret import convnet, finetune, retrieval
from hebbret.errors import InputError

Pair = tuple[np.ndarray, np.ndarray]


def evaluate_layer(
    key: jax.Array,
    depth: int,
    pretrained: dict | None,
    labelled: Pair,
    val: Pair,
    database: Pair,
    queries: Pair,
    mean: np.ndarray,
    std: np.ndarray,
    cfg: finetune.FinetuneConfig = finetune.FinetuneConfig(),  # noqa: B008  (immutable)
    *,
    num_classes: int,
    nystroem_components: int | None = 1000,
    keep_variance: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fine-tunes ``Net(depth)`` (from ``pretrained`` layers, or from scratch when None) and
    scores layer-``depth`` features for retrieval.

    Args:
      key: PRNG key (head initialisation, shuffling, dropout).
      depth: L in 1..5.
      pretrained: variables whose layers 1..L are copied in (:func:`convnet.transplant`), or None.
      labelled: (n, 32, 32, 3) uint8 images and labels to fine-tune on.
      val: validation images and labels (early stopping and layer choice; also queries).
      database, queries: images and labels to rank and to rank with.
      mean, std: (3,) channel statistics of the training images.
      cfg: fine-tuning schedule.
      num_classes: number of classes.
      nystroem_components: Nystroem map size for the kernel variant (None: skip it).
      keep_variance: the network's bn3-bn5 keep relative channel variance (the authors' Hebbian
        network, for HPCA pre-trained layers; :class:`hebbret.convnet.Net`).
      seed: Nystroem sampling seed.
      progress: progress bars.

    Returns:
      dict: ``map`` (test mAP@R, Euclidean, percent, normaliser min(R, relevant)),
      ``map_by_normaliser`` (the three normalisers of :mod:`hebbret.retrieval`, and ``"all"``:
      mAP@All, the whole database ranked; also ``map_all``), ``map_nystroem``,
      ``val_map``, ``val_accuracy`` (best epoch), ``best_epoch``, ``R``, ``dim``.
    """
    model = convnet.Net(num_classes, depth=depth, keep_variance=keep_variance)
    fresh = convnet.init(model, jax.random.fold_in(key, 0))
    start = fresh if pretrained is None else convnet.transplant(pretrained, fresh)
    res = finetune.finetune(
        jax.random.fold_in(key, 1), model, start, labelled, val, mean, std, cfg, progress=progress
    )
    feats = {
        name: convnet.features(model, res.variables, x, mean, std)
        for name, (x, _) in {"db": database, "val": val, "test": queries}.items()
    }
    r = len(database[1]) // num_classes
    if r < 1:
        raise InputError(f"database of {len(database[1])} items has under one item per class")

    def score(xq: np.ndarray, yq: np.ndarray, xb: np.ndarray, top: int | None = r) -> dict:
        out = retrieval.evaluate(xq, xb, yq, database[1], metric="sqeuclidean", R=top)
        return {k: 100 * float(v) for k, v in out["map_by_normaliser"].items()}

    test = score(feats["test"], queries[1], feats["db"])
    test["all"] = score(feats["test"], queries[1], feats["db"], top=None)["relevant"]
    row = {
        "layer": depth,
        "dim": int(feats["db"].shape[1]),
        "R": r,
        "map": test["min"],
        "map_by_normaliser": test,
        "map_all": test["all"],
        "val_map": score(feats["val"], val[1], feats["db"])["min"],
        "val_accuracy": 100 * res.val_accuracy[res.best_epoch - 1],
        "best_epoch": res.best_epoch,
        "val_accuracy_history": [100 * a for a in res.val_accuracy],
        "train_loss_history": res.train_loss,
    }
    if nystroem_components:
        comps = min(nystroem_components, len(feats["db"]))
        ny = Nystroem(kernel="rbf", n_components=comps, random_state=seed).fit(feats["db"])
        mapped = {k: ny.transform(v).astype(np.float32) for k, v in feats.items() if k != "val"}
        row["map_nystroem"] = score(mapped["test"], queries[1], mapped["db"])["min"]
    return row


def select_layer(rows: Sequence[dict]) -> dict:
    """The row with the highest validation mAP (ties: the shallower layer)."""
    if not rows:
        raise InputError("no layers to choose from")
    return max(sorted(rows, key=lambda r: r["layer"]), key=lambda r: r["val_map"])


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the t-based ``level`` confidence interval (0 for one value)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        raise InputError("no values")
    if v.size == 1:
        return float(v[0]), 0.0
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)
