"""How a model's features and its answer change when the image is moved, scaled or rotated (Zeiler & Fergus, Fig. 5).

`invariance` transforms each image by every value asked (a translation in
pixels, a scale factor about the centre, a rotation in degrees), and
measures, per layer, the distance between the layer's features of the
transformed and of the original image (Euclidean, relative to the original's
norm) and the probability of the true class. Curves near zero distance mean
an invariant layer; Zeiler & Fergus found the first layers change a lot and
the last ones little, and the output invariant to translation and scale but
not to rotation (except for rotation-symmetric objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from bagnet_keras.core.graph import score_function
from bagnet_keras.core.inputs import check_images, in_batches, output_index
from bagnet_keras.core.validation import check_number, check_positive_int
from bagnet_keras.explain.atlas import activation_function, spatial_layers

KINDS = ("translate", "scale", "rotate")
#: scipy.ndimage's modes for the pixels a transformation brings in; "wrap" is a circular shift.
MODES = {"constant": "constant", "nearest": "nearest", "reflect": "reflect", "wrap": "grid-wrap"}


def transform_images(images: np.ndarray, kind: str, value, mode: str = "constant") -> np.ndarray:
    """``images`` (N, H, W, C) translated by ``value`` pixels (an int: to the right; a pair: (down, right)),
    scaled by ``value`` about the centre, or rotated by ``value`` degrees (counter-clockwise).

    Examples
    --------
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> transform_images(x, "translate", 1, mode="wrap")[0, 0, :, 0].tolist()
    [3.0, 0.0, 1.0, 2.0]
    """
    from scipy import ndimage

    if kind not in KINDS:
        raise ValueError(f"The transformation must be one of {KINDS}. Received: {kind!r}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}. Received: mode={mode!r}")
    x = np.asarray(images, dtype="float32")
    scipy_mode = MODES[mode]
    if kind == "translate":
        dy, dx = (0, value) if np.ndim(value) == 0 else value
        return ndimage.shift(x, (0, dy, dx, 0), order=1, mode=scipy_mode)
    if kind == "rotate":
        return ndimage.rotate(x, value, axes=(2, 1), reshape=False, order=1, mode=scipy_mode)
    if not value > 0:
        raise ValueError(f"A scale factor must be > 0. Received: {value!r}")
    centre = (np.array(x.shape[1:3]) - 1) / 2
    matrix = np.diag([1.0, 1 / value, 1 / value, 1.0])  # output pixel -> input pixel
    offset = np.concatenate([[0], centre - centre / value, [0]])
    return ndimage.affine_transform(x, matrix, offset=offset, order=1, mode=scipy_mode)


@dataclass
class InvarianceCurves:
    """What `invariance` measured.

    Attributes
    ----------
    values : dict kind -> list
        The transformation values, per kind (``translate``, ``scale``, ``rotate``).
    distance : dict (kind, layer) -> ndarray (len(values), N)
        ||features(transformed) - features(original)|| / ||features(original)|| per value and image.
    probability : dict kind -> ndarray (len(values), N)
        The true class's probability on the transformed images.
    """

    values: dict = field(default_factory=dict)
    distance: dict = field(default_factory=dict)
    probability: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)


def invariance(
    model: keras.Model,
    images,
    layers: str | Sequence[str],
    labels=None,
    *,
    translate: Sequence = (),
    scale: Sequence[float] = (),
    rotate: Sequence[float] = (),
    mode: str = "constant",
    output: int | str | None = None,
    batch_size: int = 32,
) -> InvarianceCurves:
    """Feature distances and true-class probabilities of transformed images, as curves over the transformation.

    Parameters
    ----------
    model : keras.Model
    images : array (N, H, W, C)
        Preprocessed as the model expects (a handful is enough, as in Zeiler & Fergus' five).
    layers : str or sequence of str
        Layers (spatial or not: any layer's output is flattened into the feature vector).
    labels : sequence of N ints, optional
        True classes; default the model's top class on the originals.
    translate, scale, rotate : sequences
        Pixels (int: to the right, or (down, right)), factors about the centre, degrees.
    mode : {"constant", "nearest", "reflect", "wrap"}
        What fills the pixels a transformation brings in (zeros, the edge, a mirror, the other side).
    output : int or str, optional
    batch_size : int

    Returns
    -------
    InvarianceCurves

    Examples
    --------
    >>> import keras, numpy as np
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1, strides=2, name="c"),
    ...                           keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> curves = invariance(model, x, ["gap"], translate=[0, 2, 4], mode="wrap")
    >>> bool(curves.distance["translate", "gap"].max() < 1e-5)
    True
    """
    x = check_images(images)
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(layers, str):
        layers = [layers]
    index = output_index(model, output)
    found = spatial_layers(model, layers, spatial=False)  # outputs of any rank, flattened
    features = flat_features(model, found, batch_size)
    probability = score_function(model, index, "probability")
    wanted = {"translate": list(translate), "scale": list(scale), "rotate": list(rotate)}
    if not any(wanted.values()):
        raise ValueError("Give at least one transformation: translate=[...], scale=[...] or rotate=[...].")
    for kind, values in wanted.items():
        for value in values:
            for number in np.ravel(np.asarray(value, dtype=object)):  # a translation may be a (down, right) pair
                check_number(number, kind)

    base = features(x)
    scores = in_batches(probability, batch_size, x)
    labels = np.asarray(scores).argmax(axis=1) if labels is None else np.asarray(labels, dtype=int)
    if labels.shape != (len(x),):
        raise ValueError(f"`labels` must hold one class per image ({len(x)}). Received shape {labels.shape}.")
    result = InvarianceCurves(layers=list(found))
    for kind, values in wanted.items():
        if not values:
            continue
        result.values[kind] = values
        distances = {path: [] for path in found}
        probabilities = []
        for value in values:
            moved = transform_images(x, kind, value, mode)
            feats = features(moved)
            for path in found:
                norm = np.maximum(np.linalg.norm(base[path], axis=1), 1e-12)
                distances[path].append(np.linalg.norm(feats[path] - base[path], axis=1) / norm)
            p = in_batches(probability, batch_size, moved)
            probabilities.append(p[np.arange(len(x)), labels])
        for path in found:
            result.distance[kind, path] = np.stack(distances[path])
        result.probability[kind] = np.stack(probabilities)
    return result


def flat_features(model: keras.Model, layers: dict, batch_size: int):
    """``f(images) -> {layer: (N, features)}``: each layer's output per image as one vector, batched."""
    forward = activation_function(model, layers)

    def features(images):
        as_numpy = keras.ops.convert_to_numpy
        parts = in_batches(lambda b: tuple(as_numpy(a).reshape(len(b), -1) for a in forward(b)), batch_size, images)
        return dict(zip(layers, parts, strict=True))

    return features
