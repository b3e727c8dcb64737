"""Models that preprocess in their first layer (`PixelAffine`, ``include_preprocessing=True``)."""

import functools

import keras
import numpy as np
import pytest

from bagnet_keras import BagNet, evidence_map
from bagnet_keras.app.workflows import load_model
from bagnet_keras.core.layers import PixelAffine
from bagnet_keras.metrics.comparison import is_bagnet
from bagnet_keras.metrics.sanity import shifted_model
from bagnet_keras.models import imagenet
from bagnet_keras.transfer import build_classifier
from bagnet_keras.transfer.backbones import BACKBONES, Backbone, get_preprocessing
from bagnet_keras.transfer.baselines import feature_extractor

# New models with and without their preprocessing, each called once: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager

SIZE = 40
TINY = Backbone(
    "tiny_bagnet",
    functools.partial(BagNet, blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=8, stem_width=16),
    imagenet.preprocess_input,
    None,
    SIZE,
    "conv5_block1",
    bagnet=True,
)


def _pixels(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


@pytest.mark.parametrize("name", ["bagnet33", "vgg16", "vgg16_places365", "resnet50v2", "efficientnetb0"])
def test_the_layer_equals_each_backbones_preprocessing(name):
    preprocess = get_preprocessing(name)
    x = _pixels()
    layer = PixelAffine.from_function(preprocess)
    got = keras.ops.convert_to_numpy(layer(x))
    expected = np.asarray(preprocess(x.copy()))
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_every_backbones_preprocessing_is_such_a_layer():
    for record in BACKBONES.values():
        PixelAffine.from_function(record.preprocess)


def test_a_preprocessing_of_the_whole_image_is_refused_by_name():
    def standardize(x):
        return (x - x.mean()) / (x.std() + 1e-6)

    with pytest.raises(ValueError, match="standardize is not one affine map .*include_preprocessing=False"):
        PixelAffine.from_function(standardize)
    with pytest.raises(ValueError, match=r"`matrix` must be \(C, C'\)"):
        PixelAffine(np.eye(3), np.zeros(2))


@pytest.mark.backends
def test_a_classifier_with_its_preprocessing_equals_one_fed_preprocessed_images(tmp_path):
    keras.utils.set_random_seed(0)
    shape = (SIZE, SIZE, 3)
    raw = build_classifier(TINY, {"city": 3, "region": 2}, weights=None, include_preprocessing=True, input_shape=shape)
    plain = build_classifier(TINY, {"city": 3, "region": 2}, weights=None, input_shape=shape)
    assert raw.layers[1].name == "preprocessing" and len(raw.weights) == len(plain.weights)
    plain.set_weights(raw.get_weights())
    x = _pixels()
    got, expected = raw.predict(x, verbose=0), plain.predict(imagenet.preprocess_input(x), verbose=0)
    for head in ("city", "region"):
        assert np.allclose(got[head], expected[head], atol=1e-5)

    # still a BagNet: its evidence map averages to the logits, and it is saved and loaded in safe mode
    city = keras.Model(raw.inputs, raw.get_layer("city").output)
    assert is_bagnet(city)
    maps = evidence_map(city, x, class_index=[0, 1, 2])
    logits = keras.Model(raw.inputs, raw.get_layer("city_logits").output).predict(x, verbose=0)
    assert np.allclose(maps.maps.mean(axis=(1, 2)), logits[np.arange(3), [0, 1, 2]], atol=1e-4)
    # the input invariance check's twin takes the shift in the layer's offset, and stays a BagNet
    twin = shifted_model(city, 10.0)
    assert is_bagnet(twin) and twin.layers[1].name == "preprocessing"
    assert np.allclose(twin.predict(x + 10.0, verbose=0), city.predict(x, verbose=0), atol=1e-5)
    city.save(tmp_path / "city.keras")
    loaded, preprocess = load_model(str(tmp_path / "city.keras"))
    assert preprocess is None
    assert np.allclose(loaded.predict(x, verbose=0), city.predict(x, verbose=0), atol=1e-6)


def test_the_feature_extractor_takes_pixels_too():
    keras.utils.set_random_seed(0)
    raw = feature_extractor("vgg16", None, (32, 32, 3), include_preprocessing=True)
    plain = feature_extractor("vgg16", None, (32, 32, 3))
    plain.set_weights(raw.get_weights())
    x = _pixels()[:, :32, :32]
    expected = plain.predict(get_preprocessing("vgg16")(x.copy()), verbose=0)
    assert np.allclose(raw.predict(x, verbose=0), expected, atol=1e-5)


def test_a_model_given_as_backbone_cannot_include_its_preprocessing():
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="include_preprocessing=True needs a backbone given by name"):
        build_classifier(backbone, 2, include_preprocessing=True)
