"""Datasets: one spec string, used by every script and the CLI, names where the data comes from.

Specs:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no download), split ``all``.
- ``mnist``, ``cifar10``, ``cifar100``: tfds datasets already prepared (array_record) in
  ``$TFDS_DATA_DIR`` (or tfds' default), splits ``train`` and ``test``; hebbret never downloads.
- ``folder:PATH``: an image folder ``PATH/<split>/<class>/<image>``, optionally under one top-level
  directory; class directories sorted alphabetically give the label order. Symbolic links are
  followed wherever they lead, out of ``PATH`` too (the folder is the user's own, and a tree of
  links is a common way to make splits without copying); a broken link, or a folder link that
  loops back to a folder above it, is an error.
- ``archive:PATH.tar.gz`` (``.tgz``, ``.tar``, ``.tar.bz2``, ``.tar.xz``): the same layout inside
  a tar archive, read as a stream and never extracted. A damaged archive (a failed checksum of
  the compression, a damaged member header, an archive cut short) is an error, never a smaller
  dataset. Only regular files count (links are ignored); members whose normalised name leaves
  the archive root (absolute, or a leading ``..``) are skipped with a warning that names them
  (when the archive is decoded, not on cache hits), so they can neither add images nor break the
  layout.
- ``npz:PATH``: arrays ``x``/``y`` (split ``all``) or ``x_<split>``/``y_<split>`` pairs, optional
  ``class_names``; ``x`` holds images ``(n, h, w[, c])`` uint8 or features ``(n, d)``, ``y``
  integer labels in ``[0, 2**31)``. With ``class_names``, the labels index into it; without,
  the distinct labels in increasing order become the classes, named by their values (labels
  ``0, 5, 9`` give the classes ``"0"``, ``"5"``, ``"9"``, with ids 0, 1, 2; labels that are
  already ``0..C-1`` keep their ids).

Folders and archives skip hidden files and folders (a name starting with ``.``: ``.DS_Store``,
``._x.jpg``) silently.

Images of folders and archives are decoded by Pillow; 16-bit greyscale ones are scaled to 8 bits
(``round(v / 257)``), 32-bit integer or float ones (of unknown range) are an error, and so is an
image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels.

Decoded images of tfds, folder and archive sources are cached in :func:`cache_dir` as
``<key>.npz``, keyed by a checksum of the source, so a second load takes about a second. Images
are uint8 ``(n, h, w, c)``: greyscale (``c = 1``) when every image of a folder or archive is
greyscale, else RGB. Splits are ordered train, validation, val, test, then the others by name.
"""

import bz2
import dataclasses
import gzip
import hashlib
import io
import logging
import lzma
import os
import pathlib
import posixpath
import re
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from hebbret.errors import InputError
from hebbret.files import atomic_write

SPECS = "digits, mnist, cifar10, cifar100, folder:PATH, archive:PATH.tar.gz or npz:PATH"
LAYOUT = "PATH/<split>/<class>/<image>"
_TFDS_NAMES = ("mnist", "cifar10", "cifar100")
_TFDS_SPLITS = ("train", "test")
_TFDS_BATCH = 1024
_SPLIT_ORDER = ("train", "validation", "val", "test")
_GREY_MODES = frozenset({"1", "L", "LA"})  # 8-bit greyscale; wider ones: see _decode_image
_16_BIT_I_FORMATS = frozenset({"PNG", "PPM"})  # whose PIL mode "I" holds samples of 16 bits
_CACHE_FORMAT = "hebbret-dataset-cache-v2"  # change when decoding or the cache layout changes


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
    or the cache. ``kind`` is ``"images"`` or ``"features"``.
    """

    spec: str
    splits: dict[str, Split]
    class_names: tuple[str, ...]
    checksum: str
    cache_hit: bool
    kind: str

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


_Decoded = tuple[dict[str, Split], tuple[str, ...]]  # splits and class names, before ordering


def cache_dir() -> pathlib.Path:
    """The decoded-dataset cache: ``$HEBBRET_CACHE`` if set, else ``~/.cache/hebbret``."""
    return pathlib.Path(os.environ.get("HEBBRET_CACHE") or "~/.cache/hebbret").expanduser()


def load(
    spec: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring); InputError if it is bad.

    ``cache_dir`` overrides :func:`cache_dir`; ``progress`` shows tqdm bars while decoding.
    """
    cache = _resolve_cache_dir(cache_dir)
    match spec.partition(":"):
        case ("digits", "", ""):
            return _digits(spec)
        case (name, "", "") if name in _TFDS_NAMES:
            return _tfds(spec, name, cache, progress)
        case ("folder", ":", path) if path:
            return _folder(spec, pathlib.Path(path).expanduser(), cache, progress)
        case ("archive", ":", path) if path:
            return _archive(spec, pathlib.Path(path).expanduser(), cache, progress)
        case ("npz", ":", path) if path:
            return _npz(spec, pathlib.Path(path).expanduser())
    raise InputError(f"unknown dataset {spec!r}: expected {SPECS}")


