"""Hashing comparisons: fit every hasher, encode queries and database, measure mAP, time it.

The one function behind ``hebbret compare``, the BioHash table scripts in ``experiments/`` and the
Colab quickstart, so all three produce the same numbers from the same code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hebbret import hashing, retrieval
from hebbret.splits import Protocol

# ``hebbret compare``'s default: BioHash and its paper's baselines (BioConvHash is opt-in: its
# paper settings give 147,600 features an image on CIFAR-10).
DEFAULT_METHODS = ("lsh", "pcahash", "sh", "itq", "flyhash", "naivebiohash", "biohash")


def run(
    proto: Protocol,
    *,
    methods: Sequence[str],
    ks: Sequence[int],
    config: hashing.HashConfig,
    x_train: np.ndarray | None = None,
    tie: str = "exact",
    normaliser: str = "retrieved",
    progress: bool = False,
    log=None,
) -> list[dict[str, Any]]:
    """One row per (method, k): mAP@R of Hamming ranking with the method's codes.

    Args:
      proto: queries / database features and labels and R (see ``splits.default_protocol``).
      methods: names in ``hashing.HASHERS``; ks: hash lengths.
      config: shared settings (activity, rule, seed, ...); ``k`` is replaced per row.
      x_train: training features (default: the database, as in the BioHash protocols).
      log: optional ``print``-like callable for one line per finished row.

    Returns:
      rows with method, k, map (percent), fit_s, encode_s, and for BioHash the number of epochs
      and the final mean weight norm.
    """
    x_train = proto.xb if x_train is None else x_train
    rows = []
    for method in methods:
        for k in ks:
            cfg = config._replace(k=int(k))
            start = time.perf_counter()
            params = hashing.fit(method, x_train, cfg, progress=progress)
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
            row.update(
                (key, getattr(params, key))
                for key in ("epochs", "mean_norm")
                if hasattr(params, key)
            )
            rows.append(row)
            if log is not None:
                log(_row_line(row))
    return rows


def _row_line(row: Mapping[str, Any]) -> str:
    extra = ""
    if "epochs" in row:
        extra = f", {row['epochs']} epochs, mean norm {row['mean_norm']:.3f}"
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
    ``ours (paper)`` where the paper has a number for that method and k."""
    ks = sorted({r["k"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["k"]): r["map"] for r in rows}
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for method in methods:
        cells = []
        for k in ks:
            ours = cell.get((method, k))
            text = "" if ours is None else f"{ours:.2f}"
            ref = _paper_value(paper, paper_ks, method, k)
            if ref is not None:
                text += f" ({ref:.2f})"
            cells.append(text)
        lines.append(f"| {DISPLAY_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
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
