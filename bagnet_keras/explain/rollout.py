"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers") for vision transformers.

Each block's attention, averaged over its heads, is mixed half and half with the identity (the
residual connection), its rows renormalised, and the blocks' matrices multiplied from the first to
the last: entry (i, j) of the product is how much token j flows into token i. The map is the class
token's row over the patch tokens, laid on the patch grid (`bagnet_keras.core.tokens.TokenGrid`);
a model without a class token reads the mean of all rows.

It is class-agnostic: it shows where the model looks, not what decides a class. `gradient_rollout` is
the class-specific rule of Chefer, Gur & Wolf (ICCV 2021, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", their generalisation of the CVPR 2021
transformer attribution without its LRP pass): each block's attention weighted by its gradient for the
class, ``mean over heads of max(grad * A, 0)``, accumulated as ``R <- R + A_bar R`` from the identity.
"""

from __future__ import annotations

import keras
import numpy as np

from bagnet_keras.core.backend import value_and_gradients
from bagnet_keras.core.geometry import upsample
from bagnet_keras.core.graph import check_target, run_graph, target_scores, traced, with_attention
from bagnet_keras.core.inputs import (
    check_images,
    classes_or_top,
    in_batches,
    n_classes_of,
    output_index,
    top_class_scores,
)
from bagnet_keras.core.scaling import minmax_scale
from bagnet_keras.core.tokens import attends, token_grid
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.rules import softmax_over

_NO_ATTENTION = (
    "Model {name!r} has no MultiHeadAttention layer; attention rollout explains vision transformers "
    "(keras-hub's ViT, DeiT, DINOv2). Use 'gradcam' for other models."
)


def attention_weights(model: keras.Model, images, batch_size: int = 32) -> list[np.ndarray]:
    """The attention probabilities (N, heads, T, T) of every ``MultiHeadAttention`` call of ``model``, in order.

    All of them are returned, N x blocks x heads x T^2 numbers (60 MB an image for ViT-L/16); the
    rollouts reduce them batch by batch instead.

    Examples
    --------
    >>> import keras, numpy as np
    >>> x = keras.Input((5, 4))
    >>> model = keras.Model(x, keras.layers.MultiHeadAttention(2, 4)(x, x))
    >>> [a.shape for a in attention_weights(model, np.ones((3, 5, 4), "float32"))]
    [(3, 2, 5, 5)]
    """
    if not attends(model):
        raise ValueError(_NO_ATTENTION.format(name=model.name))
    x = np.asarray(images, dtype="float32")
    step = traced(model, ("attention",), _build_attention_step)
    return list(in_batches(lambda xb: tuple(step(xb)), check_positive_int(batch_size, "batch_size"), x))


def _build_attention_step(model_ref):
    def step(x):
        found = []
        run_graph(model_ref(), x, _attending(found, lambda probabilities: probabilities))
        return tuple(found)

    return step


def _attending(found: list, record):
    """``operation_fn`` computing each MultiHeadAttention with its probabilities passed through ``record``
    (which returns those to compute on, e.g. watched for their gradient) and appended to ``found``."""

    def attention(query, key, value, scores_equation, combine_equation, axes):
        probabilities = record(softmax_over(keras.ops.einsum(scores_equation, key, query), axes))
        found.append(probabilities)
        return keras.ops.einsum(combine_equation, probabilities, value), probabilities

    def operation_fn(layer):
        return with_attention(layer, attention) if isinstance(layer, keras.layers.MultiHeadAttention) else layer

    return operation_fn


def rollout(attentions, prefix: int) -> np.ndarray:
    """The rolled-out attention of the patch tokens (N, patches) from per-block attentions (N, heads, T, T).

    Examples
    --------
    >>> import numpy as np
    >>> identity = np.broadcast_to(np.eye(5), (1, 2, 5, 5))
    >>> rollout([identity, identity], prefix=0).tolist()  # no mixing: every patch flows only to itself
    [[0.2, 0.2, 0.2, 0.2, 0.2]]
    """
    return _patch_row(_rolled_out(attentions), prefix)


def _rolled_out(attentions) -> np.ndarray:
    """Abnar & Zuidema's token flow (N, T, T): heads averaged, half identity, rows renormalised, chained."""
    flow = None
    for attention in attentions:
        mixed = 0.5 * np.asarray(attention, dtype="float64").mean(axis=1) + 0.5 * np.eye(attention.shape[-1])
        mixed /= mixed.sum(axis=-1, keepdims=True)
        flow = mixed if flow is None else mixed @ flow
    return flow


def _gradient_flow(weighted) -> np.ndarray:
    """Chefer et al.'s token flow (N, T, T): R <- R + A_bar R from the identity, A_bar already head-averaged."""
    tokens = weighted[0].shape[-1]
    flow = np.broadcast_to(np.eye(tokens), (len(weighted[0]), tokens, tokens))
    for attention in weighted:
        flow = flow + np.asarray(attention, "float64") @ flow
    return flow


