"""Two CPU processes on localhost (JAX's distributed runtime, gloo collectives) compute what one
process with the same number of devices computes (hebbret.distributed)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

from hebbret import distributed
from hebbret.errors import InputError

WORKER = Path(__file__).with_name("multiprocess_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    coordinator = f"localhost:{_free_port()}"
    run = lambda *args: subprocess.Popen(  # noqa: E731
        [sys.executable, str(WORKER), *map(str, args)], env=env, stderr=subprocess.PIPE, text=True
    )
    procs = [run(tmp_path / "two.npz", 2, coordinator, 2, i) for i in range(2)]
    procs.append(run(tmp_path / "one.npz", 4))  # one process, the same 4 devices
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert (int(two["processes"]), int(two["devices"])) == (2, 4)
    assert (int(one["processes"]), int(one["devices"])) == (1, 4)
    # BioHash (sparse partial updates gathered, then summed in one order), retrieval (integer
    # counts summed) and features (no reduction): bit-identical
    for name in ("w", "map", "p10", "feats"):
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)
    # Hebbian PCA sums float updates across processes (gloo's order): the data-parallel tolerance
    hpca = sorted(k for k in one.files if k.startswith("hpca"))
    chex.assert_trees_all_close([two[k] for k in hpca], [one[k] for k in hpca], rtol=2e-4,
                                atol=2e-5)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"coordinator": "localhost"}, "host:port"),
        ({"num_processes": 0}, "num_processes must be >= 1"),
        ({"num_processes": 2, "process_id": 2}, r"process_id must be in \[0, 2\)"),
    ],
)
def test_initialize_checks_its_arguments(kwargs, problem):
    with pytest.raises(InputError, match=problem):
        distributed.initialize(**kwargs)


def test_initialize_reads_the_environment(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(InputError, match=r"\$JAX_NUM_PROCESSES must be an integer"):
        distributed.initialize("localhost:1")


def test_to_host_of_a_local_array():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(distributed.to_host(np.asarray(x)), x)
