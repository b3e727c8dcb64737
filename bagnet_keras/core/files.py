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


#: Pillow's own refusal limit (about 179 million pixels, 15k x 12k): larger than any photo a crawl
#: should keep and far below what exhausts memory. Every reader of the package refuses larger images.
MAX_PIXELS = 2 * 89_478_485  # 2 * PIL.Image.MAX_IMAGE_PIXELS, without importing Pillow here
#: A longer side more than this many times the shorter one is cropped or stretched beyond recognition.
MAX_ASPECT = 3.0

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageBombError(ValueError):
    """An image whose header claims more pixels than `MAX_PIXELS`: refused before decoding.

    ``reason`` says why without the file's name (``"20000x10000 pixels exceeds 178956970"``), as
    ``data_tools.clean`` records it in its manifest.
    """

    def __init__(self, path, reason: str) -> None:
        self.reason = reason
        # a downloaded image is checked from memory (a file object) before it has a name
        name = repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else "An image"
        super().__init__(f"{name} is refused as a decompression bomb: {reason}")


def to_rgb(image, changes: list[str] | None = None):
    """A Pillow image as 8-bit RGB: 16-bit and float images scaled (not clipped), alpha on white.

    ``changes``, when given, receives one line per conversion made.

    Examples
    --------
    >>> from PIL import Image
    >>> ramp = Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype("uint16"))
    >>> rgb = np.asarray(to_rgb(ramp))
    >>> int(rgb.min()), int(rgb.max()), round(float(rgb.mean()), 1)
    (0, 255, 127.5)
    """
    from PIL import Image

    changes = [] if changes is None else changes
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT:
        # Pillow's convert("RGB") clips 16-bit values at 255: scale the range to 8 bits instead.
        array = np.asarray(image, dtype="float64")
        high = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / high * 255.0 + 0.5, 0, 255).astype("uint8")
        changes.append(f"{mode} to 8-bit")
        return Image.fromarray(array).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        changes.append(f"{mode} alpha on white")
        return background.convert("RGB")
    changes.append(f"{mode} to RGB")
    return image.convert("RGB")


def check_pixels(path, size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> None:
    """Raise `ImageBombError` naming ``path`` when ``size`` (width, height) exceeds ``max_pixels``.

    Examples
    --------
    >>> check_pixels("huge.png", (20_000, 20_000))
    Traceback (most recent call last):
    ...
    bagnet_keras.core.files.ImageBombError: 'huge.png' is refused as a decompression bomb: 20000x20000 pixels ...
    """
    width, height = size
    if width * height > max_pixels:
        raise ImageBombError(path, f"{width}x{height} pixels exceeds {max_pixels}")


def decode_file(path, max_pixels: int = MAX_PIXELS, changes: list[str] | None = None):
    """``(rgb, format, (width, height))``: a file fully decoded to 8-bit RGB, EXIF orientation applied.

    The one decoder of the package (`decode_image`, and ``data_tools.images.load_clean`` which
    turns its errors into the reasons of a manifest). The header's pixel count is checked before
    decoding (`ImageBombError`, also for Pillow's own refusal); Pillow's other errors propagate.
    ``changes``, when given, receives one line per conversion made.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
    >>> Image.new("L", (8, 4), 7).save(path)
    >>> rgb, fmt, size = decode_file(path)
    >>> rgb.mode, fmt, size
    ('RGB', 'PNG', (8, 4))
    """
    import warnings

    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        # The pixel count is checked against max_pixels before anything is decoded.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                check_pixels(path, image.size, max_pixels)
                size, fmt = image.size, image.format or "unknown"
                image.load()
                if changes is not None and _has_orientation(image):
                    changes.append("EXIF orientation")
                return to_rgb(ImageOps.exif_transpose(image), changes), fmt, size
        except Image.DecompressionBombError as error:  # Pillow's own refusal, in Image.open, above MAX_PIXELS
            raise ImageBombError(path, str(error)) from None


def _has_orientation(image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) != 1
    except Exception:  # malformed EXIF: Pillow ignored it too
        return False


def decode_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, changes: list[str] | None = None):
    """A file as a fully decoded 8-bit RGB Pillow image (`decode_file`), or a ValueError naming the file.

    Bombs raise `ImageBombError`, a ValueError.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
    >>> Image.new("L", (8, 4), 7).save(path)
    >>> decode_image(path).mode, decode_image(path).size
    ('RGB', (8, 4))
    """
    try:
        return decode_file(path, max_pixels, changes)[0]
    except ImageBombError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"Cannot read {os.fspath(path)!r} as an image ({error}).") from None


def warn_if_unfit(path, size: tuple[int, int], image_size: tuple[int, int], max_aspect: float = MAX_ASPECT) -> None:
    """Warn, naming the file, when an image (width, height) is smaller than ``image_size`` or oddly shaped.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_unfit("tiny.png", (1, 1), (224, 224))
    >>> print(caught[0].message)
    'tiny.png' is 1x1 pixels, smaller than the model's input 224x224: it is enlarged, and the model sees no detail.
    """
    import warnings

    width, height = size
    if width < image_size[1] and height < image_size[0]:
        warnings.warn(
            f"{os.fspath(path)!r} is {width}x{height} pixels, smaller than the model's input "
            f"{image_size[1]}x{image_size[0]}: it is enlarged, and the model sees no detail.",
            stacklevel=3,
        )
    elif max(width, height) > max_aspect * min(width, height):
        warnings.warn(
            f"{os.fspath(path)!r} is {width}x{height} pixels, an aspect ratio above {max_aspect:g}: "
            f"fitting it to {image_size[1]}x{image_size[0]} loses most of it.",
            stacklevel=3,
        )


def read_image(
    path: str | os.PathLike, image_size: tuple[int, int], crop_to_aspect_ratio: bool = True, warn: bool = True
) -> np.ndarray:
    """One image file as uint8 RGB ``(height, width, 3)``: `decode_image`, then `fit_image` (bilinear).

    The one reader of the package: 16-bit, palette, CMYK, alpha and EXIF
    orientation are handled as ``data_tools.clean`` handles them, and images
    over `MAX_PIXELS` are refused. With ``warn``, an image smaller than
    ``image_size`` or with an extreme aspect ratio is named in a warning
    before it is stretched. Raises ValueError naming the file when it cannot
    be decoded.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "wide.png")
    >>> Image.new("RGB", (80, 40), (200, 10, 10)).save(path)
    >>> read_image(path, (32, 32)).shape
    (32, 32, 3)
    """
    image = decode_image(path)
    if warn:
        warn_if_unfit(path, image.size, image_size)
    return np.asarray(fit_image(image, image_size, crop_to_aspect_ratio=crop_to_aspect_ratio))


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
