"""Tests of hebbret.files: atomic writes (modes, errors, stale temporaries) and check_writable."""

import errno
import os
import pathlib
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hebbret import files
from hebbret.errors import InputError

HOST = socket.gethostname()


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that changes it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)
    return child.pid


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=oct)
def test_new_file_gets_the_umask_mode(tmp_path: pathlib.Path, umask: None, mask: int) -> None:
    os.umask(mask)
    files.atomic_write_text(tmp_path / "sub" / "r.json", "{}")
    assert mode(tmp_path / "sub" / "r.json") == 0o666 & ~mask
    assert (tmp_path / "sub" / "r.json").read_text() == "{}"


@pytest.mark.parametrize("old_mode", [0o644, 0o640, 0o755, 0o444], ids=oct)
def test_existing_file_keeps_its_mode(tmp_path: pathlib.Path, old_mode: int) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")
    path.chmod(old_mode)
    files.atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_text() == "new" and mode(path) == old_mode


def test_temporary_file_names_its_writer(tmp_path: pathlib.Path) -> None:
    seen = []
    files.atomic_write(tmp_path / "r.json", lambda f: seen.extend(os.listdir(tmp_path)))
    (name,) = seen
    assert re.fullmatch(rf"\.r\.json\.{re.escape(HOST)}-{os.getpid()}\.[0-9a-f]+\.tmp", name)
    assert os.listdir(tmp_path) == ["r.json"]


def failing_write(f: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("case", ["write fails", "read-only place", "target is a directory"])
def test_oserror_names_the_target(tmp_path: pathlib.Path, case: str) -> None:
    path, write = tmp_path / "r.json", lambda f: f.write(b"{}")
    if case == "write fails":
        write = failing_write
    elif case == "read-only place":
        path = pathlib.Path("/proc/hebbret-test.json")
    else:
        (path / "child").mkdir(parents=True)
    with pytest.raises(OSError) as error:
        files.atomic_write(path, write)
    assert f"'{path}'" in str(error.value) and ".tmp" not in str(error.value)
    assert error.value.filename == str(path) and error.value.errno is not None
    assert sorted(os.listdir(tmp_path)) == (["r.json"] if case.startswith("target") else [])


def test_oserror_without_errno_names_the_target(tmp_path: pathlib.Path) -> None:
    def fail(f: object) -> None:
        raise OSError("encoder failed")

    with pytest.raises(OSError, match=f"encoder failed: '{tmp_path / 'r.png'}'"):
        files.atomic_write(tmp_path / "r.png", fail)
    assert os.listdir(tmp_path) == []


def test_other_exceptions_pass_unchanged(tmp_path: pathlib.Path) -> None:
    error = KeyError("x")

    def fail(f: object) -> None:
        raise error

    with pytest.raises(KeyError) as raised:
        files.atomic_write(tmp_path / "r.json", fail)
    assert raised.value is error and os.listdir(tmp_path) == []


# -- stale temporary files ---------------------------------------------------------------------


def test_stale_temporaries_of_dead_writers_are_removed(
    tmp_path: pathlib.Path, gone_pid: int
) -> None:
    names = {
        "stale": f".r.json.{HOST}-{gone_pid}.0123abcd.tmp",
        "live": f".r.json.{HOST}-{os.getpid()}.0123abcd.tmp",
        "other host": f".r.json.not-{HOST}-{gone_pid}.0123abcd.tmp",
        "other target": f".r.jsonl.{HOST}-{gone_pid}.0123abcd.tmp",
        "other target 2": f".x.{HOST}-{gone_pid}.0123abcd.tmp",
        "old style": ".r.json.k3j_x9a2.tmp",
        "not ours": f".r.json.{HOST}-{gone_pid}.tmp",
        "huge pid": f".r.json.{HOST}-{10**30}.0123abcd.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_text("half")
    files.atomic_write_text(tmp_path / "r.json", "new")
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(["r.json", *(n for k, n in names.items() if k != "stale")])
    assert (tmp_path / "r.json").read_text() == "new"


WRITER = """
import os, sys, time
from hebbret import files

def write(f):
    f.write(b"x" * (1 << 20))
    f.flush()
    print("writing", flush=True)
    time.sleep(60)

files.atomic_write(sys.argv[1], write)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_killed_writer_leaves_nothing_after_the_next_write(
    tmp_path: pathlib.Path, sig: signal.Signals
) -> None:
    path = tmp_path / "cache" / "big.npz"
    files.atomic_write_text(path, "old")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(sig)
        writer.communicate()
    assert writer.returncode == -sig
    (orphan,) = (p for p in path.parent.iterdir() if p.name != "big.npz")
    assert orphan.name.startswith(f".big.npz.{HOST}-{writer.pid}.")
    assert orphan.stat().st_size == 1 << 20 and path.read_text() == "old"
    files.atomic_write_text(path, "new")
    assert os.listdir(path.parent) == ["big.npz"] and path.read_text() == "new"


# -- check_writable ----------------------------------------------------------------------------


def test_check_writable_accepts_and_creates_nothing(tmp_path: pathlib.Path) -> None:
    (tmp_path / "old.json").write_text("old")
    for path in ["new.json", "old.json", "a/b/c/new.json"]:
        assert files.check_writable(tmp_path / path) == tmp_path / path
        assert files.check_writable(str(tmp_path / path)) == tmp_path / path
    assert os.listdir(tmp_path) == ["old.json"] and (tmp_path / "old.json").read_text() == "old"


def test_check_writable_relative_path(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert files.check_writable("out.json") == pathlib.Path("out.json")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("dir", r"cannot write '.*/dir': it is a directory"),
        (".", "it is a directory"),
        ("file.txt/out.json", r"'.*/file.txt/out.json': '.*/file.txt' is not a directory"),
        ("file.txt/a/b/out.json", r"'.*/file.txt' is not a directory"),
        ("link/out.json", r"'.*/link' is not a directory"),
        ("/proc/hebbret-test/out.json", r"cannot write .*: cannot create files in '/proc'"),
        ("/proc/out.json", r"cannot create files in '/proc'"),
        ("/dev/null", r"'/dev/null': it is not a regular file"),
    ],
)
def test_check_writable_errors(
    tmp_path: pathlib.Path, path: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InputError, match=problem) as error:
        files.check_writable(path if path.startswith("/") or path == "." else tmp_path / path)
    assert "\n" not in str(error.value)
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "dir") == []
