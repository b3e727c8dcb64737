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
from bagnet_keras.core.tokens import token_grid
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.rules import softmax_over

_NO_ATTENTION = (
    "Model {name!r} has no MultiHeadAttention layer; attention rollout explains vision transformers "
    "(keras-hub's ViT, DeiT, DINOv2). Use 'gradcam' for other models."
)


def attention_weights(model: keras.Model, images, batch_size: int = 32) -> list[np.ndarray]:
    """The attention probabilities (N, heads, T, T) of every ``MultiHeadAttention`` call of ``model``, in order.

    Examples
    --------
    >>> import keras, numpy as np
    >>> x = keras.Input((5, 4))
    >>> model = keras.Model(x, keras.layers.MultiHeadAttention(2, 4)(x, x))
    >>> [a.shape for a in attention_weights(model, np.ones((3, 5, 4), "float32"))]
    [(3, 2, 5, 5)]
    """
    x = np.asarray(images, dtype="float32")
    step = traced(model, ("attention",), _build_attention_step)
    return list(in_batches(lambda xb: tuple(step(xb)), check_positive_int(batch_size, "batch_size"), x))


def _build_attention_step(model_ref):
    def step(x):
        found = []

        def operation_fn(layer):
            return _recording(layer, found) if isinstance(layer, keras.layers.MultiHeadAttention) else layer

        run_graph(model_ref(), x, operation_fn)
        if not found:
            raise ValueError(_NO_ATTENTION.format(name=model_ref().name))
        return tuple(found)

    return step


def _recording(layer, found: list):
    def call(*args, return_attention_scores=False, **kwargs):
        out, scores = layer(*args, return_attention_scores=True, **kwargs)
        found.append(scores)
        return (out, scores) if return_attention_scores else out

    return call


def rollout(attentions, prefix: int) -> np.ndarray:
    """The rolled-out attention of the patch tokens (N, patches) from per-block attentions (N, heads, T, T).

    Examples
    --------
    >>> import numpy as np
    >>> identity = np.broadcast_to(np.eye(5), (1, 2, 5, 5))
    >>> rollout([identity, identity], prefix=0).tolist()  # no mixing: every patch flows only to itself
    [[0.2, 0.2, 0.2, 0.2, 0.2]]
    """
    flow = None
    for attention in attentions:
        mixed = 0.5 * np.asarray(attention, dtype="float64").mean(axis=1) + 0.5 * np.eye(attention.shape[-1])
        mixed /= mixed.sum(axis=-1, keepdims=True)
        flow = mixed if flow is None else mixed @ flow
    return _patch_row(flow, prefix)


def _patch_row(flow: np.ndarray, prefix: int) -> np.ndarray:
    """What flows into the class token from each patch (N, patches); without a class token, into any token."""
    rows = flow[:, 0] if prefix else flow.mean(axis=1)
    return rows[:, prefix:]


def _placed(model: keras.Model, rows_of, tokens: int, size: tuple, normalize: bool) -> np.ndarray:
    """``rows_of(prefix)`` (N, patches) laid on ``model``'s patch grid and placed on an input of ``size``."""
    grid = token_grid(model, tokens)
    rows = rows_of(grid.prefix).reshape(-1, grid.rows, grid.columns)
    maps = upsample(rows, size, grid.geometry)
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
    attentions = attention_weights(model, x, batch_size)
    return _placed(model, lambda prefix: rollout(attentions, prefix), attentions[0].shape[-1], x.shape[1:3], normalize)


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
    batch = check_positive_int(batch_size, "batch_size")
    weighted = in_batches(lambda xb, cb: tuple(step(xb, cb)), batch, x, wanted)
    tokens = weighted[0].shape[-1]
    flow = np.broadcast_to(np.eye(tokens), (len(x), tokens, tokens))
    for attention in weighted:
        flow = flow + np.asarray(attention, "float64").mean(axis=1) @ flow
    return _placed(model, lambda prefix: _patch_row(flow, prefix), tokens, x.shape[1:3], normalize)


def _build_gradient_step(model_ref, index: int, target: str):
    def objective(x, classes, watch):
        count = []

        def attention(query, key, value, scores_equation, combine_equation, axes):
            scores = keras.ops.einsum(scores_equation, key, query)
            probabilities = watch(f"attention_{len(count)}", softmax_over(scores, axes))
            count.append(probabilities)
            return keras.ops.einsum(combine_equation, probabilities, value), probabilities

        def operation_fn(layer):
            return with_attention(layer, attention) if isinstance(layer, keras.layers.MultiHeadAttention) else layer

        scores = target_scores(model_ref(), x, index, target, operation_fn)
        _, score = top_class_scores(scores, classes)
        if not count:
            raise ValueError(_NO_ATTENTION.format(name=model_ref().name))
        return score, tuple(count)

    gradients = value_and_gradients(objective)

    def step(x, classes):
        _, attentions, _, watched = gradients(x, classes)
        return tuple(
            keras.ops.maximum(watched[f"attention_{i}"] * attention, 0.0) for i, attention in enumerate(attentions)
        )

    return step
