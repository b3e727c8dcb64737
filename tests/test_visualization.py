"""Feature visualisation: the pieces against known answers, the optimisation against its claims."""

import keras
import numpy as np
import pytest

from bagnet_keras.explain.objectives import channel, class_logit, direction, diversity, linear_weights, unit
from bagnet_keras.explain.visualization import (
    affine_matrix,
    feature_visualization,
    random_transforms,
    warp,
)
from bagnet_keras.models.bagnet import BagNet


def test_warp_equals_keras_affine_transform_and_has_a_gradient():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 12, 10, 3)).astype("float32")
    m = np.stack([random_transforms(rng, (12, 10), jitter=0.2) for _ in range(3)])
    ours = keras.ops.convert_to_numpy(warp(x, m))
    peer = keras.ops.image.affine_transform(x, m, fill_mode="constant", fill_value=0.5)
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(peer), atol=1e-5)
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        total = tf.reduce_sum(warp(tensor, m))
    assert tape.gradient(total, tensor) is not None
    identity = affine_matrix((12, 10), 1.0, 0.0, (0, 0))[None].repeat(3, axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(warp(x, identity)), x, atol=1e-6)


def test_objectives_are_linear_weights_that_add_and_scale():
    shapes = {"c": (3, 3, 4)}
    a, _, _ = linear_weights(channel("c", 1), shapes, None)
    b, _, _ = linear_weights(unit("c", 2), shapes, None)
    both, logits, spread = linear_weights(
        2 * channel("c", 1) - unit("c", 2) + class_logit(1) - 5 * diversity("c"), shapes, 3
    )
    np.testing.assert_allclose(both["c"], 2 * a["c"] - b["c"])
    assert b["c"][1, 1, 2] == 1 and b["c"].sum() == 1  # a unit defaults to the grid's centre
    assert logits.tolist() == [0, 1, 0] and spread == {"c": -5.0}
    d, _, _ = linear_weights(direction("c", [0, 3, 0, 4]), shapes, None)
    np.testing.assert_allclose(d["c"].sum(axis=(0, 1)), [0, 0.6, 0, 0.8], rtol=1e-6)


@pytest.mark.parametrize(
    "objective, message",
    [
        (channel("c", 9), "has 4 channels"),
        (unit("c", 0, (20, 0)), "outside layer 'c'"),
        (direction("c", [1, 2]), "layer 'c' has 4 channels"),
        (class_logit(7), "the output has 2 classes"),
        (channel("nope", 0), "No layer named 'nope'"),
    ],
)
def test_a_bad_objective_is_refused_with_its_name(objective, message):
    with pytest.raises(ValueError, match=message):
        feature_visualization(_small_cnn(), objective, steps=1, progress=False)


def test_bad_arguments_are_refused():
    model = _small_cnn()
    with pytest.raises(ValueError, match="objectives"):
        feature_visualization(model, ["c"], steps=1, progress=False)
    with pytest.raises(ValueError, match="parametrization"):
        feature_visualization(model, channel("c", 0), parametrization="wavelet", progress=False)
    with pytest.raises(ValueError, match="steps"):
        feature_visualization(model, channel("c", 0), steps=0, progress=False)
    with pytest.raises(ValueError, match="`transforms` must be True, False or None.*'yes'"):
        feature_visualization(model, channel("c", 0), transforms="yes", progress=False)
    with pytest.raises(ValueError, match="patch=True needs a BagNet"):
        feature_visualization(model, channel("c", 0), patch=True, steps=1, progress=False)


def _small_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


def test_the_same_seed_gives_the_same_images_whatever_the_batch():
    model = _small_cnn()
    objectives = [channel("c", 0), channel("c", 1), class_logit(1)]
    first = feature_visualization(model, objectives, steps=6, seed=3, progress=False)
    again = feature_visualization(model, objectives, steps=6, seed=3, batch_size=1, progress=False)
    other = feature_visualization(model, objectives, steps=6, seed=4, progress=False)
    np.testing.assert_allclose(first.images, again.images, atol=1e-3)
    assert np.array_equal(
        first.images, feature_visualization(model, objectives, steps=6, seed=3, progress=False).images
    )
    assert not np.allclose(first.images, other.images)


def _template():
    """A 7 x 7 zero-mean cross: the one filter of a hand-built unit."""
    t = -np.ones((7, 7), "float32")
    t[3, :] = t[:, 3] = 1
    return t - t.mean()


@pytest.mark.parametrize("parametrization", ["fourier", "pixel"])
@pytest.mark.parametrize("transforms, bar", [(False, 0.9), (True, 0.6)])
def test_a_template_unit_is_visualised_as_its_template(parametrization, transforms, bar):
    """Without transformations the optimum is the template itself; jitter, scale and rotation blur it a little."""
    template = _template()
    inputs = keras.Input((24, 24, 3))
    conv = keras.layers.Conv2D(1, 7, use_bias=False, name="template")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.repeat(template[:, :, None, None], 3, axis=2)])
    found = feature_visualization(
        model,
        unit("template", 0),
        steps=64,
        parametrization=parametrization,
        transforms=transforms,
        preprocess=lambda x: x / 255.0,
        progress=False,
    )
    centre = found.images[0, 9:16, 9:16].mean(axis=-1)  # the centre unit's receptive field (row 9 of the 18x18 grid)
    correlation = np.corrcoef(centre.ravel(), template.ravel())[0, 1]
    print(f"\n{parametrization}, transforms {transforms}: correlation with the template {correlation:.3f}")
    assert correlation > bar


