"""Device meshes: one helper, one set of axis names.

Every parallel piece of hebbret runs on a 1-D :class:`jax.sharding.Mesh`:

- ``DATA`` ("data"): minibatches split over devices, parameters replicated (the BioHash and
  Hebbian PCA rules, BioConvHash features); the devices' partial updates are summed.
- ``DB`` ("db"): the retrieval database split over devices; every device ranks its shard for
  every query of a chunk, then the chunk's queries are split over the devices and each device
  merges (or sums) its queries' lists from all shards.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` gives 8 devices to test with.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from hebbret.errors import InputError

DATA = "data"
DB = "db"


def make(axis: str, num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``axis`` over the first ``num_devices`` devices (default: all)."""
    if axis not in (DATA, DB):
        raise InputError(f"unknown mesh axis {axis!r}: expected {DATA!r} or {DB!r}")
    devices = jax.devices()
    num = len(devices) if num_devices is None else num_devices
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)):
        raise InputError(f"num_devices must be an integer, got {num!r}")
    if not 1 <= num <= len(devices):
        raise InputError(f"num_devices must be in [1, {len(devices)}], got {num}")
    return Mesh(np.asarray(devices[:num]), (axis,))


def data_mesh(num_devices: int | None = None) -> Mesh:
    """Mesh with axis ``"data"``: minibatches split over devices (:func:`make`)."""
    return make(DATA, num_devices)


def database_mesh(num_devices: int | None = None) -> Mesh:
    """Mesh with axis ``"db"``: the retrieval database sharded over devices (:func:`make`)."""
    return make(DB, num_devices)


def check(mesh: Mesh | None, axis: str) -> None:
    """InputError unless ``mesh`` is None or a 1-D mesh whose one axis is ``axis``."""
    if mesh is None:
        return
    if not isinstance(mesh, Mesh) or mesh.axis_names != (axis,):
        helper = "data_mesh()" if axis == DATA else "database_mesh()"
        raise InputError(
            f"mesh must be a 1-D jax.sharding.Mesh with axis {axis!r} (hebbret.mesh.{helper})"
        )


def size(mesh: Mesh | None) -> int:
    """Number of devices of a 1-D mesh (1 for None)."""
    return 1 if mesh is None else int(mesh.devices.size)
