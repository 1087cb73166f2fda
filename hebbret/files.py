"""Atomic file writes: readers see the old file or the new one, never half of one.

The new content goes to a hidden temporary file beside the target, named after its writer
(``.<name>.<host>-<pid>.<random>.tmp``), which is then renamed onto the target. A writer killed
mid-write (SIGTERM, SIGKILL) leaves its temporary file behind; the next write of the same target
removes it once it is stale: written on this host by a process that no longer exists. Files of
live writers, of other hosts and of other targets are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import re
import secrets
import socket
import stat
from collections.abc import Callable
from typing import IO

from hebbret.errors import InputError

_HOST = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Calls ``write(f)`` on a temporary binary file beside ``path``, then renames it onto
    ``path``; on any error the temporary file is removed and ``path`` is untouched.

    The file gets the mode of the file it replaces, else ``0o666`` less the umask. An OSError
    names ``path`` (not the temporary file); stale temporaries of ``path`` are removed first.
    """
    path = pathlib.Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = _create_temporary(path)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.filename not in (None, tmp):
            raise  # about another file (a folder it could not create...), which it names
        if e.errno is None:
            raise OSError(f"{e}: '{path}'") from e
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def check_writable(path: str | os.PathLike) -> pathlib.Path:
    """``path`` as a Path if :func:`atomic_write` can write it, else InputError; call it before
    any long work. Probes the nearest existing folder by creating and removing a file there;
    creates no folder and leaves nothing behind."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise InputError(f"cannot write '{path}': it is a directory")
    if path.exists() and not path.is_file():
        raise InputError(f"cannot write '{path}': it is not a regular file")
    folder = path.absolute().parent
    while not folder.is_dir():
        if os.path.lexists(folder):
            raise InputError(f"cannot write '{path}': '{folder}' is not a directory")
        folder = folder.parent
    try:
        fd, probe = _create_temporary(folder / ".hebbret-probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or e
        raise InputError(
            f"cannot write '{path}': cannot create files in '{folder}' ({reason})"
        ) from e
    return path


def _create_temporary(path: pathlib.Path) -> tuple[int, str]:
    """Open a new ``.<name>.<host>-<pid>.<random>.tmp`` beside ``path`` for writing: with the mode
    of ``path`` if it exists, else ``0o666`` less the umask (applied by the kernel)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        name = f".{path.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp = os.path.join(path.parent, name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise OSError(e.errno, e.strerror, os.fspath(path)) from e  # name path, not tmp
        if mode is not None:
            try:
                os.fchmod(fd, mode)
            except BaseException:
                os.close(fd)
                _remove(tmp)
                raise
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.fspath(path))


def _remove_stale_temporaries(path: pathlib.Path) -> None:
    """Remove the temporary files of ``path`` left by writers on this host that have died."""
    pattern = re.compile(re.escape(f".{path.name}.{_HOST}-") + r"(\d+)\.[0-9a-f]+\.tmp")
    try:
        with os.scandir(path.parent) as entries:
            stale = [
                entry.path
                for entry in entries
                if (match := pattern.fullmatch(entry.name)) and not _alive(int(match[1]))
            ]
    except OSError:
        return  # best effort: the write itself reports a folder it cannot use
    for tmp in stale:
        _remove(tmp)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (when unsure, it is taken as alive)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it belongs to another user
        pass
    return True


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
