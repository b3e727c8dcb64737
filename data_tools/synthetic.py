"""Generated images for tests, benchmarks and offline demos: random scenes of shapes, gradients and texture.

Distinct seeds give visibly distinct scenes (their perceptual hashes lie about
32 bits apart, like unrelated photos), so planted duplicates are the only
near-duplicates in a generated set.
"""

from __future__ import annotations

import cv2
import numpy as np


def scene(seed: int, size: int | tuple[int, int] = 256) -> np.ndarray:
    """One RGB uint8 scene (H, W, 3).

    Examples
    --------
    >>> scene(0, 64).shape
    (64, 64, 3)
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    image = np.empty((h, w, 3), dtype="float32")
    for c in range(3):  # a smooth random background
        a, b, phase = rng.uniform(-6, 6, 3)
        image[..., c] = 128 + 60 * np.sin(a * xx + b * yy + phase)
    image = image.astype("uint8")
    for _ in range(int(rng.integers(15, 30))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, (w, h)))
        r = int(rng.integers(max(2, min(h, w) // 40), max(3, min(h, w) // 5)))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(image, (x0, y0), r, colour, -1)
        elif kind == 1:
            cv2.rectangle(image, (x0, y0), (x0 + r, y0 + int(rng.integers(2, 2 * r))), colour, -1)
        else:
            x1, y1 = (int(v) for v in rng.integers(0, (w, h)))
            cv2.line(image, (x0, y0), (x1, y1), colour, int(rng.integers(1, 6)))
    noise = rng.normal(0, 6, image.shape)
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0) + noise, 0, 255).astype("uint8")


TEXTURES = ("horizontal", "vertical", "checker")


def textures(n_per_class: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 3) uint8 and labels of three texture classes that any patch can tell apart.

    Class ``k`` is ``TEXTURES[k]``: stripes across, stripes down, or a
    checkerboard, each with random colours, period, phase and noise, so the
    classes are separable by local texture and not by colour.

    Examples
    --------
    >>> images, labels = textures(2, size=16)
    >>> images.shape, labels.tolist()
    ((6, 16, 16, 3), [0, 0, 1, 1, 2, 2])
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for label in range(len(TEXTURES)):
        for _ in range(n_per_class):
            period = rng.uniform(4, 8)
            dy, dx = rng.uniform(0, period, 2)
            rows = np.sin(2 * np.pi * (yy + dy) / period) > 0
            cols = np.sin(2 * np.pi * (xx + dx) / period) > 0
            mask = (rows, cols, rows ^ cols)[label]
            a, b = rng.uniform(0, 255, (2, 3))
            image = np.where(mask[..., None], a, b) + rng.normal(0, 12, (size, size, 3))
            images.append(np.clip(image, 0, 255).astype("uint8"))
            labels.append(label)
    return np.stack(images), np.array(labels)
