"""The layer rules of epsilon-LRP and DeepLIFT: which layers pass relevance as they are, and how the others do.

Both methods are the gradient of the class score with some derivatives
replaced (Ancona et al. 2018), computed by `bagnet_keras.core.graph.run_graph`
with the `operation` this module gives:

- **Linear (affine) layers** (`LINEAR_LAYERS`: convolutions, dense, batch
  normalisation, ``Normalization``, ``Rescaling``, pooling, sums, and
  keras.applications' residual scaled by a constant, layer scale and
  stochastic depth) keep their gradient: relevance passes through them as
  through any linear map.
- **Elementwise activations** (`ELEMENTWISE`): the derivative ``f'(z)`` is
  replaced by ``f(z) / (z + epsilon sign z)`` for LRP and by DeepLIFT's
  rescale rule ``(f(z) - f(z0)) / (z - z0)``, which covers any elementwise
  function (swish, GELU, hard_silu).
- **Products** (``Multiply``: the gates of squeeze-and-excitation). LRP holds
  the gate constant and lets the signal take the relevance (Arras et al.
  2017; Ali et al. 2022); the gates are the factors broadcast over the
  signal. DeepLIFT splits the difference of a product exactly,
  ``ab - a0 b0 = (a + a0)/2 (b - b0) + (b + b0)/2 (a - a0)``: each factor's
  multiplier is the other's mean over the image and the baseline, so the
  attributions still sum to f(x) - f(baseline); the gate's share flows back
  through the gate's own layers.
- **LayerNormalization.** LRP holds the standard deviation constant (Ali et
  al., ICML 2022, "XAI for Transformers"), so the layer is linear. DeepLIFT
  splits it exactly: the centring is linear, the inverse standard deviation
  is the rescale rule of ``rsqrt`` applied to the mean of the squared
  centred values (a product), and the output is their product.

- **Attention** (``MultiHeadAttention``, in keras-hub's ViT, DeiT and DINOv2). LRP holds the attention
  probabilities constant, so the values take the relevance (Ali et al. 2022). DeepLIFT splits both
  products exactly (the scores ``q k``, the output ``p v``) and the softmax, computed as
  ``exp(s - c) * (1 / sum exp(s - c))`` with one shift ``c`` for an image and its baseline: rescale
  rules and a product, each exact. keras-hub's transformer layers around them (`HUB_AFFINE`) are
  affine, and their sublayers are ruled one by one.

Any other layer is refused by name (`check_modified_layers`).
"""

from __future__ import annotations

import keras

from bagnet_keras.core.backend import custom_derivative, elementwise_derivative
from bagnet_keras.core.graph import (
    application_layer,
    gated_attention,
    hub_layer,
    iter_layers,
    iter_operations,
    linear_operation,
    own_attention,
    squashing_layer,
    sublayers,
    with_attention,
)
from bagnet_keras.core.layers import ClassToken, PixelAffine, StemConv
from bagnet_keras.explain.backward import ACTIVATION_LAYERS, activation_of, replace_activations

ops = keras.ops

#: Layers that are linear (affine) in their input at inference, for epsilon-LRP and DeepLIFT. Max pooling
#: passes the gradient of the largest input, as both methods' authors do (their sums are then approximate).
LINEAR_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Dense,
    keras.layers.BatchNormalization,
    keras.layers.Normalization,
    keras.layers.AveragePooling2D,
    keras.layers.MaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Average,
    keras.layers.Concatenate,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Rescaling,
    keras.layers.Identity,
    StemConv,
    ClassToken,
    PixelAffine,
)
#: keras.applications' own layers (not exported by Keras) that are linear at inference.
LINEAR_APPLICATION_LAYERS = ("CustomScaleLayer", "LayerScale", "StochasticDepth")
#: keras-hub's transformer layers whose own computation, around the layers they hold, is affine (reshapes,
#: learned tokens concatenated, position embeddings added, residual sums, layer scale, stochastic depth at
#: inference). Their sublayers are checked and ruled one by one. DINOv2's SwiGLU feed-forward (a product
#: inside its call) is not one of them.
HUB_AFFINE = (
    "vit.vit_layers.ViTPatchingAndEmbedding",
    "vit.vit_layers.ViTEncoder",
    "vit.vit_layers.ViTEncoderBlock",
    "vit.vit_layers.MLP",
    "deit.deit_layers.DeiTEmbeddings",
    "deit.deit_layers.DeiTEncoder",
    "deit.deit_layers.DeiTEncoderBlock",
    "deit.deit_layers.DeiTIntermediate",
    "deit.deit_layers.DeiTOutput",
    "dinov2.dinov2_layers.DINOV2PatchEmbedding",
    "dinov2.dinov2_layers.DINOV2Embedding",
    "dinov2.dinov2_layers.DINOV2Encoder",
    "dinov2.dinov2_layers.DINOV2Layer",
    "dinov2.dinov2_layers.DINOV2Attention",
    "dinov2.dinov2_layers.DINOV2LayerScale",
    "dinov2.dinov2_layers.DINOV2DropPath",
    "dinov2.dinov2_layers.DINOV2MLP",
)
#: Activations applied unit by unit, whose derivative the modified rules replace.
ELEMENTWISE = tuple(
    keras.activations.get(name)
    for name in (
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "silu",
        "sigmoid",
        "tanh",
        "softplus",
        "softsign",
        "hard_sigmoid",
        "hard_silu",
        "mish",
    )
)
RULES = ("lrp", "deeplift")


