"""Validation of what explanation functions take: image batches, class indices, model outputs."""

from __future__ import annotations

import numbers

import keras
import numpy as np

from bagnet_keras.core.graph import output_names, score_function


def check_images(images, minimum: int = 1, channels: int | None = None) -> np.ndarray:
    """A float32 (N, H, W, C) array, or a ValueError that names what is wrong.

    Examples
    --------
    >>> check_images(np.zeros((2, 8, 8, 3))).dtype
    dtype('float32')
    """
    try:
        x = np.asarray(images, dtype="float32")
    except (TypeError, ValueError):
        raise ValueError(
            f"`images` must be a numeric array (N, height, width, channels). Received an object of type "
            f"{type(images).__name__}."
        ) from None
    if x.ndim != 4 or (channels is not None and x.shape[-1] != channels):
        wanted = channels if channels is not None else "channels"
        raise ValueError(
            f"`images` must have shape (N, height, width, {wanted}), preprocessed as the model expects. "
            f"Received shape {x.shape}; for one image use images[None]."
        )
    if len(x) == 0:
        raise ValueError("`images` is empty (N = 0).")
    if min(x.shape[1:3]) < minimum:
        raise ValueError(
            f"`images` of size {x.shape[1]}x{x.shape[2]} are smaller than the model's patch ({minimum}x{minimum})."
        )
    if not np.isfinite(x).all():
        raise ValueError("`images` contain NaN or infinite values.")
    return x


def check_classes(value, n_classes: int, name: str = "class_index") -> np.ndarray:
    """Class indices as an int array (K,), each in [0, n_classes).

    Examples
    --------
    >>> check_classes(3, 10)
    array([3])
    """
    values = np.atleast_1d(np.asarray(value, dtype=object))
    if values.ndim != 1 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise ValueError(f"`{name}` must be an int or a sequence of ints. Received: {name}={value!r}")
    values = values.astype(int)
    if ((values < 0) | (values >= n_classes)).any():
        raise ValueError(f"`{name}` must lie in [0, {n_classes}). Received: {name}={value!r}")
    return values


def classes_per_image(class_index, n_images: int, n_classes: int) -> np.ndarray | None:
    """One class per image from an int, a sequence of N ints, or None (returned as None: the top prediction).

    Examples
    --------
    >>> classes_per_image(2, 3, 10)
    array([2, 2, 2])
    """
    if class_index is None:
        return None
    values = check_classes(class_index, n_classes)
    if len(values) == 1:
        return np.repeat(values, n_images)
    if len(values) != n_images:
        raise ValueError(f"`class_index` must be one int or one per image ({n_images}). Received {len(values)} values.")
    return values


def classes_or_top(class_index, n_images: int, n_classes: int) -> np.ndarray:
    """Like `classes_per_image`, as int32 with -1 where the top prediction is wanted (see `top_class_scores`).

    Examples
    --------
    >>> classes_or_top(None, 2, 10)
    array([-1, -1], dtype=int32)
    """
    classes = classes_per_image(class_index, n_images, n_classes)
    return np.full(n_images, -1, dtype="int32") if classes is None else classes.astype("int32")


def classes_or_predicted(
    model: keras.Model, x: np.ndarray, class_index, index: int, batch_size: int = 32
) -> np.ndarray:
    """``class_index`` per image as int32; where it is None, the model's top class on output ``index``.

    Examples
    --------
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> classes_or_predicted(m, np.zeros((2, 2), "float32"), 1, 0).tolist()
    [1, 1]
    """
    classes = classes_per_image(class_index, len(x), n_classes_of(model, index))
    if classes is None:
        classes = in_batches(score_function(model, index, "logit"), batch_size, x).argmax(axis=1)
    return np.asarray(classes, dtype="int32")


def top_class_scores(scores, classes):
    """Inside a traced step: the classes with -1 replaced by each row's top class, and their scores."""
    ops = keras.ops
    classes = ops.cast(classes, "int32")
    classes = ops.where(classes < 0, ops.cast(ops.argmax(scores, axis=-1), "int32"), classes)
    return classes, ops.take_along_axis(scores, classes[:, None], axis=1)[:, 0]


