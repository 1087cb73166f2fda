"""Hashing comparisons: fit every hasher, encode queries and database, measure mAP, time it.

The one function behind ``hebbret compare``, the BioHash table scripts in ``experiments/`` and the
Colab quickstart, so all three produce the same numbers from the same code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from hebbret import hashing, retrieval
from hebbret.data.splits import Protocol
from hebbret.errors import InputError

# ``hebbret compare``'s default: BioHash and its paper's baselines (BioConvHash is opt-in: its
# paper settings give 147,600 features an image on CIFAR-10).
DEFAULT_METHODS = ("lsh", "pcahash", "sh", "itq", "flyhash", "naivebiohash", "biohash")


def run(proto: Protocol, **kwargs: Any) -> list[dict[str, Any]]:
    """All the rows of :func:`iter_rows` (same arguments) as a list."""
    return list(iter_rows(proto, **kwargs))


def check(
    methods: Sequence[str], ks: Sequence[int], config: hashing.HashConfig, shape: tuple[int, ...]
) -> None:
    """InputError now if any (method, k) of the grid cannot be fitted on training data of
    ``shape`` (rows vs minibatch, k vs dimension, settings): see :func:`hashing.check`."""
    for method in methods:
        for k in ks:
            try:
                hashing.check(method, config._replace(k=int(k)), shape)
            except InputError as e:
                raise InputError(f"{method} at k = {k}: {e}") from None


def iter_rows(
    proto: Protocol,
    *,
    methods: Sequence[str],
    ks: Sequence[int],
    config: hashing.HashConfig,
    key: jax.Array,
    x_train: np.ndarray | None = None,
    tie: str = "exact",
    normaliser: str = "retrieved",
    progress: bool = False,
    log=None,
) -> Iterator[dict[str, Any]]:
    """One row per (method, k): mAP@R of Hamming ranking with the method's codes, yielded as
    each finishes, so a caller keeps the finished rows if a later one fails or is interrupted.

    Args:
      proto: queries / database features and labels and R (see ``splits.default_protocol``).
      methods: names in ``hashing.HASHERS``; ks: hash lengths.
      config: shared settings (activity, rule, ...); ``k`` is replaced per row.
      key: the PRNG key of every fit (``jax.random.key(seed)``): every row is fitted with this
        same key, so a method's row at k draws what ``hashing.fit(..., key=key)`` draws.
      x_train: training features (default: the database, as in the BioHash protocols).
      tie, normaliser: the retrieval kernel's tie policy and AP normaliser.
      log: optional ``print``-like callable for one line per finished row.

    Yields:
      rows with method, k, map (percent), fit_s, encode_s, bits, and for the Hebbian methods the
      epochs run, the final mean weight norm, whether it reached the rule's criterion and that
      criterion. The whole grid is checked (:func:`check`) before the first fit.
    """
    x_train = proto.xb if x_train is None else x_train
    check(methods, ks, config, np.shape(x_train))
    key = hashing.check_key(key)
    for method in methods:
        for k in ks:
            cfg = config._replace(k=int(k))
            start = time.perf_counter()
            params = hashing.fit(method, x_train, cfg, key=key, progress=progress)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            cq = hashing.encode(method, params, proto.xq)
            cb = hashing.encode(method, params, proto.xb)
            encode_s = time.perf_counter() - start
            m = retrieval.evaluate(
                cq.packed,
                cb.packed,
                proto.yq,
                proto.yb,
                metric="hamming",
                R=proto.R,
                tie=tie,
                normaliser=normaliser,
            )
            row = {
                "method": method,
                "k": int(k),
                "map": 100 * m["map"],
                "fit_s": fit_s,
                "encode_s": encode_s,
                "bits": int(cb.bits.shape[1]),
            }
            if hasattr(params, "mean_norm"):
                row |= {
                    "epochs": int(params.epochs),
                    "mean_norm": float(params.mean_norm),
                    "converged": bool(params.mean_norm < cfg.rule.norm_target),
                    "norm_target": float(cfg.rule.norm_target),
                }
            if log is not None:
                log(_row_line(row))
            yield row


def _row_line(row: Mapping[str, Any]) -> str:
    extra = ""
    if "epochs" in row:
        extra = f", {row['epochs']} epochs, mean norm {row['mean_norm']:.3f}"
        if not row.get("converged", True):
            extra += f" (not converged: criterion < {row['norm_target']:g})"
    return (
        f"{row['method']:<13} k={row['k']:<3} mAP {row['map']:6.2f}  "
        f"fit {row['fit_s']:.2f} s{extra}"
    )


def table(
    rows: Sequence[Mapping[str, Any]],
    *,
    paper: Mapping[str, Sequence[float | None]] | None = None,
    paper_ks: Sequence[int] = (),
) -> str:
    """Markdown table, methods x k, of mAP (percent); with ``paper``, each cell reads
    ``ours (paper)`` where the paper has a number for that method and k. A Hebbian row whose
    weights did not reach the rule's convergence criterion is marked † and explained (epochs,
    final mean norm) under the table."""
    ks = sorted({r["k"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["k"]): r for r in rows}
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    notes = []
    for method in methods:
        cells = []
        for k in ks:
            row = cell.get((method, k))
            text = "" if row is None else f"{row['map']:.2f}"
            if row is not None and row.get("converged") is False:
                text += " †"
                notes.append(
                    f"{DISPLAY_NAMES.get(method, method)} k={k}: {row['epochs']} epochs, "
                    f"mean norm {row['mean_norm']:.3f}"
                )
            ref = _paper_value(paper, paper_ks, method, k)
            if ref is not None:
                text += f" ({ref:.2f})"
            cells.append(text)
        lines.append(f"| {DISPLAY_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    if notes:
        target = next(r["norm_target"] for r in rows if r.get("converged") is False)
        lines.append("")
        lines.append(
            f"† not converged (mean weight norm still above the criterion {target:g} when "
            "training stopped): " + "; ".join(notes)
        )
    return "\n".join(lines)


DISPLAY_NAMES = {
    "lsh": "LSH",
    "pcahash": "PCAHash",
    "sh": "SH",
    "itq": "ITQ",
    "flyhash": "FlyHash",
    "naivebiohash": "NaiveBioHash",
    "biohash": "BioHash",
    "bioconvhash": "BioConvHash",
}


def _paper_value(paper, paper_ks, method, k):
    if not paper or method not in paper or k not in paper_ks:
        return None
    return paper[method][list(paper_ks).index(k)]