def _patch_row(flow: np.ndarray, prefix: int) -> np.ndarray:
    """What flows into the class token from each patch (N, patches); without a class token, into any token."""
    rows = flow[:, 0] if prefix else flow.mean(axis=1)
    return rows[:, prefix:]


def _maps(model: keras.Model, step, flow_of, x: np.ndarray, *per_image, batch_size, normalize: bool) -> np.ndarray:
    """Maps (N, H, W): ``step``'s per-block attentions of each batch, turned into a token flow by ``flow_of``,
    read at the class token over the patches, laid on the patch grid and placed on the input."""
    if not attends(model):  # refused here, not inside a trace, where TensorFlow wraps the error in its own
        raise ValueError(_NO_ATTENTION.format(name=model.name))
    grids = {}

    def batch_rows(*batch):
        attentions = [keras.ops.convert_to_numpy(a) for a in step(*batch)]
        if "grid" not in grids:  # the same for every batch: found from the first one's token count
            grids["grid"] = token_grid(model, attentions[0].shape[-1])
        return _patch_row(flow_of(attentions), grids["grid"].prefix)

    rows = in_batches(batch_rows, check_positive_int(batch_size, "batch_size"), x, *per_image)
    grid = grids["grid"]
    maps = upsample(rows.reshape(-1, grid.rows, grid.columns), x.shape[1:3], grid.geometry)
    return (minmax_scale(maps) if normalize else maps).astype("float32")


def attention_rollout(
    model: keras.Model,
    images,
    class_index=None,
    *,
    output: int | str | None = None,
    target: str = "logit",
    batch_size: int = 32,
    normalize: bool = True,
) -> np.ndarray:
    """Attention rollout maps (N, H, W) of a vision transformer, placed on the input by the patch grid.

    Parameters
    ----------
    model : keras.Model
        A vision transformer: keras-hub's ``ViTImageClassifier`` or a model holding its backbone, or any
        functional model whose attention is ``keras.layers.MultiHeadAttention`` over patch tokens.
    images : array (N, H, W, C)
        Preprocessed as the model expects.
    class_index, output, target
        Accepted for the registry's call shape and ignored: rollout does not depend on the class.
    batch_size : int
        Images per pass.
    normalize : bool
        Scale each map to [0, 1].

    Examples
    --------
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 3))
    >>> tokens = keras.layers.Reshape((4, 12))(keras.layers.Conv2D(12, 4, strides=4)(inputs))
    >>> attended = keras.layers.MultiHeadAttention(2, 6)(tokens, tokens)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(attended)))
    >>> attention_rollout(model, np.random.default_rng(0).random((1, 8, 8, 3))).shape
    (1, 8, 8)
    """
    del class_index, output, target
    x = check_images(images)
    step = traced(model, ("attention",), _build_attention_step)
    return _maps(model, step, _rolled_out, x, batch_size=batch_size, normalize=normalize)


def gradient_rollout(
    model: keras.Model,
    images,
    class_index=None,
    *,
    output: int | str | None = None,
    target: str = "logit",
    batch_size: int = 32,
    normalize: bool = True,
) -> np.ndarray:
    """Chefer et al.'s (2021) gradient-weighted attention rollout for ``class_index``: maps (N, H, W).

    Parameters are those of `attention_rollout`; ``class_index`` (None: the top class), ``output`` and
    ``target`` choose the score whose gradient weights the attention.

    Examples
    --------
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 3))
    >>> tokens = keras.layers.Reshape((4, 12))(keras.layers.Conv2D(12, 4, strides=4)(inputs))
    >>> attended = keras.layers.MultiHeadAttention(2, 6)(tokens, tokens)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(attended)))
    >>> gradient_rollout(model, np.random.default_rng(0).random((1, 8, 8, 3)), class_index=1).shape
    (1, 8, 8)
    """
    x = check_images(images)
    index = output_index(model, output)
    wanted = classes_or_top(class_index, len(x), n_classes_of(model, index))
    target = check_target(target)
    step = traced(model, ("gradient_rollout", index, target), lambda ref: _build_gradient_step(ref, index, target))
    return _maps(model, step, _gradient_flow, x, wanted, batch_size=batch_size, normalize=normalize)


def _build_gradient_step(model_ref, index: int, target: str):
    def objective(x, classes, watch):
        found = []
        operation_fn = _attending(found, lambda probabilities: watch(f"attention_{len(found)}", probabilities))
        scores = target_scores(model_ref(), x, index, target, operation_fn)
        _, score = top_class_scores(scores, classes)
        return score, tuple(found)

    gradients = value_and_gradients(objective)

    def step(x, classes):
        _, attentions, _, watched = gradients(x, classes)
        # heads averaged here: what leaves the step is (N, T, T) a block, not (N, heads, T, T)
        return tuple(
            keras.ops.mean(keras.ops.maximum(watched[f"attention_{i}"] * attention, 0.0), axis=1)
            for i, attention in enumerate(attentions)
        )

    return step
