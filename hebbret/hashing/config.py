"""The hashers' settings and their checks: :class:`HashConfig`, :data:`USES`, :func:`check`.

Every check here reads shapes and settings only, never data, so :func:`check` can validate a whole
grid of (method, k) before the first fit; every ``fit_<method>`` runs it first. Randomness is not
a setting: each fit takes a ``key`` (``jax.random.key(seed)``), checked by :func:`check_key`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hebbret.errors import InputError
from hebbret.hashing import bioconv
from hebbret.rules import biohash, biohash_train

# The registered methods, in the order of BioHash's tables.
NAMES = ("lsh", "pcahash", "sh", "itq", "flyhash", "naivebiohash", "biohash", "bioconvhash")


class HashConfig(NamedTuple):
    """Settings shared by all hashers (each uses the fields it needs, see :data:`USES`).

    Attributes:
      k: hash length: active units (sparse methods) or bits (dense methods).
      activity: BioHash a = k / m, so m = round(k / a); 0.5 % for CIFAR-10, 5 % for MNIST.
      rule: the Krotov-Hopfield learning rule settings (BioHash, NaiveBioHash, BioConvHash).
      fly_expansion: FlyHash m = fly_expansion * d Kenyon cells (paper: 10).
      fly_sampling: fraction of the d inputs each Kenyon cell sums (paper: 0.1).
      itq_iterations: ITQ alternations (paper: 50).
      conv: BioConvHash's convolutional front end (filters, kernel sizes, k_CI, pooling).
      image_shape: (H, W, C) of the images that (n, H*W*C) rows hold (BioConvHash only).
    """

    k: int
    activity: float = 0.005
    rule: biohash.RuleConfig = biohash.RuleConfig()
    fly_expansion: int = 10
    fly_sampling: float = 0.1
    itq_iterations: int = 50
    conv: bioconv.ConvConfig = bioconv.ConvConfig()
    image_shape: tuple[int, int, int] | None = None


# The HashConfig fields each method reads (beyond k), so callers can reject settings that a
# method would silently ignore.
USES: dict[str, frozenset[str]] = {
    "lsh": frozenset(),
    "pcahash": frozenset(),
    "sh": frozenset(),
    "itq": frozenset({"itq_iterations"}),
    "flyhash": frozenset({"fly_expansion", "fly_sampling"}),
    "naivebiohash": frozenset({"rule"}),
    "biohash": frozenset({"activity", "rule"}),
    "bioconvhash": frozenset({"activity", "rule", "conv", "image_shape"}),
}


def check_name(name: str) -> None:
    """InputError listing the valid names unless ``name`` is a registered hasher."""
    if name not in NAMES:
        raise InputError(f"unknown hasher {name!r}: expected one of {', '.join(NAMES)}")


def check_key(key: Any) -> jax.Array:
    """``key`` if it is a JAX PRNG key (``jax.random.key(seed)``, or a legacy uint32 (2,)
    ``jax.random.PRNGKey(seed)``, which draws the same numbers); InputError otherwise."""
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
        what = f"an array of dtype {key.dtype} and shape {key.shape}"
    else:
        what = repr(key) if isinstance(key, int | np.integer | None) else type(key).__name__
    raise InputError(f"key must be one JAX PRNG key such as jax.random.key(0), got {what}")


def biohash_units(cfg: HashConfig) -> int:
    """m = round(k / activity) hidden units for BioHash; InputError unless 0 < a < 1 and k < m."""
    if not (isinstance(cfg.activity, int | float | np.number) and 0.0 < cfg.activity < 1.0):
        raise InputError(f"activity must be in (0, 1), got {cfg.activity}")
    m = round(cfg.k / cfg.activity)
    if cfg.k >= m:
        raise InputError(
            f"biohash needs k < m = round(k / activity) = {m}, got k = {cfg.k} "
            f"(lower the activity {cfg.activity})"
        )
    return m


def check_front_end(
    cfg: HashConfig, image_shape: Sequence[int] | None, *, mesh: Any = None
) -> tuple[int, int, int]:
    """InputError now if BioConvHash's front end ``cfg.conv`` (filters learned by ``cfg.rule`` on
    ``cfg.conv.patches`` patches) cannot be learned on images of ``image_shape``; (H, W, C)."""
    if image_shape is None:
        raise InputError(
            "bioconvhash needs images: pass (n, H, W, C) arrays or set HashConfig.image_shape"
        )
    shape = bioconv.check_config(image_shape, cfg.conv)
    biohash_train.check_training(cfg.rule, int(cfg.conv.filters), int(cfg.conv.patches), mesh=mesh)
    return shape


def check(name: str, cfg: HashConfig, shape: tuple[int, ...], *, mesh: Any = None) -> None:
    """InputError now if ``fit(name, x, cfg, key=...)`` would reject training data of ``shape``:
    (n, d) features, or (n, H, W, C) images / (n, H*W*C) rows with ``cfg.image_shape`` for
    BioConvHash.

    Checks k, rows vs minibatch, k vs dimension, every setting the method reads (activity, rule,
    FlyHash expansion, ITQ iterations, the conv front end), without touching any data, so a grid
    of (method, k) can be validated before its first fit.
    """
    check_name(name)
    k = cfg.k
    if not _is_int(k) or k < 1:
        raise InputError(f"k must be an integer >= 1, got {k!r}")
    n = int(shape[0])
    if n < 2:
        raise InputError(f"fitting needs at least 2 training rows, got {n}")
    d = int(np.prod(shape[1:]))
    if name in ("pcahash", "itq") and k > d:
        raise InputError(f"{name} needs k <= d (at most one bit per dimension): k = {k}, d = {d}")
    if name == "itq" and not (_is_int(cfg.itq_iterations) and cfg.itq_iterations >= 0):
        raise InputError(f"itq_iterations must be an integer >= 0, got {cfg.itq_iterations!r}")
    if name == "flyhash":
        if not (_is_int(cfg.fly_expansion) and cfg.fly_expansion >= 1):
            raise InputError(f"fly_expansion must be an integer >= 1, got {cfg.fly_expansion!r}")
        if not 0.0 < cfg.fly_sampling <= 1.0:
            raise InputError(f"fly_sampling must be in (0, 1], got {cfg.fly_sampling}")
        if k >= cfg.fly_expansion * d:
            raise InputError(
                f"flyhash needs k < m = {cfg.fly_expansion * d} Kenyon cells, got k = {k}"
            )
    if name == "naivebiohash":
        biohash_train.check_training(cfg.rule, int(k), n, mesh=mesh)
    if name == "biohash":
        biohash_train.check_training(cfg.rule, biohash_units(cfg), n, mesh=mesh)
    if name == "bioconvhash":
        image_shape = tuple(shape[1:]) if len(shape) == 4 else cfg.image_shape
        check_front_end(cfg, image_shape, mesh=mesh)
        check("biohash", cfg, (n, bioconv.feature_dim(image_shape, cfg.conv)), mesh=mesh)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)
