"""Hashers for similarity search behind one functional interface: ``fit`` then ``encode``.

Every method is a :class:`Hasher`: a pair of pure functions ``fit(x_train, cfg, *, key) -> params``
(a NamedTuple of arrays, including the training mean) and ``encode(params, x) -> Codes``. The
methods are those of BioHash's comparison (Ryali et al. 2020, §3.3 and appendix D;
docs/biohash.md §Baselines), with the paper's settings as defaults:

=================  ======  =====================================================================
name               sparse  code of a (centred) input x
=================  ======  =====================================================================
``lsh``            no      ``sign(R x)``, R Gaussian (k, d) (Charikar 2002, SimHash)
``pcahash``        no      sign of the top-k principal-component projections
``sh``             no      Spectral Hashing (Weiss et al. 2009): k 1-D sinusoidal eigenfunctions
``itq``            no      PCA to k dims, then a learned rotation (Gong & Lazebnik 2011)
``flyhash``        yes     top-k of ``M x``, M (10 d, d) binary with 10 % ones a row (Dasgupta 2017)
``naivebiohash``   no      sign of the k currents of a k-unit Krotov-Hopfield layer
``biohash``        yes     top-k of the m = k / activity currents ``<W_mu, x>_mu`` (BioHash eq. 6)
``bioconvhash``    yes     BioHash on Hebbian conv features (BioHash §2.4, :mod:`.conv`)
=================  ======  =====================================================================

The modules: :mod:`.config` (:class:`HashConfig`, :func:`check`), :mod:`.codes` (:class:`Codes`,
chunked jitted encoding), :mod:`.projection` (LSH, PCAHash, SH, ITQ), :mod:`.sparse` (FlyHash,
BioHash, NaiveBioHash), :mod:`.conv` (BioConvHash, on the front end of :mod:`.bioconv`).

Every method centres its inputs by the training mean (BioHash appendix D), FlyHash included; the
mean and the PCA covariance are accumulated in float64. Dense methods give L = k bits; sparse ones
L = m bits with exactly k ones a row plus the sorted indices of the k active units. Every random
draw comes from the ``key`` given to ``fit`` (required for every method; PCAHash and SH ignore
it): ``key=jax.random.key(seed)`` gives the same params for the same seed.

Example:
  >>> cfg = HashConfig(k=16, activity=0.05)                 # m = 320 hidden units
  >>> params = fit("biohash", xb, cfg, key=jax.random.key(0))   # train on the database
  >>> cq, cb = encode("biohash", params, xq), encode("biohash", params, xb)
  >>> cb.bits.shape, cb.active.shape                        # (N, 320), (N, 16)
  >>> retrieval.evaluate(cq.packed, cb.packed, yq, yb, metric="hamming", R=1000)["map"]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from hebbret.errors import InputError
from hebbret.hashing import bioconv, conv
from hebbret.hashing.codes import Codes
from hebbret.hashing.config import USES, HashConfig, biohash_units, check, check_key, check_name
from hebbret.hashing.conv import (
    BioConvHashParams,
    FrontEnd,
    encode_bioconvhash,
    fit_bioconvhash,
    learn_front_end,
)
from hebbret.hashing.projection import (
    ITQParams,
    LSHParams,
    PCAHashParams,
    SHParams,
    encode_itq,
    encode_lsh,
    encode_pcahash,
    encode_sh,
    fit_itq,
    fit_lsh,
    fit_pcahash,
    fit_sh,
    itq_rotation,
)
from hebbret.hashing.sparse import (
    BioHashParams,
    FlyHashParams,
    encode_biohash,
    encode_flyhash,
    encode_naivebiohash,
    fit_biohash,
    fit_flyhash,
    fit_naivebiohash,
)

__all__ = [
    "HASHERS",
    "USES",
    "BioConvHashParams",
    "BioHashParams",
    "Codes",
    "FlyHashParams",
    "FrontEnd",
    "HashConfig",
    "Hasher",
    "ITQParams",
    "LSHParams",
    "PCAHashParams",
    "SHParams",
    "bioconv",
    "biohash_units",
    "check",
    "check_key",
    "conv",
    "encode",
    "fit",
    "get",
    "itq_rotation",
    "learn_front_end",
]


class Hasher(NamedTuple):
    """A hashing method: ``params = fit(x_train, cfg, key=key)``; ``codes = encode(params, x)``.

    ``fit`` also takes keywords ``progress`` (training bars) and ``mesh`` (a
    :func:`hebbret.mesh.data_mesh` for the Hebbian training; ignored by the other methods);
    ``encode`` takes ``chunk_size`` (rows per jitted call; default keeps a chunk's activations
    near 64 MB).
    """

    name: str
    sparse: bool
    fit: Callable[..., Any]
    encode: Callable[..., Codes]


HASHERS: dict[str, Hasher] = {
    "lsh": Hasher("lsh", False, fit_lsh, encode_lsh),
    "pcahash": Hasher("pcahash", False, fit_pcahash, encode_pcahash),
    "sh": Hasher("sh", False, fit_sh, encode_sh),
    "itq": Hasher("itq", False, fit_itq, encode_itq),
    "flyhash": Hasher("flyhash", True, fit_flyhash, encode_flyhash),
    "naivebiohash": Hasher("naivebiohash", False, fit_naivebiohash, encode_naivebiohash),
    "biohash": Hasher("biohash", True, fit_biohash, encode_biohash),
    "bioconvhash": Hasher("bioconvhash", True, fit_bioconvhash, encode_bioconvhash),
}

_PARAMS = {
    "lsh": LSHParams,
    "pcahash": PCAHashParams,
    "sh": SHParams,
    "itq": ITQParams,
    "flyhash": FlyHashParams,
    "naivebiohash": BioHashParams,
    "biohash": BioHashParams,
    "bioconvhash": BioConvHashParams,
}


def get(name: str) -> Hasher:
    """The registered hasher called ``name``; InputError listing the valid names otherwise."""
    check_name(name)
    return HASHERS[name]


def fit(
    name: str,
    x: np.ndarray,
    cfg: HashConfig,
    *,
    key: jax.Array,
    progress: bool = False,
    mesh: Any = None,
) -> Any:
    """``get(name).fit(x, cfg, key=key)``: x (n, d) training features (BioConvHash: images) ->
    the method's params. ``key`` (``jax.random.key(seed)``) is the one source of every random
    draw; deterministic methods (PCAHash, SH) check and ignore it."""
    return get(name).fit(x, cfg, key=key, progress=progress, mesh=mesh)


def encode(name: str, params: Any, x: np.ndarray, *, chunk_size: int | None = None) -> Codes:
    """``get(name).encode(params, x)``: x (n, d) -> :class:`Codes`. InputError if ``params``
    were not fitted by method ``name``."""
    hasher = get(name)
    if not isinstance(params, _PARAMS[name]) or (
        isinstance(params, BioHashParams) and (params.k == params.w.shape[0]) != (not hasher.sparse)
    ):
        fitted = next((m for m, t in _PARAMS.items() if isinstance(params, t) and m != name), None)
        if isinstance(params, BioHashParams):
            fitted = "naivebiohash" if params.k == params.w.shape[0] else "biohash"
        origin = f"params of {fitted!r}" if fitted else f"a {type(params).__name__}"
        raise InputError(f"encode({name!r}, ...) got {origin}, not the params of {name!r}")
    return hasher.encode(params, x, chunk_size=chunk_size)
