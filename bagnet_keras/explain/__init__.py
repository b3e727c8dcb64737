"""The explanations: BagNet evidence maps and top patches (`evidence`), the Grad-CAM family (`cam`),
gradient attributions (`attribution`), guided backprop and deconvnet (`guided`), occlusion
(`occlusion`), attention rollout of vision transformers (`rollout`), and the dataset-level views:
the feature atlas (`atlas`), NMF groups (`factorize`), a BagNet's class concepts (`concepts`), the
feature-evolution callback (`evolution`), and feature visualisation by optimisation
(`visualization`, maximising `objectives`).

``explain(model, images, method)`` runs any registered method by name (the table of methods is
`methods`, readable without TensorFlow); ``explainer`` returns the same as a reusable function.
Names are resolved on first use. A function named like its module (``cam``, ``attribution``,
``occlusion``, ``factorize``) is the function here: ``from bagnet_keras.explain import cam`` gives
the function, and ``from bagnet_keras.explain.cam import GradCAM`` still reaches the module.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "registry": ["explain", "explainer", "parse_method"],
        "methods": ["METHODS", "method_names"],
        "evidence": ["EvidenceMap", "TopPatches", "evidence_map", "evidence_maps", "top_patches"],
        "cam": ["BaseCAM", "GradCAM", "GradCAMPlusPlus", "LayerCAM", "ScoreCAM", "cam"],
        "attribution": [
            "BaseAttribution",
            "DeepLIFT",
            "EpsilonLRP",
            "GradientXInput",
            "IntegratedGradients",
            "Saliency",
            "SmoothGrad",
            "attribution",
        ],
        "guided": ["guided_backprop", "guided_gradcam"],
        "occlusion": ["occlusion"],
        "rollout": ["attention_rollout", "attention_weights", "gradient_rollout"],
        "atlas": ["FeatureAtlas", "feature_atlas", "merge_atlas"],
        "factorize": ["LayerGroups", "factorize", "merge_groups"],
        "concepts": ["ClassConcepts", "class_concepts", "merge_concepts"],
        "evolution": ["FeatureEvolution"],
        "visualization": ["Visualization", "feature_visualization"],
        "objectives": ["Objective", "channel", "class_logit", "diversity", "direction", "unit"],
    },
)
