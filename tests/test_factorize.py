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


@pytest.mark.backends
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


@pytest.mark.backends
def test_shards_and_a_resumed_run_give_the_groups_of_one_run(tmp_path):
    import os

    from bagnet_keras.core.stream import PARTS
    from bagnet_keras.explain.factorize import merge_groups

    model, x = _model(), _x()
    options = dict(n_groups=3, sample_images=4, k=4, batch_size=2, progress=False)
    whole = factorize(model, x, "c2_relu", **options)
    folders = [tmp_path / f"shard-{i}" for i in range(2)]
    for i, folder in enumerate(folders):
        factorize(model, x, "c2_relu", folder=folder, shard=(i, 2), **options)
    merged = merge_groups(model, folders)
    np.testing.assert_array_equal(merged.components, whole.components)
    for field in ("values", "image_index", "row", "column"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field), err_msg=field)
    np.testing.assert_array_equal(merged.maps(x[:2]), whole.maps(x[:2]))
    # a kill after the second batch: its parts stand, the rest is measured again
    factorize(model, x, "c2_relu", folder=tmp_path / "run", **options)
    os.remove(tmp_path / "run" / "complete.json")
    for name in sorted(os.listdir(tmp_path / "run" / PARTS))[2:]:
        os.remove(tmp_path / "run" / PARTS / name)
    resumed = factorize(model, x, "c2_relu", folder=tmp_path / "run", **options)
    np.testing.assert_array_equal(resumed.values, whole.values)
    np.testing.assert_array_equal(resumed.image_index, whole.image_index)
    with pytest.raises(ValueError, match="no factorize run"):
        merge_groups(model, [_atlas_folder(tmp_path)])


def _atlas_folder(tmp_path):
    from bagnet_keras.explain.atlas import feature_atlas

    feature_atlas(_model(), _x(3), ["c1"], folder=tmp_path / "atlas", progress=False)
    return tmp_path / "atlas"
