"""BagNets in Keras 3 with the authors' ImageNet weights, and tools to see what CNNs look at."""

from bagnet_keras.baselines import SVMBaseline, svm_baseline
from bagnet_keras.cam import BaseCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, cam
from bagnet_keras.evaluation import evaluate_classifier
from bagnet_keras.evidence import EvidenceMap, TopPatches, evidence_map, evidence_maps, top_patches
from bagnet_keras.geometry import Geometry, receptive_field
from bagnet_keras.guided import guided_backprop, guided_gradcam
from bagnet_keras.imagenet import decode_predictions, deprocess_input, imagenet_classes, preprocess_input
from bagnet_keras.labels import coarse_labels, with_heads
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
from bagnet_keras.onednn import OneDNNCrashWarning
from bagnet_keras.torch_checkpoint import UnsafeCheckpointError, load_checkpoint
from bagnet_keras.training import fit_classifier, save_model
from bagnet_keras.transfer import build_classifier

__version__ = "0.1.0"

__all__ = [
    "BagNet",
    "BagNet17",
    "BagNet33",
    "BagNet9",
    "bagnet_geometry",
    "BaseCAM",
    "build_classifier",
    "cam",
    "coarse_labels",
    "decode_predictions",
    "deprocess_input",
    "evaluate_classifier",
    "evidence_map",
    "evidence_maps",
    "evidence_model",
    "EvidenceMap",
    "fit_classifier",
    "Geometry",
    "GradCAM",
    "GradCAMPlusPlus",
    "guided_backprop",
    "guided_gradcam",
    "imagenet_classes",
    "LayerCAM",
    "load_checkpoint",
    "load_imagenet_weights",
    "occlusion",
    "OneDNNCrashWarning",
    "preprocess_input",
    "receptive_field",
    "save_model",
    "ScoreCAM",
    "svm_baseline",
    "SVMBaseline",
    "top_patches",
    "TopPatches",
    "UnsafeCheckpointError",
    "with_heads",
]
