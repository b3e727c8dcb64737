"""The one image reader (issue 29): 16-bit, palette, alpha and EXIF read as `clean` reads them, bombs
refused everywhere with the same limit, and a warning that names an image too small or too oddly shaped."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from bagnet_keras.core.files import MAX_PIXELS, ImageBombError, decode_image, read_image
from data_tools.images import Rejected, load_clean


def _ramp_png(folder) -> str:
    """A 16-bit grayscale PNG whose values rise from 0 to 65535 across its width."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "ramp.png")
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype("uint16")
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # a real 16-bit file, not quietly 8-bit
    return path


def test_a_16_bit_ramp_reads_alike_in_read_image_clean_and_the_loader(tmp_path):
    path = _ramp_png(tmp_path / "data" / "ramp")
    read = read_image(path, (64, 64))
    assert read.dtype == np.uint8 and abs(read.mean() - 127.5) < 1, read.mean()
    cleaned = np.asarray(load_clean(path, min_size=1, crop_borders=False).image)
    np.testing.assert_array_equal(cleaned, np.asarray(decode_image(path)))
    np.testing.assert_array_equal(cleaned, read)  # 64x64 to 64x64: the resize changes nothing
    from data_tools.loader import image_dataset

    images, _ = next(iter(image_dataset(str(tmp_path / "data"), (64, 64), batch_size=1, shuffle=False)))
    np.testing.assert_array_equal(np.asarray(images[0]), read.astype("float32"))


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "CMYK"])
def test_other_modes_read_as_clean_reads_them(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA")
    image = rgba.convert(mode) if mode != "P" else rgba.convert("RGB").convert("P")
    path = str(tmp_path / f"image_{mode}.{'jpg' if mode == 'CMYK' else 'png'}")
    image.save(path)
    cleaned = np.asarray(load_clean(path, min_size=1, crop_borders=False).image)
    np.testing.assert_array_equal(read_image(path, (16, 16)), cleaned)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 20 wide, 40 high
    path = str(tmp_path / "rotated.jpg")
    image.save(path, exif=exif)
    assert decode_image(path).size == (20, 40)


def test_a_decompression_bomb_is_refused_by_every_reader(tmp_path):
    path = str(tmp_path / "bomb.png")
    Image.new("1", (20_000, 10_000)).save(path)  # 2e8 pixels > MAX_PIXELS, a few kB on disk
    assert 20_000 * 10_000 > MAX_PIXELS
    with pytest.raises(ImageBombError, match="bomb.png.*pixels"):
        read_image(path, (32, 32))
    with pytest.raises(ValueError, match="bomb.png"):
        decode_image(path)
    with pytest.raises(Rejected, match="decompression bomb"):
        load_clean(path)


def test_a_file_that_is_not_an_image_names_the_file(tmp_path):
    path = tmp_path / "page.png"
    path.write_text("<html>not an image</html>")
    with pytest.raises(ValueError, match="page.png"):
        read_image(str(path), (32, 32))


@pytest.mark.parametrize(("size", "words"), [((1, 1), "smaller than"), ((300, 20), "aspect ratio")])
def test_a_tiny_or_extreme_image_is_named_in_a_warning(tmp_path, size, words):
    path = str(tmp_path / "odd.png")
    Image.new("RGB", size).save(path)
    with pytest.warns(UserWarning, match=f"odd.png.*{words}"):
        assert read_image(path, (32, 32)).shape == (32, 32, 3)


def test_a_fitting_image_reads_without_a_warning(tmp_path):
    path = str(tmp_path / "fine.png")
    Image.new("RGB", (40, 30)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(path, (32, 32))
