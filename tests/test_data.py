"""Tests of hebbret.data: every dataset spec, the decoded-image cache and the user errors."""

import bz2
import gzip
import io
import json
import logging
import lzma
import os
import pathlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from hebbret import data
from hebbret.data import images, presets
from hebbret.errors import InputError

CLASSES = ("ant", "bee", "cat")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
CIFAR10_CLASSES += ("dog", "frog", "horse", "ship", "truck")


@pytest.fixture(autouse=True)
def cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Every test gets its own empty cache and tfds data dir (never ~/.cache, never downloads)."""
    monkeypatch.setenv("HEBBRET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    return tmp_path / "cache"


def make_folder(
    root: pathlib.Path, sizes: dict[str, int] | None = None, mode: str = "RGB"
) -> dict[str, np.ndarray]:
    """Write root/<split>/<class>/NNNN.png (8x8) and return the expected x of each split."""
    rng = np.random.default_rng(0)
    expected = {}
    for split, n in (sizes or {"train": 4, "test": 2}).items():
        images = []
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (8, 8, 3) if mode == "RGB" else (8, 8), np.uint8)
                Image.fromarray(image).save(root / split / name / f"{i:04d}.png")
                images.append(image if mode == "RGB" else image[..., None])
        expected[split] = np.stack(images)
    return expected


def make_archive(root: pathlib.Path, path: pathlib.Path, top: str | None = None) -> str:
    """Tar (gzip) the contents of root, under one top-level directory `top` if given."""
    with tarfile.open(path, "w:gz") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=f"{top}/{child.name}" if top else child.name)
    return f"archive:{path}"


def spec_for(source: str, root: pathlib.Path, tmp_path: pathlib.Path) -> str:
    """A folder: spec for root, or an archive: spec for a tar.gz of it."""
    return f"folder:{root}" if source == "folder" else make_archive(root, tmp_path / "a.tar.gz")


def test_digits() -> None:
    ds = data.load("digits")
    (split,) = ds.splits.values()
    assert list(ds.splits) == ["all"] and ds.kind == "images" and not ds.cache_hit
    assert split.x.shape == (1797, 8, 8, 1) and split.x.dtype == np.uint8
    assert split.y.dtype == np.int32 and (split.x.min(), split.x.max()) == (0, 255)
    assert ds.class_names == tuple("0123456789") and ds.num_classes == 10
    counts = data.summary(ds)["splits"]["all"]["counts"]
    assert counts == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert ds.pooled() is split and data.load("digits").checksum == ds.checksum


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    assert data.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("HEBBRET_CACHE")
    assert data.cache_dir() == pathlib.Path.home() / ".cache" / "hebbret"


@pytest.mark.parametrize("top", [None, "cifar-like"])
def test_folder_and_archive_identical(tmp_path: pathlib.Path, top: str | None) -> None:
    expected = make_folder(tmp_path / "images")
    (tmp_path / "images" / "train" / ".DS_Store").write_bytes(b"\0hidden files are skipped")
    folder = data.load(f"folder:{tmp_path / 'images'}", progress=False)
    archive = data.load(make_archive(tmp_path / "images", tmp_path / "i.tgz", top))
    for ds in (folder, archive):
        assert list(ds.splits) == ["train", "test"] and ds.class_names == CLASSES
        for name, split in ds.splits.items():
            np.testing.assert_array_equal(split.x, expected[name])
            assert split.x.flags.c_contiguous and split.y.dtype == np.int32
            np.testing.assert_array_equal(split.y, np.repeat(np.arange(3), len(split.y) // 3))
    assert folder.checksum == archive.checksum
    np.testing.assert_array_equal(folder.pooled().x, np.concatenate(list(expected.values())))
    summary = json.loads(json.dumps(data.summary(archive)))
    assert summary["splits"]["test"] == {
        "n": 6,
        "shape": [8, 8, 3],
        "dtype": "uint8",
        "counts": [2, 2, 2],
    }


def test_greyscale_unless_any_image_is_colour(tmp_path: pathlib.Path) -> None:
    expected = make_folder(tmp_path / "grey", mode="L")
    grey = data.load(f"folder:{tmp_path / 'grey'}", progress=False)
    np.testing.assert_array_equal(grey.splits["train"].x, expected["train"])
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "grey" / "test" / "ant" / "0000.png")
    mixed = data.load(f"folder:{tmp_path / 'grey'}", progress=False)
    assert mixed.splits["train"].x.shape == (12, 8, 8, 3)
    np.testing.assert_array_equal(mixed.splits["train"].x, expected["train"].repeat(3, axis=-1))
    assert mixed.splits["test"].x[0].tolist() == [[[1, 2, 3]] * 8] * 8


def test_cache_miss_then_hit(tmp_path: pathlib.Path, cache: pathlib.Path) -> None:
    make_folder(tmp_path / "images")
    spec = make_archive(tmp_path / "images", tmp_path / "i.tar")
    first, second = data.load(spec, progress=False), data.load(spec, progress=False)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.checksum == second.checksum and first.class_names == second.class_names
    for name, split in first.splits.items():
        np.testing.assert_array_equal(split.x, second.splits[name].x)
        np.testing.assert_array_equal(split.y, second.splits[name].y)
    assert [p.suffix for p in cache.iterdir()] == [".npz"]  # no temporary file left behind
    other = data.load(spec, cache_dir=tmp_path / "other", progress=False)
    assert not other.cache_hit and len(list((tmp_path / "other").iterdir())) == 1
    folder = f"folder:{tmp_path / 'images'}"
    assert [data.load(folder).cache_hit for _ in range(2)] == [False, True]
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "test" / "bee" / "0001.png")
    changed = data.load(folder, progress=False)
    assert not changed.cache_hit and changed.checksum != first.checksum


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_cache_is_ignored_and_rewritten(
    tmp_path: pathlib.Path, cache: pathlib.Path, damage: str
) -> None:
    make_folder(tmp_path / "images")
    spec = f"folder:{tmp_path / 'images'}"
    good = data.load(spec, progress=False)
    (path,) = cache.iterdir()
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"garbage")
    again = data.load(spec, progress=False)
    assert not again.cache_hit and again.checksum == good.checksum
    assert path.read_bytes() == content and data.load(spec, progress=False).cache_hit


@pytest.mark.parametrize("source", ["folder", "archive"])
@pytest.mark.parametrize("content", [b"not an image", b"\x89PNG\r\n\x1a\n truncated"])
def test_undecodable_image(tmp_path: pathlib.Path, source: str, content: bytes) -> None:
    make_folder(tmp_path / "images")
    (tmp_path / "images" / "train" / "bee" / "0001.png").write_bytes(content)
    with pytest.raises(InputError, match="cannot decode image 'train/bee/0001.png'"):
        data.load(spec_for(source, tmp_path / "images", tmp_path), progress=False)


@pytest.mark.parametrize("source", ["folder", "archive"])
@pytest.mark.parametrize(
    ("layout", "problem"),
    [
        ({}, "no image files"),
        ({"train/0000.png": 8}, "unexpected file 'train/0000.png'"),
        ({"ant/0000.png": 8, "bee/0000.png": 8}, "unexpected file 'ant/0000.png'"),
        ({"train/ant/0.png": 8, "test/ant/x/0.png": 8}, "unexpected file 'test/ant/x/0.png'"),
        ({"train/ant/0.png": 8, "train/bee/0.png": 8, "test/ant/0.png": 8}, r"'test' has no.*bee"),
        ({"train/ant/0.png": 8, "train/ant/1.png": 9}, "'train/ant/1.png' is 9x9 but"),
    ],
)
def test_bad_layout(
    tmp_path: pathlib.Path, source: str, layout: dict[str, int], problem: str
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for name, size in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (size, size)).save(root / name)
    with pytest.raises(InputError, match=problem) as error:
        data.load(spec_for(source, root, tmp_path), progress=False)
    if "unexpected" in problem or "no image" in problem:
        assert "PATH/<split>/<class>/<image>" in str(error.value)


def image_bytes(fmt: str, value: int) -> bytes:
    """A tiny 4x4 greyscale PNG or JPEG of one grey value."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4), value).save(buffer, format=fmt)
    return buffer.getvalue()


