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
from scipy import sparse

from hebbret.errors import InputError, all_finite
from hebbret.hashing import config

STAT_ROWS = 1024  # rows per host-side chunk when accumulating covariance / projections
STAT_NONZEROS = 2**24  # non-zeros per slice when summing the columns of a sparse matrix


def features(x: Any, *, allow_sparse: bool = False) -> np.ndarray:
    """Checks a feature matrix at a public boundary; returns it as float32 (n, d). A
    ``scipy.sparse`` matrix stays sparse (CSR float32) where ``allow_sparse``, else InputError."""
    if sparse.issparse(x):
        if not allow_sparse:
            raise InputError(
                "scipy.sparse features are taken by biohash, naivebiohash and the BioConvHash "
                "layer only: pass a dense array (x.toarray()) to this method"
            )
        return sparse_features(x)
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
    if not all_finite(x, step=8192):  # 8192 rows at a time
        raise InputError("data contains NaN or inf (or values beyond float32)")
    return x


def sparse_features(x: Any) -> sparse.csr_array:
    """Checks a ``scipy.sparse`` (n, d) feature matrix; returns it as a float32 CSR array."""
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"features must be a non-empty 2-D (n, d) matrix, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise InputError(f"features must be real numbers, got {x.dtype}")
    if not (isinstance(x, sparse.csr_array) and x.dtype == np.float32):  # else no copy
        x = sparse.csr_array(x, dtype=np.float32)
    if not all_finite(x.data):
        raise InputError("data contains NaN or inf (or values beyond float32)")
    return x


def column_mean(x: np.ndarray | sparse.csr_array) -> np.ndarray:
    """(d,) float64 mean of the rows of dense or sparse (n, d) x."""
    if sparse.issparse(x):  # a slice of non-zeros at a time: no float64 copy of the matrix
        x = sparse.csr_array(x)
        total, step = np.zeros(x.shape[1]), STAT_NONZEROS
        for s in range(0, x.nnz, step):
            values = x.data[s : s + step].astype(np.float64)
            total += np.bincount(x.indices[s : s + step], values, x.shape[1])
        return total / x.shape[0]
    return np.mean(x, axis=0, dtype=np.float64)


def train_features(
    x: Any,
    cfg: config.HashConfig,
    name: str,
    *,
    key: Any,
    mesh: Any = None,
    allow_sparse: bool = False,
) -> tuple[np.ndarray, np.ndarray, jax.Array]:
    """Checks training data, the method's settings (:func:`config.check`) and the PRNG key;
    returns float32 x (n, d) (dense, or CSR where ``allow_sparse``), its float64 mean (d,) and
    the key."""
    x = features(x, allow_sparse=allow_sparse)
    config.check(name, cfg, x.shape, mesh=mesh)
    key = config.check_key(key)
    return x, column_mean(x), key


def encode_features(x: Any, mean: np.ndarray, *, allow_sparse: bool = False) -> np.ndarray:
    """Checks features to encode against the training mean (d,); returns float32 (n, d)."""
    x = features(x, allow_sparse=allow_sparse)
    if x.shape[1] != mean.shape[0]:
        raise InputError(
            f"features have {x.shape[1]} columns but the hasher was fitted on {mean.shape[0]}"
        )
    return x


def centred_chunks(x: np.ndarray, mean: np.ndarray) -> Iterator[np.ndarray]:
    """Yields float64 centred row chunks (bounded memory for 50k x 3072 inputs); sparse x is
    densified a chunk at a time."""
    for s in range(0, x.shape[0], STAT_ROWS):
        rows = x[s : s + STAT_ROWS]
        rows = rows.toarray() if sparse.issparse(rows) else rows
        yield rows.astype(np.float64) - mean[None, :]
