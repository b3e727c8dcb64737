import os

import keras
import numpy as np
import pytest
from conftest import TINY, build_tiny, fixture_path, tiny_outputs

from bagnet_keras import BagNet, evidence_map
from bagnet_keras.explain import evidence_maps
from bagnet_keras.models import bagnet_geometry

# Evidence maps of several new models, each computed once or twice: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")


def _model(name):
    return build_tiny(name, weights=fixture_path(f"{name}.pth.tar"))


def _patch_loop(model, image, target, q):
    """The authors' algorithm with our model: zero-pad by (q-1)/2, run the patch centred on every pixel alone."""
    pad = (q - 1) // 2
    padded = np.pad(image, ((pad, q - 1 - pad), (pad, q - 1 - pad), (0, 0)))
    h, w = image.shape[:2]
    patches = np.stack([padded[i : i + q, j : j + q] for i in range(h) for j in range(w)])
    return model.predict(patches, batch_size=256, verbose=0)[:, target].reshape(h, w)


@pytest.mark.backends
@pytest.mark.parametrize("name", TINY)
def test_native_grid_is_the_logit_of_each_patch_alone(name):
    model = _model(name)
    x = tiny_outputs(name)["inputs"]
    result = evidence_map(model, x, class_index=[1, 2])
    q, s = result.patch_size, result.stride
    assert (q, s, result.offset) == tuple(bagnet_geometry(model))
    h, w = result.maps.shape[1:]
    for n, target in enumerate([1, 2]):
        patches = np.stack([x[n, s * i : s * i + q, s * j : s * j + q] for i in range(h) for j in range(w)])
        alone = model.predict(patches, verbose=0)[:, target].reshape(h, w)
        assert np.abs(alone - result.maps[n]).max() <= 1e-4
    # the logit is the mean of the evidence
    logits = model.predict(x, verbose=0)
    np.testing.assert_allclose(result.maps.mean(axis=(1, 2)), logits[[0, 1], [1, 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.backends
@pytest.mark.parametrize("name", TINY)
def test_stride_one_equals_the_patch_by_patch_algorithm(name):
    model = _model(name)
    q = bagnet_geometry(model).patch_size
    image = tiny_outputs(name)["inputs"][1, 3 : 3 + q + 5, 7 : 7 + q + 2]
    result = evidence_map(model, image[None], class_index=0, stride=1)
    assert result.maps.shape == (1,) + image.shape[:2]
    assert (result.stride, result.offset) == (1, -((q - 1) // 2))
    assert np.abs(result.maps[0] - _patch_loop(model, image, 0, q)).max() <= 1e-4


@pytest.mark.parametrize("name", TINY)
def test_stride_one_matches_the_authors_code(name):
    """tools/make_fixtures.py ran the authors' PyTorch model on every zero-padded patch."""
    ref = np.load(fixture_path(f"{name}_heatmap.npz"))
    result = evidence_map(_model(name), ref["heatmap_input"], class_index=int(ref["heatmap_target"]), stride=1)
    assert np.abs(result.maps[0] - ref["heatmap"]).max() <= 1e-4


@pytest.mark.backends
@pytest.mark.skipif(not os.path.isdir(REFERENCE), reason="../shared/reference is only on developer machines")
@pytest.mark.parametrize("name", ["mini33", "mini9"])
def test_stride_one_matches_the_shared_reference(name):
    import json

    with open(os.path.join(REFERENCE, f"{name}.json")) as f:
        c = json.load(f)
    model = BagNet(
        c["blocks"],
        c["kernel3"],
        c["strides"],
        classes=c["num_classes"],
        classifier_activation=None,
        weights=os.path.join(REFERENCE, f"{name}.pth.tar"),
    )
    ref = np.load(os.path.join(REFERENCE, f"{name}_outputs.npz"))
    result = evidence_map(model, ref["heatmap_input"], class_index=int(ref["heatmap_target"]), stride=1)
    assert np.abs(result.maps[0] - ref["heatmap"]).max() <= 1e-4
    assert np.abs(evidence_maps(model, ref["inputs"]).maps - ref["evidence"]).max() <= 1e-4


def test_class_selection():
    model = _model("tiny9")
    x = tiny_outputs("tiny9")["inputs"]
    everything = evidence_maps(model, x)
    assert everything.maps.shape[-1] == 5 and list(everything.class_index) == [0, 1, 2, 3, 4]
    top = evidence_map(model, x)
    np.testing.assert_array_equal(top.class_index, everything.logits.argmax(axis=1))
    scale = np.abs(everything.maps).max()  # float32 noise, which differs between a batch of one class and of all
    for n, c in enumerate(top.class_index):
        np.testing.assert_allclose(top.maps[n], everything.maps[n, ..., c], atol=1e-6 * scale)
    one = evidence_map(model, x, class_index=4)
    np.testing.assert_allclose(one.maps, everything.maps[..., 4], atol=1e-6 * scale)
    two = evidence_maps(model, x, classes=[3, 0], stride=1)
    assert two.maps.shape == x.shape[:3] + (2,)
    one_class = evidence_map(model, x, class_index=0, stride=1).maps
    np.testing.assert_allclose(two.maps[..., 1], one_class, atol=1e-6 * np.abs(one_class).max())


def test_geometry_boxes_and_upsampling():
    model = _model("tiny33")
    x = tiny_outputs("tiny33")["inputs"][:1]
    result = evidence_map(model, x, class_index=0)
    boxes = result.boxes()
    assert boxes.shape == result.maps.shape[1:] + (4,)
    np.testing.assert_array_equal(boxes[1, 2], [8, 16, 41, 49])
    up = result.upsample()
    assert up.shape == (1, 72, 72)
    # the centre pixel of a patch carries exactly that patch's evidence
    np.testing.assert_allclose(up[0, 8 + 16, 16 + 16], result.maps[0, 1, 2], rtol=1e-6)
    dense = evidence_map(model, x, class_index=0, stride=1)
    np.testing.assert_array_equal(dense.boxes()[0, 0], [-16, -16, 17, 17])
    assert dense.upsample() is dense.maps


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(class_index=5), r"\[0, 5\)"),
        (dict(class_index=[0, 1, 2]), "one per image"),
        (dict(class_index=1.5), "class_index=1.5"),
        (dict(stride=4), "stride=4"),
        (dict(batch_size=0), "batch_size=0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    model = _model("tiny9")
    with pytest.raises(ValueError, match=message):
        evidence_map(model, tiny_outputs("tiny9")["inputs"], **kwargs)


def test_bad_images_and_models():
    model = _model("tiny9")
    with pytest.raises(ValueError, match=r"images\[None\]"):
        evidence_map(model, np.zeros((48, 48, 3)))
    with pytest.raises(ValueError, match="smaller than the model's patch"):
        evidence_map(model, np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="NaN"):
        evidence_map(model, np.full((1, 48, 48, 3), np.nan))
    with pytest.raises(ValueError, match="include_top=True"):
        evidence_map(BagNet(blocks=(1, 1, 1, 1), base_width=8, include_top=False), np.zeros((1, 48, 48, 3)))
    resnet_like = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="global average pooling then a Dense layer without activation"):
        evidence_map(resnet_like, np.zeros((1, 48, 48, 3)))
    pooled_softmax = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, "softmax")]
    )
    with pytest.raises(ValueError, match="without activation"):
        evidence_map(pooled_softmax, np.zeros((1, 48, 48, 3)))


@pytest.mark.backends
def test_top_patches_ranks_the_whole_dataset():
    import tensorflow as tf

    from bagnet_keras.explain import top_patches

    model = _model("tiny9")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 48, 48, 3)).astype("float32")
    best = top_patches(model, x, class_index=2, k=4, batch_size=3)
    maps = evidence_map(model, x, class_index=2).maps
    expected = np.argsort(maps.max(axis=(1, 2)))[::-1][:4]
    np.testing.assert_array_equal(best.image_index, expected)
    np.testing.assert_allclose(best.scores, maps.max(axis=(1, 2))[expected], rtol=1e-6)
    # each score is the logit of the patch run alone, cut out at its box
    np.testing.assert_allclose(model.predict(best.patches, verbose=0)[:, 2], best.scores, atol=1e-4)
    for patch, n, (top, left, bottom, right) in zip(best.patches, best.image_index, best.boxes, strict=True):
        np.testing.assert_array_equal(patch, x[n, top:bottom, left:right])
    # a tf.data pipeline of (images, labels) batches gives the same ranking
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(7))).batch(2)
    from_dataset = top_patches(model, dataset, class_index=2, k=4)
    np.testing.assert_array_equal(from_dataset.image_index, best.image_index)
    unbatched = top_patches(model, tf.data.Dataset.from_tensor_slices(x), class_index=2, k=4)
    np.testing.assert_array_equal(unbatched.image_index, best.image_index)
    # without a per-image limit the best image contributes its neighbouring patches
    unlimited = top_patches(model, x, class_index=2, k=3, max_per_image=None)
    assert (unlimited.image_index == expected[0]).sum() >= 1
    np.testing.assert_allclose(unlimited.scores[0], best.scores[0], rtol=1e-5)
    assert np.all(np.diff(unlimited.scores) <= 0)
    with pytest.raises(ValueError, match="k=0"):
        top_patches(model, x, class_index=2, k=0)


