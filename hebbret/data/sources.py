"""The dataset sources behind :func:`hebbret.data.load`: scikit-learn's digits, tfds datasets,
image folders and tar archives of them (decoded once, then read from :mod:`hebbret.data.cache`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from hebbret.data import archive as tar_archive
from hebbret.data import cache, images, presets
from hebbret.data.dataset import Dataset, Decoded, Split, build, contents
from hebbret.data.messages import printable, quote
from hebbret.errors import InputError
from hebbret.progress import bar as progress_bar

TFDS_NAMES = ("mnist", "cifar10", "cifar100")
_TFDS_SPLITS = ("train", "test")
_TFDS_BATCH = 1024


def digits(spec: str) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, bundled), scaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.round(data.images * 255 / 16).astype(np.uint8)[..., None]
    split = Split(np.ascontiguousarray(x), data.target.astype(np.int32))
    names = [str(c) for c in range(10)]
    return build(spec, {"all": split}, names, cache_hit=False, label=_named_label("digits"))


def tfds(spec: str, name: str, cache_root: pathlib.Path, progress: bool) -> Dataset:
    """A tfds dataset already prepared as array_record; InputError if it is not (no download)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import constants

    data_dir = os.environ.get("TFDS_DATA_DIR") or constants.DATA_DIR
    builder = tfds.builder(name, data_dir=data_dir)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # is_prepared() warns that the folder lacks its files
    try:
        prepared = builder.is_prepared()
    finally:
        absl_logger.setLevel(level)
    if not prepared:
        raise InputError(
            f"tfds dataset {name!r} is not prepared in {quote(data_dir)} and hebbret does not "
            f"download; run `tfds build {name} --file_format=array_record` where there is "
            f"network, or use archive:/path/to/{name}-jpeg.tar.gz / folder:PATH"
        )

    def decode() -> Decoded:
        try:
            sources = tfds.data_source(
                name, split=list(_TFDS_SPLITS), data_dir=data_dir, download=False
            )
        except NotImplementedError as e:
            raise InputError(
                f"tfds dataset {name!r} in {quote(data_dir)} has no array_record files for random "
                f"access; rebuild it with `tfds build {name} --file_format=array_record`"
            ) from e
        features = builder.info.features
        splits = {
            split: _read_tfds_source(source, features["image"].shape, f"{name} {split}", progress)
            for split, source in zip(_TFDS_SPLITS, sources, strict=True)
        }
        return Decoded(splits, tuple(features["label"].names))

    key = cache.key("tfds", name, str(builder.version), str(builder.data_path))
    decoded, hit = cache.cached(cache_root / f"{key}.npz", decode)
    return build(spec, *decoded[:2], cache_hit=hit, label=_named_label(name))


def _read_tfds_source(
    source: Sequence[dict[str, Any]], shape: tuple[int, ...], desc: str, progress: bool
) -> Split:
    """Read a tfds data source of {"image": (h, w, c) uint8, "label": int} items in batches."""
    n = len(source)
    x = np.empty((n, *shape), np.uint8)
    y = np.empty(n, np.int32)
    with progress_bar(total=n, desc=desc, unit=" img", enabled=progress, leave=True) as bar:
        for start in range(0, n, _TFDS_BATCH):
            items = source.__getitems__(list(range(start, min(start + _TFDS_BATCH, n))))
            stop = start + len(items)
            x[start:stop] = np.stack([item["image"] for item in items])
            y[start:stop] = [item["label"] for item in items]
            bar.update(len(items))
    return Split(x, y)


def folder(spec: str, root: pathlib.Path, cache_root: pathlib.Path, progress: bool) -> Dataset:
    """An image folder ``root/[top/]<split>/<class>/<image>``, its files read to key the cache."""
    if not root.is_dir():
        raise InputError(f"dataset folder {quote(root)} does not exist or is not a directory")
    paths = _folder_paths(root, spec)
    tree = images.layout(paths, spec)
    digest = hashlib.sha256()
    files = {}
    reading = progress_bar(
        paths, desc=f"reading {root.name}", unit=" files", enabled=progress, leave=True
    )
    for path in reading:
        try:
            files[path] = (root / path).read_bytes()
        except OSError as e:  # a broken symbolic link, an unreadable file
            raise InputError(
                f"cannot read {path!r} in {printable(spec)}: {printable(e.strerror or e)}"
            ) from e
        digest.update(f"{path}\0{len(files[path])}\0".encode())
        digest.update(files[path])
    file = cache_root / f"{cache.key('folder', digest.hexdigest())}.npz"
    decoded, hit = cache.cached(file, lambda: images.decode_tree(tree, files, spec, progress))
    return _image_files(spec, "folder", root.name, file, decoded, hit, files.values)


def _folder_paths(root: pathlib.Path, spec: str) -> list[str]:
    """Sorted relative paths of the files under ``root``, skipping hidden files and folders and
    following symbolic links; InputError for a folder link that loops back to a folder above."""
    paths = []
    # for each folder to walk: the real paths of it, of the folders above it and of root's parents
    real_root = pathlib.Path(os.path.realpath(root))
    above = {os.fspath(root): (str(real_root), *map(str, real_root.parents))}
    for directory, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative = pathlib.Path(directory).relative_to(root)
        chain = above.pop(directory)
        for d in dirs:
            real = os.path.realpath(os.path.join(directory, d))
            if real in chain:
                raise InputError(
                    f"folder link {(relative / d).as_posix()!r} in {printable(spec)} loops back "
                    f"to {real!r}, a folder above it"
                )
            above[os.path.join(directory, d)] = (*chain, real)
        paths += [(relative / f).as_posix() for f in files if not f.startswith(".")]
    return sorted(paths)


def archive(spec: str, path: pathlib.Path, cache_root: pathlib.Path, progress: bool) -> Dataset:
    """A tar archive of an image folder, keyed in the cache by the archive's sha256."""
    if not path.is_file():
        raise InputError(f"archive file {quote(path)} does not exist")
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise InputError(f"cannot read archive {quote(path)}: {printable(e.strerror or e)}") from e
    file = cache_root / f"{cache.key('archive', digest.hexdigest())}.npz"

    def decode() -> Decoded:
        files = tar_archive.read(path, spec, progress)
        return images.decode_tree(images.layout(sorted(files), spec), files, spec, progress)

    def files() -> Iterable[bytes]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warned about when it was decoded
            return tar_archive.read(path, spec, progress).values()

    decoded, hit = cache.cached(file, decode)
    return _image_files(spec, "archive", path.name, file, decoded, hit, files)


def _image_files(
    spec: str,
    source: str,
    name: str,
    file: pathlib.Path,
    decoded: Decoded,
    hit: bool,
    files: Callable[[], Iterable[bytes]],
) -> Dataset:
    """The Dataset of a decoded folder or archive, labelled by its content. A cache file written
    before the files' encoding was kept lacks it: when the label needs it, it is read from the
    ``files`` and the cache file rewritten with it (same key, same arrays)."""
    described = contents(decoded.splits, decoded.class_names)
    if decoded.encoding is None and presets.recognise(described) is not None:
        decoded = decoded._replace(encoding=images.encoding(files()))
        cache.write(file, decoded)
    label = presets.content_label(source, printable(name), described, decoded.encoding)
    return build(spec, *decoded[:2], cache_hit=hit, label=label)


def _named_label(name: str) -> str:
    return presets.PRESETS[name].label
