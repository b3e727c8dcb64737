"""BagNets in Keras 3 with the authors' ImageNet weights, and tools to see what CNNs look at."""

from bagnet_keras.cam import BaseCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, cam
from bagnet_keras.evidence import EvidenceMap, TopPatches, evidence_map, evidence_maps, top_patches
from bagnet_keras.geometry import Geometry, receptive_field
from bagnet_keras.guided import guided_backprop, guided_gradcam
from bagnet_keras.imagenet import decode_predictions, deprocess_input, imagenet_classes, preprocess_input
from bagnet_keras.models import (
    BagNet,
    BagNet9,
    BagNet17,
    BagNet33,
    bagnet_geometry,
    evidence_model,
    load_imagenet_weights,
)
from bagnet_keras.occlusion import occlusion
from bagnet_keras.torch_checkpoint import UnsafeCheckpointError, load_checkpoint

__version__ = "0.1.0"

__all__ = [
    "BagNet",
    "BaseCAM",
    "BagNet9",
    "BagNet17",
    "BagNet33",
    "EvidenceMap",
    "Geometry",
    "GradCAM",
    "GradCAMPlusPlus",
    "LayerCAM",
    "ScoreCAM",
    "TopPatches",
    "UnsafeCheckpointError",
    "bagnet_geometry",
    "cam",
    "decode_predictions",
    "deprocess_input",
    "evidence_map",
    "evidence_maps",
    "evidence_model",
    "guided_backprop",
    "guided_gradcam",
    "imagenet_classes",
    "load_checkpoint",
    "load_imagenet_weights",
    "occlusion",
    "preprocess_input",
    "receptive_field",
    "top_patches",
]
