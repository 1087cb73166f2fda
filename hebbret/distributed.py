"""Multi-process (multi-host) runs on JAX's own distributed runtime.

Every process runs the same program. After :func:`initialize`, ``jax.devices()`` lists the
devices of all processes, so the meshes of :mod:`hebbret.mesh` span them and the data-parallel
rules, the BioConvHash features and the sharded retrieval kernel run unchanged: each process
passes the same host arrays, ``jax.device_put`` keeps the shards that live on its devices, and
results that are replicated (weights, retrieval metrics) are read on every process. Arrays split
over processes come back to the host through :func:`to_host`.

Launch (N processes, here on one machine; on several hosts use the first host's address)::

    python my_study.py --process-id 0 --num-processes 2 --coordinator localhost:1234 &
    python my_study.py --process-id 1 --num-processes 2 --coordinator localhost:1234

or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` and call
``initialize()`` with no arguments (cluster environments such as SLURM are detected by JAX).
On CPU the processes exchange data with gloo (JAX's default CPU collectives).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from hebbret.errors import InputError


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """``jax.distributed.initialize`` with checked arguments; call it before any other JAX call.

    Args:
      coordinator: ``host:port`` of process 0 (default ``$JAX_COORDINATOR_ADDRESS``).
      num_processes: processes in the run (default ``$JAX_NUM_PROCESSES``).
      process_id: this process, in ``[0, num_processes)`` (default ``$JAX_PROCESS_ID``).
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    env = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}
    values = {"num_processes": num_processes, "process_id": process_id}
    for name, var in env.items():
        if values[name] is None and os.environ.get(var) is not None:
            try:
                values[name] = int(os.environ[var])
            except ValueError:
                raise InputError(f"${var} must be an integer, got {os.environ[var]!r}") from None
    num, pid = values["num_processes"], values["process_id"]
    if coordinator is not None and ":" not in coordinator:
        raise InputError(f"coordinator must be host:port, got {coordinator!r}")
    if num is not None and num < 1:
        raise InputError(f"num_processes must be >= 1, got {num}")
    if num is not None and pid is not None and not 0 <= pid < num:
        raise InputError(f"process_id must be in [0, {num}), got {pid}")
    jax.distributed.initialize(coordinator, num_processes=num, process_id=pid)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of ``x`` as a numpy array on every process (an all-gather when ``x`` is split
    over processes; a plain copy otherwise)."""
    if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
