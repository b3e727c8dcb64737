"""Classifiers on a backbone for a custom domain: transfer learning, fine-tuning, or training from scratch.

`build_classifier` puts one or more named softmax heads on a backbone given
by name (`bagnet_keras.transfer.backbones`) or as a Keras model. Every head is
``avg_pool -> [head_dropout] -> <head>_logits -> <head>`` (a softmax): the
average over positions followed by a linear layer, which for a BagNet is
the same as the linear layer at every position followed by the average. So a
fine-tuned BagNet is still a BagNet, and `bagnet_keras.evidence_map(model, x,
output="city")` gives the exact evidence of each head.

The model is one flat functional graph (the backbone's layers keep their
names), and the mode only sets which layers train:

- ``"transfer"``: pretrained backbone frozen, heads trained;
- ``"finetune"``: pretrained backbone frozen up to ``trainable_from``, the
  layers from there on trained too (BatchNorm layers stay frozen, and so in
  inference mode, as Keras recommends for fine-tuning);
- ``"scratch"``: random initialisation, everything trained.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Mapping

import keras

from bagnet_keras.core.backend import has_accelerator, require_tensorflow
from bagnet_keras.core.graph import output_names, sublayers
from bagnet_keras.core.layers import ClassToken
from bagnet_keras.core.tokens import holds_blocks
from bagnet_keras.core.validation import check_int
from bagnet_keras.models.bagnet import bagnet_top
from bagnet_keras.transfer.backbones import Backbone, build_backbone, get_backbone

MODES = ("transfer", "finetune", "scratch")
POOL, DROPOUT = "avg_pool", "head_dropout"


def _check_heads(heads) -> dict[str, int]:
    if isinstance(heads, numbers.Integral) and not isinstance(heads, bool):
        heads = {"predictions": heads}
    if not isinstance(heads, Mapping) or not heads:
        raise ValueError(f"`heads` must map output names to class counts, e.g. {{'city': 10}}. Received: {heads!r}")
    checked = {}
    for name, size in heads.items():
        if not isinstance(name, str) or not name.isidentifier() or name in (POOL, DROPOUT) or name.endswith("_logits"):
            raise ValueError(
                f"Head name {name!r} must be a Python identifier other than {POOL!r}, {DROPOUT!r} and '*_logits'."
            )
        try:
            checked[name] = check_int(size, name, low=2)
        except ValueError:
            raise ValueError(
                f"Head {name!r} needs at least 2 classes (an integer). Received: {name}={size!r}"
            ) from None
    return checked


def build_classifier(
    backbone: str | Backbone | keras.Model,
    heads: Mapping[str, int] | int,
    *,
    mode: str = "transfer",
    trainable_from: str | None = None,
    dropout: float = 0.0,
    weights: str | os.PathLike | None = "pretrained",
    input_shape: tuple | None = None,
    include_preprocessing: bool = False,
    dtype_policy: str | None = "auto",
    strategy=None,
    name: str | None = None,
) -> keras.Model:
    """A classifier with one softmax output per head on ``backbone``, trainable as ``mode`` says.

    Parameters
    ----------
    backbone : str, Backbone or keras.Model
        A name from `bagnet_keras.transfer.backbones.BACKBONES` ("bagnet33", "vgg16",
        "resnet50", "vit_base_patch16_224", ...), or a model whose output is a feature map
        (N, H, W, C), e.g. ``keras.applications.VGG16(include_top=False)``, or a transformer's
        tokens (N, T, D), e.g. a keras-hub ``ViTBackbone`` (its heads read the class token);
        its layers are shared, not copied.
    heads : mapping name -> number of classes, or int
        ``{"city": 10, "region": 2}``; an int is one head named ``"predictions"``.
    mode : {"transfer", "finetune", "scratch"}
    trainable_from : str, optional
        Fine-tuning: the first backbone layer to train, by name or name prefix
        (``"conv5_block1"``, ``"block5"``); default: the backbone's last stage.
    dropout : float
        Dropout rate before the heads' linear layers (identity at inference,
        so evidence maps stay exact).
    weights : "pretrained", None or path
        Backbone weights for transfer and fine-tuning: ``"pretrained"`` is the
        backbone's own (ImageNet; Places365 for ``vgg16_places365``). Ignored
        for a model given as backbone. Scratch mode always starts from random weights.
    input_shape : tuple, optional
        Default: ``(None, None, 3)`` for BagNets (any size), the pretrained
        size otherwise (224 or 299).
    include_preprocessing : bool
        The model takes RGB pixels in [0, 255] and preprocesses them in its first layer
        (``"preprocessing"``), as keras.applications' ConvNeXt does: then models on backbones with
        different preprocessings read the same images (`bagnet_keras.compare` needs that), and every
        map explains the pixels. Only for a backbone given by name.
    dtype_policy : str or None
        Keras dtype policy for the layers built here. ``"auto"``:
        ``"mixed_float16"`` when TensorFlow sees a GPU, else the global policy.
        The heads' softmax outputs stay float32.
    strategy : tf.distribute.Strategy, optional
        Build (and later train) under this strategy, e.g. ``MirroredStrategy()``;
        a backbone given as a model must have been built under it too.
    name : str, optional

    Returns
    -------
    keras.Model
        Not compiled; outputs named after the heads. `fit_classifier` compiles
        and trains it.

    Examples
    --------
    >>> model = build_classifier("bagnet33", {"city": 10, "region": 2}, mode="finetune")  # doctest: +SKIP
    >>> [layer.name for layer in model.layers[-3:]]  # doctest: +SKIP
    ['region_logits', 'city', 'region']
    """
    heads = _check_heads(heads)
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    require_tensorflow("strategy", strategy)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope, _policy(dtype_policy):
        if isinstance(backbone, keras.Model):
            if include_preprocessing:
                raise ValueError(
                    f"include_preprocessing=True needs a backbone given by name, whose preprocessing is known. "
                    f"Received the model {backbone.name!r}: put its preprocessing in the model, or in the data."
                )
            inputs, features = backbone.inputs[0], backbone.outputs[0]
            if len(features.shape) not in (3, 4):
                raise ValueError(
                    f"Backbone model {backbone.name!r} outputs shape {features.shape}; it must output a feature map "
                    "(N, H, W, C), built with include_top=False, or a transformer's tokens (N, T, D)."
                )
            if len(features.shape) == 3:
                # Nested whole: keras-hub's transformer layers reload only through their backbone's own config.
                inputs = keras.Input(backbone.inputs[0].shape[1:], name="image")
                features = backbone(inputs)
            default_from = None
        else:
            record = get_backbone(backbone)
            if input_shape is None:
                side = record.input_size
                input_shape = (side, side, 3)
            inputs = keras.Input(input_shape, name="image")
            features = build_backbone(record, inputs, None if mode == "scratch" else weights, include_preprocessing)
            default_from = record.finetune_from
        # A transformer's sequence is read at its class token, as keras-hub's ViTImageClassifier does.
        pool = ClassToken if len(features.shape) == 3 else keras.layers.GlobalAveragePooling2D
        x = pool(name=POOL)(features)
        if dropout:
            x = keras.layers.Dropout(dropout, name=DROPOUT)(x)
        outputs = {}
        for head, size in heads.items():
            logits = keras.layers.Dense(size, name=f"{head}_logits")(x)
            outputs[head] = keras.layers.Activation("softmax", dtype="float32", name=head)(logits)
        model = keras.Model(inputs, outputs, name=name or f"{getattr(backbone, 'name', backbone)}_{mode}")
    if mode == "scratch":
        _short_training_batchnorm(model)
    set_trainable(model, mode, trainable_from or default_from)
    return model


@contextlib.contextmanager
def _policy(name: str | None):
    if name == "auto":
        name = "mixed_float16" if has_accelerator() else None
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _short_training_batchnorm(model: keras.Model) -> None:
    # The BagNet stem's BatchNorm copies the authors' torch momentum 0.001 (Keras 0.999): right for
    # their 90-epoch ImageNet run, far too slow for its statistics to settle in a short training.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > 0.99:
            layer.momentum = 0.9


def head_layers(model: keras.Model) -> set[str]:
    """Names of the layers `build_classifier` put on top of the backbone (pooling, dropout, heads).

    Examples
    --------
    >>> model = build_classifier(keras.applications.VGG16(include_top=False, weights=None,
    ...                          input_shape=(32, 32, 3)), {"a": 2, "b": 3})
    >>> sorted(head_layers(model))
    ['a', 'a_logits', 'avg_pool', 'b', 'b_logits']
    """
    names = {POOL, DROPOUT}
    for index, output in enumerate(output_names(model)):
        try:
            pool, logits = bagnet_top(model, index)
        except ValueError:
            if not isinstance(_layer_named(model, POOL), ClassToken):
                raise
            # a transformer's head reads the class token, not an average
            pool, logits = _layer_named(model, POOL), _layer_named(model, f"{output}_logits")
        names |= {pool.name, logits.name, output}
    return {layer.name for layer in model.layers if layer.name in names}


def set_trainable(model: keras.Model, mode: str, trainable_from: str | None = None) -> None:
    """Set which layers of a `build_classifier` model train, for ``mode`` (see the module docstring).

    Examples
    --------
    >>> model = build_classifier(keras.applications.VGG16(include_top=False, weights=None,
    ...                          input_shape=(32, 32, 3)), 2)
    >>> set_trainable(model, "finetune", "block5")
    >>> [layer.name for layer in model.layers if layer.trainable and layer.weights]
    ['block5_conv1', 'block5_conv2', 'block5_conv3', 'predictions_logits']
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    heads = head_layers(model)
    for layer in model.layers:
        if layer.name not in heads:
            layer.trainable = True
    backbone = backbone_units(model)
    start = len(backbone)
    if mode == "scratch":
        start = 0
    elif mode == "finetune":
        if trainable_from is None:
            raise ValueError(
                "Fine-tuning needs `trainable_from`: the name (or name prefix) of the first layer to train."
            )
        matches = [i for i, layer in enumerate(backbone) if _named(layer.name, trainable_from)]
        if not matches:
            stages = sorted({layer.name.split("_")[0] for layer in backbone})
            raise ValueError(
                f"No backbone layer is named {trainable_from!r} or starts with {trainable_from + '_'!r}. "
                f"Name prefixes in this backbone: {stages}."
            )
        start = matches[0]
    for i, layer in enumerate(backbone):
        batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= start and (mode == "scratch" or not batchnorm)
    for layer in model.layers:
        if layer.name in heads:
            layer.trainable = True


