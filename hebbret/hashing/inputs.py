"""Input checks at the hashers' public boundary and the training mean.

Every method centres its inputs by the training mean (BioHash appendix D: "the training /
retrieval database was centered; queries were also centered using the mean computed on the
training set"). The mean is accumulated in float64: a float32 sum over CIFAR-10's 51M pixels is
visibly wrong (docs/biohash.md §Learning rule).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from hebbret.errors import InputError
from hebbret.hashing import config

STAT_ROWS = 1024  # rows per host-side chunk when accumulating covariance / projections


def features(x: Any) -> np.ndarray:
    """Checks a feature matrix at a public boundary; returns it as float32 (n, d)."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        reason = str(e).splitlines()[0]
        raise InputError(f"features are not a rectangular array: {reason}") from None
    if x.ndim != 2:
        raise InputError(f"features must be a 2-D (n, d) array, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise InputError(f"features must be real numbers, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"features are empty: shape {x.shape}")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32, copy=False)
    if not all(np.isfinite(x[s : s + 8192]).all() for s in range(0, x.shape[0], 8192)):
        raise InputError("data contains NaN or inf (or values beyond float32)")
    return x


def train_features(
    x: Any, cfg: config.HashConfig, name: str, *, key: Any, mesh: Any = None
) -> tuple[np.ndarray, np.ndarray, jax.Array]:
    """Checks training data, the method's settings (:func:`config.check`) and the PRNG key;
    returns float32 x (n, d), its float64 mean (d,) and the key."""
    x = features(x)
    config.check(name, cfg, x.shape, mesh=mesh)
    key = config.check_key(key)
    return x, np.mean(x, axis=0, dtype=np.float64), key


def encode_features(x: Any, mean: np.ndarray) -> np.ndarray:
    """Checks features to encode against the training mean (d,); returns float32 (n, d)."""
    x = features(x)
    if x.shape[1] != mean.shape[0]:
        raise InputError(
            f"features have {x.shape[1]} columns but the hasher was fitted on {mean.shape[0]}"
        )
    return x


def centred_chunks(x: np.ndarray, mean: np.ndarray) -> Iterator[np.ndarray]:
    """Yields float64 centred row chunks (bounded memory for 50k x 3072 inputs)."""
    for s in range(0, x.shape[0], STAT_ROWS):
        yield x[s : s + STAT_ROWS].astype(np.float64) - mean[None, :]
