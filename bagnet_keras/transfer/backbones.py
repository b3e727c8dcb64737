"""Backbones by name: the BagNets and keras.applications models, each with its preprocessing and input size.

One record per backbone, read by `build_backbone` (the habit of timm's
pretrained configs): no per-model code paths. Every backbone is built on the
caller's input tensor, so the classifier around it is one flat functional
model whose layers keep their published names (``conv5_block3_out``,
``block5_conv3``), which is what fine-tuning and Grad-CAM refer to.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from bagnet_keras.core.layers import PixelAffine
from bagnet_keras.models import imagenet
from bagnet_keras.models.bagnet import BagNet9, BagNet17, BagNet33
from bagnet_keras.models.weights import fetch_file
from bagnet_keras.transfer.hub import PRESETS, hub_builder

PLACES365_URL = (
    "https://github.com/GKalliatakis/Keras-VGG16-places365/releases/download/v1.0/"
    "vgg16-places365_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
PLACES365_URL_ENV = "BAGNET_KERAS_PLACES365_URL"
_PLACES365_MEAN = np.array([104.006, 116.669, 122.679], dtype="float32")


def places365_preprocess(x):
    """The preprocessing the VGG16-Places365 weights were made for: subtract a mean, then RGB to BGR.

    It is the function published with these weights by their authors
    (landmark-recognition-challenge, ``extra/vgg16_places365.py``): the
    values 104.006, 116.669, 122.679 are subtracted from channels 0, 1, 2 of
    the RGB image, then the channels are reversed. (The Keras-VGG16-places365
    README feeds raw images instead; its issue #20 asks about this, unanswered.)

    Examples
    --------
    >>> [round(v, 3) for v in places365_preprocess(np.full((1, 1, 1, 3), 128.0)).ravel().tolist()]
    [5.321, 11.331, 23.994]
    """
    if keras.ops.is_tensor(x) and not isinstance(x, np.ndarray):
        return keras.ops.flip(keras.ops.cast(x, "float32") - _PLACES365_MEAN, axis=-1)
    return (np.asarray(x, dtype="float32") - _PLACES365_MEAN)[..., ::-1]


def VGG16Places365(
    include_top: bool = False,
    weights: str | os.PathLike | None = "places365",
    input_tensor=None,
    input_shape: tuple | None = None,
    name: str = "vgg16_places365",
) -> keras.Model:
    """VGG16's convolutional part with the Places365 (scene) weights of the Keras-VGG16-places365 project.

    The weights are licensed GPL-3.0 (see the README), unlike this package.
    ``weights="places365"`` downloads them once into the Keras cache (the
    URL can be changed with ``BAGNET_KERAS_PLACES365_URL``); a path loads a
    Keras 2 ``.h5`` or a Keras 3 ``.weights.h5`` file. Preprocess images with
    `places365_preprocess`.

    Examples
    --------
    >>> VGG16Places365(weights=None, input_shape=(64, 64, 3)).output_shape
    (None, 2, 2, 512)
    """
    if include_top:
        raise ValueError("Only the convolutional part of VGG16-Places365 is provided: pass include_top=False.")
    model = keras.applications.VGG16(
        include_top=False, weights=None, input_tensor=input_tensor, input_shape=input_shape, name=name
    )
    if weights == "places365":
        url = os.environ.get(PLACES365_URL_ENV) or PLACES365_URL
        weights = fetch_file(os.path.basename(url.split("?")[0]), url, what="the VGG16-Places365 weights")
    if weights is not None:
        if not os.path.isfile(weights):
            raise ValueError(f"`weights` must be 'places365', None or an existing file. Received: {weights!r}")
        model.load_weights(weights)
    return model


@dataclass(frozen=True)
class Backbone:
    """What a classifier needs to know about a backbone.

    Attributes
    ----------
    name : str
    builder : callable
        keras.applications-style constructor (``include_top``, ``weights``,
        ``input_tensor``, ...).
    preprocess : callable
        Maps RGB images in [0, 255] to what the pretrained weights expect.
    input_size : int or None
        Side of the square input the backbone needs; ``None``: any size (a
        BagNet is fully convolutional and its evidence is per patch).
    default_size : int
        Side used when no input shape is given for datasets.
    finetune_from : str
        First layer (or layer-name prefix) unfrozen by default when fine-tuning:
        the last stage.
    bagnet : bool
        Heads keep the bag-of-local-features structure, so evidence maps stay exact.
    pretrained : str
        What ``weights="pretrained"`` means for this backbone.
    """

    name: str
    builder: Callable[..., keras.Model]
    preprocess: Callable
    input_size: int | None
    default_size: int
    finetune_from: str
    bagnet: bool = False
    pretrained: str = "imagenet"


def _app(module: str, builder: str, size: int, finetune_from: str, name: str) -> Backbone:
    applications = keras.applications
    return Backbone(
        name=name,
        builder=getattr(applications, builder),
        preprocess=getattr(applications, module).preprocess_input,
        input_size=size,
        default_size=size,
        finetune_from=finetune_from,
    )


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _hub(name: str, side: int, mode: str, last_block: str, **config) -> Backbone:
    # keras-hub's google ViT weights take [-1, 1] ("tf"); DeiT's and DINOv2's, ImageNet mean and std ("torch").
    return Backbone(
        name=name,
        builder=hub_builder(PRESETS[name], **config),
        preprocess=functools.partial(keras.applications.imagenet_utils.preprocess_input, mode=mode),
        input_size=side,
        default_size=side,
        finetune_from=last_block,
        pretrained=PRESETS[name],
    )


# Fine-tuning unfreezes the last block by default: ViT's and DeiT's are numbered from 1, DINOv2's from 0.
_HUB_BACKBONES = (
    [
        _hub(name, int(name[-3:]), "tf", f"transformer_block_{24 if 'large' in name else 12}")
        for name in PRESETS
        if name.startswith("vit_")
    ]
    + [_hub(name, 224, "torch", "transformer_block_12") for name in PRESETS if name.startswith("deit_")]
    + [
        _hub(
            name,
            224,
            "torch",
            f"layers_{ {'small': 11, 'base': 11, 'large': 23, 'giant': 39}[name[7:]] }",
            image_shape=(224, 224, 3),  # the presets are made for 518 pixels
        )
        for name in PRESETS
        if name.startswith("dinov2_")
    ]
)

BACKBONES: dict[str, Backbone] = {
    "bagnet9": Backbone("bagnet9", BagNet9, imagenet.preprocess_input, None, 224, "conv5_block1", True),
    "bagnet17": Backbone("bagnet17", BagNet17, imagenet.preprocess_input, None, 224, "conv5_block1", True),
    "bagnet33": Backbone("bagnet33", BagNet33, imagenet.preprocess_input, None, 224, "conv5_block1", True),
    "vgg16": _app("vgg16", "VGG16", 224, "block5", "vgg16"),
    "vgg19": _app("vgg19", "VGG19", 224, "block5", "vgg19"),
    "resnet50": _app("resnet", "ResNet50", 224, "conv5_block1", "resnet50"),
    "resnet101": _app("resnet", "ResNet101", 224, "conv5_block1", "resnet101"),
    "resnet50v2": _app("resnet_v2", "ResNet50V2", 224, "conv5_block1", "resnet50v2"),
    "mobilenetv2": _app("mobilenet_v2", "MobileNetV2", 224, "block_16", "mobilenetv2"),
    "densenet121": _app("densenet", "DenseNet121", 224, "conv5_block1", "densenet121"),
    "efficientnetb0": _app("efficientnet", "EfficientNetB0", 224, "block7a", "efficientnetb0"),
    "inceptionv3": _app("inception_v3", "InceptionV3", 299, "mixed9", "inceptionv3"),
    "xception": _app("xception", "Xception", 299, "block14", "xception"),
    "vgg16places365": Backbone(
        "vgg16places365", VGG16Places365, places365_preprocess, 224, 224, "block5", pretrained="places365"
    ),
    **{_key(record.name): record for record in _HUB_BACKBONES},
}


def get_backbone(name: str | Backbone) -> Backbone:
    """The `Backbone` record of ``name`` (case and ``-``/``_`` insensitive).

    Examples
    --------
    >>> get_backbone("ResNet-50").finetune_from
    'conv5_block1'
    """
    if isinstance(name, Backbone):
        return name
    if not isinstance(name, str):
        raise ValueError(f"`backbone` must be a name such as 'bagnet33' or 'vgg16'. Received: {name!r}")
    key = _key(name)
    if key not in BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}; choose one of {sorted(b.name for b in BACKBONES.values())} or pass a "
            "keras.Model."
        )
    return BACKBONES[key]


def get_preprocessing(name: str | Backbone | None) -> Callable | None:
    """The preprocessing of backbone ``name``, or None for ``"none"``: models that take pixels in [0, 255].

    Such models preprocess in their first layer (``include_preprocessing=True`` in `build_classifier`).

    Examples
    --------
    >>> get_preprocessing("none") is None, get_preprocessing("vgg16").__name__
    (True, 'preprocess_input')
    """
    if name is None or (isinstance(name, str) and name.lower() == "none"):
        return None
    try:
        return get_backbone(name).preprocess
    except ValueError as error:
        raise ValueError(f"{error} Or 'none', for models that take the pixels (include_preprocessing=True).") from None


def build_backbone(
    name: str | Backbone,
    inputs: keras.KerasTensor,
    weights: str | os.PathLike | None = "pretrained",
    include_preprocessing: bool = False,
) -> keras.KerasTensor:
    """The backbone's feature map (N, H', W', C), built on ``inputs``, with its layers' published names.

    ``weights`` is ``"pretrained"`` (the backbone's own: ImageNet, or Places365
    for ``vgg16_places365``), ``None`` (random) or a weights file path.
    ``include_preprocessing=True`` puts the backbone's preprocessing first, as a
    `bagnet_keras.core.layers.PixelAffine` layer named ``"preprocessing"``:
    ``inputs`` are then RGB pixels in [0, 255].

    Examples
    --------
    >>> inputs = keras.Input((64, 64, 3))
    >>> build_backbone("vgg16", inputs, weights=None).shape
    (None, 2, 2, 512)
    """
    backbone = get_backbone(name)
    if weights == "pretrained":
        weights = backbone.pretrained
    if include_preprocessing:
        inputs = PixelAffine.from_function(backbone.preprocess, name="preprocessing")(inputs)
    model = backbone.builder(include_top=False, weights=weights, input_tensor=inputs)
    return model.output
