"""Custom domains: backbones by name (`backbones`; keras-hub's vision transformers by preset, `hub`),
classification heads and training modes (`heads`), training (`training`, with the oneDNN guard of
`onednn`), multi-head labels (`labels`), evaluation (`evaluation`) and the SVM-on-features baseline
(`baselines`). Names are resolved on first use."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "backbones": ["Backbone", "get_backbone"],
        "hub": ["PRESETS", "load_hub_backbone"],
        "heads": ["MODES", "build_classifier", "head_layers", "set_trainable"],
        "training": ["fit_classifier", "save_model"],
        "labels": ["coarse_labels", "with_heads"],
        "evaluation": ["evaluate_classifier"],
        "baselines": ["SVMBaseline", "svm_baseline"],
        "onednn": ["OneDNNCrashWarning"],
    },
)
