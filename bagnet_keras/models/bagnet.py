"""BagNet family builders (Keras 3 functional models, keras.applications style).

The network is the authors' ``bagnets/pytorchnet.py`` (Brendel & Bethge, ICLR
2019) layer for layer: a 1x1 + 3x3 stem, four stages of ResNet-50 bottlenecks
whose middle convolution is 3x3 only in the first ``kernel3[stage]`` blocks,
all padding valid, and shortcuts cropped at the bottom right to the main path.
The top averages the final features over all positions and applies the fully
connected ``logits`` layer, exactly like the authors; applying that layer at
every position instead gives the class evidence map (see `evidence_model`).

Layers are named by position as in keras.applications.ResNet50
(``conv4_block2_1_conv``, ``conv5_block3_out``) so weights, Grad-CAM layer
names and error messages stay readable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
from keras import layers

from bagnet_keras.core.geometry import Geometry, receptive_field
from bagnet_keras.core.graph import producing_layer
from bagnet_keras.core.inputs import output_index
from bagnet_keras.core.layers import StemConv
from bagnet_keras.core.validation import check_int, check_positive_int
from bagnet_keras.models.inference import BagNetModel
from bagnet_keras.models.weights import PRETRAINED, imagenet_weights_file, load_weights

#: Torch BatchNorm eps; Keras' default (1e-3) would shift every activation.
BN_EPSILON = 1e-5
EXPANSION = 4


def _all_ints(values, allow_none: bool = False) -> bool:
    """Whether every entry is an integer by `check_int`'s rule (NumPy integers count, bools do not)."""
    try:
        for v in values:
            check_int(v, "entry", allow_none=allow_none)
    except ValueError:
        return False
    return True


def _check_int_tuple(value, name: str, length: int, allowed=None, minimum=0) -> tuple:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != length
        or not _all_ints(value)
    ):
        raise ValueError(f"`{name}` must be a sequence of {length} integers. Received: {name}={value!r}")
    for v in value:
        if v < minimum or (allowed is not None and v not in allowed):
            what = f"one of {sorted(allowed)}" if allowed else f">= {minimum}"
            raise ValueError(f"Every entry of `{name}` must be {what}. Received: {name}={tuple(value)!r}")
    return tuple(int(v) for v in value)


def _min_input_size(kernel3: tuple, strides: tuple) -> int:
    """Smallest input side for which every valid convolution has an output."""
    size = 1
    # Walk backwards: the input side that gives `size` outputs at each conv.
    for stage in reversed(range(4)):
        k = 3 if kernel3[stage] > 0 else 1
        size = (size - 1) * strides[stage] + k
    return size + 2  # the stem's 3x3 convolution


def _validate_input_shape(input_shape, min_size: int):
    if input_shape is None:
        return (None, None, 3)
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise ValueError(f"`input_shape` must be a tuple (height, width, 3). Received: input_shape={input_shape!r}")
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"`input_shape` must have rank 3 (height, width, channels), channels last. Received: input_shape={shape!r}"
        )
    if not _all_ints(shape, allow_none=True):
        raise ValueError(f"`input_shape` entries must be integers or None. Received: input_shape={shape!r}")
    if shape[2] != 3:
        raise ValueError(
            f"BagNets take RGB images: `input_shape` must have 3 channels (last axis). Received: input_shape={shape!r}"
        )
    for dim in shape[:2]:
        if dim is not None and dim < min_size:
            raise ValueError(
                f"`input_shape` {shape!r} is smaller than this BagNet's minimum input "
                f"size {min_size}x{min_size} (its patch size). Use a larger image or "
                "input_shape=(None, None, 3)."
            )
    return shape


