"""Building Blocks (issue 11): a layer's activations factorised into groups, their top positions and attributions."""

import keras
import numpy as np
import pytest

from bagnet_keras.explain.cam import layer_gradients
from bagnet_keras.explain.factorize import class_group_table, factorize

SIZE = 16


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(6, 3, name="c2")(x)
    x = keras.layers.ReLU(name="c2_relu")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(pooled))


def _x(n=9, seed=0):
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")


def test_group_attributions_add_up_to_gradient_times_activation():
    model, x = _model(), _x()
    groups = factorize(model, x, "c2_relu", n_groups=4, sample_images=5, k=5, batch_size=4, progress=False)
    shares = groups.attribution(x, batch_size=4)  # (N, classes, groups)
    assert shares.shape == (9, 3, 4)
    for c in range(3):
        a, g, _ = layer_gradients(model, x, c, layer="c2_relu")
        np.testing.assert_allclose(shares[:, c].sum(axis=1), (a * g).sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)
    one = groups.attribution(x, class_index=[0, 1, 2, 0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(one[:, 0], shares[np.arange(9), [0, 1, 2] * 3], rtol=1e-5, atol=1e-7)
    rows = class_group_table(groups, x, ["a", "b", "c"])
    assert len(rows) == 12 and rows[0]["class"] == "a"


def test_group_top_positions_equal_brute_force():
    model, x = _model(), _x(11, seed=1)
    groups = factorize(model, x, "c1", n_groups=3, k=6, batch_size=3, progress=False)
    weights = groups.maps(x)  # (N, h, w, n)
    n, h, w, _ = weights.shape
    image, row, col = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    for group in range(3):
        values = weights[..., group].ravel()
        order = np.lexsort((col.ravel(), row.ravel(), image.ravel(), -values))[:6]
        expected = [(int(image.ravel()[o]), int(row.ravel()[o]), int(col.ravel()[o])) for o in order]
        assert [t[:3] for t in groups.top(group)] == expected
    assert groups.components.shape == (3, 8) and (groups.components >= 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer": "c1", "n_groups": 9}, "1..8"),
        ({"layer": "c2"}, "negative activations"),
        ({"layer": "out"}, "spatial"),
        ({"layer": "c1", "k": 0}, "k=0"),
        ({"layer": "c1", "data": np.zeros((0, SIZE, SIZE, 3), "float32")}, "no image"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    arguments = {"data": _x(3), **kwargs}
    with pytest.raises(ValueError, match=match):
        factorize(_model(), arguments.pop("data"), progress=False, **arguments)
