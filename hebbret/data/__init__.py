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

Every :class:`Dataset` has a display ``label`` for reports, decided from its content (never from
the path): ``"MNIST"``, ``"CIFAR-10 (JPEG)"`` for an archive of CIFAR-10's JPEGs, ``"image
folder pets"`` (the rule: :mod:`hebbret.data.presets`).

Modules: :mod:`~hebbret.data.dataset` (Dataset, Split, checksum, summary),
:mod:`~hebbret.data.sources` (digits, tfds, folders, archives), :mod:`~hebbret.data.npz`,
:mod:`~hebbret.data.archive` (tar reading, damage checks), :mod:`~hebbret.data.images` (layout,
decoding), :mod:`~hebbret.data.cache`, :mod:`~hebbret.data.presets` (per-dataset defaults) and
:mod:`~hebbret.data.splits` (query / database protocols).
"""

import os
import pathlib

from hebbret.data import npz, sources
from hebbret.data.cache import cache_dir, resolve
from hebbret.data.dataset import Dataset, Split, summary
from hebbret.data.images import LAYOUT
from hebbret.errors import InputError

__all__ = ["LAYOUT", "SPECS", "Dataset", "Split", "cache_dir", "load", "summary"]

SPECS = "digits, mnist, cifar10, cifar100, folder:PATH, archive:PATH.tar.gz or npz:PATH"


def load(
    spec: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring); InputError if it is bad.

    ``cache_dir`` overrides :func:`cache_dir`; ``progress`` shows tqdm bars while decoding.
    """
    cache = resolve(cache_dir)
    match spec.partition(":"):
        case ("digits", "", ""):
            return sources.digits(spec)
        case (name, "", "") if name in sources.TFDS_NAMES:
            return sources.tfds(spec, name, cache, progress)
        case ("folder", ":", path) if path:
            return sources.folder(spec, pathlib.Path(path).expanduser(), cache, progress)
        case ("archive", ":", path) if path:
            return sources.archive(spec, pathlib.Path(path).expanduser(), cache, progress)
        case ("npz", ":", path) if path:
            return npz.load(spec, pathlib.Path(path).expanduser())
    raise InputError(f"unknown dataset {spec!r}: expected {SPECS}")