def write_tar(path: pathlib.Path, members: dict[str, bytes]) -> str:
    """A tar.gz holding `members` (name: content) exactly as named, in order."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return f"archive:{path}"


VALID = {"train/ant/0.png": 10, "train/bee/0.jpg": 20, "test/ant/0.jpg": 30, "test/bee/0.png": 40}


@pytest.mark.parametrize("top", ["", "top/", "./top/"])
@pytest.mark.parametrize(
    "escaping",
    [
        ["../evil.jpg"],
        ["train/../../evil.jpg"],
        ["/abs/evil.jpg"],
        ["/zz/train/ant/evil.jpg"],
        ["..", "../../x/train/ant/1.png", "/etc/passwd", "top/../../up.png", "/.hidden.png"],
    ],
    ids=["parent", "split-parent", "absolute", "absolute-split", "five"],
)
def test_archive_members_outside_the_root_are_skipped_with_a_warning(
    tmp_path: pathlib.Path, top: str, escaping: list[str]
) -> None:
    members = {
        f"{top}{name}": image_bytes(name[-3:].replace("jpg", "jpeg"), v)
        for name, v in VALID.items()
    }
    members |= {name: image_bytes("PNG", 99) for name in escaping}
    members |= {f"{top}train/ant/._0.png": b"AppleDouble", f"{top}.DS_Store": b"\0"}  # silent
    spec = write_tar(tmp_path / "a.tar.gz", members)
    listed = ", ".join(repr(name) for name in escaping[:3]) + (", ..." if len(escaping) > 3 else "")
    with pytest.warns(UserWarning) as caught:
        ds = data.load(spec, progress=False)
    (warning,) = caught
    message = str(warning.message)
    assert warning.filename == __file__ and "\n" not in message
    assert message == (
        f"skipped {len(escaping)} archive member{'s' if len(escaping) > 1 else ''} outside "
        f"the archive root in {spec}: {listed}"
    )
    assert ds.class_names == ("ant", "bee") and list(ds.splits) == ["train", "test"]
    assert ds.splits["train"].x[:, 0, 0, 0].tolist() == [10, 20]
    assert abs(ds.splits["test"].x[:, 0, 0, 0].astype(int) - [30, 40]).max() <= 2  # JPEG


def test_folder_follows_symlinks_out_of_the_root(tmp_path: pathlib.Path) -> None:
    make_folder(tmp_path / "store")
    root = tmp_path / "images"
    (root / "train").mkdir(parents=True)
    (root / "test").symlink_to(tmp_path / "store" / "test")
    for name in CLASSES:
        (root / "train" / name).mkdir()
        for image in (tmp_path / "store" / "train" / name).iterdir():
            (root / "train" / name / image.name).symlink_to(image)
    linked = data.load(f"folder:{root}", progress=False)
    assert linked.checksum == data.load(f"folder:{tmp_path / 'store'}", progress=False).checksum


@pytest.mark.parametrize(
    ("link", "target", "problem"),
    [
        (
            "train/ant/gone.png",
            "../../../missing.png",
            r"cannot read 'train/ant/gone.png' in folder",
        ),
        ("train/ant/loop", "../..", r"folder link 'train/ant/loop' in folder:.* loops back"),
        ("train/bee/self", ".", r"folder link 'train/bee/self' in folder:.* loops back"),
        ("test/up", "../../..", r"folder link 'test/up' in folder:.* loops back"),
    ],
)
def test_folder_bad_symlinks(tmp_path: pathlib.Path, link: str, target: str, problem: str) -> None:
    root = tmp_path / "data" / "images"
    make_folder(root)
    (root / link).symlink_to(target)
    with pytest.raises(InputError, match=problem) as error:
        data.load(f"folder:{root}", progress=False)
    assert "\n" not in str(error.value)


def test_npz_images_and_class_names(tmp_path: pathlib.Path) -> None:
    x = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    np.savez(tmp_path / "d.npz", x=x, y=[0, 1, 1, 0, 1], class_names=np.array(["no", "yes"]))
    ds = data.load(f"npz:{tmp_path / 'd.npz'}")
    split = ds.splits["all"]
    assert ds.kind == "images" and ds.class_names == ("no", "yes") and not ds.cache_hit
    np.testing.assert_array_equal(split.x, x[..., None])
    assert split.y.dtype == np.int32 and split.y.tolist() == [0, 1, 1, 0, 1]


def test_npz_feature_splits(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(6, 3)), rng.normal(size=(2, 3))
    np.savez(tmp_path / "f.npz", x_test=x_test, y_test=[2, 1], x_train=x_train, y_train=[0] * 6)
    ds = data.load(f"npz:{tmp_path / 'f.npz'}")
    assert list(ds.splits) == ["train", "test"] and ds.kind == "features"
    assert ds.class_names == ("0", "1", "2") and ds.splits["test"].x.dtype == np.float32
    pooled = ds.pooled()
    np.testing.assert_allclose(pooled.x, np.concatenate([x_train, x_test]), rtol=1e-6)
    assert pooled.y.tolist() == [0] * 6 + [2, 1]


@pytest.mark.parametrize(
    ("y_train", "y_test", "names", "ids"),
    [
        ([0, 5], [2**31 - 1, 0], ("0", "5", "2147483647"), [0, 1, 2, 0]),  # 2**31 names before
        ([7, 3, 3], [7], ("3", "7"), [1, 0, 0, 1]),
        ([1, 0, 2], [2], ("0", "1", "2"), [1, 0, 2, 2]),  # already 0..C-1: unchanged
    ],
    ids=["up-to-2**31-1", "sparse", "dense"],
)
def test_npz_labels_without_class_names_are_made_dense(
    tmp_path: pathlib.Path, y_train: list, y_test: list, names: tuple, ids: list
) -> None:
    x = np.zeros((len(y_train) + len(y_test), 2))
    arrays = {"x_train": x[: len(y_train)], "y_train": np.array(y_train, np.int64)}
    np.savez(tmp_path / "d.npz", **arrays, x_test=x[len(y_train) :], y_test=y_test)
    ds = data.load(f"npz:{tmp_path / 'd.npz'}")
    assert ds.class_names == names and ds.num_classes == len(names)
    assert ds.pooled().y.dtype == np.int32 and ds.pooled().y.tolist() == ids
    assert (
        data.summary(ds)["splits"]["test"]["counts"]
        == np.bincount(ids[len(y_train) :], minlength=len(names)).tolist()
    )
    np.savez(tmp_path / "n.npz", x=x[:3], y=[0, 5, 1], class_names=np.array(list("abcdef")))
    named = data.load(f"npz:{tmp_path / 'n.npz'}")  # labels index into class_names as given
    assert named.class_names == tuple("abcdef") and named.splits["all"].y.tolist() == [0, 5, 1]


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"x": [[0.0, np.nan]], "y": [0]}, "NaN"),
        ({"x": [[0.0, 1e300]], "y": [0]}, "inf"),
        ({"x": np.zeros((2, 3))}, "no array 'y'"),
        ({"x_train": np.zeros((2, 3)), "y_train": [0, 1], "y_test": [0]}, "no array 'x_test'"),
        ({"features": np.zeros((2, 3))}, "no arrays 'x' and 'y'"),
        ({"x": np.zeros((2, 3)), "y": [0, 1, 1]}, "x has 2 items and y 3"),
        ({"x": np.zeros(3), "y": [0, 1, 1]}, "got shape"),
        ({"x": np.zeros((2, 3)), "y": [0, -1]}, "labels must lie"),
        ({"x": np.zeros((2, 3)), "y": [0.0, 1.0]}, "integer"),
        ({"x": np.zeros((2, 4, 4)), "y": [0, 1]}, "uint8"),
        ({"x": np.zeros((2, 3)), "y": [0, 2], "class_names": np.array(["a", "b"])}, "class_n"),
        ({"x": np.array([None, 1], dtype=object), "y": [0, 1]}, "cannot read npz"),
    ],
)
def test_npz_errors(tmp_path: pathlib.Path, arrays: dict, problem: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=problem):
        data.load(f"npz:{tmp_path / 'bad.npz'}")


@pytest.mark.parametrize("kind", ["folder", "archive", "npz"])
def test_missing_or_unreadable_source(tmp_path: pathlib.Path, kind: str) -> None:
    with pytest.raises(InputError, match="does not exist"):
        data.load(f"{kind}:{tmp_path / 'missing'}")
    (tmp_path / "text").write_text("not an archive")
    if kind != "folder":
        with pytest.raises(InputError, match="cannot read"):
            data.load(f"{kind}:{tmp_path / 'text'}")


@pytest.mark.parametrize("spec", ["foo", "folder:", "cifar11", "npz", "Digits", "mnist:x", ""])
def test_unknown_spec(spec: str) -> None:
    with pytest.raises(InputError, match=f"unknown dataset {spec!r}: expected digits, mnist"):
        data.load(spec)


# -- display labels ------------------------------------------------------------------------------


def test_labels_of_named_and_plain_datasets(tmp_path: pathlib.Path) -> None:
    """Named datasets have their own label; other data a plain description of its source."""
    assert data.load("digits").label == "scikit-learn digits (8x8)"
    make_folder(tmp_path / "cifar10-jpeg")  # the path says CIFAR-10, the content does not
    folder = f"folder:{tmp_path / 'cifar10-jpeg'}"
    archive = make_archive(tmp_path / "cifar10-jpeg", tmp_path / "cifar10-jpeg.tar.gz")
    np.savez(tmp_path / "cifar10.npz", x=np.zeros((2, 4)), y=[0, 1])
    labels = [data.load(spec, progress=False).label for spec in (folder, archive, folder)]
    assert labels == [
        "image folder cifar10-jpeg",
        "image archive cifar10-jpeg.tar.gz",
        "image folder cifar10-jpeg",  # from the cache
    ]
    assert data.load(f"npz:{tmp_path / 'cifar10.npz'}").label == "npz file cifar10.npz"
    assert data.summary(data.load(folder, progress=False))["label"] == "image folder cifar10-jpeg"


@pytest.fixture
def small_cifar10(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """CIFAR-10's preset with 2 training and 1 test image per class instead of 5,000 and 1,000,
    so a fake CIFAR-10 takes 30 tiny images (the rule itself: tests/test_presets.py)."""
    sizes = {"train": 20, "test": 10}
    cifar10 = presets.PRESETS["cifar10"]
    content = cifar10.content._replace(sizes=sizes)
    monkeypatch.setitem(presets.PRESETS, "cifar10", cifar10._replace(content=content))
    return sizes


def make_cifar10(root: pathlib.Path, sizes: dict[str, int], fmt: str = "png") -> np.ndarray:
    """root/<split>/<cifar10 class>/N.<fmt>, 32x32 RGB; returns every image, in split order."""
    rng = np.random.default_rng(0)
    images = []
    for split, n in sizes.items():
        for name in CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(n // 10):
                image = rng.integers(0, 256, (32, 32, 3), np.uint8)
                Image.fromarray(image).save(root / split / name / f"{i}.{fmt}")
                images.append(image)
    return np.stack(images)


def test_cifar10_content_is_recognised(tmp_path: pathlib.Path, small_cifar10: dict) -> None:
    x = make_cifar10(tmp_path / "jpeg", small_cifar10, "jpg")
    make_cifar10(tmp_path / "png", small_cifar10, "png")
    jpeg = f"folder:{tmp_path / 'jpeg'}"
    archive = make_archive(tmp_path / "jpeg", tmp_path / "images.tgz", top="some-name")
    for spec in (jpeg, archive, jpeg):  # the last one from the cache
        assert data.load(spec, progress=False).label == "CIFAR-10 (JPEG)", spec
    assert data.load(f"folder:{tmp_path / 'png'}", progress=False).label == "CIFAR-10 (PNG)"
    Image.new("RGB", (32, 32)).save(tmp_path / "png" / "test" / "cat" / "0.jpg")  # one more
    assert data.load(f"folder:{tmp_path / 'png'}", progress=False).label == "image folder png"
    (tmp_path / "png" / "test" / "cat" / "0.png").unlink()  # a mix of PNG and JPEG
    assert data.load(f"folder:{tmp_path / 'png'}", progress=False).label == "CIFAR-10 (JPEG/PNG)"
    y = np.repeat(np.arange(10), 2)
    arrays = {"x_train": x[:20], "y_train": y, "x_test": x[20:], "y_test": y[::2]}
    np.savez(tmp_path / "c.npz", **arrays, class_names=np.array(CIFAR10_CLASSES))
    assert data.load(f"npz:{tmp_path / 'c.npz'}").label == "CIFAR-10 (npz)"
    np.savez(tmp_path / "n.npz", **arrays)  # no class names: classes "0" .. "9"
    assert data.load(f"npz:{tmp_path / 'n.npz'}").label == "npz file n.npz"


@pytest.mark.parametrize("source", ["folder", "archive"])
def test_label_of_a_cache_written_without_the_encoding(
    tmp_path: pathlib.Path, cache: pathlib.Path, small_cifar10: dict, source: str
) -> None:
    """A cache file from before the encoding was kept is still a hit; the label reads the
    encoding from the source once and the cache file gains it, under the same name."""
    make_cifar10(tmp_path / "images", small_cifar10, "jpg")
    spec = spec_for(source, tmp_path / "images", tmp_path)
    first = data.load(spec, progress=False)
    (path,) = cache.iterdir()
    with np.load(path) as npz:
        arrays = dict(npz)
    assert str(arrays.pop("encoding")) == "JPEG"
    np.savez(path, **arrays)  # as hebbret wrote it before
    old = data.load(spec, progress=False)
    assert old.cache_hit and old.label == "CIFAR-10 (JPEG)" and old.checksum == first.checksum
    assert [p.name for p in cache.iterdir()] == [path.name]
    with np.load(path) as npz:
        assert str(npz["encoding"]) == "JPEG"


# -- damaged archives ----------------------------------------------------------------------------


def plain_tar(members: dict[str, bytes]) -> bytes:
    """An uncompressed tar of `members`, as Python's tarfile writes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def flip(content: bytes, at: int) -> bytes:
    out = bytearray(content)
    out[at] ^= 0xFF
    return bytes(out)