def _bottleneck(x, planes: int, kernel: int, stride: int, downsample: bool, bn_momentum: float, name: str):
    # Valid padding makes the main path smaller; like the authors, keep the
    # shortcut's top-left part. Cropping the block input by kernel - 1 before
    # the 1x1 shortcut conv gives exactly the main path's size for stride 1
    # or 2 and any input size, and skips computing what would be cut away.
    shortcut = x
    if kernel > 1:
        shortcut = layers.Cropping2D(((0, kernel - 1), (0, kernel - 1)), name=name + "_0_crop")(shortcut)
    if downsample:
        shortcut = layers.Conv2D(planes * EXPANSION, 1, strides=stride, use_bias=False, name=name + "_0_conv")(shortcut)
        shortcut = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=name + "_0_bn")(shortcut)

    x = layers.Conv2D(planes, 1, use_bias=False, name=name + "_1_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=name + "_1_bn")(x)
    x = layers.Activation("relu", name=name + "_1_relu")(x)
    x = layers.Conv2D(planes, kernel, strides=stride, use_bias=False, name=name + "_2_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=name + "_2_bn")(x)
    x = layers.Activation("relu", name=name + "_2_relu")(x)
    x = layers.Conv2D(planes * EXPANSION, 1, use_bias=False, name=name + "_3_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=name + "_3_bn")(x)

    x = layers.Add(name=name + "_add")([shortcut, x])
    return layers.Activation("relu", name=name + "_out")(x)


def BagNet(
    blocks: Sequence[int] = (3, 4, 6, 3),
    kernel3: Sequence[int] = (1, 1, 1, 1),
    strides: Sequence[int] = (2, 2, 2, 1),
    base_width: int = 64,
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str = "bagnet",
    stem_width: int | None = None,
) -> keras.Model:
    """Build a BagNet of any configuration.

    The published models are ``BagNet(kernel3=(1, 1, 1, 1))`` (BagNet-33),
    ``(1, 1, 1, 0)`` (BagNet-17) and ``(1, 1, 0, 0)`` (BagNet-9); smaller
    variants (fewer blocks, narrower) serve tests and CPU demos.

    Parameters
    ----------
    blocks : sequence of 4 ints
        Bottleneck blocks per stage (ResNet-50: ``(3, 4, 6, 3)``).
    kernel3 : sequence of 4 ints
        How many blocks of each stage use a 3x3 middle convolution; block
        ``i`` uses 3x3 if ``i < kernel3[stage]``, else 1x1.
    strides : sequence of 4 ints, each 1 or 2
        Stride of each stage's first block.
    base_width : int
        Width of the stem and of the first stage's bottleneck (64 in the
        paper); stage ``s`` has ``base_width * 2**s`` planes, expansion 4.
    include_top : bool
        Whether to include the average pooling and the ``logits`` layer.
    weights : None, "imagenet" or path
        ``None`` (random initialisation), or the path of a PyTorch checkpoint
        of the authors' model or of a Keras ``.weights.h5`` file. The
        ImageNet weights exist only for the published configurations: use
        `BagNet9`, `BagNet17` or `BagNet33`.
    input_tensor : optional Keras tensor
        Image input of the model.
    input_shape : optional tuple
        ``(height, width, 3)``; defaults to ``(None, None, 3)``, any image at
        least as large as the patch.
    pooling : None, "avg" or "max"
        Pooling of the features when ``include_top=False``.
    classes : int
        Number of classes of the top.
    classifier_activation : str or None
        Activation of the top; ``None`` returns the logits.
    name : str
        Model name.
    stem_width : int, optional
        Channels of the stem; default ``base_width``, as in the paper. Small
        models to be trained on a CPU should keep it at 16 or more: the first
        shortcut (1x1, stride 2) reads the stem, and TensorFlow's oneDNN
        kernels crash training such a convolution on fewer channels (see
        `bagnet_keras.transfer.onednn`).

    Returns
    -------
    keras.Model
        With ``include_top``: outputs (N, classes). Layer ``logits`` applied
        to the input of ``avg_pool`` gives the evidence map, see
        `evidence_model`.

    Examples
    --------
    >>> import numpy as np
    >>> from bagnet_keras import BagNet
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=8, classes=10)
    >>> model.predict(np.zeros((1, 64, 64, 3)), verbose=0).shape
    (1, 10)
    """
    blocks, kernel3, strides, base_width, stem_width = _check_arguments(
        blocks, kernel3, strides, base_width, stem_width, include_top, weights, pooling, classes
    )
    input_shape = _validate_input_shape(input_shape, _min_input_size(kernel3, strides))
    img_input = _image_input(input_tensor, input_shape)
    x = _stem(img_input, stem_width)
    x = _stages(x, blocks, kernel3, strides, base_width, stem_width)
    x = _top(x, include_top, pooling, classes, classifier_activation)
    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    model = BagNetModel(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def _check_arguments(blocks, kernel3, strides, base_width, stem_width, include_top, weights, pooling, classes):
    """`BagNet`'s arguments checked: ``(blocks, kernel3, strides, base_width, stem_width)`` as ints, or a ValueError."""
    blocks = _check_int_tuple(blocks, "blocks", 4, minimum=1)
    kernel3 = _check_int_tuple(kernel3, "kernel3", 4, minimum=0)
    strides = _check_int_tuple(strides, "strides", 4, allowed={1, 2})
    base_width = check_positive_int(base_width, "base_width")
    stem_width = base_width if stem_width is None else check_positive_int(stem_width, "stem_width")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top:
        check_positive_int(classes, "classes")
    if weights == "imagenet":
        raise ValueError(
            "ImageNet weights exist only for the published models: use BagNet9, "
            "BagNet17 or BagNet33(weights='imagenet'). Received: weights='imagenet' "
            f"with blocks={blocks}, kernel3={kernel3}, strides={strides}."
        )
    if weights is not None and not os.path.exists(weights):
        raise ValueError(
            "`weights` must be None, 'imagenet' or the path of an existing weights "
            f"file. Received: weights={weights!r} (no such file)."
        )
    return blocks, kernel3, strides, base_width, stem_width


def _image_input(input_tensor, input_shape: tuple):
    if input_tensor is None:
        return layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor


def _stem(x, width: int):
    x = StemConv(width, name="conv1_conv")(x)
    # The authors' stem BatchNorm has torch momentum 0.001 (Keras 0.999).
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.999, name="conv1_bn")(x)
    return layers.Activation("relu", name="conv1_relu")(x)


def _stages(x, blocks: tuple, kernel3: tuple, strides: tuple, base_width: int, in_channels: int):
    """The four stages of bottlenecks, named ``conv{stage + 2}_block{i + 1}`` as in keras.applications."""
    for stage in range(4):
        planes = base_width * 2**stage
        for i in range(blocks[stage]):
            stride = strides[stage] if i == 0 else 1
            x = _bottleneck(
                x,
                planes,
                kernel=3 if i < kernel3[stage] else 1,
                stride=stride,
                downsample=i == 0 and (stride != 1 or in_channels != planes * EXPANSION),
                bn_momentum=0.9,
                name=f"conv{stage + 2}_block{i + 1}",
            )
            in_channels = planes * EXPANSION
    return x


def _top(x, include_top: bool, pooling: str | None, classes: int, classifier_activation: str | None):
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, name="logits")(x)
        return layers.Activation(classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def load_imagenet_weights(model: keras.Model, variant: str, base_url: str | None = None) -> None:
    """Load the pretrained weights of ``variant`` (a key of `PRETRAINED`) into ``model``.

    Downloads and converts once (see `bagnet_keras.models.weights.imagenet_weights_file`).
    A model without top gets the backbone weights, copied layer by layer.

    Examples
    --------
    >>> from bagnet_keras import BagNet33
    >>> model = BagNet33(weights=None, include_top=False)
    >>> load_imagenet_weights(model, "bagnet33")  # doctest: +SKIP
    """
    config = PRETRAINED[variant]

    def build_full_model():
        return BagNet(config.blocks, config.kernel3, config.strides, config.base_width, classes=config.classes)

    path = imagenet_weights_file(variant, build_full_model, base_url=base_url)
    if any(layer.name == "logits" for layer in model.layers):
        model.load_weights(path)
        return
    full = build_full_model()
    full.load_weights(path)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())


def _published(variant: str):
    config = PRETRAINED[variant]

    def builder(
        include_top: bool = True,
        weights: str | os.PathLike | None = "imagenet",
        input_tensor=None,
        input_shape: tuple | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: str | None = "softmax",
        name: str | None = None,
    ) -> keras.Model:
        if weights == "imagenet" and include_top and classes != config.classes:
            raise ValueError(
                f"With weights='imagenet' and include_top=True, `classes` must be {config.classes}. "
                f"Received: classes={classes!r}"
            )
        model = BagNet(
            config.blocks,
            config.kernel3,
            config.strides,
            config.base_width,
            include_top=include_top,
            weights=None if weights == "imagenet" else weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name or variant,
        )
        if weights == "imagenet":
            load_imagenet_weights(model, variant)
        return model

    return builder


_BUILDER_DOC = """Build BagNet-{q} (patch {q}x{q}, stride 8), optionally with the ImageNet weights.

    Same signature as the keras.applications builders. The ImageNet weights
    are the authors' PyTorch checkpoint, downloaded once into the Keras cache
    and converted to a ``.weights.h5`` file beside it.

    Parameters
    ----------
    include_top : bool
        Whether to include the average pooling and the ``logits`` layer.
    weights : "imagenet", None or path
        ``"imagenet"``, ``None`` (random), or the path of an authors'
        checkpoint (``.pth``/``.pth.tar``) or a Keras ``.weights.h5`` file.
    input_tensor : optional Keras tensor
    input_shape : optional tuple
        ``(height, width, 3)``; default ``(None, None, 3)``. 224x224 is the
        training size.
    pooling : None, "avg" or "max"
        Pooling of the features when ``include_top=False``.
    classes : int
        1000 with the ImageNet top.
    classifier_activation : str or None
        ``"softmax"`` by default; ``None`` gives logits.
    name : str, optional

    Returns
    -------
    keras.Model

    Examples
    --------
    >>> from bagnet_keras import BagNet{q}, preprocess_input, decode_predictions
    >>> model = BagNet{q}(weights="imagenet")  # doctest: +SKIP
    >>> decode_predictions(model.predict(preprocess_input(images)))  # doctest: +SKIP
    """

BagNet9 = _published("bagnet9")
BagNet17 = _published("bagnet17")
BagNet33 = _published("bagnet33")
for _fn, _q in ((BagNet9, 9), (BagNet17, 17), (BagNet33, 33)):
    _fn.__name__ = _fn.__qualname__ = f"BagNet{_q}"
    _fn.__doc__ = _BUILDER_DOC.format(q=_q)


def evidence_model(model: keras.Model, output: int | str | None = None) -> keras.Model:
    """The model that returns a BagNet's class evidence at every position.

    It shares the layers (and so the weights) of ``model``: the ``logits``
    layer is applied to the input of ``avg_pool`` instead of to its output.
    Its output has shape (N, H', W', classes); its spatial mean is the logit
    of ``model``.

    Parameters
    ----------
    model : keras.Model
        A BagNet built with ``include_top=True``, or a classifier built on a
        BagNet by `bagnet_keras.transfer.heads.build_classifier`.
    output : int or str, optional
        Which head, for models with several (``"city"``).

    Returns
    -------
    keras.Model

    Examples
    --------
    >>> import numpy as np
    >>> from bagnet_keras import BagNet
    >>> from bagnet_keras.models import evidence_model
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=8, classes=10)
    >>> evidence_model(model).predict(np.zeros((1, 64, 64, 3)), verbose=0).shape
    (1, 4, 4, 10)
    """
    pool, logits = bagnet_top(model, output)
    return keras.Model(model.inputs, logits(pool.input), name=model.name + "_evidence")


def bagnet_top(model: keras.Model, output: int | str | None = None) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """The average pooling and the Dense layer behind an output of a BagNet, or a ValueError.

    Walking back from the output, activations and dropout may come between:
    ``avg_pool -> [dropout] -> logits -> [activation]`` is a BagNet's top,
    and each head of `bagnet_keras.transfer.heads.build_classifier` has that form.

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> [layer.name for layer in bagnet_top(BagNet(blocks=(1, 1, 1, 1), base_width=4))]
    ['avg_pool', 'logits']
    """
    layer = producing_layer(model.outputs[output_index(model, output)])
    found = []
    for wanted in (keras.layers.Dense, keras.layers.GlobalAveragePooling2D):
        while isinstance(layer, _PASS_THROUGH) and not isinstance(layer, wanted):
            layer = producing_layer(layer.input)
        found.append(layer if isinstance(layer, wanted) else None)
        if found[-1] is None:
            break
        layer = producing_layer(layer.input)
    if None in found or getattr(found[0], "activation", None) not in (None, keras.activations.linear):
        raise ValueError(
            f"Output {output if output is not None else 0!r} of model {model.name!r} is not a BagNet top, so it has no "
            "evidence map: it must be global average pooling then a Dense layer without activation (build BagNets "
            "with include_top=True)."
        )
    logits, pool = found
    return pool, logits


# Layers that can sit between the average pooling, the Dense layer and the output without changing
# which patch gives which evidence (dropout is the identity at inference).
_PASS_THROUGH = (keras.layers.Activation, keras.layers.Softmax, keras.layers.Dropout)


def bagnet_geometry(model: keras.Model) -> Geometry:
    """Patch size, stride and offset of a BagNet's output positions.

    Position (i, j) of the evidence map sees the input patch whose top-left
    corner is ``(offset + stride * i, offset + stride * j)``, of side
    ``patch_size``.

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> from bagnet_keras.models import bagnet_geometry
    >>> bagnet_geometry(BagNet(blocks=(1, 1, 1, 1), base_width=8))
    Geometry(patch_size=33, stride=8, offset=0)
    """
    names = {layer.name for layer in model.layers}
    if "avg_pool" in names:
        return receptive_field(model, model.get_layer("avg_pool").input)
    return receptive_field(model, model.outputs[0])
