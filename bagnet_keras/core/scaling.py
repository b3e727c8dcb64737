"""Scaling of explanation maps (NumPy only): one `minmax_scale` for the CAM family, Score-CAM's masks and
the sanity checks' SSIM."""

from __future__ import annotations

import numpy as np

__all__ = ["minmax_scale"]


def minmax_scale(maps: np.ndarray, axis: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Each map scaled to [0, 1] over ``axis`` (the spatial axes of (N, H, W[, C]) maps); a constant map is 0.

    Examples
    --------
    >>> minmax_scale(np.array([[[1.0, 3.0]], [[2.0, 2.0]]])).tolist()
    [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    low = maps.min(axis=axis, keepdims=True)
    span = maps.max(axis=axis, keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0)