def summary(ds: Dataset) -> dict[str, Any]:
    """JSON-able description: spec, kind, checksum, cache hit, class names and, per split, the
    number of items, the shape and dtype of one item and the count of each class."""
    return {
        "spec": ds.spec,
        "kind": ds.kind,
        "checksum": ds.checksum,
        "cache_hit": ds.cache_hit,
        "class_names": list(ds.class_names),
        "splits": {
            name: {
                "n": len(s.y),
                "shape": list(s.x.shape[1:]),
                "dtype": str(s.x.dtype),
                "counts": np.bincount(s.y, minlength=ds.num_classes).tolist(),
            }
            for name, s in ds.splits.items()
        },
    }


def _quote(path: str | os.PathLike) -> str:
    """A user's path for a message: quoted and escaped as repr() does, so it stays one line."""
    return repr(os.fspath(path))


def _printable(text: object) -> str:
    """``str(text)`` with its unprintable characters (newlines, tabs, other control characters)
    escaped as repr() does, for an unquoted part of a message (a spec, an exception's text)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _resolve_cache_dir(override: str | os.PathLike | None) -> pathlib.Path:
    return pathlib.Path(override).expanduser() if override is not None else cache_dir()


def _split_key(name: str) -> tuple[int, str]:
    return (_SPLIT_ORDER.index(name) if name in _SPLIT_ORDER else len(_SPLIT_ORDER), name)


def _checksum(splits: dict[str, Split]) -> str:
    digest = hashlib.sha256()
    for name, split in splits.items():
        for array in (split.x, split.y):
            digest.update(f"{name}:{array.dtype.str}:{array.shape}\n".encode())
            digest.update(np.ascontiguousarray(array))
    return digest.hexdigest()


def _dataset(
    spec: str, splits: dict[str, Split], class_names: Sequence[str], *, cache_hit: bool
) -> Dataset:
    ordered = {name: splits[name] for name in sorted(splits, key=_split_key)}
    kind = "features" if next(iter(ordered.values())).x.ndim == 2 else "images"
    return Dataset(spec, ordered, tuple(class_names), _checksum(ordered), cache_hit, kind)


# -- digits ----------------------------------------------------------------------------------


def _digits(spec: str) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    split = Split(np.ascontiguousarray(x), digits.target.astype(np.int32))
    return _dataset(spec, {"all": split}, [str(c) for c in range(10)], cache_hit=False)


# -- cache -----------------------------------------------------------------------------------


def _cache_key(*parts: str) -> str:
    return hashlib.sha256("\0".join((_CACHE_FORMAT, *parts)).encode()).hexdigest()


def _cached(spec: str, path: pathlib.Path, decode: Callable[[], _Decoded]) -> Dataset:
    """Read the decoded splits from the cache file ``path`` or decode them and write it."""
    found = _read_cache(path)
    if found is not None:
        return _dataset(spec, *found, cache_hit=True)
    splits, class_names = decode()
    _write_cache(path, splits, class_names)
    return _dataset(spec, splits, class_names, cache_hit=False)


def _read_cache(path: pathlib.Path) -> _Decoded | None:
    """The cached splits and class names, or None when the file is missing or damaged."""
    try:
        arrays = _npz_arrays(path)
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
    return splits, class_names


def _write_cache(path: pathlib.Path, splits: dict[str, Split], class_names: Sequence[str]) -> None:
    """Write the cache file atomically (temporary file in the same folder, then rename)."""
    arrays = {"splits": np.array(list(splits)), "class_names": np.array(class_names)}
    for name, s in splits.items():
        arrays |= {f"x_{name}": s.x, f"y_{name}": s.y}
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        warnings.warn(
            f"cannot write the dataset cache {_quote(path)}: {_printable(e.strerror or e)}",
            stacklevel=5,
        )


# -- tfds --------------------------------------------------------------------------------------


def _tfds(spec: str, name: str, cache: pathlib.Path, progress: bool) -> Dataset:
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
            f"tfds dataset {name!r} is not prepared in {_quote(data_dir)} and hebbret does not "
            f"download; run `tfds build {name} --file_format=array_record` where there is "
            f"network, or use archive:/path/to/{name}-jpeg.tar.gz / folder:PATH"
        )

    def decode() -> _Decoded:
        try:
            sources = tfds.data_source(
                name, split=list(_TFDS_SPLITS), data_dir=data_dir, download=False
            )
        except NotImplementedError as e:
            raise InputError(
                f"tfds dataset {name!r} in {_quote(data_dir)} has no array_record files for random "
                f"access; rebuild it with `tfds build {name} --file_format=array_record`"
            ) from e
        features = builder.info.features
        splits = {
            split: _read_tfds_source(source, features["image"].shape, f"{name} {split}", progress)
            for split, source in zip(_TFDS_SPLITS, sources, strict=True)
        }
        return splits, tuple(features["label"].names)

    key = _cache_key("tfds", name, str(builder.version), str(builder.data_path))
    return _cached(spec, cache / f"{key}.npz", decode)


def _read_tfds_source(
    source: Sequence[dict[str, Any]], shape: tuple[int, ...], desc: str, progress: bool
) -> Split:
    """Read a tfds data source of {"image": (h, w, c) uint8, "label": int} items in batches."""
    n = len(source)
    x = np.empty((n, *shape), np.uint8)
    y = np.empty(n, np.int32)
    with tqdm(total=n, desc=desc, unit=" img", disable=not progress) as bar:
        for start in range(0, n, _TFDS_BATCH):
            items = source.__getitems__(list(range(start, min(start + _TFDS_BATCH, n))))
            stop = start + len(items)
            x[start:stop] = np.stack([item["image"] for item in items])
            y[start:stop] = [item["label"] for item in items]
            bar.update(len(items))
    return Split(x, y)


# -- image folders and archives --------------------------------------------------------------


def _folder(spec: str, root: pathlib.Path, cache: pathlib.Path, progress: bool) -> Dataset:
    if not root.is_dir():
        raise InputError(f"dataset folder {_quote(root)} does not exist or is not a directory")
    paths = _folder_paths(root, spec)
    tree = _layout(paths, spec)
    digest = hashlib.sha256()
    files = {}
    for path in tqdm(paths, desc=f"reading {root.name}", unit=" files", disable=not progress):
        try:
            files[path] = (root / path).read_bytes()
        except OSError as e:  # a broken symbolic link, an unreadable file
            raise InputError(
                f"cannot read {path!r} in {_printable(spec)}: {_printable(e.strerror or e)}"
            ) from e
        digest.update(f"{path}\0{len(files[path])}\0".encode())
        digest.update(files[path])
    key = _cache_key("folder", digest.hexdigest())
    return _cached(spec, cache / f"{key}.npz", lambda: _decode_tree(tree, files, spec, progress))


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
                    f"folder link {(relative / d).as_posix()!r} in {_printable(spec)} loops back "
                    f"to {real!r}, a folder above it"
                )
            above[os.path.join(directory, d)] = (*chain, real)
        paths += [(relative / f).as_posix() for f in files if not f.startswith(".")]
    return sorted(paths)


def _archive(spec: str, path: pathlib.Path, cache: pathlib.Path, progress: bool) -> Dataset:
    if not path.is_file():
        raise InputError(f"archive file {_quote(path)} does not exist")
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise InputError(
            f"cannot read archive {_quote(path)}: {_printable(e.strerror or e)}"
        ) from e
    key = _cache_key("archive", digest.hexdigest())

    def decode() -> _Decoded:
        files = _read_archive(path, spec, progress)
        return _decode_tree(_layout(sorted(files), spec), files, spec, progress)

    return _cached(spec, cache / f"{key}.npz", decode)


def _read_archive(path: pathlib.Path, spec: str, progress: bool) -> dict[str, bytes]:
    """The bytes of every regular, non-hidden file in a tar archive, by normalised member name;
    members outside the archive root (absolute, or with a leading '..') are skipped with a
    warning."""
    try:
        with path.open("rb") as raw, _decompressed(raw) as stream:
            files, outside = _read_tar(stream, path, progress)
    except OSError as e:  # opening it: _read_tar turns errors while reading into InputErrors
        raise InputError(
            f"cannot read archive {_quote(path)}: {_printable(e.strerror or e)}"
        ) from e
    if outside:
        listed = ", ".join(map(repr, outside[:3])) + (", ..." if len(outside) > 3 else "")
        warnings.warn(
            f"skipped {len(outside)} archive member{'s' if len(outside) > 1 else ''} outside the "
            f"archive root in {_printable(spec)}: {listed}",
            stacklevel=6,
        )
    return files


# what a damaged compressed stream raises: BadGzipFile and bz2's errors are OSErrors, a stream
# cut short raises EOFError
_DAMAGED = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """``raw`` decompressed according to its magic bytes (gzip, bzip2, xz or lzma), else itself.

    The decompressors check the data's checksums (gzip the CRC-32 and length at the end of each
    member) and raise if the stream ends early; tarfile's own stream mode checks neither.
    """
    head = raw.read(10)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head[:3] == b"BZh" and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return bz2.BZ2File(raw)
    if head.startswith((b"\xfd7zXZ\x00", b"\x5d\x00\x00\x80")):
        return lzma.LZMAFile(raw)
    return raw


def _read_tar(
    stream: BinaryIO, path: pathlib.Path, progress: bool
) -> tuple[dict[str, bytes], list[str]]:
    """Read the tar archive in the (decompressed) ``stream`` once, to its end: the bytes of its
    regular, non-hidden files by normalised name, and the names of the members outside the root.

    Python's tarfile stops at the first block that is not a valid header after the first member,
    and at the end of the data: a damaged header or an archive cut short would load as a smaller
    dataset. So the block that stopped it must be the end-of-archive marker: a zero block, then
    at least one more and nothing but zeros (the record padding) to the end of the stream, which
    is read to its end so that the decompressor checks its checksum too.
    """
    stop = [b""]  # the last header block tarfile read: the one that ended the member loop

    class Header(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
            stop[0] = buf
            return super().frombuf(buf, encoding, errors)

    files, outside, previous, reading = {}, [], None, False
    try:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=Header)
        except tarfile.ReadError as e:  # its first header
            raise InputError(
                f"cannot read archive {_quote(path)}: not a tar archive ({_printable(e)})"
            ) from e
        with tar, tqdm(desc=f"reading {path.name}", unit=" files", disable=not progress) as bar:
            for member in tar:
                previous = member.name
                name = posixpath.normpath(member.name)
                if not member.isfile():
                    continue
                if name.startswith("/") or name == ".." or name.startswith("../"):
                    outside.append(member.name)
                elif not _hidden(name):
                    reading = True
                    files[name] = tar.extractfile(member).read()
                    reading = False
                    bar.update()
            problem = _tar_end_problem(stop[0], tar.fileobj, previous)
    except _DAMAGED as e:
        problem = _printable(e) or type(e).__name__
        if previous is not None:
            problem += f" ({'in' if reading else 'after'} member {previous!r})"
    if problem:
        raise InputError(f"archive {_quote(path)} is damaged: {problem}")
    return files, outside


def _tar_end_problem(block: bytes, rest: BinaryIO, previous: str | None) -> str | None:
    """Why a tar stream did not end properly, or None if it did: ``block`` is the header block
    that ended tarfile's member loop, ``rest`` the stream after it and ``previous`` the name of
    the last member read."""
    after = f"after member {previous!r}" if previous is not None else "at its start"
    if not block:
        return f"it ends {after} without an end-of-archive marker (cut short?)"
    if len(block) < tarfile.BLOCKSIZE:
        return f"it ends inside the member header {after} (cut short?)"
    if block.count(0) != tarfile.BLOCKSIZE:
        return f"the member header {after} is invalid"
    zeros = 0
    while chunk := rest.read(1 << 16):
        if chunk.count(0) != len(chunk):
            return "it holds data after its end-of-archive marker"
        zeros += len(chunk)
    if zeros < tarfile.BLOCKSIZE:
        return "its end-of-archive marker is cut short (one zero block instead of two)"
    return None


def _hidden(path: str) -> bool:
    """Whether a relative path has a component starting with '.' (.DS_Store, ._x.jpg, .git)."""
    return any(part.startswith(".") for part in path.split("/"))


def _layout(paths: list[str], spec: str) -> dict[str, dict[str, list[str]]]:
    """Group sorted relative paths ``[top/]<split>/<class>/<image>`` as {split: {class: paths}}."""
    if not paths:
        raise InputError(f"no image files in {_printable(spec)}: expected layout {LAYOUT}")
    parts = [path.split("/") for path in paths]
    under_top = len({p[0] for p in parts}) == 1 and max(len(p) for p in parts) == 4
    tree: dict[str, dict[str, list[str]]] = {}
    for path, p in zip(paths, parts, strict=True):
        p = p[1:] if under_top else p
        if len(p) != 3:
            raise InputError(
                f"unexpected file {path!r} in {_printable(spec)}: expected layout {LAYOUT}"
            )
        tree.setdefault(p[0], {}).setdefault(p[1], []).append(path)
    all_classes = set().union(*tree.values())
    for split, classes in tree.items():
        if missing := sorted(all_classes - classes.keys()):
            raise InputError(
                f"classes differ across splits in {_printable(spec)}: split {split!r} has no class "
                f"{missing}"
            )
    return tree


def _decode_image(path: str, data: bytes, spec: str) -> np.ndarray:
    """Decode one image file to (h, w) uint8 if it is greyscale, else (h, w, 3) RGB.

    16-bit greyscale (PIL modes ``I;16*``, and ``I`` from PNG and PGM, whose samples have at
    most 16 bits) is scaled to 8 bits, round(v / 257); other 32-bit integer and float greyscale
    (modes ``I`` and ``F``, as from TIFF) has no known range and is an error. So is an image of
    more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL only warns up to twice that).
    """
    where = f"image {path!r} in {_printable(spec)}"
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            image = Image.open(io.BytesIO(data))
        with image, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # while decoding
            if limit is not None and image.width * image.height > limit:
                raise InputError(
                    f"{where} is too large: {image.width} x {image.height} pixels (the limit "
                    f"is PIL.Image.MAX_IMAGE_PIXELS = {limit})"
                )
            mode = image.mode
            if mode.startswith("I;16") or (mode == "I" and image.format in _16_BIT_I_FORMATS):
                pixels = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
                return ((pixels + 128) // 257).astype(np.uint8)  # round(v / 257)
            if mode in ("I", "F"):
                raise InputError(
                    f"{where} has {'integer' if mode == 'I' else 'floating-point'} 32-bit "
                    f"pixels (PIL mode {mode!r}) of unknown range: convert it to 8 or 16 bits"
                )
            return np.asarray(image.convert("L" if mode in _GREY_MODES else "RGB"))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{pixels[1]} pixels" if pixels else _printable(e)
        raise InputError(
            f"{where} is too large: {size} (the limit is PIL.Image.MAX_IMAGE_PIXELS = {limit})"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot decode {where}: {_printable(e)}") from e


def _decode_tree(
    tree: dict[str, dict[str, list[str]]], files: dict[str, bytes], spec: str, progress: bool
) -> _Decoded:
    """Decode every image of the layout; greyscale images become RGB unless all are greyscale."""
    class_names = tuple(sorted(next(iter(tree.values()))))
    decoded: dict[str, list[np.ndarray]] = {}
    first: tuple[str, np.ndarray] | None = None
    total = sum(len(paths) for classes in tree.values() for paths in classes.values())
    with tqdm(total=total, desc="decoding images", unit=" img", disable=not progress) as bar:
        for split, classes in tree.items():
            decoded[split] = []
            for name in class_names:
                for path in classes[name]:
                    image = _decode_image(path, files[path], spec)
                    if first is None:
                        first = (path, image)
                    elif image.shape[:2] != first[1].shape[:2]:
                        raise InputError(
                            f"image {path!r} is {_size(image)} but {first[0]!r} is "
                            f"{_size(first[1])}: all images in {_printable(spec)} must have "
                            f"the same size"
                        )
                    decoded[split].append(image)
                    bar.update()
    channels = 3 if any(image.ndim == 3 for images in decoded.values() for image in images) else 1
    splits = {}
    for split, images in decoded.items():
        x = np.empty((len(images), *first[1].shape[:2], channels), np.uint8)
        for i, image in enumerate(images):
            x[i] = image[..., None] if image.ndim == 2 else image
        counts = [len(tree[split][name]) for name in class_names]
        splits[split] = Split(x, np.repeat(np.arange(len(class_names), dtype=np.int32), counts))
    return splits, class_names


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


# -- npz ---------------------------------------------------------------------------------------


def _npz(spec: str, path: pathlib.Path) -> Dataset:
    if not path.is_file():
        raise InputError(f"npz file {_quote(path)} does not exist")
    arrays = _npz_arrays(path)
    if "x" in arrays or "y" in arrays:
        pairs = {"all": ("x", "y")}
    else:
        names = {key[2:] for key in arrays if key[:2] in ("x_", "y_") and key[2:]}
        pairs = {name: (f"x_{name}", f"y_{name}") for name in names}
    if not pairs:
        raise InputError(
            f"{_printable(spec)} has no arrays 'x' and 'y' nor x_<split>/y_<split> pairs; "
            f"found {sorted(arrays)}"
        )
    splits = {}
    for split, (x_key, y_key) in pairs.items():
        if missing := [key for key in (x_key, y_key) if key not in arrays]:
            raise InputError(f"{_printable(spec)} has no array {missing[0]!r}")
        splits[split] = _npz_split(
            arrays[x_key], arrays[y_key], f"{_printable(spec)} [{_printable(split)}]"
        )
    shapes = {s.x.shape[1:] for s in splits.values()}
    if len(shapes) > 1:
        raise InputError(
            f"{_printable(spec)}: splits hold items of different shapes {sorted(shapes)}"
        )
    if "class_names" not in arrays:  # class ids 0..C-1 for the C distinct labels, in order
        labels = np.unique(np.concatenate([s.y for s in splits.values()]))
        splits = {
            name: Split(s.x, np.searchsorted(labels, s.y).astype(np.int32))
            for name, s in splits.items()
        }
        return _dataset(spec, splits, [str(c) for c in labels], cache_hit=False)
    num_classes = max(int(s.y.max()) for s in splits.values()) + 1
    class_names = arrays["class_names"]
    if class_names.ndim != 1 or class_names.dtype.kind != "U" or len(class_names) < num_classes:
        raise InputError(
            f"{_printable(spec)}: 'class_names' must be a 1-d string array with at least "
            f"{num_classes} names, got {class_names.dtype} {class_names.shape}"
        )
    return _dataset(spec, splits, [str(c) for c in class_names], cache_hit=False)


def _npz_arrays(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read without pickle; InputError if it cannot be read."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read npz file {_quote(path)}: {_printable(e)}") from e


def _npz_split(x: np.ndarray, y: np.ndarray, where: str) -> Split:
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
