"""One registry of explanation methods behind one call shape.

Every method turns ``(model, images, class_index)`` into maps ``(N, H, W)`` at
the images' resolution for the given class per image, explaining one score:
the class logit by default (``target="logit"``, the pre-softmax score Grad-CAM's
paper uses) or the probability. `compare`, the command line's ``--methods``
and the report read this registry, so a method registered here is available
to all of them.

Adding a method is a function and a decorator::

    @register("mymethod", "what it shows, in a few words")
    def _mymethod(model, images, class_index, output, target, **options):
        return maps  # (N, H, W) float32
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The implementations are imported when a method runs: the command line lists the names in its help
# without loading TensorFlow.

#: The class scores a map can explain: `bagnet_keras.core.graph.TARGETS`, restated here so that listing them
#: loads no TensorFlow (tests/test_registry.py checks the two agree).
TARGETS = ("logit", "probability")


@dataclass(frozen=True)
class Method:
    """A registered explanation method: its name, what it shows, and the function computing its maps."""

    name: str
    description: str
    compute: Callable[..., np.ndarray]
    bagnet_only: bool = False


METHODS: dict[str, Method] = {}


def register(name: str, description: str, bagnet_only: bool = False) -> Callable:
    """Register ``fn(model, images, class_index, output, target, **options) -> (N, H, W)`` as ``name``."""

    def decorate(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"An explanation method named {name!r} is registered already.")
        METHODS[name] = Method(name, description, fn, bagnet_only)
        return fn

    return decorate


#: Methods that take a ``layer``: ``"gradcam@conv3_relu"`` names Grad-CAM at that layer.
LAYERED = ("gradcam", "gradcam++", "layercam", "scorecam", "guided_gradcam")


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
    if name not in LAYERED or not layer:
        raise ValueError(f"{spec!r}: only {', '.join(LAYERED)} take a layer after '@' (e.g. 'gradcam@conv3_relu').")
    return method, {"layer": layer}


def check_method(method: str) -> Method:
    """The registered method called ``method``, or a ValueError listing the names.

    Examples
    --------
    >>> check_method("gradcam").name
    'gradcam'
    """
    if method not in METHODS:
        raise ValueError(f"Unknown explanation method {method!r}; choose from {', '.join(METHODS)}.")
    return METHODS[method]


def explain(
    model,
    images,
    method: str,
    class_index=None,
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
        A name in `METHODS` (``python -c "from bagnet_keras.explain.registry import METHODS; print(list(METHODS))"``),
        or a CAM method at a layer: ``"gradcam@conv3_relu"`` (`parse_method`).
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
    from bagnet_keras.core.graph import check_target

    entry, chosen = parse_method(method)
    maps = entry.compute(model, images, class_index, output, check_target(target), **chosen, **options)
    return np.asarray(maps, dtype="float32")


def explainer(model, method: str, output: int | str | None = None, target: str = "logit", **options) -> Callable:
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
    from bagnet_keras.core.graph import check_target

    parse_method(method)
    check_target(target)

    def run(images, class_index=None) -> np.ndarray:
        return explain(model, images, method, class_index=class_index, output=output, target=target, **options)

    return run


@register("evidence", "BagNet evidence: the logit each patch gives the class (exact)", bagnet_only=True)
def _evidence(model, images, class_index, output, target, **options):
    from bagnet_keras.explain.evidence import evidence_map

    if target != "logit":
        raise ValueError(
            "BagNet evidence is the logit each patch gives the class; it exists for target='logit' "
            f"only (the softmax does not split into patches). Received: target={target!r}"
        )
    return evidence_map(model, images, class_index=class_index, output=output, **options).upsample()


def _register_cam(name: str, description: str) -> None:
    @register(name, description)
    def _cam(model, images, class_index, output, target, **options):
        from bagnet_keras.explain.cam import cam

        return cam(model, images, class_index=class_index, method=name, output=output, target=target, **options)


for _name, _description in (
    ("gradcam", "Grad-CAM: the layer's channels weighted by their mean gradient"),
    ("gradcam++", "Grad-CAM++: positive gradients weighted per position"),
    ("layercam", "Layer-CAM: each position weighted by its own positive gradient"),
    ("scorecam", "Score-CAM: channels weighted by the score of the input they mask (slow)"),
):
    _register_cam(_name, _description)


@register("occlusion", "occlusion: drop of the score when a 16-pixel square is hidden")
def _occlusion(model, images, class_index, output, target, **options):
    from bagnet_keras.explain.occlusion import occlusion

    return occlusion(model, images, class_index=class_index, output=output, target=target, **options)


@register("guided_backprop", "guided backpropagation: largest absolute modified gradient over the channels")
def _guided(model, images, class_index, output, target, **options):
    from bagnet_keras.explain.guided import guided_backprop

    grads = guided_backprop(model, images, class_index=class_index, output=output, target=target, **options)
    return np.abs(grads).max(axis=-1)


@register("guided_gradcam", "guided Grad-CAM: guided backpropagation times Grad-CAM, largest over the channels")
def _guided_gradcam(model, images, class_index, output, target, **options):
    from bagnet_keras.explain.guided import guided_gradcam

    maps = guided_gradcam(model, images, class_index=class_index, output=output, target=target, **options)
    return np.abs(maps).max(axis=-1)


def _register_attribution(name: str, description: str) -> None:
    @register(name, description)
    def _attribution(model, images, class_index, output, target, **options):
        from bagnet_keras.explain.attribution import attribution

        return attribution(model, images, class_index=class_index, method=name, output=output, target=target, **options)


for _name, _description in (
    ("saliency", "saliency: the largest absolute gradient over the channels"),
    ("gradient_x_input", "gradient x input, summed over the channels (signed)"),
    ("integrated_gradients", "integrated gradients from a zero input, 32 steps (signed)"),
    ("smoothgrad", "SmoothGrad: the gradient averaged over 25 noisy copies (signed)"),
    ("epsilon_lrp", "epsilon-LRP: relevance propagated back to the pixels (signed)"),
    ("deeplift", "DeepLIFT (Rescale) from a zero input (signed)"),
):
    _register_attribution(_name, _description)