def test_top_patches_reads_image_files_by_slices(tmp_path):
    # ImageFiles are read by slices only (files[a:b]): top_patches batches them as compare and the atlas do
    from PIL import Image

    from bagnet_keras.explain import top_patches
    from data_tools.loader import ImageFiles
    from data_tools.synthetic import scene

    for k, label in enumerate(("cats", "dogs")):
        (tmp_path / label).mkdir()
        for n in range(3):
            Image.fromarray(scene(10 * k + n, (64, 64))).save(tmp_path / label / f"{n}.png")
    files = ImageFiles(str(tmp_path), (64, 64))
    keras.utils.set_random_seed(0)
    model = BagNet(
        blocks=(1, 1, 1, 1),
        base_width=16,
        stem_width=16,
        classes=2,
        input_shape=(64, 64, 3),
        classifier_activation=None,
    )
    from_files = top_patches(model, files, class_index=0, k=4, batch_size=4)
    from_array = top_patches(model, files[0 : len(files)], class_index=0, k=4, batch_size=4)
    np.testing.assert_array_equal(from_files.image_index, from_array.image_index)
    np.testing.assert_array_equal(from_files.boxes, from_array.boxes)
    np.testing.assert_array_equal(from_files.scores, from_array.scores)
    np.testing.assert_array_equal(from_files.patches, from_array.patches)
