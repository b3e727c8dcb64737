"""Guided backpropagation, deconvnet visualisation and guided Grad-CAM for any Keras model.

Both take the gradient of a class score (or of one unit of a layer) with
respect to the input, with the backward pass through every ReLU changed:
guided backpropagation (Springenberg et al. 2015) passes only positive
gradients where the forward input was positive; the deconvnet (Zeiler &
Fergus 2014) passes the positive gradient whatever the forward input was.
The ReLUs are found as ``ReLU`` layers, ``Activation("relu")`` layers and
layers built with ``activation="relu"``, inside nested sub-models too.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from bagnet_keras.core.graph import check_target, compiled, find_layer, iter_layers, target_scores
from bagnet_keras.core.inputs import (
    check_images,
    classes_or_top,
    in_batches,
    n_classes_of,
    output_index,
    top_class_scores,
)
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.backward import replace_activations
from bagnet_keras.explain.cam import GradCAM

_MODES = ("guided", "deconvnet")


def _is_plain_relu(layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return (layer.max_value is None) and not layer.negative_slope and not layer.threshold
    return getattr(layer, "activation", None) is keras.activations.relu


def _modified_relu(mode: str):
    import tensorflow as tf

    @tf.custom_gradient
    def relu(x):
        def grad(dy):
            if mode == "guided":
                return dy * tf.cast(dy > 0, dy.dtype) * tf.cast(x > 0, dy.dtype)
            return tf.nn.relu(dy)

        return tf.nn.relu(x), grad

    return relu


def guided_backprop(
    model: keras.Model,
    images,
    class_index=None,
    mode: str = "guided",
    layer: str | None = None,
    unit: int | None = None,
    output: int | str | None = None,
    batch_size: int = 32,
    target: str = "logit",
    position=None,
) -> np.ndarray:
    """Input-space visualisation of a class, or of one unit of a layer, with modified ReLU gradients.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential (nested models are entered).
    images : array (N, H, W, C)
        Preprocessed as the model expects.
    class_index : int, sequence of N ints, or None
        The class per image (None: top prediction). Ignored when ``layer``
        is given.
    mode : {"guided", "deconvnet"}
        Guided backpropagation or the deconvnet rule.
    layer, unit : optional
        Visualise channel ``unit`` of ``layer`` (its strongest position per
        image, as Zeiler & Fergus did) instead of a class.
    position : array (N, 2) of ints, optional
        With ``unit``: the ``(row, column)`` on the layer's output grid of the single activation to
        project, per image (`bagnet_keras.explain.atlas` projects each top activation so).
    output : int or str, optional
        Which output of a multi-output model.
    batch_size : int
    target : {"logit", "probability"}
        The class score differentiated (default: the logit, before the model's softmax).

    Returns
    -------
    ndarray (N, H, W, C)
        The modified gradient with respect to the input.

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> guided_backprop(model, np.ones((1, 8, 8, 3)), class_index=0).shape
    (1, 8, 8, 3)
    """
    import tensorflow as tf

    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}. Received: mode={mode!r}")
    x = check_images(images)
    batch_size = check_positive_int(batch_size, "batch_size")
    # A unit's activation does not depend on the head: any output runs the graph through its layer.
    index = 0 if layer is not None and output is None else output_index(model, output)
    score_target = check_target(target)
    target = None
    if layer is not None or unit is not None:
        if layer is None or unit is None:
            raise ValueError(
                f"Pass both `layer` and `unit` to visualise a unit. Received: layer={layer!r}, unit={unit!r}"
            )
        _, target = find_layer(model, layer)
        channels = target.output.shape[-1]
        if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < channels:
            raise ValueError(
                f"`unit` must be a channel index in [0, {channels}) of layer {layer!r}. Received: unit={unit!r}"
            )
        classes = np.zeros(len(x), dtype="int32")
    else:
        classes = classes_or_top(class_index, len(x), n_classes_of(model, index))
    flat = np.full(len(x), -1, dtype="int32")  # the activation to project, per image; -1: the strongest
    if position is not None:
        if target is None:
            raise ValueError("`position` picks an activation of a unit: pass `layer` and `unit` with it.")
        position = np.asarray(position)
        height, width = target.output.shape[1:3]
        if position.shape != (len(x), 2) or not (
            (position >= 0).all() and (position[:, 0] < height).all() and (position[:, 1] < width).all()
        ):
            raise ValueError(
                f"`position` must be (N, 2) = ({len(x)}, 2) rows and columns on the {height}x{width} "
                f"grid of layer {layer!r}. Received shape {position.shape}."
            )
        flat = (position[:, 0] * width + position[:, 1]).astype("int32")

    def build(model_ref):
        relu = _modified_relu(mode)
        operation_fn = replace_activations(_is_plain_relu, lambda f: relu)

        @tf.function(reduce_retracing=True)
        def step(batch, classes, flat, channel_index):
            taps = {}

            def fn(op):
                computed = operation_fn(op)
                if op is not target:
                    return computed

                def call(*args, **kwargs):
                    taps["unit"] = out = computed(*args, **kwargs)
                    return out

                return call

            with tf.GradientTape() as tape:
                tape.watch(batch)
                scores = target_scores(model_ref(), batch, index, score_target, fn)
                if target is None:
                    _, score = top_class_scores(scores, classes)
                else:
                    channel = tf.gather(taps["unit"], channel_index, axis=-1)
                    channel = tf.reshape(channel, (tf.shape(batch)[0], -1))
                    picked = tf.gather(channel, tf.maximum(flat, 0), axis=1, batch_dims=1)
                    score = tf.where(flat >= 0, picked, tf.reduce_max(channel, axis=1))
            return tape.gradient(score, batch)

        return step

    # The unit is an argument of the traced step, not part of it: one trace serves every unit of the layer.
    step = compiled(model, ("guided", mode, id(target), index, score_target), build)
    channel_index = np.asarray(unit if unit is not None else 0, dtype="int32")  # a tensor argument, not a constant
    grads = in_batches(lambda *arrays: step(*arrays, channel_index), batch_size, x, classes, flat)
    if not any(_is_plain_relu(layer) for _, layer in iter_layers(model)):
        warnings.warn(
            f"Model {model.name!r} has no plain ReLU: guided backpropagation is the ordinary gradient here.",
            stacklevel=2,
        )
    return grads


def guided_gradcam(
    model: keras.Model,
    images,
    class_index=None,
    layer: str | None = None,
    output: int | str | None = None,
    batch_size: int = 32,
    target: str = "logit",
) -> np.ndarray:
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map, (N, H, W, C).

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> guided_gradcam(model, np.ones((1, 8, 8, 3))).shape
    (1, 8, 8, 3)
    """
    explainer = GradCAM(model, layer=layer, output=output, batch_size=batch_size, target=target)
    maps = explainer(images, class_index)
    grads = guided_backprop(model, images, explainer.class_index_, output=output, batch_size=batch_size, target=target)
    return grads * maps[..., None]
