"""BagNets in Keras 3 with the authors' ImageNet weights, and tools to see what CNNs look at.

The top level holds what a newcomer needs: the BagNet builders, ImageNet pre- and
post-processing, ``evidence_map``, ``explainer``, ``compare``, ``write_report``,
``feature_atlas``, ``build_classifier`` and ``fit_classifier``. The rest lives in
the subpackages, each with its ``__all__``: ``bagnet_keras.models``,
``bagnet_keras.explain`` (every explanation, and ``explain(model, images, method)``,
the one call for any registered method), ``bagnet_keras.metrics``,
``bagnet_keras.transfer`` and ``bagnet_keras.report``. Names that used to sit at the
top level still resolve there, with a DeprecationWarning that names their new home.

Names are resolved on first use (PEP 562), so ``import bagnet_keras`` and the
``bagnet-keras crawl`` command load no TensorFlow. The package's Keras classes are
registered the moment Keras is imported (or at once, when it already is), so
``keras.saving.load_model`` reads this package's ``.keras`` files after a plain
``import bagnet_keras``, in either order of the two imports.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "BagNet": "models.bagnet",
    "BagNet9": "models.bagnet",
    "BagNet17": "models.bagnet",
    "BagNet33": "models.bagnet",
    "decode_predictions": "models.imagenet",
    "deprocess_input": "models.imagenet",
    "preprocess_input": "models.imagenet",
    "evidence_map": "explain.evidence",
    "explainer": "explain.registry",
    "feature_atlas": "explain.atlas",
    "compare": "metrics.comparison",
    "write_report": "report.html",
    "build_classifier": "transfer.heads",
    "fit_classifier": "transfer.training",
}

# old top-level name -> the subpackage that exports it now (deprecated here in 0.2, removed in 0.3)
_MOVED = {
    **dict.fromkeys(
        [
            "StemConv",
            "BagNetModel",
            "bagnet_geometry",
            "evidence_model",
            "load_imagenet_weights",
            "UnsafeCheckpointError",
            "load_checkpoint",
            "imagenet_classes",
        ],
        "bagnet_keras.models",
    ),
    **dict.fromkeys(
        [
            "EvidenceMap",
            "TopPatches",
            "evidence_maps",
            "top_patches",
            "BaseCAM",
            "GradCAM",
            "GradCAMPlusPlus",
            "LayerCAM",
            "ScoreCAM",
            "cam",
            "BaseAttribution",
            "DeepLIFT",
            "EpsilonLRP",
            "GradientXInput",
            "IntegratedGradients",
            "Saliency",
            "SmoothGrad",
            "attribution",
            "ClassConcepts",
            "class_concepts",
            "merge_concepts",
            "FeatureEvolution",
            "LayerGroups",
            "factorize",
            "merge_groups",
            "FeatureAtlas",
            "merge_atlas",
            "guided_backprop",
            "guided_gradcam",
            "occlusion",
        ],
        "bagnet_keras.explain",
    ),
    **dict.fromkeys(["Geometry", "receptive_field"], "bagnet_keras.core"),
    **dict.fromkeys(
        ["Comparison", "merge_shards", "invariance", "correspondence", "input_invariance", "model_randomization"],
        "bagnet_keras.metrics",
    ),
    **dict.fromkeys(
        [
            "get_backbone",
            "save_model",
            "coarse_labels",
            "with_heads",
            "evaluate_classifier",
            "SVMBaseline",
            "svm_baseline",
            "OneDNNCrashWarning",
        ],
        "bagnet_keras.transfer",
    ),
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"bagnet_keras.{module}"), name)
        globals()[name] = value
        return value
    home = _MOVED.get(name)
    if home is not None:
        warnings.warn(
            f"`bagnet_keras.{name}` has moved: use `from {home} import {name}`. "
            "The old name will be removed in bagnet-keras 0.3.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module 'bagnet_keras' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _register_keras_classes() -> None:
    """Import the modules that register StemConv and BagNetModel with Keras' serialization registry."""
    importlib.import_module("bagnet_keras.models")


def _initializing(name: str) -> bool:
    return bool(getattr(getattr(sys.modules.get(name), "__spec__", None), "_initializing", False))


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Runs `_register_keras_classes` right after the module ``keras`` has executed, once.

    Python has no post-import hook, so this finder steps aside (removing itself
    from ``sys.meta_path``), lets the other finders locate ``keras``, and wraps
    that loader's ``exec_module``. Nothing else about the import changes.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            run(module)
            # Keras imported by one of this package's modules as it loads: the registering modules import
            # that half-made module back. They register themselves when they are imported, as the
            # package's loaders do; only a plain keras.saving.load_model needs this hook.
            if not any(_initializing(name) for name in list(sys.modules) if name.startswith("bagnet_keras.")):
                _register_keras_classes()

        loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_keras_classes()
elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())
