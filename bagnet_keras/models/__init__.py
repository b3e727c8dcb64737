"""BagNet builders (`bagnet`), the pretrained-weights registry and download (`weights`), the torch-free
checkpoint reader (`torch_checkpoint`), ImageNet pre- and post-processing (`imagenet`) and the fast
BatchNorm-folded predict path (`inference`)."""

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
from bagnet_keras.models.inference import BagNetModel

__all__ = [
    "BagNet",
    "BagNet9",
    "BagNet17",
    "BagNet33",
    "BagNetModel",
    "bagnet_geometry",
    "bagnet_top",
    "evidence_model",
    "load_imagenet_weights",
]
