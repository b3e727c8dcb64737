"""ImageNet input normalisation and class names for the pretrained BagNets."""

from __future__ import annotations

import functools
from importlib import resources

import keras
import numpy as np

from bagnet_keras.core.validation import check_int
from bagnet_keras.models.weights import PRETRAINED

MEAN = np.asarray(PRETRAINED["bagnet33"].mean, dtype="float32")
STD = np.asarray(PRETRAINED["bagnet33"].std, dtype="float32")


def _check_images(x, name: str = "x") -> None:
    shape = tuple(x.shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"`{name}` must be an RGB image (H, W, 3) or a batch (N, H, W, 3), channels last. "
            f"Received an array of shape {shape}."
        )
    if shape[-1] != 3:
        raise ValueError(
            f"`{name}` must have 3 channels (RGB) on its last axis. Received shape {shape}; "
            "convert grayscale or RGBA images to RGB first."
        )


def preprocess_input(x, data_format: str | None = None):
    """Normalise RGB images in [0, 255] the way the BagNet ImageNet weights expect.

    Divides by 255, subtracts the ImageNet mean (0.485, 0.456, 0.406) and
    divides by the std (0.229, 0.224, 0.225), per channel, as the authors'
    torchvision pipeline does.

    Parameters
    ----------
    x : array-like or tensor
        uint8 or float RGB images, (H, W, 3) or (N, H, W, 3).
    data_format : None or "channels_last"
        Only channels last is supported.

    Returns
    -------
    numpy.ndarray (float32) for NumPy input, else a float32 tensor.

    Examples
    --------
    >>> import numpy as np
    >>> preprocess_input(np.full((1, 2, 2, 3), 255, dtype="uint8"))[0, 0, 0].round(3)
    array([2.249, 2.429, 2.64 ], dtype=float32)
    """
    if data_format not in (None, "channels_last"):
        raise ValueError(f"Only data_format='channels_last' is supported. Received: data_format={data_format!r}")
    if keras.ops.is_tensor(x) or keras.backend.is_keras_tensor(x):
        _check_images(x)
        return (keras.ops.cast(x, "float32") / 255.0 - MEAN) / STD
    array = np.asarray(x)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.issubdtype(
        array.dtype, np.complexfloating
    ):
        raise ValueError(f"`x` must hold real numbers (uint8 or float RGB in [0, 255]). Received dtype {array.dtype}.")
    _check_images(array)
    return ((array.astype("float32") / 255.0 - MEAN) / STD).astype("float32")


def deprocess_input(x) -> np.ndarray:
    """Undo `preprocess_input`: normalised images back to RGB uint8 for display.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.array([[[0, 128, 255]]], dtype="uint8")
    >>> deprocess_input(preprocess_input(image))
    array([[[  0, 128, 255]]], dtype=uint8)
    """
    array = np.asarray(x, dtype="float32")
    _check_images(array)
    return np.clip(np.round((array * STD + MEAN) * 255.0), 0, 255).astype("uint8")


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> list[tuple[str, str]]:
    """The 1000 ImageNet classes in model output order, as (WordNet ID, name).

    Examples
    --------
    >>> imagenet_classes()[0]
    ('n01440764', 'tench')
    """
    text = resources.files("bagnet_keras.models").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = [tuple(line.split("\t")) for line in text.splitlines() if line and not line.startswith("#")]
    return rows


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Turn ImageNet predictions into (WordNet ID, class name, score), best first.

    Parameters
    ----------
    preds : array-like, shape (N, 1000)
        Probabilities or logits of a model with the ImageNet top.
    top : int
        How many classes per image.

    Returns
    -------
    list of lists of (wnid, name, score) tuples.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((1, 1000)); p[0, 1] = 0.9
    >>> decode_predictions(p, top=1)
    [[('n01443537', 'goldfish', 0.9)]]
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of ImageNet predictions of shape (N, 1000). "
            f"Received shape {preds.shape}."
        )
    top = check_int(top, "top", low=1, high=1000)
    classes = imagenet_classes()
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(*classes[i], float(row[i])) for i in best])
    return results