def check_image_model(model: keras.Model, channels: int | None = 3, source: str | None = None) -> None:
    """Raise ValueError saying which requirement ``model`` fails as an image classifier to explain.

    The package explains models with one image input ``(batch, height, width,
    channels)`` whose channels match the images, and at least one output of class
    scores ``(batch, classes)``. ``source`` (a file name) is named in the error.

    Examples
    --------
    >>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)], name="gray")
    >>> check_image_model(m)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Model 'gray' takes images with 1 channel(s); the images have 3. ...
    """
    where = f"Model {model.name!r}" + (f" (from {source!r})" if source else "")
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise ValueError(
            f"{where} has {len(inputs)} inputs; the package explains models with one image input "
            "(batch, height, width, channels). Wrap the model so the image is its only input."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(
            f"{where} takes an input of shape {shape}, not an image (batch, height, width, channels). "
            "Give a convolutional or vision model."
        )
    if channels is not None and shape[-1] not in (None, channels):
        raise ValueError(
            f"{where} takes images with {shape[-1]} channel(s); the images have {channels}. "
            "Give a model trained on RGB images, or images with the model's channels."
        )
    outputs = [tuple(output.shape) for output in model.outputs]
    if not any(len(output) == 2 and output[-1] is not None for output in outputs):
        raise ValueError(
            f"{where} has outputs of shapes {outputs}; explanations need class scores (batch, classes). "
            "Give the classifier with its head, not a feature extractor."
        )


def output_index(model: keras.Model, output: int | str | None) -> int:
    """Position, in ``model.outputs``, of the output to explain.

    ``None`` is allowed for single-output models; otherwise pass the index or
    the name of the output layer (e.g. ``"city"`` for a city + region model).

    Examples
    --------
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="scores")])
    >>> output_index(m, "scores")
    0
    """
    names = output_names(model)
    if output is None:
        if len(names) != 1:
            raise ValueError(f"Model {model.name!r} has {len(names)} outputs {names}; pass output=<index or name>.")
        return 0
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f"Model {model.name!r} has no output named {output!r}; its outputs are {names}.")
        return names.index(output)
    if isinstance(output, bool) or not isinstance(output, numbers.Integral) or not 0 <= output < len(names):
        raise ValueError(f"`output` must be an index in [0, {len(names)}) or one of {names}. Received: {output!r}")
    return int(output)


def n_classes_of(model: keras.Model, index: int) -> int:
    """Number of classes (last axis) of output ``index``."""
    shape = model.outputs[index].shape
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"Output {index} of model {model.name!r} has shape {tuple(shape)}; explanations need class scores "
            "(batch, classes)."
        )
    return int(shape[-1])


def check_image_size(model: keras.Model, shape) -> None:
    """Raise ValueError when images of ``shape`` (N, H, W, C) do not fit ``model``'s fixed input size.

    Examples
    --------
    >>> m = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten()], name="small")
    >>> check_image_size(m, (8, 64, 64, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Images of shape (64, 64, 3) do not fit model 'small' which takes (32, 32, 3); resize them ...
    """
    expected = tuple(model.input_shape[1:])
    got = tuple(shape[1:])
    fits = len(got) == len(expected) and all(
        e is None or g is None or e == g for e, g in zip(expected, got, strict=True)
    )
    if not fits:
        raise ValueError(
            f"Images of shape {got} do not fit model {model.name!r} which takes {expected}; resize them "
            f"(for example image_dataset(..., image_size={expected[:2]}))."
        )


def in_batches(fn, batch_size: int, *arrays):
    """``fn`` applied to consecutive batches of ``arrays`` (sliced alike); its results concatenated as NumPy.

    ``fn`` may return an array or a structure (tuple, dict) of arrays; the
    structure is kept. This is the one batching loop of the explanations.

    Examples
    --------
    >>> in_batches(lambda a, b: a + b, 2, np.arange(5), np.ones(5, int))
    array([1, 2, 3, 4, 5])
    """
    outputs = [fn(*(a[i : i + batch_size] for a in arrays)) for i in range(0, len(arrays[0]), batch_size)]
    as_numpy = keras.ops.convert_to_numpy
    return keras.tree.map_structure(lambda *parts: np.concatenate([as_numpy(p) for p in parts]), *outputs)
