"""The masked copies of images that deletion, insertion and masking linearity score, batched across images.

`bagnet_keras.metrics.faithfulness` measures one image at a time, so each of
its calls feeds a model a batch of 21 or 12 copies of one image. A
comparison of many images needs hundreds of such copies per image, and they
are cheapest when full batches of the user's size go through each model
once. Here a masked copy ("pass") is described by the index of its image and
a boolean mask of the image's ``cell`` x ``cell`` squares (True: filled with
the image's per-channel mean, the paper's masking); pixels are built only
for the batch being scored, so memory is bounded by the batch size. A batch
of deletion copies is built once and scored by every model that needs it
(cross-model deletion).

The curves equal those of the per-image functions (`deletion_curve`,
`insertion_curve`, `masking_linearity`), which tests check.

Examples
--------
>>> heatmaps = np.zeros((1, 4, 4)); heatmaps[0, :2, 2:] = 1.0  # cell 1 (top right) ranks first
>>> positions = rank_positions(heatmaps, cell=2)
>>> positions.tolist()
[[1, 0, 2, 3]]
>>> deletion_passes(positions, steps=2).cells.astype(int).tolist()  # k = 1, 2 highest cells masked
[[0, 1, 0, 0], [1, 1, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from bagnet_keras.metrics.faithfulness import cell_scores


def rank_positions(heatmaps: np.ndarray, cell: int = 8) -> np.ndarray:
    """Each cell's place in its map's ranking, highest mean first (ties: the earlier cell): (N, cells), int.

    The ranking is `faithfulness`'s (row-major cells of ``cell_scores``).
    """
    scores = np.stack([cell_scores(h, cell).ravel() for h in np.asarray(heatmaps)])
    order = np.argsort(-scores, axis=1, kind="stable")
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(order.shape[1])[None], axis=1)
    return positions


@dataclass
class Passes:
    """Masked copies of images: ``image`` (P,) indices into the batch, ``cells`` (P, cells) True where masked."""

    image: np.ndarray
    cells: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, index: slice) -> Passes:
        return Passes(self.image[index], self.cells[index])

    @staticmethod
    def concat(parts: list[Passes]) -> Passes:
        return Passes(np.concatenate([p.image for p in parts]), np.concatenate([p.cells for p in parts]))


def _passes(positions: np.ndarray, thresholds: np.ndarray, op: Callable) -> Passes:
    n, cells = positions.shape
    masked = op(positions[:, None, :], thresholds[None, :, None])  # (N, T, cells)
    return Passes(np.repeat(np.arange(n), len(thresholds)), masked.reshape(-1, cells))


def deletion_passes(positions: np.ndarray, steps: int) -> Passes:
    """The k highest-ranked cells masked, k = 1..min(steps, cells), per image (k = 0 is the image itself)."""
    return _passes(positions, np.arange(1, min(steps, positions.shape[1]) + 1), np.less)


def insertion_passes(positions: np.ndarray, steps: int) -> Passes:
    """All cells masked but the k highest-ranked, k = 0..min(steps, cells), per image."""
    return _passes(positions, np.arange(min(steps, positions.shape[1]) + 1), np.greater_equal)


def single_cell_passes(positions: np.ndarray, k: int) -> Passes:
    """One of the k highest-ranked cells masked, per cell and image (masking linearity's single effects)."""
    return _passes(positions, np.arange(min(k, positions.shape[1])), np.equal)


def build(images: np.ndarray, fills: np.ndarray, passes: Passes, cell: int) -> np.ndarray:
    """The pixels of ``passes``: (P, H, W, C) from ``images`` (N, H, W, C) and their ``fills`` (N, C).

    Examples
    --------
    >>> images = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> build(images, images.mean(axis=(1, 2)), Passes(np.array([0]), np.array([[True, False, False, False]])),
    ...       cell=2)[0, :, :, 0].tolist()
    [[7.5, 7.5, 2.0, 3.0], [7.5, 7.5, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0], [12.0, 13.0, 14.0, 15.0]]
    """
    h, w = images.shape[1:3]
    rows, cols = -(-h // cell), -(-w // cell)
    grid = passes.cells.reshape(-1, rows, cols)
    pixels = grid.repeat(cell, axis=1).repeat(cell, axis=2)[:, :h, :w, None]
    return np.where(pixels, fills[passes.image][:, None, None, :], images[passes.image]).astype(images.dtype)


def class_scores(logits: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(logit of classes[i], log-sum-exp of all logits)`` per row of ``logits`` (N, classes), in float64.

    ``exp(logit - logsumexp)`` is the class probability (the softmax), without forming the softmax.

    Examples
    --------
    >>> logit, lse = class_scores(np.zeros((1, 4)), np.array([2]))
    >>> float(np.exp(logit - lse)[0])
    0.25
    """
    logits = np.asarray(logits, dtype="float64")
    return logits[np.arange(len(logits)), classes], logsumexp(logits, axis=1)


def score_passes(
    score_fns: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    images: np.ndarray,
    passes: Passes,
    classes: np.ndarray,
    cell: int,
    batch_size: int,
    fills: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score every pass with every model, building each batch of pixels once.

    Parameters
    ----------
    score_fns : mapping name -> callable
        Images to logits (N, classes) (`faithfulness.logit_fn`).
    images : array (N, H, W, C)
    passes : Passes
    classes : array (N,)
        The class whose score is kept, per image.
    cell : int
    batch_size : int
        Passes per model call.
    fills : array (N, C), optional
        The value of masked pixels; default: each image's per-channel mean.

    Returns
    -------
    dict name -> (logit, logsumexp), each (P,) float64
        The class logit of each pass and the log-sum-exp of all its logits, so
        that ``exp(logit - logsumexp)`` is the class probability.
    """
    images = np.asarray(images, dtype="float32")
    fills = images.mean(axis=(1, 2)) if fills is None else np.asarray(fills, dtype="float32")
    out = {name: (np.empty(len(passes)), np.empty(len(passes))) for name in score_fns}
    for start in range(0, len(passes), batch_size):
        chunk = passes[start : start + batch_size]
        batch = build(images, fills, chunk, cell)
        wanted = np.asarray(classes)[chunk.image]
        for name, fn in score_fns.items():
            logit, lse = class_scores(fn(batch), wanted)
            out[name][0][start : start + len(chunk)] = logit
            out[name][1][start : start + len(chunk)] = lse
    return out
