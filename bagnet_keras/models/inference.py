"""A faster inference path for BagNets: BatchNorm folded into the convolutions, batches fed without tf.data.

`BagNetModel` is the functional model class the BagNet builders return.
Its ``predict`` on arrays runs `folded_forward`: every BatchNormalization
that follows a convolution is folded into that convolution's kernel and
bias, and the batches are fed to one compiled function directly. Two things
make Keras' own ``predict`` slow here. Inference BatchNorm is an extra pass
over BagNet's large feature maps, which oneDNN fuses away once it is a bias.
And Keras' tf.data-driven predict loop stalls at half speed on some 2-core
machines (bench/forward.py shows both). The folded weights are computed
from the variables inside the compiled function, so they follow any change
of the weights. Anything else (datasets, generators, callbacks, ``steps``)
goes through Keras' own ``predict``.
"""

from __future__ import annotations

import keras
import numpy as np

from bagnet_keras.core.backend import compile_function, each_image, spatial_mean
from bagnet_keras.core.backend import conv as convolution
from bagnet_keras.core.graph import (
    compiled,
    graph_walk_available,
    inbound_nodes,
    outbound_count,
    producing_layer,
    run_graph,
    score_function,
    target_scores,
)
from bagnet_keras.core.layers import StemConv


def foldable_pairs(model: keras.Model) -> dict:
    """``{convolution: batchnorm}`` for every BatchNorm whose input is a convolution used by it alone."""
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(inbound_nodes(layer)) != 1:
            continue
        conv = producing_layer(layer.input)
        plain_conv = isinstance(conv, keras.layers.Conv2D) and conv.groups == 1 and conv.data_format == "channels_last"
        if (plain_conv or isinstance(conv, StemConv)) and outbound_count(conv) == 1 and layer.axis in (-1, 3):
            if getattr(conv, "activation", None) in (None, keras.activations.linear):
                pairs[conv] = layer
    return pairs


def _folded(conv, bn):
    """The callable computing ``bn(conv(x))`` in inference mode as one convolution with a bias."""
    ops = keras.ops

    def call(x, **kwargs):
        kernel = conv.fused_kernel() if isinstance(conv, StemConv) else conv.kernel
        scale = ops.rsqrt(bn.moving_variance + bn.epsilon)
        if bn.gamma is not None:
            scale = scale * bn.gamma
        shift = -bn.moving_mean * scale
        if bn.beta is not None:
            shift = shift + bn.beta
        if getattr(conv, "use_bias", False):
            shift = shift + conv.bias * scale
        # Folded in float32, applied in the layer's compute dtype (float16 under a mixed precision policy).
        kernel, shift = ops.cast(kernel * scale, x.dtype), ops.cast(shift, x.dtype)
        y = convolution(x, kernel, strides=conv.strides, padding=conv.padding, dilation_rate=conv.dilation_rate)
        return y + shift

    return call


def folding(model: keras.Model):
    """``operation_fn`` for `run_graph` that computes every foldable conv + BatchNorm pair as one convolution.

    Global average pooling goes through `bagnet_keras.core.backend.spatial_mean`, faster on JAX's CPU.
    """
    replacements = {}
    for conv, bn in foldable_pairs(model).items():
        replacements[id(conv)] = _folded(conv, bn)
        replacements[id(bn)] = lambda x, **kwargs: x
    for layer in model.layers:
        if isinstance(layer, keras.layers.GlobalAveragePooling2D) and layer.data_format == "channels_last":
            replacements[id(layer)] = lambda x, keepdims=layer.keepdims, **kwargs: spatial_mean(x, keepdims)

    def operation(layer):
        return replacements.get(id(layer), layer)

    return operation


def folded_forward(model: keras.Model, jit_compile: bool = False):
    """A compiled function ``f(x)`` equal to ``model(x, training=False)`` with BatchNorm folded into the convolutions.

    ``jit_compile=True`` compiles it with XLA.

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=4, classes=3)
    >>> x = np.random.default_rng(0).normal(size=(2, 40, 40, 3)).astype("float32")
    >>> bool(np.allclose(folded_forward(model)(x), model(x), atol=1e-5))
    True
    """
    operation = folding(model)

    def forward(x):
        return each_image(lambda images: run_graph(model, images, operation), x)

    return compile_function(forward, model.variables, jit_compile=jit_compile)


