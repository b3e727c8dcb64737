"""epsilon-LRP and DeepLIFT rules for the layers today's models use (issue 26): affine preprocessing, gates,
layer normalisation, smooth activations; their properties on a small net of each kind."""

import keras
import numpy as np
import pytest
from keras.src.applications.convnext import LayerScale, StochasticDepth
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

from bagnet_keras.core.graph import run_graph
from bagnet_keras.explain import attribution
from bagnet_keras.explain.attribution import baseline_images
from bagnet_keras.explain.rules import check_modified_layers, rule_operation

# Each rule's gradient on new models, computed once: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager

SIZE = 12


def _x(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, SIZE, SIZE, 3)).astype("float32")


def _squeeze_excite(x, name, activation="sigmoid"):
    """A squeeze-and-excitation gate as EfficientNet and MobileNetV3 build it."""
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = keras.layers.Conv2D(2, 1, activation="relu")(gate)
    gate = keras.layers.Conv2D(x.shape[-1], 1, activation=activation)(gate)
    return keras.layers.Multiply(name=name)([x, gate])


def _efficientnet_like(bias=True):
    """Rescaling, Normalization, swish and hard_silu, a squeeze-and-excitation gate, a scaled residual."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 2.0, offset=0.1 if bias else 0.0)(inputs)
    if bias:
        norm = keras.layers.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 0.5, 2.0])
        x = norm(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="swish", use_bias=bias)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=bias)(x)
    y = keras.layers.Activation("hard_silu")(y)
    y = _squeeze_excite(y, "se")
    x = CustomScaleLayer(0.3)([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", use_bias=bias)(x))


def _convnext_like(center=True):
    """A pointwise block after LayerNormalization, GELU, layer scale and stochastic depth: ConvNeXt's block."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 4, strides=2, use_bias=center)(inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6, center=center)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=center)(x)
    y = keras.layers.LayerNormalization(epsilon=1e-6, center=center)(y)
    y = keras.layers.Dense(16, activation="gelu", use_bias=center)(y)
    y = keras.layers.Dense(8, use_bias=center)(y)
    y = StochasticDepth(0.1)(LayerScale(0.5, 8)(y))
    x = keras.layers.Add()([x, y])
    x = keras.layers.LayerNormalization(center=center)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(3, use_bias=center)(x))