def _linear(layer) -> bool:
    return isinstance(layer, LINEAR_LAYERS) or any(application_layer(layer, name) for name in LINEAR_APPLICATION_LAYERS)


def _gates(shapes: list[tuple]) -> list[bool]:
    """Which factors of a product are gates: those broadcast over another factor (a 1 where it has more).

    Examples
    --------
    >>> _gates([(None, 7, 7, 16), (None, 1, 1, 16)]), _gates([(None, 4), (None, 4)])
    ([False, True], [False, False])
    """

    def broadcast(shape, other) -> bool:
        # right-aligned as broadcasting aligns them, the batch axis left out
        return any(d == 1 and e != 1 for d, e in zip(shape[:0:-1], other[:0:-1], strict=False))

    return [any(broadcast(shape, other) for j, other in enumerate(shapes) if j != i) for i, shape in enumerate(shapes)]


def check_modified_layers(model: keras.Model, method: str) -> None:
    """Raise ValueError naming the first layer that ``method`` (``"epsilon_lrp"`` or ``"deeplift"``) cannot pass.

    The softmax ending the explained output is allowed: left out for ``target="logit"``, passed with its
    own gradient for ``"probability"``; so are the layers ending the model's other outputs (not on the way).
    """
    ends = {id(squashing_layer(model, k)[0]) for k in range(len(model.outputs))}
    constants = set()  # the position embeddings of keras-hub's layers: looked up by index, not by the image
    for path, layer in iter_layers(model):
        if hub_layer(layer, HUB_AFFINE):
            constants |= {id(sub) for sub in sublayers(layer) if isinstance(sub, keras.layers.Embedding)}
            continue
        if isinstance(layer, keras.Model) or id(layer) in ends or id(layer) in constants:
            continue
        if isinstance(layer, keras.layers.MultiHeadAttention):
            if gated_attention(layer) or own_attention(layer):
                _refuse(method, path, f"{type(layer).__name__} with a gate or an attention of its own")
            continue
        if isinstance(layer, keras.layers.Multiply):
            _check_product(path, [tuple(t.shape) for t in layer.input], method)
            continue
        if isinstance(layer, keras.layers.Activation) or not isinstance(layer, ACTIVATION_LAYERS):
            if not (_linear(layer) or isinstance(layer, (keras.layers.Activation, keras.layers.LayerNormalization))):
                _refuse(method, path, type(layer).__name__)
            fn = activation_of(layer)
            if fn is not None and fn not in ELEMENTWISE:
                raise ValueError(
                    f"{method} needs elementwise activations; layer {path!r} applies "
                    f"{getattr(fn, '__name__', fn)!r}. Supported: {', '.join(f.__name__ for f in ELEMENTWISE)}."
                )
    for path, node in iter_operations(model):
        if not linear_operation(node):
            _refuse(method, path, f"the operation {type(node.operation).__name__}")


def _check_product(path: str, shapes: list[tuple], method: str) -> None:
    gates = _gates(shapes)
    if method == "epsilon_lrp" and len(gates) - sum(gates) != 1:
        raise ValueError(
            f"epsilon_lrp holds a product's gates constant and passes relevance to its one signal; the factors of "
            f"{path!r} have shapes {shapes}, so no single factor is the signal (the gates are the factors "
            "broadcast over it). Use 'deeplift', which splits any product exactly."
        )


