"""Image files shared by the library and data_tools: the one image reader and display conversions.

(Writing files goes through `bagnet_keras.core.commit`.)

`read_image` is how both the training pipeline (``data_tools.loader``) and
the explanation and comparison commands turn a file into an array, so a
model sees the same pixels in training and in its explanations.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np


def fit_image(image, image_size: tuple[int, int], resample=None, crop_to_aspect_ratio: bool = True):
    """A Pillow image centre-cropped to the aspect ratio of ``image_size`` (height, width), then resized.

    The crop is cut out first, so no pixel outside it leaks into the resized
    border (Pillow's ``ImageOps.fit`` filters across the crop's edge).
    ``resample`` defaults to bilinear; use nearest neighbour for masks.

    Examples
    --------
    >>> from PIL import Image
    >>> fit_image(Image.new("RGB", (120, 40)), (20, 20)).size
    (20, 20)
    """
    from PIL import Image

    height, width = image_size
    if crop_to_aspect_ratio:
        w, h = image.size
        crop_w, crop_h = int(min(w, h * width / height)), int(min(h, w * height / width))
        left, top = (w - crop_w) // 2, (h - crop_h) // 2
        image = image.crop((left, top, left + crop_w, top + crop_h))
    return image.resize((width, height), Image.BILINEAR if resample is None else resample)


def read_image(path: str | os.PathLike, image_size: tuple[int, int], crop_to_aspect_ratio: bool = True) -> np.ndarray:
    """One image file as uint8 RGB ``(height, width, 3)``, through `fit_image` (bilinear).

    Raises ValueError naming the file when it cannot be decoded.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "wide.png")
    >>> Image.new("RGB", (80, 40), (200, 10, 10)).save(path)
    >>> read_image(path, (32, 32)).shape
    (32, 32, 3)
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(fit_image(image.convert("RGB"), image_size, crop_to_aspect_ratio=crop_to_aspect_ratio))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read {os.fspath(path)!r} as an image ({error}).") from None


def to_display(image, deprocess: Callable | None = None) -> np.ndarray:
    """An image as float RGB in [0, 1] for ``imshow``.

    ``deprocess`` (e.g. `bagnet_keras.deprocess_input`) undoes the model's
    preprocessing; without it, uint8 and [0, 255] images are divided by 255,
    [0, 1] images kept, and anything else (normalised inputs) min-max scaled.

    Examples
    --------
    >>> to_display(np.full((2, 2, 3), 255, dtype="uint8")).max()
    np.float64(1.0)
    """
    image = np.asarray(deprocess(image) if deprocess is not None else image)
    if image.dtype == np.uint8:
        return image / 255.0
    image = image.astype("float64")
    low, high = image.min(), image.max()
    if low >= 0 and high <= 1:
        return image
    if low >= 0 and high <= 255:
        return image / 255.0
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def display_images(images, deprocess: Callable | None = None) -> np.ndarray:
    """Images as uint8 RGB for showing (`to_display`, then scaled to 0..255).

    Examples
    --------
    >>> display_images(np.zeros((1, 2, 2, 3))).dtype
    dtype('uint8')
    """
    return np.stack([np.round(to_display(image, deprocess) * 255) for image in images]).astype(np.uint8)
