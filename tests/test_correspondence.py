"""Zeiler & Fergus' correspondence measure (issue 11) where the answer is known."""

import keras
import numpy as np
import pytest

from bagnet_keras.metrics.correspondence import correspondence


def _linear_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Conv2D(4, 3, strides=2, name="conv2"),
        ]
    )


def _scenes(n=5):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 16, 16, 3)).astype("float32")  # other backgrounds
    x[:, 5:9, 6:10] = rng.normal(size=(4, 4, 3))  # the same part, at the same place
    masks = np.zeros((n, 16, 16), bool)
    masks[:, 5:9, 6:10] = True
    return x, masks


def test_the_same_part_changes_a_linear_layer_the_same_way_everywhere():
    model, (x, masks) = _linear_model(), _scenes()
    result = correspondence(model, x, masks, ["conv", "conv2"], trials=4)
    for layer in ("conv", "conv2"):
        assert result.part[layer] < 1e-3, layer  # the difference image is the same part for every image
        assert result.random[layer] > 0.05  # random regions hide other pixels in each image
        assert result.random_std[layer] >= 0
    # each image's own mean as the fill makes the changes differ again
    assert correspondence(model, x, masks, "conv", fill="mean").part["conv"] > result.part["conv"]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda x, m: (x[:1], m[:1]), "at least 2"),
        (lambda x, m: (x, m[:, :8]), "must be"),
        (lambda x, m: (x, np.zeros_like(m)), "empty"),
    ],
)
def test_bad_arguments_name_the_value(change, match):
    x, masks = change(*_scenes())
    with pytest.raises(ValueError, match=match):
        correspondence(_linear_model(), x, masks, "conv")


def test_bad_fill_and_trials():
    x, masks = _scenes()
    with pytest.raises(ValueError, match="fill='grey'"):
        correspondence(_linear_model(), x, masks, "conv", fill="grey")
    with pytest.raises(ValueError, match="trials=0"):
        correspondence(_linear_model(), x, masks, "conv", trials=0)
