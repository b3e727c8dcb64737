"""Does a model find the same part in every image? Zeiler & Fergus' correspondence measure (their Fig. 8, Table 1).

For each image, the part (one motif, an eye) is masked, and the change of a
layer's features is taken: eps_i = f(x_i) - f(masked x_i). If the layer
represents the part the same way in every image, the signs of those changes
agree across images. The measure is the mean normalised Hamming distance
between the signs of every pair of images (0: the same change everywhere,
about 0.5: unrelated), against the same measure for random regions of the
same shape (the part's mask moved to random places). A value well below the
random one means the layer has an implicit correspondence for that part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from bagnet_keras.core.inputs import check_images
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.atlas import spatial_layers
from bagnet_keras.metrics.invariance import flat_features


@dataclass
class Correspondence:
    """Per layer: the sign-change Hamming distance for the part, and for random regions (mean, std over trials)."""

    part: dict
    random: dict
    random_std: dict


def _sign_distance(changes: np.ndarray) -> float:
    """Mean over pairs of images of the fraction of features whose change has another sign."""
    signs = np.sign(changes)
    n = len(signs)
    total = [np.mean(signs[i] != signs[j]) for i in range(n) for j in range(i + 1, n)]
    return float(np.mean(total))


def _fill(x: np.ndarray, fill) -> np.ndarray:
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"`fill` must be 'mean' (each image's mean colour) or a number. Received: fill={fill!r}")
        return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    return np.full_like(x, float(fill))


def correspondence(
    model: keras.Model,
    images,
    masks,
    layers: str | Sequence[str],
    *,
    fill=0.0,
    trials: int = 5,
    seed: int = 0,
    batch_size: int = 32,
) -> Correspondence:
    """Zeiler & Fergus' correspondence measure of a part (``masks``) across ``images`` at each layer.

    Parameters
    ----------
    model : keras.Model
    images : array (N, H, W, C), N >= 2
        Preprocessed as the model expects, each showing the part.
    masks : array (N, H, W) of bool
        The part's pixels in each image.
    layers : str or sequence of str
    fill : float or "mean"
        What replaces the masked pixels (Zeiler & Fergus used grey squares).
    trials : int
        Random placements of each mask for the baseline.
    seed : int
    batch_size : int

    Returns
    -------
    Correspondence

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="c")])
    >>> x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    >>> x[:, 2:4, 2:4] = 5.0  # the same part, at the same place
    >>> masks = np.zeros((3, 8, 8), bool)
    >>> masks[:, 2:4, 2:4] = True
    >>> result = correspondence(model, x, masks, "c")
    >>> result.part["c"] < result.random["c"]
    True
    """
    x = check_images(images)
    masks = np.asarray(masks, dtype=bool)
    if len(x) < 2:
        raise ValueError(f"Correspondence compares images: give at least 2. Received {len(x)}.")
    if masks.shape != x.shape[:3]:
        raise ValueError(f"`masks` must be (N, H, W) = {x.shape[:3]}. Received {masks.shape}.")
    empty = [i for i in range(len(x)) if not masks[i].any()]
    if empty:
        raise ValueError(f"The masks of images {empty[:5]} are empty: each image needs its part marked.")
    trials = check_positive_int(trials, "trials")
    if isinstance(layers, str):
        layers = [layers]
    found = spatial_layers(model, layers, spatial=False)  # outputs of any rank, flattened
    features = flat_features(model, found, batch_size)
    filled = _fill(x, fill)

    def changes(region):
        masked = np.where(region[..., None], filled, x).astype("float32")
        after = features(masked)
        return {path: base[path] - after[path] for path in found}

    base = features(x)
    part = {path: _sign_distance(eps) for path, eps in changes(masks).items()}
    rng = np.random.default_rng(seed)
    h, w = masks.shape[1:]
    random = {path: [] for path in found}
    for _ in range(trials):
        moved = np.stack([np.roll(m, (rng.integers(h), rng.integers(w)), axis=(0, 1)) for m in masks])
        for path, eps in changes(moved).items():
            random[path].append(_sign_distance(eps))
    return Correspondence(
        part=part,
        random={p: float(np.mean(v)) for p, v in random.items()},
        random_std={p: float(np.std(v)) for p, v in random.items()},
    )