def _randomise(model, seed):
    """Biases, scales and shifts away from their initial zeros and ones, so that the gates and norms do something."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, (keras.layers.LayerNormalization, LayerScale)):
            layer.set_weights([w + rng.normal(scale=0.3, size=w.shape).astype("float32") for w in weights])
        elif getattr(layer, "use_bias", False):
            layer.set_weights([*weights[:-1], rng.normal(scale=0.3, size=weights[-1].shape).astype("float32")])
    return model


def _logits(model, images, classes):
    """The logits of ``classes``, the softmax left out (DeepLIFT and LRP explain the logit)."""
    head = model.layers[-1]
    features = keras.Model(model.input, head.input).predict(images, verbose=0)
    logits = features @ head.kernel.numpy() + (head.bias.numpy() if head.use_bias else 0.0)
    return logits[np.arange(len(images)), classes]


@pytest.mark.backends
@pytest.mark.parametrize("build", [_efficientnet_like, _convnext_like])
@pytest.mark.parametrize("baseline", ["zeros", "blur"])
def test_deeplift_sums_exactly_to_the_difference_of_the_logits(build, baseline):
    model = _randomise(build(), 2)
    x, classes = _x(4, seed=3), np.array([0, 1, 2, 0])
    maps = attribution(model, x, classes, method="deeplift", baseline=baseline, batch_size=3)
    delta = _logits(model, x, classes) - _logits(model, baseline_images(x, baseline), classes)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), delta, rtol=1e-4, atol=1e-5)
    # the rules changed something: the product and the norm's split are not plain gradients
    plain = attribution(model, x, classes, method="gradient_x_input")
    assert not np.allclose(maps, plain, atol=1e-3)


@pytest.mark.backends
@pytest.mark.parametrize("build", [_efficientnet_like, _convnext_like])
def test_epsilon_lrp_conserves_relevance_on_bias_free_nets(build):
    """Bias-free, ReLU-free nets where the gate and the standard deviation are held: relevance sums to the logit.

    Swish, GELU and hard_silu are not homogeneous, so the nets here replace them by ReLU."""
    model = _randomise(build(False), 4)
    for layer in model.layers:
        if getattr(layer, "activation", None) in (keras.activations.silu, keras.activations.gelu):
            layer.activation = keras.activations.relu
        if isinstance(layer, keras.layers.Activation):
            layer.activation = keras.activations.relu
    x, classes = _x(3, seed=5), np.array([2, 0, 1])
    relevance = attribution(model, x, classes, method="epsilon_lrp", epsilon=1e-9)
    np.testing.assert_allclose(relevance.sum(axis=(1, 2)), _logits(model, x, classes), rtol=1e-4, atol=1e-5)


def test_without_gates_or_norms_the_rules_are_gradient_x_input():
    """Affine preprocessing, scaled residuals, layer scale and ReLU: LRP (epsilon -> 0) is gradient x input,
    and so is DeepLIFT from a zero baseline on a linear net."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 0.5])(keras.layers.Rescaling(0.5)(inputs))
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    y = LayerScale(0.7, 6)(keras.layers.Conv2D(6, 3, padding="same")(x))
    x = keras.layers.ReLU()(CustomScaleLayer(0.2)([x, y]))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    x_, classes = _x(3, seed=6), np.array([1, 2, 0])
    gxi = attribution(model, x_, classes, method="gradient_x_input")
    np.testing.assert_allclose(attribution(model, x_, classes, method="epsilon_lrp", epsilon=1e-12), gxi, atol=1e-5)
    inputs = keras.Input((SIZE, SIZE, 3))
    z = CustomScaleLayer(0.5)([keras.layers.Rescaling(2.0)(inputs), keras.layers.Conv2D(3, 1)(inputs)])
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(z)))
    np.testing.assert_allclose(
        attribution(flat, x_, 0, method="deeplift"), attribution(flat, x_, 0, method="gradient_x_input"), atol=1e-5
    )


def test_the_rules_compute_the_model_unchanged():
    for build in (_efficientnet_like, _convnext_like):
        model = _randomise(build(), 7)
        x = _x(2, seed=8)
        for rule in ("lrp", "deeplift"):
            batch = x if rule == "lrp" else np.concatenate([x, 0 * x])
            out = keras.ops.convert_to_numpy(run_graph(model, batch, rule_operation(rule, 1e-4)))
            np.testing.assert_allclose(out, model.predict(batch, verbose=0), rtol=1e-5, atol=1e-6)


def test_gates_and_refusals_name_the_layer():
    inputs = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    # a product of two full-size factors: no gate to hold, so LRP has no signal to pass relevance to
    gated = keras.layers.Multiply(name="gate")([a, keras.layers.Conv2D(4, 3, activation="sigmoid")(inputs)])
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(gated)))
    with pytest.raises(ValueError, match="'gate' have shapes .* no single factor is the signal"):
        check_modified_layers(model, "epsilon_lrp")
    check_modified_layers(model, "deeplift")  # splits any product
    unit = keras.layers.UnitNormalization(name="unit")
    unit = keras.Sequential([keras.Input((SIZE, SIZE, 3)), unit, keras.layers.Flatten()])
    with pytest.raises(ValueError, match="layer 'unit' \\(UnitNormalization\\)"):
        check_modified_layers(unit, "deeplift")
    inputs = keras.Input((SIZE, SIZE, 3))
    op = keras.Model(inputs, keras.layers.Flatten()(keras.ops.sigmoid(inputs)))
    with pytest.raises(ValueError, match="the operation Sigmoid"):
        check_modified_layers(op, "epsilon_lrp")
    scaled = keras.Model(inputs, keras.layers.Flatten()(keras.layers.ReLU(6.0)(inputs + 3.0) * (1.0 / 6.0)))
    check_modified_layers(scaled, "epsilon_lrp")  # MobileNetV3's hard sigmoid: affine operations
