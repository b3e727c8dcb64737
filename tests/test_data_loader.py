import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_tools.clean import clean
from data_tools.loader import image_dataset
from data_tools.split import split
from data_tools.synthetic import scene


def _folder(root):
    for k, label in enumerate(("cats", "dogs")):
        (root / label).mkdir(parents=True)
        for n in range(6):
            Image.fromarray(scene(10 * k + n, (80, 120))).save(root / label / f"{n}.png")
    return root


def test_batches_labels_and_preprocessing(tmp_path):
    root = _folder(tmp_path / "data")
    ds = image_dataset(str(root), image_size=(32, 48), batch_size=5, preprocess=lambda x: x / 255.0)
    assert ds.class_names == ["cats", "dogs"]
    batches = list(ds)
    assert [len(y) for _, y in batches] == [5, 5, 2]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.shape == (12, 32, 48, 3) and x.min() >= 0 and x.max() <= 1
    assert sorted(y.tolist()) == [0] * 6 + [1] * 6


def test_aspect_preserving_centre_crop(tmp_path):
    (tmp_path / "a").mkdir()
    image = np.zeros((40, 120, 3), np.uint8)
    image[:, :40] = (255, 0, 0)  # left third red, centre green, right third blue
    image[:, 40:80] = (0, 255, 0)
    image[:, 80:] = (0, 0, 255)
    Image.fromarray(image).save(tmp_path / "a" / "x.png")
    cropped = next(iter(image_dataset(str(tmp_path), image_size=(20, 20), shuffle=False)))[0].numpy()[0]
    np.testing.assert_allclose(cropped.mean(axis=(0, 1)), [0, 255, 0], atol=1)
    stretched = next(iter(image_dataset(str(tmp_path), image_size=(20, 20), crop_to_aspect_ratio=False)))[0].numpy()[0]
    assert stretched[:, 0, 0].mean() > 200 and stretched[:, -1, 2].mean() > 200


def test_split_from_the_manifest_and_augmentation(tmp_path):
    root = _folder(tmp_path / "data")
    clean(str(root), progress=False)
    split(str(root), ratios=(0.5, 0.25, 0.25), seed=0)
    sizes = {s: sum(len(y) for _, y in image_dataset(str(root), (16, 16), split=s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 12 and sizes["train"] == 6
    a = next(iter(image_dataset(str(root), (16, 16), split="train", augment=True, seed=1, cache=True)))[0].numpy()
    assert a.shape[1:] == (16, 16, 3) and 0 <= a.min() and a.max() <= 255
    with pytest.raises(ValueError, match="split='holdout'"):
        image_dataset(str(root), split="holdout")


def test_errors_and_no_tensorflow_at_import(tmp_path):
    with pytest.raises(ValueError, match="No images"):
        image_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="image_size"):
        image_dataset(str(tmp_path), image_size=(0, 10))
    code = "import sys, data_tools.loader, data_tools.clean, data_tools.split; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("cache", [False, True])
def test_every_epoch_is_shuffled_anew(tmp_path, cache):
    root = _folder(tmp_path / "data")
    ds = image_dataset(str(root), (8, 8), batch_size=12, cache=cache, seed=0)

    def order():
        # an image's mean identifies it
        return tuple(np.round(next(iter(ds))[0].numpy().mean(axis=(1, 2, 3)), 3))

    epochs = [order() for _ in range(4)]
    assert len(set(epochs)) > 1, "the same order every epoch"
    assert len({tuple(sorted(e)) for e in epochs}) == 1  # the same images each time


@pytest.mark.parametrize("crop", [True, False])
def test_training_and_explanations_see_the_same_pixels(tmp_path, crop):
    """image_dataset (training) and load_arrays (explain, compare, the demo's test images) read a file alike."""
    from data_tools.loader import load_arrays

    root = tmp_path / "data"
    for k, (label, shape) in enumerate((("tall", (97, 41)), ("wide", (50, 173)), ("square", (64, 64)))):
        (root / label).mkdir(parents=True)
        Image.fromarray(scene(k, shape)).save(root / label / "0.png")
        Image.fromarray(scene(k + 10, shape)).convert("L").save(root / label / "1.jpg", quality=80)
    ds = image_dataset(str(root), image_size=(24, 40), batch_size=4, shuffle=False, crop_to_aspect_ratio=crop)
    trained_on = np.concatenate([x.numpy() for x, _ in ds])
    if crop:
        explained, *_ = load_arrays(str(root), (24, 40))
    else:
        from bagnet_keras.core.files import read_image

        explained = np.stack(
            [read_image(p, (24, 40), crop_to_aspect_ratio=False) for p in load_arrays(str(root), (24, 40))[4]]
        )
    assert trained_on.dtype == np.float32 and explained.dtype == np.uint8
    np.testing.assert_array_equal(trained_on, explained.astype("float32"))
