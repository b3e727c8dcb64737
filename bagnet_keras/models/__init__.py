"""BagNet builders (`bagnet`), the pretrained-weights registry and download (`weights`), the torch-free
checkpoint reader (`torch_checkpoint`), ImageNet pre- and post-processing (`imagenet`) and the fast
BatchNorm-folded predict path (`inference`)."""

from bagnet_keras.core.layers import StemConv
from bagnet_keras.models.bagnet import (
    BagNet,
    BagNet9,
    BagNet17,
    BagNet33,
    bagnet_geometry,
    bagnet_top,
    evidence_model,
    load_imagenet_weights,
)
from bagnet_keras.models.imagenet import decode_predictions, deprocess_input, imagenet_classes, preprocess_input
from bagnet_keras.models.inference import BagNetModel
from bagnet_keras.models.torch_checkpoint import CheckpointError, UnsafeCheckpointError, load_checkpoint

__all__ = [
    "BagNet",
    "BagNet9",
    "BagNet17",
    "BagNet33",
    "BagNetModel",
    "CheckpointError",
    "StemConv",
    "UnsafeCheckpointError",
    "bagnet_geometry",
    "bagnet_top",
    "decode_predictions",
    "deprocess_input",
    "evidence_model",
    "imagenet_classes",
    "load_checkpoint",
    "load_imagenet_weights",
    "preprocess_input",
]
