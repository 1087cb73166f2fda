"""Saving and restoring network variables, and resuming interrupted training loops.

A thin wrapper over orbax-checkpoint for two jobs:

* :func:`save` / :func:`restore`: write a pytree of arrays (e.g. a Flax linen variables dict
  ``{"params": ..., "batch_stats": ...}``) to a directory once and read it back later with
  identical values.
* :func:`save_step` / :func:`latest_step` / :func:`restore_step`: checkpoints of a multi-epoch loop
  under ``directory/<step>``, keeping only the most recent ones, so that an interrupted run resumes
  from its latest complete step.

Guarantees (single process; the project does not run multi-host):

* Atomic: orbax writes into a temporary directory beside the target, a checksum list is added,
  and only then is it renamed to ``path``. A reader sees the old checkpoint or the new one, never
  a half-written one (while an existing checkpoint is overwritten there is an instant with none).
* Verified: orbax itself does not notice every damaged file (a flipped byte in a data file
  restores silently different values), so :func:`save` records the SHA-256 of every file it wrote
  and :func:`restore` checks them before reading. Damage, a missing file, or a ``like`` whose
  structure, shapes or dtypes differ from what was saved raise :class:`CheckpointError`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
import shutil
import uuid
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hebbret.errors import InputError

CHECKSUMS = "hebbret_checksums.json"
"""File inside every checkpoint directory: ``{"format": 1, "sha256": {relative path: digest}}``."""

_FORMAT = 1


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, or does not match the structure it is restored into."""


