"""Tar archives read as a stream, never extracted, with damage checks: a failed checksum of the
compression, a damaged member header or an archive cut short is an error, never fewer files.

Regular, non-hidden files count (links are ignored); members whose normalised name leaves the
archive root (absolute, or a leading ``..``) are skipped with a warning that names them.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import pathlib
import posixpath
import tarfile
import zlib
from typing import BinaryIO

from hebbret.data.images import hidden
from hebbret.data.messages import printable, quote, warn
from hebbret.errors import InputError
from hebbret.progress import bar as progress_bar

# what a damaged compressed stream raises: BadGzipFile and bz2's errors are OSErrors, a stream
# cut short raises EOFError
_DAMAGED = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def read(path: pathlib.Path, spec: str, progress: bool) -> dict[str, bytes]:
    """The bytes of every regular, non-hidden file in a tar archive, by normalised member name;
    members outside the archive root (absolute, or with a leading '..') are skipped with a
    warning. InputError if the archive cannot be read or is damaged."""
    try:
        with path.open("rb") as raw, _decompressed(raw) as stream:
            files, outside = _read_tar(stream, path, progress)
    except OSError as e:  # opening it: _read_tar turns errors while reading into InputErrors
        raise InputError(f"cannot read archive {quote(path)}: {printable(e.strerror or e)}") from e
    if outside:
        listed = ", ".join(map(repr, outside[:3])) + (", ..." if len(outside) > 3 else "")
        warn(
            f"skipped {len(outside)} archive member{'s' if len(outside) > 1 else ''} outside the "
            f"archive root in {printable(spec)}: {listed}"
        )
    return files


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
                f"cannot read archive {quote(path)}: not a tar archive ({printable(e)})"
            ) from e
        reading = progress_bar(
            desc=f"reading {path.name}", unit=" files", enabled=progress, leave=True
        )
        with tar, reading as bar:
            for member in tar:
                previous = member.name
                name = posixpath.normpath(member.name)
                if not member.isfile():
                    continue
                if name.startswith("/") or name == ".." or name.startswith("../"):
                    outside.append(member.name)
                elif not hidden(name):
                    reading = True
                    files[name] = tar.extractfile(member).read()
                    reading = False
                    bar.update()
            problem = _tar_end_problem(stop[0], tar.fileobj, previous)
    except _DAMAGED as e:
        problem = printable(e) or type(e).__name__
        if previous is not None:
            problem += f" ({'in' if reading else 'after'} member {previous!r})"
    if problem:
        raise InputError(f"archive {quote(path)} is damaged: {problem}")
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
