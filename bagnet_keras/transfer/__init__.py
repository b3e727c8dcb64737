"""Custom domains: backbones by name (`backbones`), classification heads and training modes (`heads`),
training (`training`, with the oneDNN guard of `onednn`), multi-head labels (`labels`), evaluation
(`evaluation`) and the SVM-on-features baseline (`baselines`)."""

from bagnet_keras.transfer.heads import MODES, build_classifier, head_layers, set_trainable

__all__ = ["MODES", "build_classifier", "head_layers", "set_trainable"]