def save(path: str | os.PathLike, tree: Any) -> None:
    """Writes the pytree of arrays ``tree`` (numpy or jax) to the directory ``path``, atomically.

    An existing checkpoint at ``path`` is replaced; any other existing file or non-empty directory
    there is left alone and raises :class:`CheckpointError`."""
    path = pathlib.Path(path).absolute()
    if path.exists() and not _replaceable(path):
        raise CheckpointError(f"{path} exists and is not a checkpoint; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    staging = path.parent / f".{path.name}.tmp-{tag}"
    old = path.parent / f".{path.name}.old-{tag}"
    try:
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            checkpointer.save(staging, args=ocp.args.StandardSave(tree))
        digests = {_relative(f, staging): _sha256(f) for f in _files(staging)}
        (staging / CHECKSUMS).write_text(json.dumps({"format": _FORMAT, "sha256": digests}))
        if path.exists():
            os.rename(path, old)
        try:
            os.rename(staging, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.rename(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        # orbax's own temporary directory is ``staging`` plus a suffix.
        for leftover in path.parent.glob(f"{glob.escape(staging.name)}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def restore(path: str | os.PathLike, like: Any) -> Any:
    """Reads the checkpoint at ``path`` into the structure of ``like``: a pytree of arrays or of
    :class:`jax.ShapeDtypeStruct` with the saved structure, shapes and dtypes.

    A numpy array (or scalar) leaf in ``like`` gives a numpy array (or scalar); a jax array or
    ``ShapeDtypeStruct`` leaf gives a jax array with its sharding (if it has one), else the saved
    one. Raises :class:`CheckpointError` if there is no checkpoint at ``path``, it is corrupt, or
    it does not match ``like``."""
    path = pathlib.Path(path).absolute()
    _verify(path)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        try:
            metadata = checkpointer.metadata(path).item_metadata
        except Exception as err:
            raise CheckpointError(
                f"checkpoint at {path} is corrupt: cannot read its metadata ({_first_line(err)})"
            ) from err
        if metadata is None:  # orbax logs why and returns None
            raise CheckpointError(f"checkpoint at {path} is corrupt: cannot read its metadata")
        saved = metadata.tree
        _check_matches(path, saved, like)
        # orbax restores numpy scalars (np.int32(0), ...) only as 0-d arrays
        as_arrays = jax.tree.map(lambda x: np.asarray(x) if isinstance(x, np.generic) else x, like)
        try:
            restored = checkpointer.restore(path, args=ocp.args.StandardRestore(as_arrays))
        except Exception as err:
            raise CheckpointError(
                f"checkpoint at {path} is corrupt or does not match `like`: {_first_line(err)}"
            ) from err
    leaves, treedef = jax.tree.flatten(restored)
    scalars = [isinstance(x, np.generic) for x in jax.tree.leaves(like)]
    leaves = [x[()] if scalar else x for x, scalar in zip(leaves, scalars, strict=True)]
    return jax.tree.unflatten(treedef, leaves)


def save_step(directory: str | os.PathLike, step: int, tree: Any, keep: int = 1) -> None:
    """Saves ``tree`` as step ``step`` of a loop, in ``directory/<step>``, then deletes older steps
    so that the ``keep`` highest-numbered ones remain (the step just saved always remains)."""
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise InputError(f"step must be a non-negative integer, got {step!r}")
    if isinstance(keep, bool) or not isinstance(keep, int | np.integer) or keep < 1:
        raise InputError(f"keep must be a positive integer, got {keep!r}")
    directory = pathlib.Path(directory)
    step = int(step)
    save(directory / str(step), tree)
    for old in sorted(_steps(directory), reverse=True)[int(keep) :]:
        if old != step:
            shutil.rmtree(directory / str(old), ignore_errors=True)


def latest_step(directory: str | os.PathLike) -> int | None:
    """The highest step saved completely under ``directory`` by :func:`save_step`, or ``None`` if
    there is none (or no such directory)."""
    return max(_steps(pathlib.Path(directory)), default=None)


def restore_step(directory: str | os.PathLike, step: int, like: Any) -> Any:
    """Restores what :func:`save_step` wrote to ``directory/<step>``; see :func:`restore`."""
    return restore(pathlib.Path(directory) / str(int(step)), like)


def _steps(directory: pathlib.Path) -> list[int]:
    """Steps with a complete checkpoint: directories named by an integer that hold a checksum
    list. Temporary directories start with a dot, so a step being written never counts."""
    if not directory.is_dir():
        return []
    return [
        int(entry.name)
        for entry in directory.iterdir()
        if entry.name.isdecimal()
        and entry.name == str(int(entry.name))
        and (entry / CHECKSUMS).is_file()
    ]


def _replaceable(path: pathlib.Path) -> bool:
    """Whether ``path`` may be overwritten: a checkpoint (even a damaged one) or an empty dir."""
    return path.is_dir() and ((path / CHECKSUMS).is_file() or not any(path.iterdir()))


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(f for f in directory.rglob("*") if f.is_file())


def _relative(file: pathlib.Path, directory: pathlib.Path) -> str:
    return file.relative_to(directory).as_posix()


def _sha256(file: pathlib.Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _verify(path: pathlib.Path) -> None:
    """Raises :class:`CheckpointError` unless ``path`` is a checkpoint whose files all have the
    checksums recorded when it was saved."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: it is a file, not a directory")
    try:
        recorded = json.loads((path / CHECKSUMS).read_text())
        digests = recorded["sha256"]
        if recorded["format"] != _FORMAT or not isinstance(digests, dict):
            raise ValueError(f"unknown format {recorded['format']!r}")
    except FileNotFoundError as err:
        raise CheckpointError(
            f"no checkpoint at {path}: no {CHECKSUMS} (not written by hebbret, or damaged)"
        ) from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint at {path} is corrupt: unreadable {CHECKSUMS}") from err
    for name, digest in sorted(digests.items()):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint at {path} is corrupt: {name} is missing")
        if _sha256(file) != digest:
            raise CheckpointError(f"checkpoint at {path} is corrupt: {name} has changed")


def _specs(tree: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key path: (shape, dtype)}`` for every leaf of ``tree`` (arrays or array metadata)."""
    specs = {}
    for key, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            leaf = np.asarray(leaf)  # a Python scalar
        specs[jax.tree_util.keystr(key)] = (tuple(leaf.shape), np.dtype(leaf.dtype))
    return specs


def _check_matches(path: pathlib.Path, saved: Any, like: Any) -> None:
    """Raises :class:`CheckpointError` unless ``like`` has the saved leaves, shapes and dtypes.
    (orbax alone would silently pad, truncate or cast.)"""
    on_disk, wanted = _specs(saved), _specs(like)
    problem = None
    if missing := sorted(wanted.keys() - on_disk.keys()):
        problem = f"not in the checkpoint: {', '.join(missing[:3])}"
    elif extra := sorted(on_disk.keys() - wanted.keys()):
        problem = f"in the checkpoint but not in `like`: {', '.join(extra[:3])}"
    else:
        for key, (shape, dtype) in sorted(on_disk.items()):
            if wanted[key] != (shape, dtype):
                want_shape, want_dtype = wanted[key]
                problem = (
                    f"{key} was saved as {dtype}{list(shape)}, "
                    f"`like` has {want_dtype}{list(want_shape)}"
                )
                break
    if problem:
        raise CheckpointError(f"checkpoint at {path} does not match `like`: {problem}")


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters (orbax's run long)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
