"""Invariance curves (issue 11, Zeiler & Fergus Fig. 5) on a model whose answer is known."""

import keras
import numpy as np
import pytest

from bagnet_keras.metrics.invariance import invariance, transform_images


def _model():
    """A strided 1x1 convolution (translation-equivariant on its stride's grid), global average pooling, a head."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(6, 1, strides=2, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )


def test_global_pooling_of_a_strided_conv_ignores_circular_shifts_by_its_stride():
    model = _model()
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 3)).astype("float32")
    curves = invariance(model, x, ["gap", "conv"], labels=[0, 1, 2, 0], translate=[0, 2, 4, (2, -4), 1, 3], mode="wrap")
    gap = curves.distance["translate", "gap"]
    assert gap.shape == (6, 4)
    assert gap[:4].max() < 1e-5  # multiples of the stride: the same bag of positions
    assert gap[4:].min() > 1e-3  # odd shifts: other pixels are sampled
    assert curves.distance["translate", "conv"][1:4].min() > 0.1  # the map itself moves
    probability = curves.probability["translate"]
    np.testing.assert_allclose(probability[:4], np.broadcast_to(probability[0], (4, 4)), atol=1e-6)
    expected = model.predict(x, verbose=0)[np.arange(4), [0, 1, 2, 0]]
    np.testing.assert_allclose(probability[0], expected, rtol=1e-5)


def test_transformations():
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(
        transform_images(x, "translate", (1, -2), mode="wrap"), np.roll(x, (1, -2), axis=(1, 2)), atol=1e-6
    )
    np.testing.assert_allclose(transform_images(x, "scale", 1.0), x, atol=1e-6)
    np.testing.assert_allclose(transform_images(x, "rotate", 0), x, atol=1e-6)
    turned = transform_images(x, "rotate", 90)
    assert any(np.allclose(turned, np.rot90(x, k, axes=(1, 2)), atol=1e-5) for k in (1, -1))
    zoomed = transform_images(x, "scale", 2.0, mode="nearest")
    assert zoomed.shape == x.shape and not np.allclose(zoomed, x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "at least one transformation"),
        ({"translate": [1], "mode": "mirror"}, "mode='mirror'"),
        ({"scale": [0.0]}, "scale factor must be > 0"),
        ({"translate": [1], "labels": [0]}, "one class per image"),
        ({"translate": [1], "layers": ["nope"]}, "'nope'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    x = np.zeros((2, 12, 12, 3), "float32")
    arguments = {"layers": ["gap"], **kwargs}
    with pytest.raises(ValueError, match=match):
        invariance(_model(), x, arguments.pop("layers"), **arguments)
