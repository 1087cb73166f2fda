"""The loaded dataset: :class:`Split`, :class:`Dataset`, its checksum and :func:`summary`."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

SPLIT_ORDER = ("train", "validation", "val", "test")  # then the other splits, by name


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split: ``x`` (n, h, w, c) uint8 images or (n, d) float32 features, ``y`` (n,) int32."""

    x: np.ndarray
    y: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: its splits, class names and a checksum of the decoded arrays.

    ``checksum`` is the sha256 of every split's name, ``x`` and ``y`` (dtype, shape and bytes) in
    split order, so it is the same for the same pixels whether they came from a folder, an archive
    or the cache. ``kind`` is ``"images"`` or ``"features"``. ``label`` names the data for reports
    (``"CIFAR-10 (JPEG)"``, ``"image folder pets"``): the loader decides it from the content,
    never from the spec's path (see :mod:`hebbret.data.presets`).
    """

    spec: str
    splits: dict[str, Split]
    class_names: tuple[str, ...]
    checksum: str
    cache_hit: bool
    kind: str
    label: str

    @property
    def num_classes(self) -> int:
        """Number of classes; labels lie in ``[0, num_classes)``."""
        return len(self.class_names)

    def pooled(self) -> Split:
        """All splits concatenated in split order (train before test): x (N, ...), y (N,)."""
        splits = list(self.splits.values())
        if len(splits) == 1:
            return splits[0]
        return Split(np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits]))


class Decoded(NamedTuple):
    """What a source decodes (and the cache keeps): splits in any order, class names and, for
    image files, their encoding (``"JPEG"``, ``"PNG"``, ``"JPEG/PNG"``; None when unknown)."""

    splits: dict[str, Split]
    class_names: tuple[str, ...]
    encoding: str | None = None


def build(
    spec: str,
    splits: dict[str, Split],
    class_names: Sequence[str],
    *,
    cache_hit: bool,
    label: str,
) -> Dataset:
    """The :class:`Dataset` of decoded splits: splits put in order, kind and checksum computed."""
    ordered = {name: splits[name] for name in sorted(splits, key=_split_key)}
    kind = "features" if next(iter(ordered.values())).x.ndim == 2 else "images"
    return Dataset(spec, ordered, tuple(class_names), _checksum(ordered), cache_hit, kind, label)


def contents(splits: dict[str, Split], class_names: Sequence[str]) -> dict[str, Any]:
    """JSON-able class names and, per split, the number of items, the shape and dtype of one
    item and the count of each class (what :func:`hebbret.data.presets.recognise` reads)."""
    return {
        "class_names": list(class_names),
        "splits": {
            name: {
                "n": len(s.y),
                "shape": list(s.x.shape[1:]),
                "dtype": str(s.x.dtype),
                "counts": np.bincount(s.y, minlength=len(class_names)).tolist(),
            }
            for name, s in splits.items()
        },
    }


def summary(ds: Dataset) -> dict[str, Any]:
    """JSON-able description: spec, label, kind, checksum, cache hit, class names and, per split,
    the number of items, the shape and dtype of one item and the count of each class."""
    return {
        "spec": ds.spec,
        "label": ds.label,
        "kind": ds.kind,
        "checksum": ds.checksum,
        "cache_hit": ds.cache_hit,
    } | contents(ds.splits, ds.class_names)


def _split_key(name: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def _checksum(splits: dict[str, Split]) -> str:
    digest = hashlib.sha256()
    for name, split in splits.items():
        for array in (split.x, split.y):
            digest.update(f"{name}:{array.dtype.str}:{array.shape}\n".encode())
            digest.update(np.ascontiguousarray(array))
    return digest.hexdigest()
