"""keras.applications families as the ordinary model (issue 26): the default CAM layer has a spatial extent,
and epsilon-LRP and DeepLIFT pass the layers of today's families. The full table, method by family, is
bench/families.py; here the two smallest families that hold every new case (MobileNet's 1x1 classifier;
MobileNetV3's Rescaling, hard_silu, squeeze-and-excitation gates and affine operations)."""

import numpy as np
import pytest

from bagnet_keras.explain import attribution
from bagnet_keras.explain.attribution import baseline_images
from bagnet_keras.explain.cam import GradCAM
from bagnet_keras.explain.registry import explain
from tools.families import build, images

# A keras.applications model per test, each explained once: eager calls skip its tracing (conftest).
pytestmark = pytest.mark.eager

SIZE = 64


@pytest.fixture(scope="module")
def mobilenet_v3():
    model = build("MobileNetV3", SIZE, minimalistic=False, include_preprocessing=True, classifier_activation=None)
    return model


def test_the_default_cam_layer_is_the_last_with_more_than_one_position():
    """MobileNet's classifier is a 1x1 convolution after pooling: a map there would be constant."""
    model = build("MobileNet", SIZE, alpha=0.25)
    cam = GradCAM(model)
    assert cam.layer_path == "conv_pw_13_relu"
    assert cam.layer.output.shape[1:3] == (2, 2)
    maps = explain(model, images(2, SIZE), "gradcam", class_index=0)
    assert maps.shape == (2, SIZE, SIZE) and (np.ptp(maps, axis=(1, 2)) > 0).all()


def test_deeplift_sums_to_the_difference_of_the_logits_on_mobilenet_v3(mobilenet_v3):
    x, classes = images(2, SIZE, seed=4), np.array([3, 7])
    maps = attribution(mobilenet_v3, x, classes, method="deeplift", baseline="blur")
    reference = baseline_images(x, "blur")
    logits = mobilenet_v3.predict(np.concatenate([x, reference]), verbose=0)
    delta = logits[:2][np.arange(2), classes] - logits[2:][np.arange(2), classes]
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), delta, rtol=1e-4, atol=1e-5)


def test_epsilon_lrp_passes_mobilenet_v3(mobilenet_v3):
    maps = attribution(mobilenet_v3, images(2, SIZE, seed=5), [1, 2], method="epsilon_lrp")
    assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all()
    assert (np.ptp(maps, axis=(1, 2)) > 0).all()
