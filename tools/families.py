"""One model of each keras.applications family, and a keras-hub ViT, with random weights, usable as the
"ordinary model" in tests and benchmarks (bench/families.py, tests/test_families.py)."""

from __future__ import annotations

import keras
import numpy as np

from bagnet_keras.core.graph import iter_layers
from bagnet_keras.core.layers import ClassToken


def ViT(weights=None, classes: int = 10, input_shape=(96, 96, 3), **kwargs) -> keras.Model:
    """A small keras-hub ViT-style classifier (patches of 16 pixels, 4 blocks, width 48), keras.applications'
    call shape. Its inputs are [0, 255], scaled to [-1, 1] inside, as the families' are preprocessed inside."""
    import keras_hub

    inputs = keras.Input(input_shape)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=input_shape, patch_size=16, num_layers=4, num_heads=3, hidden_dim=48, mlp_dim=96, **kwargs
    )
    tokens = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs))
    outputs = keras.layers.Dense(classes, activation="softmax")(ClassToken()(tokens))
    return keras.Model(inputs, outputs, name="vit")


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
    "ViT": ViT,
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
