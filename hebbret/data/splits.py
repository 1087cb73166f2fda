"""Protocol splits: pure, seeded functions of labels / sizes that return index arrays.

Image folders arrive sorted by class, and with a "stable by index" tie order that leaks labels
(docs/README.md §Vocabulary, ties), so every split returns its database in a seeded random order.

- :func:`per_class_queries`: n random items per class are queries, the rest the database (BioHash:
  1,000 per class on CIFAR-10, 100 per class on MNIST).
- :func:`labelled_split`: shuffled training indices -> training / validation / labelled subset
  (Lagani et al.: last 10k validation, first s % of the shuffled training indices labelled).
- :func:`random_queries`: m random queries from a pool (Tzelepi & Tefas: 1,000 test images).
- :func:`default_protocol`: the retrieval protocol ``hebbret eval --dataset`` uses for a dataset.
- :func:`class_query_protocol`: BioHash's protocols (queries per class vs the rest; validation
  split; shadowed queries).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hebbret.data import Dataset, presets
from hebbret.errors import InputError, check_seed
from hebbret.perturb import shadow


class QuerySplit(NamedTuple):
    """Index arrays into one pool of items: queries (nq,) and database (N,), disjoint."""

    queries: np.ndarray
    database: np.ndarray


class LabelledSplit(NamedTuple):
    """Index arrays into a training pool: train (n - n_val,), validation (n_val,), and the
    labelled subset, a prefix of ``train``."""

    train: np.ndarray
    validation: np.ndarray
    labelled: np.ndarray


class Protocol(NamedTuple):
    """A retrieval protocol applied to a dataset: features, labels and list depth R."""

    name: str
    xq: np.ndarray
    yq: np.ndarray
    xb: np.ndarray
    yb: np.ndarray
    R: int | None  # noqa: N815  (the literature's name; None = All)
    queries: np.ndarray | None = None  # indices of the queries / database items in the pooled
    database: np.ndarray | None = None  # dataset (``Dataset.pooled()``), e.g. to show images


def per_class_queries(labels: np.ndarray, n_per_class: int, seed: int) -> QuerySplit:
    """``n_per_class`` random items of every class become queries; the rest, shuffled, the database.

    Raises InputError when a class has fewer than ``n_per_class + 1`` items (its database would
    hold none of it).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise InputError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if n_per_class < 1:
        raise InputError(f"n_per_class must be >= 1, got {n_per_class}")
    rng = np.random.default_rng(check_seed(seed))
    queries = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= n_per_class:
            raise InputError(
                f"class {c} has {len(members)} items: too few for {n_per_class} queries per class"
            )
        queries.append(rng.choice(members, n_per_class, replace=False))
    q = rng.permutation(np.concatenate(queries))
    rest = np.setdiff1d(np.arange(labels.size), q)
    return QuerySplit(q, rng.permutation(rest))


def labelled_split(
    num_train: int, fraction: float, seed: int, num_validation: int = 10_000
) -> LabelledSplit:
    """Lagani et al.'s split: shuffle ``range(num_train)`` with the data seed; the last
    ``num_validation`` are validation, the first the training set, and the first
    ``round(fraction * len(train))`` training indices are labelled (not class-stratified)."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"labelled fraction must be in (0, 1], got {fraction}")
    if not 0 <= num_validation < num_train:
        raise InputError(f"validation size {num_validation} must be below {num_train} items")
    order = np.random.default_rng(check_seed(seed)).permutation(num_train)
    train, val = order[: num_train - num_validation], order[num_train - num_validation :]
    n_lab = max(1, round(fraction * len(train)))
    return LabelledSplit(train, val, train[:n_lab])


def random_queries(num_items: int, m: int, seed: int) -> np.ndarray:
    """``m`` distinct random indices of ``range(num_items)`` (queries drawn from a pool)."""
    if not 1 <= m <= num_items:
        raise InputError(f"cannot draw {m} queries from {num_items} items")
    return np.random.default_rng(check_seed(seed)).choice(num_items, m, replace=False)


def features(x: np.ndarray) -> np.ndarray:
    """Raw pixels as (n, h*w*c) float32 in [0, 1], or (n, d) features as float32."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.reshape(len(x), -1).astype(np.float32) / 255.0
    return x.reshape(len(x), -1).astype(np.float32)


def default_protocol(ds: Dataset, seed: int = 0) -> Protocol:
    """The dataset's retrieval protocol on raw pixels / features (all splits pooled).

    The protocol is the spec's preset (:func:`hebbret.data.presets.preset`): MNIST 100 queries
    per class, mAP@All (BioHash Table 1); digits 10 per class, mAP@All; anything else BioHash's
    CIFAR-10 protocol, ``min(1000, smallest class // 6)`` queries per class (1,000 for
    CIFAR-10's 6,000) and mAP@1000.
    """
    pooled = ds.pooled()
    counts = np.bincount(pooled.y, minlength=ds.num_classes)
    preset = presets.preset(ds.spec)
    n_per_class = preset.queries_per_class or int(np.clip(counts.min() // 6, 1, 1000))
    r = preset.R
    split = per_class_queries(pooled.y, n_per_class, seed)
    x = features(pooled.x)
    desc = f"{n_per_class} queries per class vs the rest, mAP@{'All' if r is None else r}"
    q, db = split
    return Protocol(desc, x[q], pooled.y[q], x[db], pooled.y[db], r, q, db)


def class_query_protocol(
    ds: Dataset,
    queries_per_class: int,
    R: int | None,  # noqa: N803  (the literature's name)
    seed: int = 0,
    *,
    query_subset: int | None = None,
    validation: int | None = None,
    shadows: bool = False,
) -> Protocol:
    """BioHash's protocols (Ryali et al. 2020, §3.2; docs/biohash.md §Protocols):
    ``queries_per_class`` random items of every class are the queries, the rest both training
    set and database.

    Args:
      ds: the dataset (all splits pooled).
      queries_per_class, R: 1,000 and 1000 for CIFAR-10; 100 and None (All) for MNIST.
      query_subset: keep only the first n queries of each class (a random subset; --quick).
      validation: instead, n items per class of the training set become validation queries
        and the rest of the training set the database (appendix D: activity chosen on 1k).
      shadows: multiply 80 % of every query image by 0.3 (appendix B, :func:`perturb.shadow`).
    """
    pooled = ds.pooled()
    split = per_class_queries(pooled.y, queries_per_class, seed)
    queries, database = split.queries, split.database
    if query_subset:
        keep = [np.flatnonzero(pooled.y[queries] == c)[:query_subset] for c in np.unique(pooled.y)]
        queries = queries[np.sort(np.concatenate(keep))]
    if validation:
        val = per_class_queries(pooled.y[database], validation, seed + 1)
        queries, database = database[val.queries], database[val.database]
    q_images = shadow(pooled.x[queries]) if shadows else pooled.x[queries]
    name = (
        f"{len(queries)} queries ({'validation' if validation else 'test'}"
        f"{', shadows' if shadows else ''}) vs {len(database)} database = training"
    )
    return Protocol(
        name,
        features(q_images),
        pooled.y[queries],
        features(pooled.x[database]),
        pooled.y[database],
        R,
        queries,
        database,
    )
