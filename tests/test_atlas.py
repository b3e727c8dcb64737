"""The feature atlas (issue 11): streamed top activations per unit, placed and projected like Zeiler & Fergus."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bagnet_keras.core.stream import PARTS
from bagnet_keras.explain.atlas import feature_atlas, merge_atlas
from bagnet_keras.explain.guided import _modified_relu

SIZE = 16


def _nested():
    """A backbone inside a two-head model, ReLUs both as layers and as activations."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(5, 3, name="c2"),
            keras.layers.ReLU(name="c2_relu"),
        ],
        name="backbone",
    )
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    heads = {"a": keras.layers.Dense(3, name="a")(pooled), "b": keras.layers.Dense(2, name="b")(pooled)}
    return keras.Model(inputs, heads)


def _data(n=11, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")
    if n > 3:
        x[3] = 0  # a blank image: many tied activations
    return x


def _brute_force(acts, k):
    """Every position of every image sorted by (-activation, image, row, column): the first k per channel."""
    n, h, w, c = acts.shape
    image, row, col = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    tops = []
    for unit in range(c):
        values = acts[..., unit].ravel()
        order = np.lexsort((col.ravel(), row.ravel(), image.ravel(), -values))[:k]
        tops.append(
            [(int(image.ravel()[o]), int(row.ravel()[o]), int(col.ravel()[o]), float(values[o])) for o in order]
        )
    return tops


@pytest.mark.backends
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_streamed_top_k_equals_brute_force(batch_size):
    model, x = _nested(), _data()
    atlas = feature_atlas(model, x, ["c1", "c2_relu"], k=7, batch_size=batch_size, progress=False)
    inner = model.get_layer("backbone")
    for name, depth in (("c1", 1), ("c2_relu", 4)):
        head = keras.Sequential([keras.Input((SIZE, SIZE, 3)), *inner.layers[:depth]])  # the same layers
        acts = head.predict(x, batch_size=64, verbose=0)
        expected = _brute_force(acts, 7)
        for unit in range(acts.shape[-1]):
            got = atlas.top(name, unit)
            assert [g[:3] for g in got] == [e[:3] for e in expected[unit]], (name, unit)
            np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected[unit]], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(atlas.mean[atlas.path(name)], acts.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    # a dataset of (images, labels) batches of another size gives the same atlas
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(5)
    again = feature_atlas(model, data, ["c1", "c2_relu"], k=7, progress=False)
    for name in atlas.layers:
        np.testing.assert_array_equal(again.image_index[name], atlas.image_index[name])
        np.testing.assert_array_equal(again.row[name], atlas.row[name])


def test_units_the_strongest_and_a_list():
    model, x = _nested(), _data()
    full = feature_atlas(model, x, "c2_relu", k=3, progress=False)
    strongest = feature_atlas(model, x, "c2_relu", units=2, k=3, progress=False)
    order = np.argsort(-full.mean["backbone/c2_relu"], kind="stable")[:2]
    np.testing.assert_array_equal(strongest.units["backbone/c2_relu"], order)
    listed = feature_atlas(model, x, ["c1"], units={"c1": [4, 1]}, k=3, progress=False)
    assert listed.top("c1", 4) == full_top(model, x, "c1", 4)


def full_top(model, x, layer, unit):
    return feature_atlas(model, x, layer, k=3, progress=False).top(layer, unit)


def test_projection_is_guided_backprop_of_that_single_activation():
    model, x = _nested(), _data()
    atlas = feature_atlas(model, x, ["c2_relu"], k=4, progress=False)
    unit = 2
    crops, projections = atlas.examples(x, "c2_relu", unit)
    boxes = atlas.boxes("c2_relu", unit)
    geometry = atlas.geometry["backbone/c2_relu"]
    assert crops.shape == projections.shape == (4, geometry.patch_size, geometry.patch_size, 3)
    relu = _modified_relu("guided")
    inner = model.get_layer("backbone")
    # the same network written by hand with the guided ReLU, and the gradient of the one activation
    for (image, row, col, value), crop, projection, box in zip(
        atlas.top("c2_relu", unit), crops, projections, boxes, strict=True
    ):
        xt = tf.constant(x[image : image + 1])
        with tf.GradientTape() as tape:
            tape.watch(xt)
            c1 = inner.get_layer("c1")
            a = relu(tf.nn.conv2d(xt, c1.kernel, 1, "VALID") + c1.bias)
            a = tf.nn.max_pool2d(a, 2, 2, "VALID")
            c2 = inner.get_layer("c2")
            a = relu(tf.nn.conv2d(a, c2.kernel, 1, "VALID") + c2.bias)
            activation = a[0, row, col, unit]
        np.testing.assert_allclose(float(activation), value, rtol=1e-5)
        grad = tape.gradient(activation, xt).numpy()[0]
        top, left, bottom, right = box
        np.testing.assert_allclose(projection, grad[top:bottom, left:right], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(crop, x[image, top:bottom, left:right])
        assert not np.any(grad[:top]) and not np.any(grad[bottom:]), "gradient outside the receptive field"


def _same_atlas(a, b):
    assert a.layers == b.layers and a.n_images == b.n_images
    for name in a.layers:
        for field in ("units", "values", "image_index", "row", "column", "mean"):  # bit for bit
            np.testing.assert_array_equal(getattr(a, field)[name], getattr(b, field)[name], err_msg=(name, field))


@pytest.mark.backends
def test_shards_merge_to_the_atlas_of_one_run(tmp_path):
    model, x = _nested(), _data()
    layers = ["c1", "c2_relu"]
    whole = feature_atlas(model, x, layers, k=5, batch_size=2, progress=False)
    folders = [tmp_path / f"shard-{i}" for i in range(3)]
    for i, folder in enumerate(folders):
        part = feature_atlas(model, x, layers, k=5, batch_size=2, folder=folder, shard=(i, 3), progress=False)
        assert part.n_images == sum(len(x[s : s + 2]) for s in range(0, len(x), 2)[i::3])
    _same_atlas(merge_atlas(model, folders[::-1]), whole)
    strongest = merge_atlas(model, folders, units=2)
    _same_atlas(strongest, feature_atlas(model, x, layers, units=2, k=5, batch_size=2, progress=False))
    # a dataset of (images, labels) batches, sharded by its own batches
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(2)
    folders = [tmp_path / f"data-{i}" for i in range(2)]
    for i, folder in enumerate(folders):
        feature_atlas(model, data, layers, k=5, folder=folder, shard=(i, 2), progress=False)
    _same_atlas(merge_atlas(model, folders), whole)


@pytest.mark.backends
def test_a_killed_run_resumes_to_the_same_atlas(tmp_path):
    model, x = _nested(), _data()
    whole = feature_atlas(model, x, ["c1", "c2_relu"], k=5, batch_size=2, folder=tmp_path / "whole", progress=False)
    _same_atlas(whole, feature_atlas(model, x, ["c1", "c2_relu"], k=5, batch_size=2, progress=False))
    parts = sorted(os.listdir(tmp_path / "whole" / PARTS))
    assert len(parts) == 6
    # the state of a kill after the third batch was committed: the first three parts, no complete.json
    killed = tmp_path / "killed"
    feature_atlas(model, x[:6], ["c1", "c2_relu"], k=5, batch_size=2, folder=killed, progress=False)
    os.remove(killed / "complete.json")
    resumed = feature_atlas(model, x, ["c1", "c2_relu"], k=5, batch_size=2, folder=killed, progress=False)
    _same_atlas(resumed, whole)
    for name in parts:
        with np.load(tmp_path / "whole" / PARTS / name) as a, np.load(killed / PARTS / name) as b:
            assert a.files == b.files and all(np.array_equal(a[f], b[f]) for f in a.files), name
    _same_atlas(merge_atlas(model, [killed]), whole)  # a finished run reads back without the data


def test_sharding_and_merging_refuse_what_does_not_fit(tmp_path):
    model, x = _nested(), _data(6)
    with pytest.raises(ValueError, match="needs a `folder`"):
        feature_atlas(model, x, ["c1"], shard=(0, 2), progress=False)
    with pytest.raises(ValueError, match="shard 2/2"):
        feature_atlas(model, x, ["c1"], shard=(2, 2), folder=tmp_path / "bad", progress=False)
    feature_atlas(model, x, ["c1"], k=3, batch_size=2, folder=tmp_path / "a", shard=(0, 2), progress=False)
    with pytest.raises(ValueError, match="other arguments.*k"):
        feature_atlas(model, x, ["c1"], k=4, batch_size=2, folder=tmp_path / "a", shard=(0, 2), progress=False)
    with pytest.raises(ValueError, match=r"missing \[1\]"):
        merge_atlas(model, [tmp_path / "a"])
    feature_atlas(model, x, ["c1"], k=3, batch_size=2, folder=tmp_path / "b", shard=(1, 2), progress=False)
    keras.utils.set_random_seed(1)
    other = _nested()
    other.get_layer("backbone").get_layer("c1").kernel.assign(np.zeros((3, 3, 3, 6), "float32"))
    with pytest.raises(ValueError, match="other weights"):
        merge_atlas(other, [tmp_path / "a", tmp_path / "b"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": ["nope"]}, "'nope'"),
        ({"layers": ["a"]}, "spatial"),
        ({"layers": ["c1"], "k": 0}, "k=0"),
        ({"layers": ["c1"], "units": [9]}, r"\[0, 6\)"),
        ({"layers": ["c1"], "units": 7}, "7 strongest"),
        ({"layers": ["c1"], "data": np.zeros((0, SIZE, SIZE, 3), "float32")}, "no image"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    arguments = {"data": _data(3), **kwargs}
    with pytest.raises(ValueError, match=match):
        feature_atlas(_nested(), arguments.pop("data"), progress=False, **arguments)


def test_a_dataset_with_labels_by_head_resumes(tmp_path):
    # The batches' labels (a dict by head) are part of what a rerun checks: they must digest the same each time.
    model, x = _nested(), _data(6)
    labels = {"a": np.arange(6) % 3, "b": np.arange(6) % 2}
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(2)
    first = feature_atlas(model, data, ["c1"], k=3, folder=tmp_path / "run", progress=False)
    os.remove(tmp_path / "run" / PARTS / "part-000002.npz")
    _same_atlas(feature_atlas(model, data, ["c1"], k=3, folder=tmp_path / "run", progress=False), first)
    other = tf.data.Dataset.from_tensor_slices((x, {**labels, "b": 1 - labels["b"]})).batch(2)
    with pytest.raises(ValueError, match="Batch 0 of the data differs"):
        feature_atlas(model, other, ["c1"], k=3, folder=tmp_path / "run", progress=False)


def test_the_passes_trace_once_per_model_and_signature():
    """The atlas's passes and the unit projections trace once, whatever the batch sizes (issue 28)."""
    from bagnet_keras.core import graph

    model, x = _nested(), _data()
    for batch_size in (3, 4):
        atlas = feature_atlas(model, x, ["c1", "c2_relu"], k=3, batch_size=batch_size, progress=False)
        atlas.examples(x, "c2_relu", 1, batch_size=batch_size)
        atlas.examples(x, "c2_relu", 2, batch_size=batch_size)
    functions = [f for f in graph._COMPILED[model].values() if hasattr(f, "experimental_get_tracing_count")]
    assert [f.experimental_get_tracing_count() for f in functions] == [1, 1]  # the top-k pass, the projection
