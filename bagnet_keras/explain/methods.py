"""The table of explanation methods: one row per method, readable without TensorFlow or Keras.

Each row says what a method is called, what it shows, which family it
belongs to (how `bagnet_keras.explain.registry.explain` calls it), whether it
takes a layer (``"gradcam@conv3_relu"``), whether it needs a BagNet, and where
its implementation lives, as ``"module:attribute"``. `cam`, `attribution`,
the registry's `explain`, the command line's ``--methods`` choices and the
README's table of methods all read this one table, and importing it loads
no TensorFlow, so the command line lists the names in its help quickly.

Adding a method is its class or function plus one row here. The families:

- ``"bagnet"``: a function returning an `EvidenceMap` (its ``upsample()`` is the map);
- ``"cam"`` and ``"attribution"``: a class constructed with the model and options, called on the images
  (`bagnet_keras.explain.cam.BaseCAM`, `bagnet_keras.explain.attribution.BaseAttribution`);
- ``"guided"``: a function returning the modified gradient (N, H, W, C); the map is its largest
  absolute value over the channels;
- ``"occlusion"``: a function returning the maps (N, H, W);
- ``"attention"``: a function returning the maps (N, H, W) of a vision transformer's attention;
- ``"custom"``: a function with the registry's own call shape, as `bagnet_keras.explain.registry.register`
  adds them.

Examples
--------
>>> METHODS["gradcam"].family, METHODS["gradcam"].takes_layer
('cam', True)
>>> method_names()[:3]
['evidence', 'gradcam', 'gradcam++']
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["FAMILIES", "METHODS", "Method", "get_method", "method_names", "methods_of"]

#: How `bagnet_keras.explain.registry` calls a method's implementation (see the module's docstring).
FAMILIES = ("bagnet", "cam", "attribution", "guided", "occlusion", "attention", "custom")


@dataclass(frozen=True)
class Method:
    """One explanation method: its name, what it shows, its family and where its implementation lives.

    Examples
    --------
    >>> row = Method("saliency", "the gradient", "attribution", "bagnet_keras.explain.attribution:Saliency")
    >>> row.module, row.attribute
    ('bagnet_keras.explain.attribution', 'Saliency')
    """

    name: str
    description: str
    family: str
    implementation: str
    takes_layer: bool = False
    bagnet_only: bool = False
    transformer_only: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"`family` must be one of {FAMILIES}. Received: family={self.family!r}")
        if self.implementation.count(":") != 1:
            raise ValueError(
                f"`implementation` must be 'module:attribute'. Received: implementation={self.implementation!r}"
            )

    @property
    def module(self) -> str:
        return self.implementation.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.implementation.partition(":")[2]

    def load(self):
        """The class or function implementing the method (its module is imported now, with TensorFlow)."""
        found = importlib.import_module(self.module)
        for part in self.attribute.split("."):
            found = getattr(found, part)
        return found


#: Every method by name, in the order the command line, `compare` and the report list them.
METHODS: dict[str, Method] = {
    row.name: row
    for row in (
        Method(
            "evidence",
            "BagNet evidence: the logit each patch gives the class (exact)",
            "bagnet",
            "bagnet_keras.explain.evidence:evidence_map",
            bagnet_only=True,
        ),
        Method(
            "gradcam",
            "Grad-CAM: the layer's channels weighted by their mean gradient",
            "cam",
            "bagnet_keras.explain.cam:GradCAM",
            takes_layer=True,
        ),
        Method(
            "gradcam++",
            "Grad-CAM++: positive gradients weighted per position",
            "cam",
            "bagnet_keras.explain.cam:GradCAMPlusPlus",
            takes_layer=True,
        ),
        Method(
            "layercam",
            "Layer-CAM: each position weighted by its own positive gradient",
            "cam",
            "bagnet_keras.explain.cam:LayerCAM",
            takes_layer=True,
        ),
        Method(
            "scorecam",
            "Score-CAM: channels weighted by the score of the input they mask (slow)",
            "cam",
            "bagnet_keras.explain.cam:ScoreCAM",
            takes_layer=True,
        ),
        Method(
            "occlusion",
            "occlusion: drop of the score when a 16-pixel square is hidden",
            "occlusion",
            "bagnet_keras.explain.occlusion:occlusion",
        ),
        Method(
            "rollout",
            "attention rollout: the attention flowing into the class token, over the blocks (transformers)",
            "attention",
            "bagnet_keras.explain.rollout:attention_rollout",
            transformer_only=True,
        ),
        Method(
            "gradient_rollout",
            "Chefer et al.: attention weighted by its positive gradient, rolled out over the blocks (transformers)",
            "attention",
            "bagnet_keras.explain.rollout:gradient_rollout",
            transformer_only=True,
        ),
        Method(
            "guided_backprop",
            "guided backpropagation: largest absolute modified gradient over the channels",
            "guided",
            "bagnet_keras.explain.guided:guided_backprop",
        ),
        Method(
            "guided_gradcam",
            "guided Grad-CAM: guided backpropagation times Grad-CAM, largest over the channels",
            "guided",
            "bagnet_keras.explain.guided:guided_gradcam",
            takes_layer=True,
        ),
        Method(
            "saliency",
            "saliency: the largest absolute gradient over the channels",
            "attribution",
            "bagnet_keras.explain.attribution:Saliency",
        ),
        Method(
            "gradient_x_input",
            "gradient x input, summed over the channels (signed)",
            "attribution",
            "bagnet_keras.explain.attribution:GradientXInput",
        ),
        Method(
            "integrated_gradients",
            "integrated gradients from a zero input, 32 steps (signed)",
            "attribution",
            "bagnet_keras.explain.attribution:IntegratedGradients",
        ),
        Method(
            "smoothgrad",
            "SmoothGrad: the gradient averaged over 25 noisy copies (signed)",
            "attribution",
            "bagnet_keras.explain.attribution:SmoothGrad",
        ),
        Method(
            "epsilon_lrp",
            "epsilon-LRP: relevance propagated back to the pixels (signed)",
            "attribution",
            "bagnet_keras.explain.attribution:EpsilonLRP",
        ),
        Method(
            "deeplift",
            "DeepLIFT (Rescale) from a zero input (signed)",
            "attribution",
            "bagnet_keras.explain.attribution:DeepLIFT",
        ),
    )
}


def method_names() -> list[str]:
    """Every method's name, in the table's order.

    Examples
    --------
    >>> "saliency" in method_names()
    True
    """
    return list(METHODS)


def get_method(name: str, family: str | None = None) -> Method:
    """The row of ``name``, or a ValueError listing the names (of ``family``, when given).

    Examples
    --------
    >>> get_method("layercam").implementation
    'bagnet_keras.explain.cam:LayerCAM'
    >>> get_method("saliency", family="cam")
    Traceback (most recent call last):
    ...
    ValueError: `method` must be one of ['gradcam', 'gradcam++', 'layercam', 'scorecam']. Received: method='saliency'
    """
    if family is not None:
        names = [row.name for row in methods_of(family)]
        if name not in names:
            raise ValueError(f"`method` must be one of {names}. Received: method={name!r}")
    elif name not in METHODS:
        raise ValueError(f"Unknown explanation method {name!r}; choose from {', '.join(METHODS)}.")
    return METHODS[name]


def methods_of(family: str) -> list[Method]:
    """The rows of one family, in the table's order.

    Examples
    --------
    >>> [row.name for row in methods_of("guided")]
    ['guided_backprop', 'guided_gradcam']
    """
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {FAMILIES}. Received: family={family!r}")
    return [row for row in METHODS.values() if row.family == family]
