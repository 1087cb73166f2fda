"""Test setup: 8 simulated CPU devices (before JAX starts), strict numerics, a private cache dir."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Never write to the user's ~/.cache from tests."""
    monkeypatch.setenv("HEBBRET_CACHE", str(tmp_path_factory.getbasetemp() / "hebbret-cache"))