def _refuse(method: str, path: str, what: str) -> None:
    supported = sorted({t.__name__ for t in LINEAR_LAYERS + ACTIVATION_LAYERS} | set(LINEAR_APPLICATION_LAYERS))
    raise ValueError(
        f"{method} runs through linear layers, elementwise activations, products, layer normalisation and "
        f"attention only; layer {path!r} ({what}) is none of these. Supported: {', '.join(supported)}, "
        "Activation, Multiply, LayerNormalization and MultiHeadAttention. Use 'gradient_x_input' or "
        "'integrated_gradients', which take any model."
    )


def _elementwise(layer) -> bool:
    return isinstance(layer, ACTIVATION_LAYERS) or activation_of(layer) in ELEMENTWISE


def ratio_rule(rule: str, epsilon: float = 0.0):
    """``modify(f)`` for `replace_activations`: f's value, with its derivative replaced by ``rule``'s ratio.

    ``"lrp"``: ``f(z) / (z + epsilon sign z)``. ``"deeplift"``: ``(f(z) - f(z0)) / (z - z0)``, where the
    batch holds the images, then their baselines (``z0``), and ``f'`` where the two agree.
    """

    def modify(fn):
        def forward(z):
            y = fn(z)
            if rule == "lrp":
                ratio = y / (z + epsilon * ops.where(z >= 0, 1.0, -1.0))
            else:
                n = ops.shape(z)[0] // 2
                dz, dy_ = z[:n] - z[n:], y[:n] - y[n:]
                slope = elementwise_derivative(fn, z)
                close = ops.abs(dz) < 1e-6
                ratio = ops.where(close, slope[:n], dy_ / ops.where(close, ops.ones_like(dz), dz))
                ratio = ops.concatenate([ratio, slope[n:]], axis=0)
            return y, (ops.cast(ratio, y.dtype),)

        return custom_derivative(forward, lambda saved, upstream: upstream * saved[0])

    return modify


def _paired_mean(a):
    """Each image's value averaged with its baseline's (the batch's second half); the baselines as they are."""
    n = ops.shape(a)[0] // 2
    return ops.concatenate([(a[:n] + a[n:]) / 2, a[n:]], axis=0)


def bilinear(f, a, b, rule: str):
    """``f(a, b)`` for a bilinear ``f``, whose gradient is the rule's: the gate ``b`` held constant (LRP), or the
    exact split ``f(a, b) - f(a0, b0) = f(a - a0, b_mean) + f(a_mean, b - b0)`` (DeepLIFT)."""
    if rule == "lrp":
        return f(a, ops.stop_gradient(b))
    a_mean, b_mean = ops.stop_gradient(_paired_mean(a)), ops.stop_gradient(_paired_mean(b))
    # The value is f(a, b) exactly (t - stop_gradient(t) is 0); the derivatives are taken at the other's mean.
    return ops.stop_gradient(f(a, b)) + f(a - ops.stop_gradient(a), b_mean) + f(a_mean, b - ops.stop_gradient(b))


def product(a, b, rule: str):
    """``a * b`` whose gradient is the rule's (`bilinear`)."""
    return bilinear(ops.multiply, a, b, rule)


def _softmax(scores, axes: tuple, rule: str):
    """The softmax over ``axes``: held constant (LRP, Ali et al. 2022), or for DeepLIFT composed of functions its
    rules split exactly, ``exp(s - c) * (1 / sum exp(s - c))``, with one shift ``c`` for an image and its baseline."""
    if rule == "lrp":
        return ops.stop_gradient(softmax_over(scores, axes))
    n = ops.shape(scores)[0] // 2
    largest = ops.max(scores, axis=axes, keepdims=True)
    shift = ops.maximum(largest[:n], largest[n:])
    shifted = scores - ops.stop_gradient(ops.concatenate([shift, shift], axis=0))
    # exp floored at e^-80: where an image's and its baseline's largest scores differ by more than ~88, the
    # smaller side's sum would underflow to 0 and 0 * inf give NaN. The split stays exact for the floored
    # softmax, which differs from the softmax only there (all of that side's scores 80 below the shift).
    exponentials = ratio_rule(rule)(lambda z: ops.exp(ops.maximum(z, -80.0)))(shifted)
    inverse = ratio_rule(rule)(ops.reciprocal)(ops.sum(exponentials, axis=axes, keepdims=True))
    return product(exponentials, inverse, rule)


