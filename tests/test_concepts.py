"""A BagNet's class concepts (issue 11): each class's top patches over a dataset, streamed, and their clusters."""

import keras
import numpy as np
import pytest

from bagnet_keras import BagNet
from bagnet_keras.explain.concepts import class_concepts
from bagnet_keras.explain.evidence import evidence_for

SIZE = 32


def _bagnet():
    keras.utils.set_random_seed(0)
    return BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, classes=3, input_shape=(SIZE, SIZE, 3))


def _data(n=10, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")
    return x, np.arange(n) % 3


@pytest.mark.backends
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_top_patches_and_their_features_equal_brute_force(batch_size):
    model, (x, y) = _bagnet(), _data()
    found = class_concepts(model, x, y, n_concepts=3, patches=12, batch_size=batch_size, progress=False)
    ev = evidence_for(model, None)
    features = np.asarray(ev.native(x, 32))  # (N, h, w, D)
    n, h, w, _ = features.shape
    image, row, col = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    for c in range(3):
        evidence = features @ np.asarray(ev.kernel)[:, c] + np.asarray(ev.bias)[c]
        evidence = np.where((y == c)[:, None, None], evidence, -np.inf).ravel()
        order = np.lexsort((col.ravel(), row.ravel(), image.ravel(), -evidence))[:12]
        expected = [(int(image.ravel()[o]), int(row.ravel()[o]), int(col.ravel()[o])) for o in order]
        assert [p[:3] for p in found.patches[c]] == expected
        np.testing.assert_allclose([p[3] for p in found.patches[c]], evidence[order], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            found.features[c],
            features[image.ravel()[order], row.ravel()[order], col.ravel()[order]],
            rtol=1e-5,
            atol=1e-6,
        )
        concepts = found.concepts[c]
        assert len(concepts) == 3 and sum(k.n_patches for k in concepts) == 12
        assert sum(k.share for k in concepts) == pytest.approx(1.0)
        assert [k.share for k in concepts] == sorted((k.share for k in concepts), reverse=True)
    rows = found.table(["a", "b", "c"])
    assert len(rows) == 9 and rows[0]["class"] == "a"
    example = found.concepts[0][0].examples
    assert found.crops(x, example).shape == (len(example), found.geometry.patch_size, found.geometry.patch_size, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_concepts": 5, "patches": 4}, r"`n_concepts` \(5\)"),
        ({"classes": [3]}, r"\[3\]"),
        ({"labels": [0, 1]}, "one class per image"),
        ({"patches": 0}, "patches=0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    x, y = _data(4)
    arguments = {"labels": y, **kwargs}
    with pytest.raises(ValueError, match=match):
        class_concepts(_bagnet(), x, arguments.pop("labels"), progress=False, **arguments)


def test_only_bagnets_have_concepts():
    cnn = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    with pytest.raises(ValueError, match="not a BagNet top"):
        class_concepts(cnn, *_data(3), progress=False)


@pytest.mark.backends
def test_shards_and_a_resumed_run_give_the_concepts_of_one_run(tmp_path):
    import os

    import tensorflow as tf

    from bagnet_keras.core.stream import PARTS
    from bagnet_keras.explain.concepts import merge_concepts

    model, (x, y) = _bagnet(), _data()
    options = dict(n_concepts=2, patches=10, batch_size=3, progress=False)
    whole = class_concepts(model, x, y, **options)
    folders = [tmp_path / f"shard-{i}" for i in range(3)]
    for i, folder in enumerate(folders):
        class_concepts(model, x, y, folder=folder, shard=(i, 3), **options)
    merged = merge_concepts(model, folders, n_concepts=2)
    assert merged.patches == whole.patches and merged.table() == whole.table()
    for c in whole.features:
        np.testing.assert_array_equal(merged.features[c], whole.features[c])
    # a dataset of (images, labels) batches, killed after its first batch and run again
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    class_concepts(model, data, folder=tmp_path / "run", **options)
    os.remove(tmp_path / "run" / "complete.json")
    for name in sorted(os.listdir(tmp_path / "run" / PARTS))[1:]:
        os.remove(tmp_path / "run" / PARTS / name)
    resumed = class_concepts(model, data, folder=tmp_path / "run", **options)
    assert resumed.patches == whole.patches
    with pytest.raises(ValueError, match="other weights"):
        merge_concepts(_bagnet_other(), folders)


def _bagnet_other():
    keras.utils.set_random_seed(1)
    return BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, classes=3, input_shape=(SIZE, SIZE, 3))


def test_a_multi_head_dataset_gives_the_head_explained():
    import tensorflow as tf

    from bagnet_keras.transfer.heads import build_classifier

    keras.utils.set_random_seed(0)
    backbone = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    model = build_classifier(backbone, {"a": 3, "b": 2}, mode="scratch")
    x, y = _data(6)
    data = tf.data.Dataset.from_tensor_slices((x, {"a": y, "b": y % 2})).batch(4)
    by_head = class_concepts(model, data, output="a", n_concepts=2, patches=6, progress=False)
    assert by_head.patches == class_concepts(model, x, y, output="a", n_concepts=2, patches=6, progress=False).patches
    with pytest.raises(ValueError, match=r"by head \['a', 'b'\]; pass output=<head name>"):
        class_concepts(model, data, output=0, n_concepts=2, patches=6, progress=False)
