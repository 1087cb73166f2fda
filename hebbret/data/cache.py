"""The decoded-dataset cache: ``<key>.npz`` files in :func:`cache_dir`, keyed by a checksum of
the source and :data:`FORMAT`, so that a second load of a tfds dataset, folder or archive takes
about a second.

A cache file holds ``splits`` (their names), ``class_names``, ``x_<split>`` and ``y_<split>``
per split and, when the source was image files, ``encoding`` (``"JPEG"``; files written before
hebbret kept it lack it, and are still read). A missing or damaged file is decoded again.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import zipfile
from collections.abc import Callable

import numpy as np

from hebbret.data.dataset import Decoded, Split
from hebbret.data.messages import printable, quote, warn
from hebbret.errors import InputError
from hebbret.files import atomic_write

FORMAT = "hebbret-dataset-cache-v2"  # change when decoding or the cache layout changes


def cache_dir() -> pathlib.Path:
    """The decoded-dataset cache: ``$HEBBRET_CACHE`` if set, else ``~/.cache/hebbret``."""
    return pathlib.Path(os.environ.get("HEBBRET_CACHE") or "~/.cache/hebbret").expanduser()


def resolve(override: str | os.PathLike | None) -> pathlib.Path:
    """``override`` as a path, or :func:`cache_dir` when it is None."""
    return pathlib.Path(override).expanduser() if override is not None else cache_dir()


def key(*parts: str) -> str:
    """The cache file's name (without ``.npz``) for a source described by ``parts``."""
    return hashlib.sha256("\0".join((FORMAT, *parts)).encode()).hexdigest()


def cached(path: pathlib.Path, decode: Callable[[], Decoded]) -> tuple[Decoded, bool]:
    """The decoded splits read from the cache file ``path`` or, when it is missing or damaged,
    decoded and written to it; and whether they came from the cache."""
    found = read(path)
    if found is not None:
        return found, True
    decoded = decode()
    write(path, decoded)
    return decoded, False


def read(path: pathlib.Path) -> Decoded | None:
    """The cached splits, class names and encoding, or None when the file is missing or damaged."""
    try:
        arrays = read_npz(path)
        class_names = tuple(str(c) for c in arrays["class_names"])
        splits = {str(s): Split(arrays[f"x_{s}"], arrays[f"y_{s}"]) for s in arrays["splits"]}
    except (InputError, KeyError):
        return None
    for s in splits.values():
        if not (
            s.x.dtype == np.uint8
            and s.x.ndim == 4
            and s.y.dtype == np.int32
            and s.y.shape == s.x.shape[:1]
            and ((s.y >= 0) & (s.y < len(class_names))).all()
        ):
            return None
    encoding = arrays.get("encoding")
    valid = encoding is not None and encoding.ndim == 0 and encoding.dtype.kind == "U"
    return Decoded(splits, class_names, str(encoding) if valid else None)


def write(path: pathlib.Path, decoded: Decoded) -> None:
    """Write the cache file atomically (temporary file in the same folder, then rename); a
    warning, not an error, if it cannot be written."""
    splits, class_names, encoding = decoded
    arrays = {"splits": np.array(list(splits)), "class_names": np.array(class_names)}
    for name, s in splits.items():
        arrays |= {f"x_{name}": s.x, f"y_{name}": s.y}
    if encoding is not None:
        arrays["encoding"] = np.array(encoding)
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        warn(f"cannot write the dataset cache {quote(path)}: {printable(e.strerror or e)}")


def read_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read without pickle; InputError if it cannot be read."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read npz file {quote(path)}: {printable(e)}") from e
