"""The ``npz:PATH`` source: arrays ``x``/``y`` (split ``all``) or ``x_<split>``/``y_<split>``
pairs, optional ``class_names``; images uint8 ``(n, h, w[, c])`` or features ``(n, d)``."""

from __future__ import annotations

import pathlib

import numpy as np

from hebbret.data import presets
from hebbret.data.cache import read_npz
from hebbret.data.dataset import Dataset, Split, build, contents
from hebbret.data.messages import printable, quote
from hebbret.errors import InputError


def load(spec: str, path: pathlib.Path) -> Dataset:
    """The dataset of an .npz file (never cached: it is read as fast as a cache file)."""
    if not path.is_file():
        raise InputError(f"npz file {quote(path)} does not exist")
    arrays = read_npz(path)
    if "x" in arrays or "y" in arrays:
        pairs = {"all": ("x", "y")}
    else:
        names = {key[2:] for key in arrays if key[:2] in ("x_", "y_") and key[2:]}
        pairs = {name: (f"x_{name}", f"y_{name}") for name in names}
    if not pairs:
        raise InputError(
            f"{printable(spec)} has no arrays 'x' and 'y' nor x_<split>/y_<split> pairs; "
            f"found {sorted(arrays)}"
        )
    splits = {}
    for split, (x_key, y_key) in pairs.items():
        if missing := [key for key in (x_key, y_key) if key not in arrays]:
            raise InputError(f"{printable(spec)} has no array {missing[0]!r}")
        splits[split] = _split(
            arrays[x_key], arrays[y_key], f"{printable(spec)} [{printable(split)}]"
        )
    shapes = {s.x.shape[1:] for s in splits.values()}
    if len(shapes) > 1:
        raise InputError(
            f"{printable(spec)}: splits hold items of different shapes {sorted(shapes)}"
        )
    if "class_names" not in arrays:  # class ids 0..C-1 for the C distinct labels, in order
        labels = np.unique(np.concatenate([s.y for s in splits.values()]))
        splits = {
            name: Split(s.x, np.searchsorted(labels, s.y).astype(np.int32))
            for name, s in splits.items()
        }
        return _dataset(spec, path, splits, [str(c) for c in labels])
    num_classes = max(int(s.y.max()) for s in splits.values()) + 1
    class_names = arrays["class_names"]
    if class_names.ndim != 1 or class_names.dtype.kind != "U" or len(class_names) < num_classes:
        raise InputError(
            f"{printable(spec)}: 'class_names' must be a 1-d string array with at least "
            f"{num_classes} names, got {class_names.dtype} {class_names.shape}"
        )
    return _dataset(spec, path, splits, [str(c) for c in class_names])


def _dataset(
    spec: str, path: pathlib.Path, splits: dict[str, Split], class_names: list[str]
) -> Dataset:
    label = presets.content_label("npz", printable(path.name), contents(splits, class_names), "npz")
    return build(spec, splits, class_names, cache_hit=False, label=label)


def _split(x: np.ndarray, y: np.ndarray, where: str) -> Split:
    """Check and convert one npz split: images to uint8 (n, h, w, c), features to float32."""
    if x.ndim not in (2, 3, 4):
        raise InputError(
            f"{where}: x must be images (n, h, w[, c]) or features (n, d), got shape {x.shape}"
        )
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise InputError(f"{where}: labels y must be a 1-d integer array, got {y.dtype} {y.shape}")
    if len(y) == 0 or len(x) != len(y):
        raise InputError(f"{where}: x has {len(x)} items and y {len(y)}; need as many, at least 1")
    if y.min() < 0 or y.max() > np.iinfo(np.int32).max:
        raise InputError(f"{where}: labels must lie in [0, 2**31), got {y.min()}..{y.max()}")
    if x.ndim == 2:
        if x.dtype.kind not in "biuf":
            raise InputError(f"{where}: features must be real numbers, got {x.dtype}")
        with np.errstate(over="ignore"):
            x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise InputError(f"{where}: features contain NaN or inf (or exceed float32)")
    elif x.dtype != np.uint8:
        raise InputError(f"{where}: images must be uint8, got {x.dtype}")
    elif x.ndim == 3:
        x = x[..., None]
    return Split(np.ascontiguousarray(x), y.astype(np.int32))