def folded_score_function(model: keras.Model, index: int, target: str, jit_compile: bool = False):
    """`bagnet_keras.core.graph.score_function` with BatchNorm folded into the convolutions before it.

    The same scores up to float rounding, faster where convolutions feed
    BatchNorm (BagNets: 53 pairs in BagNet-33, about 10 % of its inference
    time on a CPU); models without such pairs get `score_function` itself.

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> from bagnet_keras.core.graph import score_function
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=4, classes=3, classifier_activation="softmax")
    >>> x = np.random.default_rng(0).normal(size=(2, 40, 40, 3)).astype("float32")
    >>> plain, folded = score_function(model, 0, "logit"), folded_score_function(model, 0, "logit")
    >>> bool(np.allclose(folded(x), plain(x), atol=1e-5))
    True
    """
    if not foldable_pairs(model) or not graph_walk_available(model):
        return score_function(model, index, target, jit_compile)

    def build(model_ref):
        operation = folding(model_ref())

        def scores(x):
            return each_image(lambda images: target_scores(model_ref(), images, index, target, operation), x)

        return compile_function(scores, model_ref().variables, jit_compile=jit_compile)

    return compiled(model, ("folded scores", index, target, bool(jit_compile)), build)


POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def with_dtype_policy(model: keras.Model, policy: str) -> keras.Model:
    """A copy of ``model`` (same weights, same class) whose layers compute in ``policy``, outputs in float32.

    Keras sets a model's precision when its layers are built (``keras.config.set_dtype_policy`` before
    building); this gives a built or loaded model the same. The layers that produce the model's outputs
    stay float32, as Keras' mixed precision guide advises, so scores and probabilities come out in float32.
    ``"mixed_float16"`` is for GPUs (their tensor cores); ``"mixed_bfloat16"`` for TPUs and CPUs with
    bfloat16 instructions. On BagNet-33, ``"mixed_float16"`` moves the evidence maps by 0.1 % of their
    largest value, ``"mixed_bfloat16"`` by 0.8 % (bench/forward.py prints both; tests/test_models.py bounds
    them by 1 % and 2 % on a small BagNet).

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=4, classes=3)
    >>> fast = with_dtype_policy(model, "mixed_float16")
    >>> fast.get_layer("conv1_conv").compute_dtype, fast.outputs[0].dtype
    ('float16', 'float32')
    """
    if policy not in POLICIES:
        raise ValueError(f"`dtype_policy` must be one of {POLICIES}. Received: dtype_policy={policy!r}")
    outputs = {id(tensor) for tensor in keras.tree.flatten(model.outputs)}
    last = {layer.name for layer in model.layers if any(id(t) in outputs for t in keras.tree.flatten(layer.output))}

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name in last else policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="bagnet_keras")
class BagNetModel(keras.Model):
    """The functional model of a BagNet: a keras.Model whose ``predict`` on arrays uses `folded_forward`.

    ``predict`` compiles with XLA where Keras' own would (``model.compile(jit_compile=True)``; by
    default on GPUs) and computes in the model's dtype policy (`with_dtype_policy` for mixed precision).

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> type(BagNet(blocks=(1, 1, 1, 1), base_width=4)).__name__
    'BagNetModel'
    """

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        plain = isinstance(x, np.ndarray) and x.ndim == 4 and len(x) > 0 and steps is None and not callbacks
        if not plain or not graph_walk_available(self):
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
        batch_size = batch_size or 32
        jit = self.jit_compile is True  # Keras' own switch: compile(jit_compile=True), "auto" = on GPUs
        forward = compiled(self, ("folded_forward", jit), lambda model_ref: folded_forward(model_ref(), jit))
        x = x.astype(self.inputs[0].dtype or "float32", copy=False)
        progress = keras.utils.Progbar(-(-len(x) // batch_size)) if verbose in ("auto", 1, True) else None
        outputs = []
        for i in range(0, len(x), batch_size):
            outputs.append(keras.tree.map_structure(keras.ops.convert_to_numpy, forward(x[i : i + batch_size])))
            if progress is not None:
                progress.add(1)
        return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *outputs)
