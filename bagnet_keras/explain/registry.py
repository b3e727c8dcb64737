"""Every explanation method behind one call shape, read from the one table of methods.

Every method turns ``(model, images, class_index)`` into maps ``(N, H, W)`` at
the images' resolution for the given class per image, explaining one score:
the class logit by default (``target="logit"``, the pre-softmax score Grad-CAM's
paper uses) or the probability. The methods are the rows of
`bagnet_keras.explain.methods.METHODS`; `explain` calls a row's implementation
as its family says (`FAMILIES`). `compare`, the command line's ``--methods``
and the report read the same table, so a method added there is available to
all of them.

Adding a method is its class or function plus one row in
`bagnet_keras.explain.methods`. Code outside the package can add one at run
time with `register`::

    @register("mymethod", "what it shows, in a few words")
    def mymethod(model, images, class_index, output, target, **options):
        return maps  # (N, H, W) float32
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bagnet_keras.core.targets import TARGETS as TARGETS
from bagnet_keras.core.targets import check_target
from bagnet_keras.explain.methods import METHODS, Method, get_method

# The implementations are imported when a method runs (`Method.load`): the command line lists the names in
# its help without loading TensorFlow.

#: Functions added by `register`, by name (their rows are in `METHODS`, family "custom").
_REGISTERED: dict[str, Callable] = {}


def register(name: str, description: str, bagnet_only: bool = False, takes_layer: bool = False) -> Callable:
    """Register ``fn(model, images, class_index, output, target, **options) -> (N, H, W)`` as ``name``.

    The function gets a row of the ``"custom"`` family in `METHODS`, so `explain`, `compare` and the
    report take it.

    Examples
    --------
    >>> @register("ones_doctest", "ones everywhere")
    ... def ones(model, images, class_index, output, target, **options):
    ...     return np.ones(np.shape(images)[:3])
    >>> explain(None, np.zeros((1, 2, 2, 3)), "ones_doctest").tolist()
    [[[1.0, 1.0], [1.0, 1.0]]]
    >>> del METHODS["ones_doctest"]
    """

    def decorate(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"An explanation method named {name!r} is registered already.")
        implementation = f"{fn.__module__}:{fn.__qualname__}"
        METHODS[name] = Method(name, description, "custom", implementation, takes_layer, bagnet_only)
        _REGISTERED[name] = fn
        return fn

    return decorate


def __getattr__(name: str):
    # LAYERED (the methods taking a layer) was a list of its own; it is read from the one table now.
    if name == "LAYERED":
        return tuple(row.name for row in METHODS.values() if row.takes_layer)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_method(spec: str) -> tuple[Method, dict]:
    """The method a name stands for, and its options: ``"layercam@conv3_relu"`` is Layer-CAM at that layer.

    Examples
    --------
    >>> method, options = parse_method("gradcam@block3_conv3")
    >>> method.name, options
    ('gradcam', {'layer': 'block3_conv3'})
    """
    if not isinstance(spec, str):
        raise ValueError(f"A method is named by a string, e.g. 'gradcam'. Received: {spec!r}")
    name, at, layer = spec.partition("@")
    method = check_method(name)
    if not at:
        return method, {}
    if not method.takes_layer or not layer:
        layered = ", ".join(row.name for row in METHODS.values() if row.takes_layer)
        raise ValueError(f"{spec!r}: only {layered} take a layer after '@' (e.g. 'gradcam@conv3_relu').")
    return method, {"layer": layer}


def check_method(method: str) -> Method:
    """The row of the method called ``method``, or a ValueError listing the names.

    Examples
    --------
    >>> check_method("gradcam").name
    'gradcam'
    """
    return get_method(method)


def explain(
    model,
    images,
    method: str,
    class_index=None,
    *,
    output: int | str | None = None,
    target: str = "logit",
    **options,
) -> np.ndarray:
    """Maps (N, H, W) of a registered ``method`` for ``class_index`` per image, explaining ``target``.

    Parameters
    ----------
    model : keras.Model
    images : array (N, H, W, C)
        Preprocessed as the model expects.
    method : str
        A name of `bagnet_keras.explain.methods.METHODS` (``method_names()`` lists them), or a method
        that takes a layer, at a layer: ``"gradcam@conv3_relu"`` (`parse_method`).
    class_index : int, sequence of N ints, or None
        The class per image; None: the top prediction.
    output : int or str, optional
        Which output (head) of a multi-output model.
    target : {"logit", "probability"}
        The class score explained. BagNet evidence exists for the logit only.
    **options
        Passed to the method (e.g. ``layer=`` for the CAM family, ``patch_size=`` for occlusion).

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    >>> explain(model, np.ones((2, 16, 16, 3)), "gradcam", class_index=1).shape
    (2, 16, 16)
    """
    row, chosen = parse_method(method)
    run = FAMILIES[row.family]
    implementation = _REGISTERED[row.name] if row.family == "custom" else row.load()
    maps = run(implementation, model, images, class_index, output, check_target(target), **chosen, **options)
    return np.asarray(maps, dtype="float32")


def explainer(model, method: str, *, output: int | str | None = None, target: str = "logit", **options) -> Callable:
    """``f(images, class_index=None) -> maps (N, H, W)``: `explain` with the model, method and score fixed.

    The method and target are checked here, before any image is seen.

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    >>> gradcam = explainer(model, "gradcam")
    >>> gradcam(np.ones((2, 16, 16, 3)), class_index=[0, 1]).shape
    (2, 16, 16)
    """
    parse_method(method)
    check_target(target)

    def run(images, class_index=None) -> np.ndarray:
        return explain(model, images, method, class_index=class_index, output=output, target=target, **options)

    return run


# How each family's implementation is called: ``run(implementation, model, images, class_index, output,
# target, **options) -> maps``.


def _bagnet(evidence_map, model, images, class_index, output, target, **options):
    if target != "logit":
        raise ValueError(
            "BagNet evidence is the logit each patch gives the class; it exists for target='logit' "
            f"only (the softmax does not split into patches). Received: target={target!r}"
        )
    return evidence_map(model, images, class_index=class_index, output=output, **options).upsample()


def _explainer_class(explainer_class, model, images, class_index, output, target, **options):
    # A BaseCAM or BaseAttribution subclass: built with the model and the options, called on the images.
    return explainer_class(model, output=output, target=target, **options)(images, class_index)


def _guided(gradients, model, images, class_index, output, target, **options):
    maps = gradients(model, images, class_index=class_index, output=output, target=target, **options)
    return np.abs(maps).max(axis=-1)


def _maps(function, model, images, class_index, output, target, **options):
    return function(model, images, class_index=class_index, output=output, target=target, **options)


def _custom(function, model, images, class_index, output, target, **options):
    return function(model, images, class_index, output, target, **options)


#: How `explain` calls the implementation of each family of `bagnet_keras.explain.methods.FAMILIES`.
FAMILIES: dict[str, Callable] = {
    "bagnet": _bagnet,
    "cam": _explainer_class,
    "attribution": _explainer_class,
    "guided": _guided,
    "occlusion": _maps,
    "attention": _maps,
    "custom": _custom,
}
