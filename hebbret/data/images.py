"""Image files to arrays: the layout ``PATH/<split>/<class>/<image>`` of folders and archives,
Pillow decoding (16-bit greyscale scaled to 8 bits, oversized images refused) and the files'
encoding (``"JPEG"``, ``"PNG"``) for the display label."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable

import numpy as np
from PIL import Image

from hebbret.data.dataset import Decoded, Split
from hebbret.data.messages import printable
from hebbret.errors import InputError
from hebbret.progress import bar as progress_bar

LAYOUT = "PATH/<split>/<class>/<image>"
_GREY_MODES = frozenset({"1", "L", "LA"})  # 8-bit greyscale; wider ones: see decode_image
_16_BIT_I_FORMATS = frozenset({"PNG", "PPM"})  # whose PIL mode "I" holds samples of 16 bits
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))  # as Pillow recognises them


def hidden(path: str) -> bool:
    """Whether a relative path has a component starting with '.' (.DS_Store, ._x.jpg, .git)."""
    return any(part.startswith(".") for part in path.split("/"))


def layout(paths: list[str], spec: str) -> dict[str, dict[str, list[str]]]:
    """Group sorted relative paths ``[top/]<split>/<class>/<image>`` as {split: {class: paths}}."""
    if not paths:
        raise InputError(f"no image files in {printable(spec)}: expected layout {LAYOUT}")
    parts = [path.split("/") for path in paths]
    under_top = len({p[0] for p in parts}) == 1 and max(len(p) for p in parts) == 4
    tree: dict[str, dict[str, list[str]]] = {}
    for path, p in zip(paths, parts, strict=True):
        p = p[1:] if under_top else p
        if len(p) != 3:
            raise InputError(
                f"unexpected file {path!r} in {printable(spec)}: expected layout {LAYOUT}"
            )
        tree.setdefault(p[0], {}).setdefault(p[1], []).append(path)
    all_classes = set().union(*tree.values())
    for split, classes in tree.items():
        if missing := sorted(all_classes - classes.keys()):
            raise InputError(
                f"classes differ across splits in {printable(spec)}: split {split!r} has no class "
                f"{missing}"
            )
    return tree


def decode_image(path: str, data: bytes, spec: str) -> np.ndarray:
    """Decode one image file to (h, w) uint8 if it is greyscale, else (h, w, 3) RGB.

    16-bit greyscale (PIL modes ``I;16*``, and ``I`` from PNG and PGM, whose samples have at
    most 16 bits) is scaled to 8 bits, round(v / 257); other 32-bit integer and float greyscale
    (modes ``I`` and ``F``, as from TIFF) has no known range and is an error. So is an image of
    more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (PIL only warns up to twice that).
    """
    where = f"image {path!r} in {printable(spec)}"
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
        size = f"{pixels[1]} pixels" if pixels else printable(e)
        raise InputError(
            f"{where} is too large: {size} (the limit is PIL.Image.MAX_IMAGE_PIXELS = {limit})"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot decode {where}: {printable(e)}") from e


def decode_tree(
    tree: dict[str, dict[str, list[str]]], files: dict[str, bytes], spec: str, progress: bool
) -> Decoded:
    """Decode every image of the layout; greyscale images become RGB unless all are greyscale."""
    class_names = tuple(sorted(next(iter(tree.values()))))
    decoded: dict[str, list[np.ndarray]] = {}
    first: tuple[str, np.ndarray] | None = None
    total = sum(len(paths) for classes in tree.values() for paths in classes.values())
    decoding = progress_bar(
        total=total, desc="decoding images", unit=" img", enabled=progress, leave=True
    )
    with decoding as bar:
        for split, classes in tree.items():
            decoded[split] = []
            for name in class_names:
                for path in classes[name]:
                    image = decode_image(path, files[path], spec)
                    if first is None:
                        first = (path, image)
                    elif image.shape[:2] != first[1].shape[:2]:
                        raise InputError(
                            f"image {path!r} is {_size(image)} but {first[0]!r} is "
                            f"{_size(first[1])}: all images in {printable(spec)} must have "
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
    return Decoded(splits, class_names, encoding(files.values()))


def encoding(files: Iterable[bytes]) -> str:
    """The image formats of the files, as Pillow names them, sorted and joined by "/": "JPEG",
    "PNG", "JPEG/PNG" ("?" for a file Pillow cannot open)."""
    return "/".join(sorted({_format(data) for data in files}))


def _format(data: bytes) -> str:
    for magic, name in _MAGIC:  # the common formats without opening the file
        if data.startswith(magic):
            return name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.format or "?"
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        return "?"


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def grey_resized(x: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w[, 3]) uint8 images as (n, size, size) uint8 grey ones: Pillow's luma ("L":
    0.299 R + 0.587 G + 0.114 B) and area-averaging ("box") resampling."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise InputError(f"expected (n, h, w[, 1 or 3]) uint8 images, got {x.dtype} {x.shape}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"size must be a positive integer, got {size!r}")
    x = x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x
    out = np.empty((len(x), size, size), np.uint8)
    for i, image in enumerate(x):
        grey = Image.fromarray(image).convert("L")
        out[i] = np.asarray(grey.resize((size, size), Image.Resampling.BOX))
    return out
