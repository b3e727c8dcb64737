"""Gradient attributions (issue 12): saliency, gradient x input, integrated gradients, SmoothGrad, LRP, DeepLIFT."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bagnet_keras.explain import attribution
from bagnet_keras.explain.attribution import BaseAttribution, DeepLIFT, EpsilonLRP, baseline_images

# Each attribution on new models, computed once or twice: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager

SIZE = 16


def _nested_two_heads():
    """A backbone inside a model with two heads: what transfer learning builds."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(8, 3, activation="relu"),
        ],
        name="backbone",
    )
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    heads = {
        "a": keras.layers.Dense(3, activation="softmax", name="a")(pooled),
        "b": keras.layers.Dense(2, activation="softmax", name="b")(pooled),
    }
    model = keras.Model(inputs, heads)
    for layer in backbone.layers:  # BatchNorm statistics that are not the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([np.full(6, 1.5), np.full(6, 0.2), np.full(6, 0.1), np.full(6, 2.0)])
    return model


def _x(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")


def _logit_gradient(model, x, head, classes):
    """The gradient of the head's logit, by GradientTape on a model that ends at the logits."""
    pooled = model.get_layer("a").input
    logits = keras.Model(model.input, keras.layers.Dense(model.get_layer(head).units, name="copy")(pooled))
    logits.get_layer("copy").set_weights(model.get_layer(head).get_weights())
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.gather(logits(xt), classes, axis=1, batch_dims=1)
    return tape.gradient(score, xt).numpy()


def test_saliency_and_gradient_x_input_equal_the_tape_gradient():
    model, x, classes = _nested_two_heads(), _x(), np.array([1, 0, 1])
    grads = _logit_gradient(model, x, "b", classes)
    saliency = attribution(model, x, classes, method="saliency", output="b", batch_size=2)
    np.testing.assert_allclose(saliency, np.abs(grads).max(axis=-1), rtol=1e-5, atol=1e-7)
    gxi = attribution(model, x, classes, method="gradient_x_input", output="b")
    np.testing.assert_allclose(gxi, (grads * x).sum(axis=-1), rtol=1e-5, atol=1e-6)
    # the top class when none is given
    top = model.predict(x, verbose=0)["a"].argmax(axis=1)
    expected = np.abs(_logit_gradient(model, x, "a", top)).max(axis=-1)
    np.testing.assert_allclose(attribution(model, x, method="saliency", output="a"), expected, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained a few epochs to tell bright from dark centres."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(128, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 2, 128)
    x[:, 4:12, 4:12] += np.where(y == 1, 1.5, -1.5)[:, None, None, None]
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    return model, x[:4], y[:4]


@pytest.mark.parametrize("baseline", ["zeros", "mean", "blur"])
def test_integrated_gradients_completeness(trained, baseline):
    """At 64 steps the attributions sum to f(x) - f(baseline) within 1 %."""
    model, x, y = trained
    ig = attribution(model, x, y, method="integrated_gradients", steps=64, baseline=baseline)
    reference = baseline_images(x, baseline)
    delta = model.predict(x, verbose=0)[np.arange(4), y] - model.predict(reference, verbose=0)[np.arange(4), y]
    np.testing.assert_allclose(ig.sum(axis=(1, 2)), delta, rtol=1e-2)


def test_deeplift_sums_to_delta():
    """Rescale on linear layers and elementwise activations: the sum is f(x) - f(baseline), to float rounding."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    a = keras.layers.BatchNormalization()(a)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="tanh")(inputs)
    merged = keras.layers.Add()([a, b])
    merged = keras.layers.Concatenate()([merged, keras.layers.Activation("relu")(merged)])
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.AveragePooling2D(2)(merged))
    hidden = keras.layers.Dense(5, activation="elu")(pooled)
    head = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, head(hidden))
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    bn.set_weights([np.full(6, 1.3), np.full(6, -0.2), np.full(6, 0.3), np.full(6, 0.5)])
    x, classes = _x(4, seed=5), np.array([0, 1, 2, 0])
    features = keras.Model(inputs, hidden)

    def logits(images):  # the head without its softmax, in NumPy
        return features.predict(images, verbose=0) @ head.kernel.numpy() + head.bias.numpy()

    for baseline in ("zeros", "blur"):
        maps = attribution(model, x, classes, method="deeplift", baseline=baseline, batch_size=3)
        reference = baseline_images(x, baseline)
        delta = logits(x)[np.arange(4), classes] - logits(reference)[np.arange(4), classes]
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), delta, rtol=1e-4, atol=1e-5)
    # the modified gradient is not the gradient: DeepLIFT differs from gradient x (input - baseline)
    gxi = attribution(model, x, classes, method="gradient_x_input")
    assert not np.allclose(attribution(model, x, classes, method="deeplift"), gxi, atol=1e-3)


def _bias_free_relu_net():
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", use_bias=False),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, use_bias=False),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", use_bias=False),
            keras.layers.Dense(3, use_bias=False),
        ]
    )


def test_epsilon_lrp_conserves_relevance_and_equals_gradient_x_input_without_biases():
    model, x, classes = _bias_free_relu_net(), _x(4, seed=6), np.array([0, 1, 2, 1])
    relevance = attribution(model, x, classes, method="epsilon_lrp", epsilon=1e-12)
    # conservation: the relevance of the pixels adds up to the logit (a bias-free ReLU network is
    # positively homogeneous, so Euler's theorem gives the same sum for gradient x input)
    logits = model.predict(x, verbose=0)[np.arange(4), classes]
    np.testing.assert_allclose(relevance.sum(axis=(1, 2)), logits, rtol=1e-4, atol=1e-5)
    gxi = attribution(model, x, classes, method="gradient_x_input")
    np.testing.assert_allclose(relevance, gxi, rtol=1e-4, atol=1e-6)
    # a large epsilon absorbs relevance: the total shrinks
    damped = attribution(model, x, classes, method="epsilon_lrp", epsilon=10.0)
    assert (np.abs(damped.sum(axis=(1, 2))) < np.abs(logits)).all()


def test_smoothgrad_averages_noisy_gradients():
    model, x, classes = _bias_free_relu_net(), _x(2, seed=7), np.array([0, 2])
    no_noise = attribution(model, x, classes, method="smoothgrad", noise=0.0, samples=2)
    plain = BaseAttribution(model).gradients(x, classes).sum(axis=-1)  # SmoothGrad's default base
    np.testing.assert_allclose(no_noise, plain, rtol=1e-5, atol=1e-6)
    a = attribution(model, x, classes, method="smoothgrad", noise=0.2, samples=4, seed=3)
    b = attribution(model, x, classes, method="smoothgrad", noise=0.2, samples=4, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, no_noise)
    over_ig = attribution(
        model,
        x,
        classes,
        method="smoothgrad",
        base="integrated_gradients",
        noise=0.1,
        samples=2,
        base_options={"steps": 4},
    )
    assert over_ig.shape == (2, SIZE, SIZE)


def test_lrp_and_deeplift_refuse_layers_they_cannot_pass():
    inputs = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    gated = keras.layers.Multiply(name="gate")([a, keras.layers.Conv2D(4, 3, activation="sigmoid")(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(gated)))
    with pytest.raises(ValueError, match="'gate' have shapes"):  # two full-size factors: which is the signal?
        attribution(model, _x(1), 0, method="epsilon_lrp")
    with pytest.raises(ValueError, match="layer 'unit' \\(UnitNormalization\\)"):
        unit = keras.layers.UnitNormalization(name="unit")
        DeepLIFT(keras.Sequential([keras.Input((SIZE, SIZE, 3)), unit, keras.layers.Flatten(), keras.layers.Dense(2)]))
    soft = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(4, 3, activation="softmax", name="sm"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(ValueError, match="'sm' applies 'softmax'"):
        EpsilonLRP(soft)
    # any model goes through the plain gradient methods
    assert attribution(model, _x(1), 0, method="integrated_gradients", steps=2).shape == (1, SIZE, SIZE)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "lime"}, "method='lime'"),
        ({"method": "integrated_gradients", "steps": 0}, "steps=0"),
        ({"method": "smoothgrad", "noise": -0.1}, "noise=-0.1"),
        ({"method": "smoothgrad", "samples": 0}, "samples=0"),
        ({"method": "smoothgrad", "base": "gradcam"}, "base='gradcam'"),
        ({"method": "epsilon_lrp", "epsilon": 0}, "epsilon=0"),
        ({"method": "deeplift", "baseline": "noise"}, "baseline='noise'"),
        ({"method": "integrated_gradients", "baseline": np.ones((2, 2))}, "broadcastable"),
        ({"method": "saliency", "batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attribution(_bias_free_relu_net(), _x(1), 0, **kwargs)


def test_deeplift_batches_its_baselines_with_the_images():
    """Batches of several sizes give the same maps (the images and their baselines stay paired)."""
    model, x = _nested_two_heads(), _x(5, seed=8)
    one = DeepLIFT(model, output="a", batch_size=5)(x, [0, 1, 2, 0, 1])
    split = DeepLIFT(model, output="a", batch_size=2)(x, [0, 1, 2, 0, 1])
    np.testing.assert_allclose(one, split, rtol=1e-5, atol=1e-6)


def _tracing_counts(model):
    """How often each traced function cached for ``model`` was traced."""
    from bagnet_keras.core import graph

    functions = graph._COMPILED.get(model, {}).values()
    return [f.experimental_get_tracing_count() for f in functions if hasattr(f, "experimental_get_tracing_count")]


@pytest.mark.traced
def test_one_trace_per_model_and_signature():
    """Batches of every size and repeated calls reuse one trace: the demo's retracing warning (issue 28)."""
    model, x = _bias_free_relu_net(), _x(5)
    for _ in range(2):
        for method, options in [
            ("saliency", {}),
            ("integrated_gradients", {"steps": 3}),
            ("smoothgrad", {"samples": 2}),
            ("epsilon_lrp", {}),
        ]:
            attribution(model, x, [0, 1, 2, 0, 1], method=method, batch_size=2, **options)
    assert _tracing_counts(model) == [1, 1]  # the plain gradient and epsilon-LRP's