DAMAGE_MEMBERS = {
    f"{s}/{c}/0.png": image_bytes("PNG", v)
    for v, (s, c) in enumerate(
        [("train", "ant"), ("train", "bee"), ("test", "ant"), ("test", "bee")]
    )
}
BOUNDARY = 2 * 1024  # the end of the second member: a 512-byte header and a one-block PNG each


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("a.tar", lambda t: t[:BOUNDARY], "ends after member 'train/bee/0.png' without an end"),
        ("a.tar", lambda t: t[: BOUNDARY + 100], "ends inside the member header after"),
        (
            "a.tar",
            lambda t: t[: BOUNDARY + 512 + 30],
            r"unexpected end of data \(in member 'test/ant/0.png'\)",
        ),
        (
            "a.tar",
            lambda t: flip(t, BOUNDARY + 148),
            "header after member 'train/bee/0.png' is invalid",
        ),
        (
            "a.tgz",
            lambda t: gzip.compress(flip(t, BOUNDARY + 148)),
            "header after member 'train/bee/0.png' is invalid",
        ),
        ("a.tar", lambda t: t[: 4 * 1024 + 512], "end-of-archive marker is cut short"),
        ("a.tar", lambda t: t + b"more", "data after its end-of-archive marker"),
        ("a.tar", lambda t: t + plain_tar({"test/cat/0.png": t[512:1024]}), "data after its"),
        ("a.tgz", lambda t: flip(gzip.compress(t), len(gzip.compress(t)) // 2), ""),
        ("a.tgz", lambda t: flip(gzip.compress(t), -6), "CRC check failed"),
        ("a.tgz", lambda t: flip(gzip.compress(t), -2), "Incorrect length"),
        ("a.tgz", lambda t: gzip.compress(t)[:-8], "Compressed file ended"),
        ("a.tgz", lambda t: gzip.compress(t) + b"junk", "Not a gzipped file"),
        ("a.tar.bz2", lambda t: bz2.compress(t)[:-20], "Compressed file ended"),
        ("a.tar.xz", lambda t: flip(lzma.compress(t), len(lzma.compress(t)) // 2), ""),
    ],
    ids=[
        "tar-cut-at-member-boundary",
        "tar-cut-in-header",
        "tar-cut-in-member-data",
        "tar-bad-header",
        "tgz-bad-header",
        "tar-one-zero-block",
        "tar-trailing-data",
        "tar-concatenated",
        "tgz-flipped-byte",
        "tgz-crc",
        "tgz-length",
        "tgz-cut",
        "tgz-trailing-junk",
        "bz2-cut",
        "xz-flipped-byte",
    ],
)
def test_damaged_archive_is_an_error_not_a_smaller_dataset(
    tmp_path: pathlib.Path, cache: pathlib.Path, name: str, damage: Any, problem: str
) -> None:
    """tarfile takes a bad header after the first member, or a missing end-of-archive marker,
    for the end of the archive, and its stream mode never checks the gzip CRC."""
    tar = plain_tar(DAMAGE_MEMBERS)
    assert len(tar) == 10240 and tar[4 * 1024 :] == bytes(6 * 1024)  # members, then zeros
    path = tmp_path / name
    path.write_bytes(damage(tar))
    with pytest.raises(
        InputError, match=f"archive '{re.escape(str(path))}' is damaged: .*{problem}"
    ) as error:
        data.load(f"archive:{path}", progress=False)
    assert "\n" not in str(error.value) and not cache.exists()


def test_archive_formats_load_like_the_folder(tmp_path: pathlib.Path) -> None:
    """Archives by Python's tarfile (every compression) and by the tar command, with and without
    a top folder, multi-member gzip and one padded to a whole record all load the same images."""
    make_folder(tmp_path / "images")
    expected = data.load(f"folder:{tmp_path / 'images'}", progress=False).checksum
    specs = []
    for suffix, mode in [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")] + [
        (".tar.bz2", "w:bz2"),
        (".tar.xz", "w:xz"),
    ]:
        with tarfile.open(tmp_path / f"py{suffix}", mode) as tar:
            for child in sorted((tmp_path / "images").iterdir()):
                tar.add(child, arcname=f"top/{child.name}")
        specs.append(f"archive:{tmp_path / f'py{suffix}'}")
    raw = (tmp_path / "py.tar").read_bytes()
    (tmp_path / "multi.tgz").write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    (tmp_path / "padded.tgz").write_bytes(gzip.compress(raw) + bytes(100))  # gzip allows it
    specs += [f"archive:{tmp_path / 'multi.tgz'}", f"archive:{tmp_path / 'padded.tgz'}"]
    if shutil.which("tar"):
        for flags, suffix in [("czf", ".tar.gz"), ("cjf", ".tar.bz2"), ("cJf", ".tar.xz")] + [
            ("cf", ".tar"),
            ("--format=posix -czf", ".pax.tgz"),
        ]:
            out = tmp_path / f"cmd{suffix}"
            command = ["tar", *flags.split(), str(out), "-C", str(tmp_path / "images"), "."]
            if subprocess.run(command, capture_output=True).returncode == 0:  # no xz: skipped
                specs.append(f"archive:{out}")
        assert f"archive:{tmp_path / 'cmd.tar.gz'}" in specs
    for spec in specs:
        ds = data.load(spec, cache_dir=tmp_path / "c", progress=False)
        assert ds.checksum == expected and not ds.cache_hit, spec


# -- unusual images ------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SIXTEEN = np.array([[0, 128, 129, 385, 386], [899, 900, 65406, 65407, 65535]], np.uint16)
SIXTEEN_TO_8 = [[0, 0, 1, 1, 2], [3, 4, 254, 255, 255]]  # round(v / 257)


@pytest.mark.parametrize(
    ("fmt", "image"),
    [
        ("PNG", Image.fromarray(SIXTEEN)),  # PIL mode I;16
        ("TIFF", Image.fromarray(SIXTEEN)),
        ("TIFF", Image.fromarray(SIXTEEN.astype(">u2"))),  # I;16B
        ("PPM", Image.fromarray(SIXTEEN)),  # a 16-bit PGM opens as mode I
    ],
    ids=["png", "tiff", "tiff-big-endian", "pgm"],
)
def test_16_bit_greyscale_is_scaled_to_8_bits(
    tmp_path: pathlib.Path, fmt: str, image: Image.Image
) -> None:
    """PIL's convert("L") clips 16-bit values to 255 instead of scaling them."""
    root = tmp_path / "images"
    (root / "all" / "a").mkdir(parents=True)
    (root / "all" / "a" / "0.img").write_bytes(encode(image, fmt))
    ds = data.load(f"folder:{root}", progress=False)
    assert ds.splits["all"].x[0, :, :, 0].tolist() == SIXTEEN_TO_8


@pytest.mark.parametrize(
    ("mode", "kind"), [("I", "integer 32-bit"), ("F", "floating-point 32-bit")]
)
def test_32_bit_greyscale_is_an_error(tmp_path: pathlib.Path, mode: str, kind: str) -> None:
    root = tmp_path / "images"
    (root / "all" / "a").mkdir(parents=True)
    (root / "all" / "a" / "0.tif").write_bytes(
        encode(Image.fromarray(SIXTEEN).convert(mode), "TIFF")
    )
    message = f"image 'all/a/0.tif' in folder:{root} has {kind} pixels \\(PIL mode '{mode}'\\)"
    with pytest.raises(InputError, match=message):
        data.load(f"folder:{root}", progress=False)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels and holds no pixel data."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [(10000, 10000, "10000 x 10000 pixels"), (60000, 60000, "3600000000 pixels")],
    ids=["warning-range", "error-range"],
)
def test_too_large_image_is_an_error(
    tmp_path: pathlib.Path, width: int, height: int, size: str
) -> None:
    """Between PIL's limit and twice it, PIL only warns (DecompressionBombWarning)."""
    make_folder(tmp_path / "images")
    (tmp_path / "images" / "train" / "ant" / "big.png").write_bytes(png_header(width, height))
    with pytest.raises(
        InputError, match=f"image 'train/ant/big.png' in folder:.* too large: {size}"
    ):
        data.load(f"folder:{tmp_path / 'images'}", progress=False)


# -- names with control characters ---------------------------------------------------------------


def test_names_with_control_characters_give_one_line_errors(tmp_path: pathlib.Path) -> None:
    """User paths, member and file names are shown escaped (as repr() does) in messages."""
    odd = tmp_path / "odd\ndir\t"  # messages show its newline and tab escaped, as repr()
    shown = re.escape(repr(str(odd))[1:-1])
    (odd / "images" / "train" / "a\nb").mkdir(parents=True)
    (odd / "images" / "train" / "a\nb" / "0\r.png").write_bytes(b"not an image")
    problems = {
        f"folder:{odd / 'images'}": r"cannot decode image 'train/a\\nb/0\\r\.png' in folder:",
        f"folder:{odd / 'images' / 'train'}": r"unexpected file 'a\\nb/0\\r\.png' in folder:",
        f"folder:{odd / 'missing'}": f"dataset folder '{shown}/missing' does not exist",
        f"archive:{odd / 'missing'}": f"archive file '{shown}/missing' does not exist",
        f"npz:{odd / 'missing'}": f"npz file '{shown}/missing' does not exist",
        write_tar(odd / "n.tgz", {"train/x\ny.png": b""}): r"unexpected file 'train/x\\ny\.png'",
        write_tar(odd / "c.tgz", {"test/a/0.png": b"", "\x1b[2J/b/0.png": b""}): (
            f"in archive:{shown}/c.tgz: " + r"split '\\x1b\[2J' has no class \['a'\]"
        ),
    }
    (odd / "bad.tar").write_bytes(plain_tar(DAMAGE_MEMBERS)[:BOUNDARY])
    problems[f"archive:{odd / 'bad.tar'}"] = f"archive '{shown}/bad.tar' is damaged: "
    np.savez(odd / "d.npz", **{"x_a\nb": np.zeros((1, 2)), "y_a\nb": [-1]})
    problems[f"npz:{odd / 'd.npz'}"] = f"npz:{shown}/d.npz " + r"\[a\\nb\]: labels must lie"
    for spec, problem in problems.items():
        with pytest.raises(InputError, match=problem) as error:
            data.load(spec, progress=False)
        assert "\n" not in str(error.value) and "\r" not in str(error.value), spec


# -- tfds ----------------------------------------------------------------------------------------


def write_tfds_metadata(name: str, data_dir: pathlib.Path, file_format: str) -> None:
    """Make `name` look prepared in data_dir: dataset_info.json + features.json, no records."""
    builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
    splits = [
        tfds.core.SplitInfo(name=s, shard_lengths=[1], num_bytes=0) for s in ("train", "test")
    ]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    if name == "cifar10":  # the real builder learns its class names while it prepares
        builder.info.features["label"].names = CIFAR10_CLASSES
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)


