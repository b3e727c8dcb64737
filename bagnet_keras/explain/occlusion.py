"""Occlusion sensitivity (Zeiler & Fergus 2014) for any Keras model.

Slide a grey square over the image and record how much the class score
drops; a pixel's value is the mean drop over the squares that covered it.
"""

from __future__ import annotations

import keras
import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.graph import check_target, score_function
from bagnet_keras.core.inputs import (
    check_images,
    classes_per_image,
    in_batches,
    n_classes_of,
    output_index,
)
from bagnet_keras.core.validation import check_positive_int


def _starts(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:  # the last square touches the border, so every pixel is covered
        starts.append(size - patch)
    return starts


def occlusion(
    model: keras.Model,
    images,
    class_index=None,
    *,
    patch_size: int = 16,
    stride: int = 8,
    value: float | np.ndarray = 0.0,
    output: int | str | None = None,
    batch_size: int = 64,
    progress: bool = False,
    target: str = "logit",
) -> np.ndarray:
    """Drop in the class score when each square of the image is occluded.

    Parameters
    ----------
    model : keras.Model
        Any Keras model returning class scores.
    images : array (N, H, W, C)
        Preprocessed as the model expects.
    class_index : int, sequence of N ints, or None
        The class per image; None: the top prediction of the unoccluded image.
    patch_size, stride : int
        Side of the occluding square and step between squares (a final
        square is added at the right and bottom borders when the step does
        not end there).
    value : float or array (C,)
        What the square is filled with, in the model's input space: 0 is the
        dataset mean (grey) for mean/std-normalised inputs.
    output : int or str, optional
        Which output of a multi-output model.
    batch_size : int
        Occluded images per forward pass.
    progress : bool
        Show a progress bar when the output is a terminal.
    target : {"logit", "probability"}
        The class score whose drop is measured (default: the logit, before the model's softmax).

    Returns
    -------
    ndarray (N, H, W)
        For every pixel, the mean of ``score(image) - score(occluded image)``
        over the squares covering it; positive where hiding the pixel hurts
        the class.

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> occlusion(model, np.ones((2, 12, 12, 1)), class_index=0, patch_size=4, stride=4).shape
    (2, 12, 12)
    """
    x = check_images(images)
    index = output_index(model, output)
    n_classes = n_classes_of(model, index)
    patch_size = check_positive_int(patch_size, "patch_size")
    stride = check_positive_int(stride, "stride")
    batch_size = check_positive_int(batch_size, "batch_size")
    target = check_target(target)
    n, h, w, c = x.shape
    if patch_size > min(h, w):
        raise ValueError(f"`patch_size`={patch_size} is larger than the images ({h}x{w}).")
    fill = np.broadcast_to(np.asarray(value, dtype="float32"), (c,)) if np.ndim(value) else np.float32(value)

    forward = score_function(model, index, target)

    def scores(batch):
        return keras.ops.convert_to_numpy(forward(batch))

    base = in_batches(scores, batch_size, x)
    classes = classes_per_image(class_index, n, n_classes)
    classes = base.argmax(axis=1) if classes is None else classes
    squares = [(top, left) for top in _starts(h, patch_size, stride) for left in _starts(w, patch_size, stride)]
    coverage = np.zeros((h, w), dtype="float32")
    for top, left in squares:
        coverage[top : top + patch_size, left : left + patch_size] += 1
    maps = np.zeros((n, h, w), dtype="float32")
    for i in tqdm(range(n), desc="occlusion", unit="image", disable=None if progress else True):
        for start in range(0, len(squares), batch_size):
            chunk = squares[start : start + batch_size]
            occluded = np.repeat(x[i : i + 1], len(chunk), axis=0)
            for k, (top, left) in enumerate(chunk):
                occluded[k, top : top + patch_size, left : left + patch_size] = fill
            drops = base[i, classes[i]] - scores(occluded)[:, classes[i]]
            for drop, (top, left) in zip(drops, chunk, strict=True):
                maps[i, top : top + patch_size, left : left + patch_size] += drop
    return maps / coverage
