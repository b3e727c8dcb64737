"""One model of each keras.applications family with random weights, usable as the "ordinary CNN" in tests and
benchmarks (bench/families.py, tests/test_families.py)."""

from __future__ import annotations

import keras
import numpy as np

from bagnet_keras.core.graph import iter_layers

#: One builder per family, the smallest of each.
FAMILIES = {
    "Xception": keras.applications.Xception,
    "VGG": keras.applications.VGG16,
    "ResNet": keras.applications.ResNet50,
    "ResNetV2": keras.applications.ResNet50V2,
    "InceptionV3": keras.applications.InceptionV3,
    "InceptionResNetV2": keras.applications.InceptionResNetV2,
    "MobileNet": keras.applications.MobileNet,
    "MobileNetV2": keras.applications.MobileNetV2,
    "MobileNetV3": keras.applications.MobileNetV3Small,
    "DenseNet": keras.applications.DenseNet121,
    "NASNet": keras.applications.NASNetMobile,
    "EfficientNet": keras.applications.EfficientNetB0,
    "EfficientNetV2": keras.applications.EfficientNetV2B0,
    "ConvNeXt": keras.applications.ConvNeXtTiny,
}


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` images of uniform noise in [0, 255], as keras.applications models take them."""
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def build(family: str, size: int, **kwargs) -> keras.Model:
    """``family``'s builder with random weights (seed 0), 10 classes, at ``size`` pixels.

    Its BatchNorm statistics are set from a batch of random images: with the initial ones (mean 0,
    variance 1) the activations of some families vanish (MobileNet's reach 1e-19 at its last layer)
    and every map is 0. ``kwargs`` go to the builder (``alpha=0.25``).
    """
    keras.utils.set_random_seed(0)
    model = FAMILIES[family](weights=None, classes=10, input_shape=(size, size, 3), **kwargs)
    for _, layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training-mode call sets the moving statistics to that batch's
    model(images(8, size, seed=1), training=True)
    return model