@pytest.mark.parametrize("fused", [True, False])
def test_a_unit_silent_on_the_start_image_is_optimised_before_its_relu(fused):
    """27 inputs in [0, 1] and a bias of -20: the unit is 0 on a grey image, where max(z, 0) has no gradient."""
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(1, 3, activation="relu" if fused else None, name="c")
    outputs = conv(inputs) if fused else keras.layers.ReLU(name="c_relu")(conv(inputs))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.ones((3, 3, 3, 1), "float32"), np.array([-20.0], "float32")])
    found = feature_visualization(
        model, unit("c" if fused else "c_relu", 0), steps=32, preprocess=lambda x: x / 255.0, progress=False
    )
    assert found.values[0] > 0


def test_the_visualisation_beats_every_image_of_random_data():
    model = _small_cnn()
    x = np.random.default_rng(0).uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    found = feature_visualization(model, [unit("c", u) for u in range(4)], steps=48, progress=False)
    layer = keras.Model(model.inputs[0], model.get_layer("c").output)
    data_best = np.asarray(layer(x)).max(axis=(0, 1, 2))
    reached = np.asarray(layer(found.images)).max(axis=(1, 2))[np.arange(4), np.arange(4)]
    np.testing.assert_allclose(
        found.values, np.asarray(layer(found.images))[np.arange(4), 8, 8, np.arange(4)], rtol=1e-5
    )
    print(f"\nvisualisation / strongest random image per unit: {np.round(reached / data_best, 2).tolist()}")
    assert (reached >= data_best).all()


def test_a_bagnet_unit_is_optimised_in_its_patch_alone_exactly():
    keras.utils.set_random_seed(0)
    model = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, classes=3, input_shape=(32, 32, 3))
    layer = "conv5_block1_out"
    found = feature_visualization(model, [unit(layer, 5), class_logit(2)], steps=16, progress=False)
    assert found.patch and found.images.shape == (2, 9, 9, 3)
    # Pasted anywhere into an image, the patch gives the unit (and the class evidence) the value optimised.
    canvas = np.full((1, 32, 32, 3), 90.0, "float32")
    canvas[0, 8:17, 16:25] = found.images[0]
    features = keras.Model(model.inputs[0], model.get_layer(layer).output)
    np.testing.assert_allclose(np.asarray(features(canvas))[0, 1, 2, 5], found.values[0], rtol=1e-4, atol=1e-5)
    from bagnet_keras.explain.evidence import evidence_map

    canvas[0, 8:17, 16:25] = found.images[1]
    evidence = evidence_map(model, canvas, class_index=2).maps
    np.testing.assert_allclose(evidence[0, 1, 2], found.values[1], rtol=1e-4, atol=1e-4)
    whole = feature_visualization(model, unit(layer, 5), steps=2, patch=False, progress=False)
    assert not whole.patch and whole.images.shape == (1, 32, 32, 3)


def test_transformations_are_full_for_images_and_a_one_pixel_shift_for_patches_by_default(monkeypatch):
    from bagnet_keras.explain import visualization

    keras.utils.set_random_seed(0)
    model = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, classes=3, input_shape=(32, 32, 3))
    objective = unit("conv5_block1_out", 5)

    def made(patch, transforms):
        return feature_visualization(model, objective, steps=4, patch=patch, transforms=transforms, progress=False)

    whole = {t: made(False, t).images for t in (None, True, False)}
    np.testing.assert_array_equal(whole[None], whole[True])
    assert not np.array_equal(whole[True], whole[False])
    patch = {t: made(True, t).images for t in (None, True, False)}
    assert not np.array_equal(patch[None], patch[True]) and not np.array_equal(patch[None], patch[False])
    shifts = []
    monkeypatch.setattr(
        visualization, "random_shift", lambda rng, size: shifts.append(size) or affine_matrix(size, 1.0, 0.0, (0, 0))
    )
    np.testing.assert_array_equal(made(True, None).images, patch[False])  # the shifts were all it added
    assert shifts == [(9, 9)] * 4


def test_diversity_makes_copies_of_one_objective_differ():
    model = _small_cnn()
    alike = feature_visualization(model, channel("c", 1), copies=2, steps=24, progress=False)
    diverse = feature_visualization(model, channel("c", 1) - 50 * diversity("c"), copies=2, steps=24, progress=False)
    assert alike.images.shape == diverse.images.shape == (2, 16, 16, 3)
    assert np.all(np.isfinite(diverse.values))