def mock_getitems(record_keys: list[int], generator: Any, serialized: bool = False) -> list:
    """tfds 4.9.10's mock_data sets `__getitems__` on a MagicMock as a plain partial, which then
    gets no `self` and fails; this replacement needs none."""
    return [generator[key] for key in record_keys]


@pytest.mark.parametrize(("name", "shape"), [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_mock_data(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, name: str, shape: tuple
) -> None:
    # mock_data leaves builder.is_prepared() alone: it needs USE_FILES and real metadata files.
    write_tfds_metadata(name, tmp_path / "tfds", "array_record")
    monkeypatch.setattr("tensorflow_datasets.testing.mocking._getitems", mock_getitems)
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=2500, policy=policy, data_dir=str(tmp_path / "tfds")):
        ds = data.load(name, progress=False)
    assert list(ds.splits) == ["train", "test"] and ds.num_classes == 10
    assert ds.class_names[:2] == (("airplane", "automobile") if name == "cifar10" else ("0", "1"))
    assert ds.label == ("CIFAR-10" if name == "cifar10" else "MNIST")
    for split in ds.splits.values():
        assert split.x.shape == (2500, *shape) and split.x.dtype == np.uint8
        assert split.y.dtype == np.int32 and 0 <= split.y.min() and split.y.max() < 10
        assert len(np.unique(split.y)) == 10 and split.x.std() > 50  # random, not zeros


def test_tfds_real_array_record(tmp_path: pathlib.Path) -> None:
    """A cifar10 prepared by tfds' own writer (array_record; images given as PNG bytes, so no
    TensorFlow is needed) reads back exactly through the real tfds.data_source, then the cache."""
    from tensorflow_datasets.core import registered

    rng = np.random.default_rng(0)
    splits = {
        split: (rng.integers(0, 256, (n, 32, 32, 3), np.uint8), np.arange(n) % 10)
        for split, n in [("train", 30), ("test", 12)]
    }

    def png(image: np.ndarray) -> io.BytesIO:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return io.BytesIO(buffer.getvalue())

    def examples(x: np.ndarray, y: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            yield i, {"id": str(i), "image": png(image), "label": int(label)}

    cifar10 = tfds.builder_cls("cifar10")
    with registered.skip_registration():

        class FakeCifar10(cifar10):
            name = "cifar10"

            def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
                self.info.features["label"].names = CIFAR10_CLASSES
                return {s: examples(x, y) for s, (x, y) in splits.items()}

    FakeCifar10(data_dir=tmp_path / "tfds", file_format="array_record").download_and_prepare()
    first = data.load("cifar10", progress=False)
    second = data.load("cifar10", progress=False)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.class_names == CIFAR10_CLASSES and first.checksum == second.checksum

    def items(x: np.ndarray, y: np.ndarray) -> list[tuple[int, bytes]]:
        return sorted(zip(y.tolist(), map(bytes, x), strict=True))

    for name, (x, y) in splits.items():  # tfds shuffles the records while it writes them
        assert items(second.splits[name].x, second.splits[name].y) == items(x, y)


def test_tfds_not_prepared_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"'cifar100' is not prepared in .*tfds build cifar100"):
        data.load("cifar100")
    assert time.perf_counter() - start < 5


def test_tfds_not_prepared_cli_prints_one_line(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """tfds' is_prepared() logs an absl warning about a variant folder that does not exist;
    only hebbret's one-line error may show."""
    from hebbret import cli

    def no_network(*args: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    (tmp_path / "tfds").mkdir()
    assert cli.main(["data", "mnist"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.startswith("hebbret: error: tfds dataset 'mnist' is not prepared in ")
    assert err.count("\n") == 1 and err.endswith("folder:PATH\n")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert list((tmp_path / "tfds").iterdir()) == []


def test_tfds_not_prepared_command_stderr(tmp_path: pathlib.Path) -> None:
    """The same, as a user runs it: stderr holds the one error line and nothing else."""
    (tmp_path / "tfds").mkdir()
    command = "from hebbret.cli import main; raise SystemExit(main())"
    result = subprocess.run(
        [sys.executable, "-c", command, "data", "mnist"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("hebbret: error: tfds dataset 'mnist' is not prepared in ")
    assert result.stderr.count("\n") == 1
    assert list((tmp_path / "tfds").iterdir()) == []


def test_tfds_without_random_access_format(tmp_path: pathlib.Path) -> None:
    write_tfds_metadata("mnist", tmp_path / "tfds", "tfrecord")
    with pytest.raises(InputError, match="--file_format=array_record"):
        data.load("mnist")


# -- the real CIFAR-10 (JPEG) archive ------------------------------------------------------------


def test_real_cifar10_archive() -> None:
    """Runs when HEBBRET_CIFAR10_ARCHIVE names the shared archive; fails if it is missing."""
    archive = os.environ.get("HEBBRET_CIFAR10_ARCHIVE")
    if not archive:
        pytest.skip("HEBBRET_CIFAR10_ARCHIVE is not set")
    assert pathlib.Path(archive).is_file(), f"HEBBRET_CIFAR10_ARCHIVE={archive}: no such file"
    ds = data.load(f"archive:{archive}", progress=False)
    assert ds.class_names == CIFAR10_CLASSES and list(ds.splits) == ["train", "test"]
    for name, per_class in [("train", 5000), ("test", 1000)]:
        split = ds.splits[name]
        assert split.x.shape == (10 * per_class, 32, 32, 3) and split.x.dtype == np.uint8
        assert np.bincount(split.y).tolist() == [per_class] * 10
    again = data.load(f"archive:{archive}", progress=False)
    assert again.cache_hit and again.checksum == ds.checksum
    assert ds.label == again.label == "CIFAR-10 (JPEG)"


def test_grey_resized_is_box_averaged_luma():
    rgb = np.zeros((1, 4, 4, 3), np.uint8)
    rgb[0, :2, :2] = (255, 0, 0)  # red: luma 0.299 * 255 = 76.2
    rgb[0, :2, 2:] = (0, 0, 255)  # blue: 0.114 * 255 = 29.1
    rgb[0, 2:, :] = 200  # grey stays 200
    grey = images.grey_resized(rgb, 2)
    np.testing.assert_array_equal(grey, [[[76, 29], [200, 200]]])
    # box: a 2x2 block of 0 and 255 averages to 127.5
    chequer = (np.indices((4, 4)).sum(0) % 2 * 255).astype(np.uint8)[None]
    assert set(np.unique(images.grey_resized(chequer, 2))) <= {127, 128}
    with pytest.raises(InputError, match="uint8"):
        images.grey_resized(rgb.astype(np.float32), 2)
    with pytest.raises(InputError, match="size"):
        images.grey_resized(rgb, 0)
