"""BagNets in Keras 3 with the authors' ImageNet weights, and tools to see what CNNs look at.

The package is grouped by concern (see docs/architecture.md): ``core`` (graph
walking, geometry, checks, files, custom layers), ``models`` (BagNet builders,
weights, fast inference), ``explain`` (evidence, CAM family, gradient
attributions, guided backprop, occlusion), ``metrics`` (faithfulness, comparison), ``transfer`` (backbones,
heads, training, evaluation, baselines), ``report`` (figures, HTML) and ``app``
(the command line, the demo, workflows). Every public entry point is
importable from here. Names are resolved on first use (PEP 562), so
``import bagnet_keras`` and the ``bagnet-keras crawl`` command do not load
TensorFlow; the first name used loads ``bagnet_keras.models`` too, which
registers the custom Keras classes that saved ``.keras`` files refer to.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "StemConv": "core.layers",
    "Geometry": "core.geometry",
    "receptive_field": "core.geometry",
    "BagNet": "models.bagnet",
    "BagNet9": "models.bagnet",
    "BagNet17": "models.bagnet",
    "BagNet33": "models.bagnet",
    "bagnet_geometry": "models.bagnet",
    "evidence_model": "models.bagnet",
    "load_imagenet_weights": "models.bagnet",
    "BagNetModel": "models.inference",
    "UnsafeCheckpointError": "models.torch_checkpoint",
    "load_checkpoint": "models.torch_checkpoint",
    "decode_predictions": "models.imagenet",
    "deprocess_input": "models.imagenet",
    "imagenet_classes": "models.imagenet",
    "preprocess_input": "models.imagenet",
    "EvidenceMap": "explain.evidence",
    "TopPatches": "explain.evidence",
    "evidence_map": "explain.evidence",
    "evidence_maps": "explain.evidence",
    "top_patches": "explain.evidence",
    "BaseCAM": "explain.cam",
    "GradCAM": "explain.cam",
    "GradCAMPlusPlus": "explain.cam",
    "LayerCAM": "explain.cam",
    "ScoreCAM": "explain.cam",
    "cam": "explain.cam",
    "BaseAttribution": "explain.attribution",
    "DeepLIFT": "explain.attribution",
    "EpsilonLRP": "explain.attribution",
    "GradientXInput": "explain.attribution",
    "IntegratedGradients": "explain.attribution",
    "Saliency": "explain.attribution",
    "SmoothGrad": "explain.attribution",
    "attribution": "explain.attribution",
    "ClassConcepts": "explain.concepts",
    "class_concepts": "explain.concepts",
    "merge_concepts": "explain.concepts",
    "FeatureEvolution": "explain.evolution",
    "LayerGroups": "explain.factorize",
    "factorize": "explain.factorize",
    "merge_groups": "explain.factorize",
    "FeatureAtlas": "explain.atlas",
    "feature_atlas": "explain.atlas",
    "merge_atlas": "explain.atlas",
    "guided_backprop": "explain.guided",
    "guided_gradcam": "explain.guided",
    "occlusion": "explain.occlusion",
    "explainer": "explain.registry",
    "Comparison": "metrics.comparison",
    "compare": "metrics.comparison",
    "merge_shards": "metrics.results",
    "invariance": "metrics.invariance",
    "correspondence": "metrics.correspondence",
    "input_invariance": "metrics.sanity",
    "model_randomization": "metrics.sanity",
    "get_backbone": "transfer.backbones",
    "build_classifier": "transfer.heads",
    "fit_classifier": "transfer.training",
    "save_model": "transfer.training",
    "coarse_labels": "transfer.labels",
    "with_heads": "transfer.labels",
    "evaluate_classifier": "transfer.evaluation",
    "SVMBaseline": "transfer.baselines",
    "svm_baseline": "transfer.baselines",
    "OneDNNCrashWarning": "transfer.onednn",
    "write_report": "report.html",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bagnet_keras' has no attribute {name!r}")
    # Registers StemConv and BagNetModel, so keras.saving.load_model reads .keras files after any name is used.
    importlib.import_module("bagnet_keras.models")
    value = getattr(importlib.import_module(f"bagnet_keras.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
