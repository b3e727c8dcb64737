"""Numbers that say how faithful a heatmap is to a model, with the BagNet paper's masking of 8x8 cells.

Every function takes plain arrays: an image (H, W, C) as the model sees it, a
heatmap (H, W) at the image's resolution (`EvidenceMap.upsample()`, the CAM
maps), and ``score_fn``, which maps a batch of images to class scores (use
`logit_fn` for a model's logits). Heatmaps rank the image's ``cell`` x
``cell`` squares ("cells") by their mean value; a masked cell is filled with the
image's per-channel mean, as in Brendel & Bethge (2019), section 4.

Examples
--------
>>> import numpy as np
>>> cell_scores(np.arange(16.0).reshape(4, 4), cell=2).tolist()
[[2.5, 4.5], [10.5, 12.5]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import spearmanr

if TYPE_CHECKING:
    import keras

# Keras is imported by `logit_fn` alone: the measures on plain arrays (and the comparison's tables built
# from them) load no TensorFlow.

ScoreFn = Callable[[np.ndarray], np.ndarray]


def logit_fn(
    model: keras.Model,
    output: int | str | None = None,
    batch_size: int = 64,
    jit_compile: bool = False,
    strategy=None,
) -> ScoreFn:
    """``score_fn`` giving the pre-softmax scores (logits) of an output of any ``model``.

    The softmax (or sigmoid) that ends the output is left out, as the
    explanations leave it out (`bagnet_keras.core.graph.target_scores`); an
    output without one is used as it is. BatchNorm that follows a convolution is folded into it
    (`bagnet_keras.models.inference.folded_score_function`). ``jit_compile`` compiles the model with XLA.
    ``strategy`` (a ``tf.distribute`` strategy, e.g. ``MirroredStrategy()`` on a machine with several
    GPUs, under whose scope the model was built) splits each batch across its replicas.
    """
    from bagnet_keras.core.backend import require_tensorflow
    from bagnet_keras.core.inputs import in_batches, output_index
    from bagnet_keras.models.inference import folded_score_function

    require_tensorflow("strategy", strategy)  # before anything is built or compiled
    forward = folded_score_function(model, output_index(model, output), "logit", jit_compile)
    if strategy is not None:
        forward = _replicated(forward, strategy)

    def fn(x: np.ndarray) -> np.ndarray:
        return in_batches(forward, batch_size, x)

    return fn


def _replicated(forward: Callable, strategy) -> Callable:
    """``forward`` with each batch cut into one contiguous slice per replica of ``strategy``, run on all at once."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    def run(x):
        x = np.asarray(x, dtype="float32")
        if len(x) < replicas:  # a replica with no image fails: too few to share
            return np.asarray(forward(x))

        def value(context):
            i = context.replica_id_in_sync_group
            return tf.constant(x[i * len(x) // replicas : (i + 1) * len(x) // replicas])

        values = strategy.experimental_distribute_values_from_function(value)
        results = strategy.experimental_local_results(strategy.run(forward, args=(values,)))
        return np.concatenate([np.asarray(r) for r in results])

    return run


def _scores(score_fn: ScoreFn, batch: np.ndarray) -> np.ndarray:
    """``score_fn``'s class scores as float64 NumPy; a backend's tensor (a score_fn of one's own, a GPU's
    PyTorch tensor) is converted by Keras, which NumPy cannot do alone."""
    scores = score_fn(batch)
    if not isinstance(scores, np.ndarray):
        import keras

        scores = keras.ops.convert_to_numpy(scores)
    return np.asarray(scores, "float64")


def probability_fn(score_fn: ScoreFn) -> ScoreFn:
    """``score_fn`` followed by a softmax: class probabilities, bounded, for deletion and insertion curves.

    Examples
    --------
    >>> probability_fn(lambda x: np.zeros((len(x), 4)))(np.zeros((1, 2, 2, 3))).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """

    def fn(x: np.ndarray) -> np.ndarray:
        scores = _scores(score_fn, x)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)

    return fn


def cell_scores(heatmap: np.ndarray, cell: int = 8) -> np.ndarray:
    """Mean of ``heatmap`` (H, W) over each ``cell`` x ``cell`` square: (ceil(H/cell), ceil(W/cell))."""
    heatmap = np.asarray(heatmap, dtype="float64")
    if heatmap.ndim != 2:
        raise ValueError(f"`heatmap` must be 2-D (H, W). Received shape {heatmap.shape}")
    h, w = heatmap.shape
    rows, cols = -(-h // cell), -(-w // cell)
    padded = np.full((rows * cell, cols * cell), np.nan)
    padded[:h, :w] = heatmap
    return np.nanmean(padded.reshape(rows, cell, cols, cell), axis=(1, 3))


def _ranking(heatmap: np.ndarray, cell: int) -> np.ndarray:
    """Cell indices (row-major) from the highest mean value down; ties keep the earlier cell."""
    return np.argsort(-cell_scores(heatmap, cell).ravel(), kind="stable")


def _window(index: int, width: int, cell: int) -> tuple[slice, slice]:
    """The pixels of cell number ``index`` (row-major) of an image ``width`` pixels wide."""
    r, c = divmod(int(index), -(-width // cell))
    return slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 1) * cell)


def _mask_cells(image: np.ndarray, cells: np.ndarray, cell: int, fill: np.ndarray) -> np.ndarray:
    out = image.copy()
    for index in cells:
        out[_window(index, image.shape[1], cell)] = fill
    return out


def _fill(image: np.ndarray, fill) -> np.ndarray:
    return image.reshape(-1, image.shape[-1]).mean(axis=0) if fill is None else np.asarray(fill, image.dtype)


def deletion_curve(
    score_fn: ScoreFn,
    image: np.ndarray,
    heatmap: np.ndarray,
    class_index: int,
    *,
    steps: int = 20,
    cell: int = 8,
    fill=None,
) -> np.ndarray:
    """Class score after masking the k highest-ranked cells, for k = 0..steps: shape (steps + 1,).

    A faithful map makes it fall fast (a small `curve_area`).

    Examples
    --------
    >>> image = np.zeros((4, 4, 1)); image[:2, :2] = 4.0
    >>> score = lambda x: x.sum(axis=(1, 2))  # one class: the sum of the pixels
    >>> heatmap = np.zeros((4, 4)); heatmap[:2, :2] = 1.0
    >>> deletion_curve(score, image, heatmap, 0, steps=2, cell=2).tolist()  # the fill is the mean, 1.0
    [16.0, 4.0, 8.0]
    """
    image = np.asarray(image, dtype="float32")
    order = _ranking(heatmap, cell)[:steps]
    fill = _fill(image, fill)
    batch = np.stack([_mask_cells(image, order[:k], cell, fill) for k in range(len(order) + 1)])
    return _scores(score_fn, batch)[:, class_index]


def insertion_curve(
    score_fn: ScoreFn,
    image: np.ndarray,
    heatmap: np.ndarray,
    class_index: int,
    *,
    steps: int = 20,
    cell: int = 8,
    fill=None,
) -> np.ndarray:
    """Class score of the fully masked image with the k highest-ranked cells restored, k = 0..steps.

    A faithful map makes it rise fast (a large `curve_area`).

    Examples
    --------
    >>> image = np.zeros((4, 4, 1)); image[:2, :2] = 4.0
    >>> heatmap = np.zeros((4, 4)); heatmap[:2, :2] = 1.0
    >>> insertion_curve(lambda x: x.sum(axis=(1, 2)), image, heatmap, 0, steps=1, cell=2).tolist()
    [16.0, 28.0]
    """
    image = np.asarray(image, dtype="float32")
    ranking = _ranking(heatmap, cell)
    fill = _fill(image, fill)
    blank = _mask_cells(image, ranking, cell, fill)
    batch = []
    for k in range(min(steps, len(ranking)) + 1):
        restored = blank.copy()
        for index in ranking[:k]:
            window = _window(index, image.shape[1], cell)
            restored[window] = image[window]
        batch.append(restored)
    return _scores(score_fn, np.stack(batch))[:, class_index]


def curve_area(curve: np.ndarray, normalize: bool = False) -> float:
    """Area under a deletion or insertion curve by the trapezoid rule over k in [0, 1].

    ``normalize`` divides by ``curve[0]`` (the unmasked score of a deletion
    curve); skipped when it is 0. Curves of probabilities need no normalising.

    Examples
    --------
    >>> curve_area(np.array([1.0, 0.5, 0.0])), curve_area(np.array([4.0, 2.0, 0.0]), normalize=True)
    (0.5, 0.5)
    """
    curve = np.asarray(curve, dtype="float64")
    if len(curve) < 2:
        raise ValueError("A curve needs at least two points (steps >= 1).")
    area = float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))
    return float(area / curve[0]) if normalize and curve[0] != 0 else area


