"""Decode an image file for real and bring it to clean 8-bit RGB, or say why it cannot be used.

The file's extension and claimed type are ignored: Pillow identifies the
bytes, checks the header's pixel count before decoding (decompression bombs),
decodes everything (truncated files fail here), applies the EXIF orientation,
converts CMYK, grayscale, palette, alpha and 16-bit images to 8-bit RGB
(alpha composited on white) and crops uniform borders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from bagnet_keras.core.files import MAX_PIXELS, ImageBombError, decode_file


class Rejected(Exception):
    """An image that cannot be used; ``str(error)`` is the reason recorded in the manifest."""


@dataclass
class CleanImage:
    """A decoded, converted image and what was done to it."""

    image: Image.Image
    format: str
    changes: list[str]
    original_size: tuple[int, int]


def crop_uniform_borders(array: np.ndarray, tolerance: int = 12, coverage: float = 0.98) -> tuple[int, int, int, int]:
    """Box ``(top, left, bottom, right)`` without the uniform margins of an RGB uint8 image.

    A row (or column) belongs to a margin when at least ``coverage`` of its
    pixels lie within ``tolerance`` of the colour of the image's edge on that
    side (JPEG noise tolerated), counting inwards from the edge.

    Examples
    --------
    >>> a = np.zeros((10, 12, 3), np.uint8); a[2:8, 3:9] = 200
    >>> crop_uniform_borders(a)
    (2, 3, 8, 9)
    """
    h, w = array.shape[:2]

    def margin(lines: np.ndarray) -> int:
        # lines: (n, length, 3) from the edge inwards. Most images have no margin: look at the
        # edge line first and at growing blocks after it, so only margins cost time.
        colour = np.median(lines[0], axis=0)
        start, block = 0, 1
        while start < len(lines):
            chunk = lines[start : start + block].astype(np.int16)
            close = (np.abs(chunk - colour).max(axis=-1) <= tolerance).mean(axis=1) >= coverage
            if not close.all():
                return start + int(np.argmin(close))
            start, block = start + block, block * 2
        return len(lines)

    top = margin(array)
    bottom = h - margin(array[::-1])
    left = margin(array.transpose(1, 0, 2))
    right = w - margin(array.transpose(1, 0, 2)[::-1])
    if top >= bottom or left >= right:
        return 0, 0, h, w  # a blank image: nothing to keep apart from the margin; the size check decides
    return top, left, bottom, right


def load_clean(
    path: str | BinaryIO,
    min_size: int = 64,
    max_aspect: float = 3.0,
    max_pixels: int = MAX_PIXELS,
    crop_borders: bool = True,
) -> CleanImage:
    """Decode ``path`` (a file name or a binary file object) and return it as 8-bit RGB, or raise `Rejected`.

    ``str(error)`` of the `Rejected` exception is the reason.

    Examples
    --------
    >>> load_clean("street.jpg").image.mode  # doctest: +SKIP
    'RGB'
    """
    changes: list[str] = []
    try:
        rgb, fmt, (width, height) = decode_file(path, max_pixels, changes)
    except ImageBombError as error:
        raise Rejected(f"decompression bomb: {error.reason}") from None
    except UnidentifiedImageError:
        raise Rejected("not an image (undecodable bytes)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise Rejected(f"truncated or corrupt: {error}") from None
    if crop_borders:
        box = crop_uniform_borders(np.asarray(rgb))
        if box != (0, 0, rgb.height, rgb.width):
            top, left, bottom, right = box
            rgb = rgb.crop((left, top, right, bottom))
            changes.append(f"cropped borders to {right - left}x{bottom - top}")
    if min(rgb.size) < min_size:
        raise Rejected(f"too small: {rgb.width}x{rgb.height}, the shorter side must be at least {min_size}")
    aspect = max(rgb.size) / min(rgb.size)
    if aspect > max_aspect:
        raise Rejected(f"extreme aspect ratio {aspect:.2f} (more than {max_aspect})")
    return CleanImage(rgb, fmt, changes, (width, height))
