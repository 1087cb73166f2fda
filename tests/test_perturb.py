"""Query perturbations."""

import numpy as np
import pytest

from hebbret import InputError
from hebbret.perturb import shadow


def test_shadow_darkens_left_eighty_percent():
    x = np.full((2, 4, 10, 3), 200, np.uint8)
    y = shadow(x)
    assert y.dtype == np.uint8 and y.shape == x.shape
    assert (y[:, :, :8] == 60).all() and (y[:, :, 8:] == 200).all()
    assert (shadow(x, fraction=0.0) == x).all()


def test_shadow_bad_input():
    with pytest.raises(InputError, match="images"):
        shadow(np.zeros((4, 4)))
    with pytest.raises(InputError, match="fraction"):
        shadow(np.zeros((1, 2, 2, 1), np.uint8), fraction=1.5)