def rank_correlation(map_a: np.ndarray, map_b: np.ndarray, cell: int = 8) -> float:
    """Spearman correlation of two heatmaps over the image's cells (1 for maps that rank cells alike).

    Examples
    --------
    >>> a = np.arange(64.0).reshape(8, 8)
    >>> rank_correlation(a, a ** 2, cell=2), rank_correlation(a, -a, cell=2)
    (1.0, -1.0)
    """
    a, b = cell_scores(map_a, cell).ravel(), cell_scores(map_b, cell).ravel()
    if a.shape != b.shape:
        raise ValueError(f"The maps must have the same shape. Received {np.shape(map_a)} and {np.shape(map_b)}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # a constant map ranks nothing
    return float(spearmanr(a, b).statistic)


def pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the heatmap's maximum lies inside the ground-truth ``mask`` (H, W) of bools.

    Examples
    --------
    >>> m = np.zeros((3, 3), bool); m[0, 0] = True
    >>> pointing_game(np.eye(3) * [3, 1, 1], m), pointing_game(np.eye(3) * [1, 1, 3], m)
    (True, False)
    """
    heatmap, mask = np.asarray(heatmap), np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"`heatmap` {heatmap.shape} and `mask` {mask.shape} must have the same shape.")
    return bool(mask.flat[int(np.argmax(heatmap))])


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's positive mass inside ``mask`` (negative evidence counts as none).

    Examples
    --------
    >>> m = np.array([[True, False], [False, False]])
    >>> energy_in_mask(np.array([[3.0, 1.0], [-5.0, 0.0]]), m)
    0.75
    """
    heatmap, mask = np.asarray(heatmap, dtype="float64"), np.asarray(mask, dtype=bool)
    if heatmap.shape != mask.shape:
        raise ValueError(f"`heatmap` {heatmap.shape} and `mask` {mask.shape} must have the same shape.")
    positive = np.clip(heatmap, 0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else float("nan")


def masking_linearity(
    score_fn: ScoreFn, image: np.ndarray, heatmap: np.ndarray, class_index: int, k: int = 10, cell: int = 8, fill=None
) -> tuple[float, float]:
    """``(sum of single-cell effects, effect of masking all k at once)`` for the k highest-ranked cells.

    The effect is the drop of the class score. For a bag-of-features model
    whose patches do not overlap the two are equal; the paper measures how
    close a model comes.

    Examples
    --------
    >>> image = np.arange(16.0).reshape(4, 4, 1)
    >>> masking_linearity(lambda x: x.sum(axis=(1, 2)), image, image[..., 0], 0, k=2, cell=2)
    (32.0, 32.0)
    """
    image = np.asarray(image, dtype="float32")
    order = _ranking(heatmap, cell)[:k]
    fill = _fill(image, fill)
    batch = [image, _mask_cells(image, order, cell, fill)] + [_mask_cells(image, [c], cell, fill) for c in order]
    scores = _scores(score_fn, np.stack(batch))[:, class_index]
    return float(np.sum(scores[0] - scores[2:])), float(scores[0] - scores[1])


def shuffle_tiles(image: np.ndarray, grid: int = 4, seed: int = 0) -> np.ndarray:
    """The image cut into ``grid`` x ``grid`` tiles, put back in a random order (crops to a multiple of grid).

    Examples
    --------
    >>> shuffle_tiles(np.arange(16.0).reshape(4, 4, 1), grid=2, seed=0).shape
    (4, 4, 1)
    """
    image = np.asarray(image)
    th, tw = image.shape[0] // grid, image.shape[1] // grid
    if th == 0 or tw == 0:
        raise ValueError(f"An image of {image.shape[:2]} cannot be cut into {grid} x {grid} tiles.")
    tiles = [image[r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r in range(grid) for c in range(grid)]
    order = np.random.default_rng(seed).permutation(len(tiles))
    rows = [np.concatenate([tiles[order[r * grid + c]] for c in range(grid)], axis=1) for r in range(grid)]
    return np.concatenate(rows, axis=0)


def shuffle_sensitivity(
    score_fn: ScoreFn, images: np.ndarray, grid: int = 4, seed: int = 0, predicted: np.ndarray | None = None
) -> np.ndarray:
    """Per image, whether the top class stays the same after shuffling its tiles (1.0) or not (0.0).

    The paper's test of how much a model relies on the arrangement of parts:
    a bag-of-local-features model barely cares. Image ``i`` is shuffled with
    seed ``seed + i`` (`shuffle_tiles`); where the tiles do not cover the
    image whole, its top class is that of the crop they cover.

    Parameters
    ----------
    score_fn : callable
        Images to class scores (`logit_fn`).
    images : array (N, H, W, C)
    grid : int
        Tiles per side.
    seed : int
        The seed of the first image's shuffle.
    predicted : array (N,), optional
        The top class of each image, when the caller has it already: it spares one pass over the
        images where the tiles cover them whole.

    Examples
    --------
    >>> images = np.random.default_rng(0).normal(size=(3, 8, 8, 1))
    >>> mean_score = lambda x: np.stack([x.mean(axis=(1, 2, 3)), np.zeros(len(x))], axis=1)
    >>> shuffle_sensitivity(mean_score, images, grid=2).tolist()  # the mean ignores the arrangement
    [1.0, 1.0, 1.0]
    """
    images = np.asarray(images, dtype="float32")
    shuffled = np.stack([shuffle_tiles(x, grid, seed + i) for i, x in enumerate(images)])
    if predicted is not None and shuffled.shape == images.shape:
        before = np.asarray(predicted)
    else:
        before = _scores(score_fn, images[:, : shuffled.shape[1], : shuffled.shape[2]]).argmax(axis=1)
    after = _scores(score_fn, shuffled).argmax(axis=1)
    return (before == after).astype("float64")


def per_class_accuracy(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy of each class (NaN for a class without images).

    Examples
    --------
    >>> per_class_accuracy(np.array([0, 0, 1]), np.array([0, 1, 1]), 3).tolist()
    [0.5, 1.0, nan]
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        chosen = labels == c
        if chosen.any():
            out[c] = float((predicted[chosen] == c).mean())
    return out


def mean_ci(values, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and a percentile-bootstrap confidence interval ``(mean, low, high)``, ignoring NaNs.

    Examples
    --------
    >>> mean_ci([1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
    """
    values = np.asarray(values, dtype="float64")
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    # Resamples drawn in blocks of about a million indices: the same draws as one (n_boot, N) array,
    # without its memory (16 GB for 2,000 resamples of a million images).
    block = max(1, (1 << 20) // len(values))
    means = np.concatenate(
        [
            values[rng.integers(0, len(values), (min(block, n_boot - start), len(values)))].mean(axis=1)
            for start in range(0, n_boot, block)
        ]
    )
    tail = (1 - confidence) / 2 * 100
    return float(values.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