def backbone_units(model: keras.Model) -> list:
    """The backbone's layers that train or freeze as one, in order: the layers of a flat backbone, the layers
    of a nested one, and a transformer's blocks one by one. `set_trainable` leaves their parents trainable (a
    nested layer trains only inside a trainable parent), so freezing is done unit by unit.

    Examples
    --------
    >>> model = build_classifier(keras.applications.VGG16(include_top=False, weights=None,
    ...                          input_shape=(32, 32, 3)), 2)
    >>> [layer.name for layer in backbone_units(model)][:2]
    ['block1_conv1', 'block1_conv2']
    """
    heads = head_layers(model)
    return [
        unit for layer in model.layers if layer.name not in heads and not _is_input(layer) for unit in _units(layer)
    ]


def _units(layer) -> list:
    """The layers fine-tuning unfreezes one by one: a nested backbone's layers, a transformer's blocks."""
    if isinstance(layer, keras.Model):
        return [unit for sub in layer.layers if not _is_input(sub) for unit in _units(sub)]
    if holds_blocks(layer):
        return sublayers(layer)
    inner = sublayers(layer)
    return [unit for sub in inner for unit in _units(sub)] if any(map(holds_blocks, inner)) else [layer]


def _layer_named(model: keras.Model, name: str):
    return next((layer for layer in model.layers if layer.name == name), None)


def _named(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + "_")


def _is_input(layer) -> bool:
    return isinstance(layer, keras.layers.InputLayer)
