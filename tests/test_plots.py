"""Figures: retrieval grid colours, P-R curves, filter grids, sweeps."""

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


def test_filter_grid_shows_each_filter_as_its_patch():
    rng = np.random.default_rng(0)
    filters = rng.normal(size=(7, 3 * 3 * 3))
    fig = plots.filter_grid(filters, 3, 3, columns=4)
    shown = [ax.get_images() for ax in fig.axes]
    assert len(fig.axes) == 8 and sum(len(s) for s in shown) == 7
    first = shown[0][0].get_array()
    w = filters[0].reshape(3, 3, 3)
    np.testing.assert_allclose(first, (w - w.min()) / (w.max() - w.min()), rtol=1e-6, atol=1e-7)
    grey = plots.filter_grid(rng.normal(size=(2, 4)), 2, 1)
    assert grey.axes[0].get_images()[0].get_cmap().name == "bwr"


def test_sweep_rings_the_best_point():
    fig = plots.sweep([0.25, 0.5, 1.0], [20.0, 22.0, 21.0], xlabel="a", ylabel="m", logx=True)
    ring = fig.axes[0].get_lines()[1]
    assert list(ring.get_xdata()) == [0.5] and list(ring.get_ydata()) == [22.0]
