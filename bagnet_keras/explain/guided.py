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

from bagnet_keras.core.backend import custom_derivative, value_and_gradients
from bagnet_keras.core.graph import check_target, find_layer, iter_layers, layer_tap, target_scores, traced
from bagnet_keras.core.inputs import (
    check_images,
    classes_or_top,
    in_batches,
    n_classes_of,
    output_index,
    top_class_scores,
)
from bagnet_keras.core.validation import check_int, check_positive_int
from bagnet_keras.explain.backward import is_plain_relu, replace_activations
from bagnet_keras.explain.cam import GradCAM

_MODES = ("guided", "deconvnet")


def _modified_relu(mode: str):
    ops = keras.ops

    def backward(saved, upstream):
        if mode == "guided":
            return upstream * ops.cast(upstream > 0, upstream.dtype) * ops.cast(saved[0] > 0, upstream.dtype)
        return ops.relu(upstream)

    return custom_derivative(lambda x: (ops.relu(x), (x,)), backward)


def guided_backprop(
    model: keras.Model,
    images,
    class_index=None,
    *,
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
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}. Received: mode={mode!r}")
    x = check_images(images)
    batch_size = check_positive_int(batch_size, "batch_size")
    score = check_target(target)
    if layer is None and unit is None:
        if position is not None:
            raise ValueError("`position` picks an activation of a unit: pass `layer` and `unit` with it.")
        grads = _class_gradients(model, x, class_index, mode, output_index(model, output), score, batch_size)
    else:
        # A unit's activation does not depend on the head: any output runs the graph through its layer.
        index = 0 if output is None else output_index(model, output)
        grads = _unit_gradients(model, x, mode, layer, unit, position, index, score, batch_size)
    if not any(is_plain_relu(found) for _, found in iter_layers(model)):
        warnings.warn(
            f"Model {model.name!r} has no plain ReLU: guided backpropagation is the ordinary gradient here.",
            stacklevel=2,
        )
    return grads


def _class_gradients(model, x, class_index, mode: str, index: int, score: str, batch_size: int) -> np.ndarray:
    """The modified gradient of each image's class score (``class_index``, or the top class where None)."""
    classes = classes_or_top(class_index, len(x), n_classes_of(model, index))

    def build(model_ref):
        operation_fn = _modified_relus(mode)

        def objective(batch, wanted, watch):
            _, class_score = top_class_scores(target_scores(model_ref(), batch, index, score, operation_fn), wanted)
            return class_score, ()

        gradients = value_and_gradients(objective, argnums=(0,))
        return lambda batch, wanted: gradients(batch, wanted)[2][0]

    step = traced(model, ("guided", mode, index, score), build)
    return in_batches(step, batch_size, x, classes)


def _unit_gradients(
    model, x, mode: str, layer: str, unit: int, position, index: int, score: str, batch_size: int
) -> np.ndarray:
    """The modified gradient of one activation of channel ``unit`` of ``layer`` per image.

    The activation is the one at ``position`` (rows, columns on the layer's grid), or the channel's
    strongest where None.
    """
    ops = keras.ops
    if layer is None or unit is None:
        raise ValueError(f"Pass both `layer` and `unit` to visualise a unit. Received: layer={layer!r}, unit={unit!r}")
    _, unit_layer = find_layer(model, layer)
    channel_index = np.asarray(check_int(unit, "unit", low=0, high=unit_layer.output.shape[-1] - 1), "int32")
    flat = _flat_positions(position, len(x), unit_layer.output.shape[1:3], layer)

    def build(model_ref):
        operation_fn = _modified_relus(mode)

        def objective(batch, flat_index, channel_index, watch):
            tap, taps = layer_tap([unit_layer], inner=operation_fn)
            target_scores(model_ref(), batch, index, score, tap)
            channel = ops.take(taps[unit_layer], channel_index, axis=-1)
            activations = ops.reshape(channel, (ops.shape(batch)[0], -1))
            picked = ops.take_along_axis(activations, ops.maximum(flat_index, 0)[:, None], axis=1)[:, 0]
            return ops.where(flat_index >= 0, picked, ops.max(activations, axis=1)), ()

        gradients = value_and_gradients(objective, argnums=(0,))
        return lambda batch, flat_index, channel_index: gradients(batch, flat_index, channel_index)[2][0]

    # The unit is an argument of the traced step, not part of it: one trace serves every unit of the layer.
    step = traced(model, ("guided-unit", mode, id(unit_layer), index, score), build)
    return in_batches(lambda batch, flat_index: step(batch, flat_index, channel_index), batch_size, x, flat)


def _flat_positions(position, n: int, grid: tuple, layer: str) -> np.ndarray:
    """Per image, the activation to project as an index into the layer's flattened grid; -1: the strongest."""
    if position is None:
        return np.full(n, -1, dtype="int32")
    position = np.asarray(position)
    height, width = grid
    if position.shape != (n, 2) or not (
        (position >= 0).all() and (position[:, 0] < height).all() and (position[:, 1] < width).all()
    ):
        raise ValueError(
            f"`position` must be (N, 2) = ({n}, 2) rows and columns on the {height}x{width} "
            f"grid of layer {layer!r}. Received shape {position.shape}."
        )
    return (position[:, 0] * width + position[:, 1]).astype("int32")


def _modified_relus(mode: str):
    """``operation_fn`` for `run_graph`: every plain ReLU with ``mode``'s backward rule."""
    relu = _modified_relu(mode)
    return replace_activations(is_plain_relu, lambda f: relu)


def guided_gradcam(
    model: keras.Model,
    images,
    class_index=None,
    *,
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
