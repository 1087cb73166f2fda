"""Figures: the retrieval grid frames hits green and misses red."""

import matplotlib.colors as mcolors
import numpy as np

from hebbret import plots


def test_retrieval_grid_colours_hits_and_misses():
    rng = np.random.default_rng(0)
    qi, di = rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8), rng.integers(0, 255, (5, 8, 8, 1))
    fig = plots.retrieval_grid(
        qi,
        di.astype(np.uint8),
        np.array([[0, 1], [2, 3]]),
        np.array([0, 1]),
        np.array([0, 1, 1, 0, 0]),
    )
    axes = np.array(fig.axes).reshape(2, 3)
    edge = lambda ax: mcolors.to_hex(ax.spines["left"].get_edgecolor())  # noqa: E731
    assert edge(axes[0, 1]) == mcolors.to_hex("tab:green")
    assert edge(axes[0, 2]) == mcolors.to_hex("tab:red")
    assert edge(axes[1, 1]) == mcolors.to_hex("tab:green")
    assert not axes[0, 0].spines["left"].get_visible()


def test_pr_curves_one_line_per_method():
    fig = plots.pr_curves(
        {
            "a": {"precision": [1, 0.5], "recall": [0.5, 1]},
            "b": {"precision": [0.2, 0.2], "recall": [0.1, 0.2]},
        }
    )
    assert len(fig.axes[0].get_lines()) == 2
