"""Layer-wise retrieval evaluation of a pre-trained network (Lagani et al. §4).

For a layer L: cut the network after L, put a fresh head on it, fine-tune end to end on the
labelled images (:func:`hebbret.nets.finetune.finetune`), then rank the database by distance between
layer-L features (after BN): :func:`evaluate_layer`, the paper's text. The authors' code scores
its no-pre-training baseline differently: the full network (head on fc6) is trained once on the
labels and scored at each intermediate ``bn_L`` (:func:`evaluate_full_network`).

Table 1's metric is the authors' ``MAPMetric`` at the paper's tag: AP@k normalised by
``min(k, relevant)``, with k in ``TABLE_R`` = (20, 50, 100); ``TABLE_K`` = 100 is the table's
number (the published values sit on the mAP@100 scale). Two rankings: Euclidean distance between
the features (the paper's text) and Euclidean distance after a Nystroem RBF feature map with
1,000 components fitted on the database (the authors' code; sklearn's default ``gamma = 1 / D``).
mAP@R with R = database items per class (4,000 for the 40k CIFAR-10 training images) and mAP@All
are kept as extra columns. The layer is chosen on validation queries with the table's metric
(:func:`select_layer`); runs over data seeds are summarised with a t-based 95 % confidence
interval (:func:`confidence_interval`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from scipy import stats
from sklearn.kernel_approximation import Nystroem

from hebbret import retrieval
from hebbret.errors import InputError
from hebbret.nets import convnet, finetune

Pair = tuple[np.ndarray, np.ndarray]
TABLE_R = (20, 50, 100)
TABLE_K = 100


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
        network, for HPCA pre-trained layers; :class:`hebbret.nets.convnet.Net`).
      seed: Nystroem sampling seed.
      progress: progress bars.

    Returns:
      dict (see :func:`score_layer`) plus ``val_accuracy`` (best epoch), ``best_epoch`` and the
      training histories.
    """
    model = convnet.Net(num_classes, depth=depth, keep_variance=keep_variance)
    fresh = convnet.init(model, jax.random.fold_in(key, 0))
    start = fresh if pretrained is None else convnet.transplant(pretrained, fresh)
    res = finetune.finetune(
        jax.random.fold_in(key, 1), model, start, labelled, val, mean, std, cfg, progress=progress
    )
    row = score_layer(
        model, res.variables, val, database, queries, mean, std, num_classes=num_classes,
        nystroem_components=nystroem_components, seed=seed,
    )  # fmt: skip
    return row | _training(res)


def evaluate_full_network(
    key: jax.Array,
    depths: Sequence[int],
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
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """The authors' no-pre-training baseline: the whole network (layers 1-5, head on fc6)
    trained once from scratch on the labels, then scored at each layer of ``depths`` by its
    intermediate ``bn_L`` features. One row per depth, as :func:`evaluate_layer`'s (the
    validation accuracy is the full network's)."""
    model = convnet.Net(num_classes, depth=len(convnet.LAYERS))
    start = convnet.init(model, jax.random.fold_in(key, 0))
    res = finetune.finetune(
        jax.random.fold_in(key, 1), model, start, labelled, val, mean, std, cfg, progress=progress
    )
    rows = []
    for depth in depths:
        cut = convnet.Net(num_classes, depth=depth)
        variables = convnet.transplant(res.variables, convnet.init(cut, jax.random.key(0)))
        row = score_layer(
            cut, variables, val, database, queries, mean, std, num_classes=num_classes,
            nystroem_components=nystroem_components, seed=seed,
        )  # fmt: skip
        rows.append(row | _training(res))
    return rows


def score_layer(
    model: convnet.Net,
    variables: dict,
    val: Pair,
    database: Pair,
    queries: Pair,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    num_classes: int,
    nystroem_components: int | None = 1000,
    seed: int = 0,
) -> dict:
    """Retrieval scores of ``model``'s layer-L features (percent, AP normalised by
    ``min(k, relevant)`` unless named otherwise).

    Returns:
      dict: ``layer``, ``dim``, ``R`` (database items per class); ``map`` (test mAP@100,
      Euclidean: Table 1's number), ``map_at`` {20, 50, 100: test mAP@k}; ``map_R`` (mAP@R) and
      ``map_by_normaliser`` (the three normalisers of :mod:`hebbret.retrieval` at R, and
      ``"all"``); ``map_all`` (mAP@All); with Nystroem, ``map_nystroem`` (mAP@100),
      ``map_nystroem_at`` and ``map_nystroem_R``; ``val_map`` (validation mAP@100, Euclidean:
      what :func:`select_layer` compares).
    """
    feats = {
        name: convnet.features(model, variables, x, mean, std)
        for name, (x, _) in {"db": database, "val": val, "test": queries}.items()
    }
    r = len(database[1]) // num_classes
    if r < 1:
        raise InputError(f"database of {len(database[1])} items has under one item per class")

    def score(xq: np.ndarray, yq: np.ndarray, xb: np.ndarray, top: int | None = r) -> dict:
        more = [k for k in TABLE_R if k <= len(xb)]
        out = retrieval.evaluate(xq, xb, yq, database[1], metric="sqeuclidean", R=top, more_R=more)
        at = {k: 100 * v["min"] for k, v in out["map_at"].items()}
        return {k: 100 * float(v) for k, v in out["map_by_normaliser"].items()} | {"at": at}

    test = score(feats["test"], queries[1], feats["db"])
    at = test.pop("at")
    test["all"] = score(feats["test"], queries[1], feats["db"], top=None)["relevant"]
    row = {
        "layer": model.depth,
        "dim": int(feats["db"].shape[1]),
        "R": r,
        "map": at[min(TABLE_K, max(at))],
        "map_at": at,
        "map_R": test["min"],
        "map_by_normaliser": test,
        "map_all": test["all"],
        "val_map": score(feats["val"], val[1], feats["db"])["at"][min(TABLE_K, max(at))],
    }
    if nystroem_components:
        comps = min(nystroem_components, len(feats["db"]))
        ny = Nystroem(kernel="rbf", n_components=comps, random_state=seed).fit(feats["db"])
        mapped = {k: ny.transform(v).astype(np.float32) for k, v in feats.items() if k != "val"}
        kernel = score(mapped["test"], queries[1], mapped["db"])
        row["map_nystroem_at"] = kernel["at"]
        row["map_nystroem"] = kernel["at"][min(TABLE_K, max(at))]
        row["map_nystroem_R"] = kernel["min"]
    return row


def _training(res: finetune.FinetuneResult) -> dict:
    return {
        "val_accuracy": 100 * res.val_accuracy[res.best_epoch - 1],
        "best_epoch": res.best_epoch,
        "val_accuracy_history": [100 * a for a in res.val_accuracy],
        "train_loss_history": res.train_loss,
    }


def select_layer(rows: Sequence[dict]) -> dict:
    """The row with the highest validation mAP (Table 1's metric; ties: the shallower layer)."""
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
