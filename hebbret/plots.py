"""Figures people would rather look at: retrieval grids, precision-recall curves, filters,
embedding scatter plots (t-SNE) and image rows (reconstructions)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _show(ax, image: np.ndarray, colour: str | None) -> None:
    image = np.asarray(image)
    grey = image.ndim == 2 or image.shape[-1] == 1
    ax.imshow(
        image.squeeze(-1) if image.ndim == 3 and grey else image, cmap="gray" if grey else None
    )
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(colour is not None)
        if colour is not None:
            side.set_edgecolor(colour)
            side.set_linewidth(3)


def retrieval_grid(
    query_images: np.ndarray,
    database_images: np.ndarray,
    indices: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    title: str | None = None,
) -> Figure:
    """One row per query: the query, then its retrieved items, each framed green when it has the
    query's label and red otherwise (as in BioHash Fig. 3).

    Args:
      query_images: (nq, h, w, c) images; database_images: (N, h, w, c).
      indices: (nq, k) database indices, best first (e.g. from ``retrieval.search``).
      query_labels: (nq,); database_labels: (N,).
    """
    nq, k = indices.shape
    fig, axes = plt.subplots(nq, k + 1, figsize=(0.9 * (k + 1), 0.95 * nq), squeeze=False)
    for i in range(nq):
        _show(axes[i, 0], query_images[i], None)
        for j, idx in enumerate(indices[i]):
            same = database_labels[idx] == query_labels[i]
            _show(axes[i, j + 1], database_images[idx], "tab:green" if same else "tab:red")
    axes[0, 0].set_title("query", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pr_curves(curves: Mapping[str, dict], *, title: str | None = None) -> Figure:
    """Precision against recall at every rank, one line per method.

    ``curves`` maps a label to the ``pr_curve`` entry of :func:`hebbret.retrieval.evaluate`."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for label, c in curves.items():
        ax.plot(c["recall"], c["precision"], label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def sweep(
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    title: str | None = None,
) -> Figure:
    """One measured quantity against a swept setting (e.g. mAP against activity, BioHash Fig. 4);
    the best point is ringed."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(x, y, "o-")
    best = int(np.argmax(y))
    ax.plot(x[best], y[best], "o", mfc="none", ms=12, color="tab:red")
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])  # label the swept values, not powers of ten
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def filter_grid(
    filters: np.ndarray, kernel: int, channels: int, *, columns: int = 20, title: str | None = None
) -> Figure:
    """Learned filters as a grid of K x K images (as Krotov & Hopfield plot their synapses).

    ``filters`` (F, K*K*C) in (row, column, channel) order. Greyscale filters use a diverging
    map centred on 0, scaled by the filter's largest |entry|; colour ones are stretched to [0, 1]
    by their own min and max (filters learned on non-negative pixels are nearly all positive, so a
    symmetric scale would wash them out).
    """
    filters = np.asarray(filters, np.float32)
    f = filters.shape[0]
    cols = min(columns, f)
    rows = -(-f // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.5 * cols, 0.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= f:
            continue
        w = filters[i].reshape(kernel, kernel, channels)
        scale = max(float(np.abs(w).max()), 1e-12)
        if channels == 1:
            ax.imshow(w[:, :, 0], cmap="bwr", vmin=-scale, vmax=scale)
        else:
            lo = float(w.min())
            ax.imshow((w - lo) / max(float(w.max()) - lo, 1e-12))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.2)
    return fig


def embedding_scatter(
    panels: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    class_names: tuple[str, ...] | None = None,
) -> Figure:
    """2-D embeddings (e.g. t-SNE) side by side, one panel per name, points coloured by class.

    ``panels`` maps a title to (n, 2) points, ``labels`` the same titles to (n,) class ids."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (title, points) in zip(axes[0], panels.items(), strict=True):
        y = np.asarray(labels[title])
        for c in np.unique(y):
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(*np.asarray(points)[y == c].T, s=3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def image_rows(rows: Mapping[str, np.ndarray], *, title: str | None = None) -> Figure:
    """Rows of images with a name each (e.g. originals above their reconstructions): ``rows``
    maps a name to (n, h, w, c) images, uint8 or floats in [0, 1]."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n, 1.0 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for i in range(n):
            ax = axes[r, i]
            if i < len(images):
                _show(ax, np.clip(images[i], 0, 1) if images.dtype.kind == "f" else images[i], None)
            else:
                ax.set_axis_off()
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
