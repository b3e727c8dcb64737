"""Argument and model checks at the boundary (issues 28 and 29): one validation of numbers, and every
model checked to be an image classifier before anything is explained."""

import keras
import numpy as np
import pytest

from bagnet_keras.core.inputs import check_image_model
from bagnet_keras.core.validation import check_int, check_number


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_integers_of_any_kind_are_accepted(value):
    assert check_int(value, "k", low=1) == 3 and type(check_int(value, "k", low=1)) is int


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "2", None, 1001])
def test_bad_integers_name_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=rf"`k` must be an integer in \[1, 1000\]\. Received: k={value!r}"):
        check_int(value, "k", low=1, high=1000)


def test_none_passes_only_where_it_means_something():
    assert check_int(None, "batch_size", low=1, allow_none=True) is None
    with pytest.raises(ValueError, match="or None"):
        check_int(0, "batch_size", low=1, allow_none=True)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -1e-3, True, "0.1"])
def test_bad_numbers_are_refused(value):
    with pytest.raises(ValueError, match="learning_rate"):
        check_number(value, "learning_rate", low=0, low_open=True)


def test_numbers_of_any_kind_are_accepted():
    assert check_number(np.float32(0.5), "ratio", low=0, high=1, high_open=True) == 0.5
    assert check_number(1, "ratio", low=0, high=1) == 1.0
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        check_number(1, "ratio", low=0, high=1, high_open=True)


def _two_inputs():
    a, b = keras.Input((8, 8, 3)), keras.Input((4,))
    pooled = keras.layers.GlobalAveragePooling2D()(a)
    return keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([pooled, b])), name="two")


def _flat():
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)], name="flat")


def _gray():
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)], name="gray")


def _features():
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="features")


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (_two_inputs, "has 2 inputs"),
        (_flat, r"input of shape \(None, 16\), not an image"),
        (_gray, "1 channel"),
        (_features, "class scores"),
    ],
)
def test_a_model_that_is_not_an_image_classifier_is_named_with_what_fails(build, words):
    with pytest.raises(ValueError, match=words):
        check_image_model(build(), source="m.keras")


def test_an_image_classifier_passes():
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    check_image_model(model)
