"""The HTML report: written self-contained, and rendered for real in headless Chromium."""

import os
import re

import keras
import numpy as np
import pytest
from browser import page, screenshot

from bagnet_keras import BagNet, deprocess_input, preprocess_input
from bagnet_keras.metrics.comparison import compare
from bagnet_keras.report.html import write_report
from bagnet_keras.transfer.heads import build_classifier
from data_tools.synthetic import motif_scene

SIZE = 48
CLASSES = ["cross", "ring", "dot_above_bar"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    keras.utils.set_random_seed(0)
    bagnet = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=8, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    cnn = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
        ]
    )
    models = {"cnn": build_classifier(cnn, 3, mode="scratch"), "bagnet": build_classifier(bagnet, 3, mode="scratch")}
    scenes = [motif_scene(CLASSES[i % 3], seed=i, size=SIZE) for i in range(6)]
    images = preprocess_input(np.stack([s[0] for s in scenes]).astype("float32"))
    masks = np.stack([s[1] for s in scenes])
    labels = [i % 3 for i in range(6)]
    methods = {"cnn": ["gradcam", "saliency", "deeplift"], "bagnet": ["evidence", "gradcam"]}
    result = compare(
        models,
        images,
        labels,
        masks=masks,
        methods=methods,
        steps=4,
        linearity_k=3,
        progress=False,
        deprocess=deprocess_input,
        sanity=2,
    )
    folder = tmp_path_factory.mktemp("report")
    path = write_report(result, CLASSES, folder, findings=["BagNet evidence points into the masks in 3 of 6 images."])
    return path, folder, result


def test_report_is_one_self_contained_file_with_pngs_beside_it(report):
    path, folder, _ = report
    text = open(path, encoding="utf-8").read()
    assert not re.search(r'src="(?!data:image/png;base64,)', text), "an image is not embedded"
    assert text.count("<img ") == len(os.listdir(folder / "figures"))
    for section in (
        "Findings",
        "Models",
        "Faithfulness",
        "Deletion and insertion curves",
        "Spatial sensitivity",
        "Can these maps be trusted?",
        "Agreement between maps",
        "Images",
        "Most informative patches per class",
        "Misclassified",
    ):
        assert f"<h2>{section}" in text, section
    assert sorted(os.listdir(folder)) == ["figures", "report.html"]


def test_report_renders_in_headless_chromium(report):
    path, folder, _ = report
    with page(path, folder.parent / "chromium_profile") as driver:
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"
        )
        assert images and all(complete and width > 0 for _, complete, width in images), images
        tables = driver.execute_script("return document.querySelectorAll('table').length;")
        assert tables == 4  # models, faithfulness, sanity checks, agreement between maps
        headings = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent);")
        assert "Faithfulness" in headings
        shot = screenshot(driver, folder.parent / "report_screenshot.png")
        assert shot.stat().st_size > 10_000
        print(f"\nscreenshot of the report: {shot}")


def test_the_report_is_drawn_from_the_comparison_alone(report, monkeypatch, tmp_path):
    """No model runs in write_report: everything it shows was kept by compare."""
    _, _, result = report

    def forbidden(*args, **kwargs):
        raise AssertionError("write_report ran a model")

    for name in ("__call__", "predict", "predict_on_batch"):
        monkeypatch.setattr(keras.Model, name, forbidden)
    path = write_report(result, CLASSES, tmp_path)
    assert "Most informative patches per class (bagnet)" in open(path, encoding="utf-8").read()
    assert result.images.dtype == np.uint8 and result.images.shape == (6, SIZE, SIZE, 3)
    assert result.evidence["boxes"].shape == (6, 3, 4) and sorted(result.patches) == [0, 1, 2]