def softmax_over(scores, axes: tuple):
    """The softmax over ``axes`` (MultiHeadAttention's may be several; ``ops.softmax`` over a tuple of axes
    reshapes, which fails on a traced batch axis of unknown size)."""
    exponentials = ops.exp(scores - ops.max(scores, axis=axes, keepdims=True))
    return exponentials / ops.sum(exponentials, axis=axes, keepdims=True)


def _attention(layer, rule: str):
    """``layer`` (a MultiHeadAttention) with ``rule``'s derivatives: the attention held constant for LRP, so the
    values take the relevance; DeepLIFT's exact split of both products and of the softmax."""

    def attention(query, key, value, scores_equation, combine_equation, axes):
        scores = bilinear(lambda k, q: ops.einsum(scores_equation, k, q), key, query, rule)
        probabilities = _softmax(scores, axes, rule)
        output = bilinear(lambda v, p: ops.einsum(combine_equation, p, v), value, probabilities, rule)
        return output, probabilities

    return with_attention(layer, attention)


def _multiply(layer, rule: str):
    """``layer`` (a Multiply) as the product of its inputs, with ``rule``'s derivatives (`product`)."""
    gates = _gates([tuple(t.shape) for t in layer.input])

    def call(inputs, **kwargs):
        factors = list(inputs)
        if rule == "lrp":  # the one signal first, then each gate, held constant
            factors = [inputs[gates.index(False)], *(t for t, gate in zip(inputs, gates, strict=True) if gate)]
        result = factors[0]
        for factor in factors[1:]:
            result = product(result, factor, rule)
        return result

    return call


def _layer_norm(layer, rule: str):
    """``layer`` (a LayerNormalization) computed with its inverse standard deviation passed by ``rule``."""
    axes = sorted(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]

    def call(x, **kwargs):
        dtype = x.dtype
        x = ops.cast(x, "float32")
        centred = x - ops.mean(x, axis=axes, keepdims=True)
        variance = ops.mean(product(centred, centred, rule), axis=axes, keepdims=True) + layer.epsilon
        # LRP: the product below holds the inverse constant; DeepLIFT: its rescale rule
        inverse = ratio_rule(rule)(ops.rsqrt)(variance) if rule == "deeplift" else ops.rsqrt(variance)
        y = product(x if layer.rms_scaling else centred, inverse, rule)
        shape = [1] * len(x.shape)
        for axis in axes:
            shape[axis] = x.shape[axis]
        if layer.gamma is not None:
            y = y * ops.reshape(ops.cast(layer.gamma, y.dtype), shape)
        if layer.beta is not None and not layer.rms_scaling:
            y = y + ops.reshape(ops.cast(layer.beta, y.dtype), shape)
        return ops.cast(y, dtype)

    return call


def rule_operation(rule: str, epsilon: float = 0.0):
    """``operation_fn`` for `run_graph` that computes a model with ``rule``'s derivatives (``"lrp"``, ``"deeplift"``).

    Examples
    --------
    >>> import numpy as np
    >>> from bagnet_keras.core.graph import run_graph
    >>> inputs = keras.Input((4, 4, 2))
    >>> gate = keras.layers.Dense(2, activation="sigmoid")(keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs))
    >>> model = keras.Model(inputs, keras.layers.LayerNormalization()(keras.layers.Multiply()([inputs, gate])))
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 2)).astype("float32")
    >>> bool(np.allclose(run_graph(model, x, rule_operation("lrp", 1e-4)), model(x), atol=1e-5))
    True
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}. Received: rule={rule!r}")
    activations = replace_activations(_elementwise, ratio_rule(rule, epsilon))

    def operation(layer):
        if isinstance(layer, keras.layers.MultiHeadAttention):
            return _attention(layer, rule)
        if isinstance(layer, keras.layers.Multiply):
            return _multiply(layer, rule)
        if isinstance(layer, keras.layers.LayerNormalization):
            return _layer_norm(layer, rule)
        return activations(layer)

    return operation
