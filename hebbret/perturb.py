"""Query perturbations for robustness protocols."""

from __future__ import annotations

import numpy as np

from hebbret.errors import InputError


def shadow(images: np.ndarray, fraction: float = 0.8, factor: float = 0.3) -> np.ndarray:
    """BioHash appendix B "shadows": multiply ``fraction`` of each image by ``factor``.

    The shaded part is the left ``round(fraction * width)`` columns (a shadow band over 80 % of
    the image; the paper's Fig. 6 shows such a band). images: (n, h, w, c) uint8 -> same, uint8.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(f"shadow needs (n, h, w, c) images, got shape {images.shape}")
    if not 0.0 <= fraction <= 1.0 or factor < 0.0:
        raise InputError(
            f"shadow needs fraction in [0, 1] and factor >= 0, got {fraction}, {factor}"
        )
    out = images.astype(np.float32)
    cols = round(fraction * images.shape[2])
    out[:, :, :cols, :] *= factor
    return np.clip(np.round(out), 0, 255).astype(images.dtype)
