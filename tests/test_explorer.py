"""The explorer's data equals the Python API's answers, and the page in Chromium shows them at a clicked position."""

import keras
import numpy as np
import pytest
from browser import logged_page
from test_explorer_page import js_precision, nearest, quiet, ranked

from bagnet_keras.explain.concepts import class_concepts
from bagnet_keras.explain.evidence import evidence_map
from bagnet_keras.explain.factorize import factorize
from bagnet_keras.models.bagnet import BagNet
from bagnet_keras.report.explorer import explorer_data, write_explorer
from data_tools.synthetic import textures

NAMES = ["horizontal", "vertical", "checker"]


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    x, y = textures(4, size=32, seed=1)
    x = x.astype("float32")
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", name="c2")(h)
    h = keras.layers.ReLU(name="c2_relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    cnn = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="tiny_cnn")
    bagnet = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, classes=3, input_shape=(32, 32, 3))
    prep = lambda images: images / 255.0  # noqa: E731  (arrays and tensors: the visualisation calls it too)
    groups = factorize(cnn, x, "c2_relu", n_groups=3, k=4, preprocess=prep, progress=False)
    concepts = class_concepts(bagnet, x, y, n_concepts=2, patches=20, preprocess=prep, progress=False)
    models = {"cnn": cnn, "bagnet": bagnet}
    options = dict(groups=groups, concepts=concepts, preprocess=prep, visualization_steps=4, per_class=1)
    data = explorer_data(models, x, y, NAMES, misclassified=1, **options)
    return models, x, y, prep, groups, concepts, data, options


def test_the_data_is_what_the_api_gives(setup):
    models, x, y, prep, groups, concepts, data, _ = setup
    indices = [image["index"] for image in data["images"]]
    assert len(indices) >= 3 and {int(y[i]) for i in indices} == {0, 1, 2}  # one per class at least
    chosen = prep(x[indices])
    np.testing.assert_allclose(data["cnn"]["activation"], groups.maps(chosen), rtol=1e-5, atol=1e-6)
    spatial = groups.attribution(chosen, spatial=True)  # (N, K, h, w, G)
    np.testing.assert_allclose(data["cnn"]["attribution"], np.moveaxis(spatial, 1, -1), rtol=1e-5, atol=1e-6)
    # Spatial attributions add up to the groups' attribution to each class over the image.
    np.testing.assert_allclose(spatial.sum(axis=(2, 3)), groups.attribution(chosen), rtol=1e-4, atol=1e-5)
    evidence = np.asarray(data["bagnet"]["evidence"])
    for k in range(3):
        maps = evidence_map(models["bagnet"], chosen, class_index=k).maps
        np.testing.assert_allclose(evidence[..., k], maps, rtol=1e-5, atol=1e-5)
    # The BagNet's logits are the mean of its patches' evidence (its output is their softmax).
    probabilities = keras.ops.convert_to_numpy(models["bagnet"](chosen))
    mean = evidence.mean(axis=(1, 2))
    softmax = np.exp(mean - mean.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), probabilities, rtol=1e-4, atol=1e-5)
    features = keras.ops.convert_to_numpy(
        keras.Model(models["bagnet"].inputs[0], models["bagnet"].get_layer("avg_pool").input)(chosen)
    )
    for k in range(3):
        assert np.array_equal(np.asarray(data["bagnet"]["concept"])[..., k], concepts.assign(features, k))
    assert len(data["cnn"]["groups"]) == 3 and all(g["visualization"] for g in data["cnn"]["groups"])
    assert [m["label"] for m in data["maps"]] == ["cnn Grad-CAM", "bagnet evidence"]


def test_the_page_shows_the_api_numbers_at_a_clicked_position(setup, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    models, x, y, prep, groups, concepts, data, options = setup
    path = write_explorer(models, x, y, tmp_path / "out", NAMES, misclassified=1, **options)
    i, (py, px) = 1, (20, 9)
    index = data["images"][i]["index"]
    image = prep(x[index : index + 1])
    activation = groups.maps(image)[0]
    attribution = groups.attribution(image, spatial=True)[0]  # (K, h, w, G)
    with logged_page(path, tmp_path / "profile") as driver:
        driver.find_element(By.ID, f"thumb-{i}").click()
        main = driver.find_element(By.ID, "main-image")
        scale = int(main.get_attribute("data-scale"))
        offset = ((px + 0.5) * scale - main.size["width"] / 2, (py + 0.5) * scale - main.size["height"] / 2)
        ActionChains(driver, duration=0).move_to_element_with_offset(main, *map(round, offset)).click().perform()
        r, c = nearest(data["cnn"]["geometry"], data["cnn"]["grid"], py, px)
        assert driver.find_element(By.ID, "cnn-position").text == f"row {r}, column {c}"
        cells = driver.execute_script(
            "return [...document.querySelectorAll('#panels [data-kind]')].filter(e => e.offsetParent !== null)"
            ".map(e => [e.dataset.kind, e.dataset.group ?? null, e.dataset.class ?? null, e.textContent]);"
        )
        shown_groups = [int(g) for kind, g, _, _ in cells if kind == "cnn-activation"]
        assert shown_groups == ranked(activation[r, c].tolist())
        for kind, g, k, text in cells:
            if kind == "cnn-activation":
                assert text == js_precision(float(activation[r, c, int(g)]))
            elif kind == "cnn-attribution":
                assert text == js_precision(float(attribution[int(k), r, c, int(g)]))
        r2, c2 = nearest(data["bagnet"]["geometry"], data["bagnet"]["grid"], py, px)
        patch = {int(k): text for kind, _, k, text in cells if kind == "bagnet-logit"}
        for k, text in patch.items():
            expected = evidence_map(models["bagnet"], image, class_index=k).maps[0, r2, c2]
            assert text == js_precision(float(expected))
        assert len(patch) == 3 and sum(kind == "cnn-attribution" for kind, *_ in cells) == 9
        quiet(driver)


def test_float32_numbers_reach_the_page_exactly():
    """Rounded once only, by the page: a float32 survives the JSON unchanged."""
    from bagnet_keras.report.explorer import _round

    x = np.random.default_rng(0).normal(scale=[[1e-6], [1.0], [1e4]], size=(3, 1000)).astype("float32")
    assert np.array_equal(np.asarray(_round(x), dtype="float32"), x)
