"""The SVM-on-features baseline: a linear SVM on a frozen backbone's globally average-pooled features.

Standardisation and the choice of C happen inside scikit-learn's
cross-validation on the training features only, so nothing of the test set
leaks into the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from bagnet_keras.core.batches import batches
from bagnet_keras.core.inputs import check_image_size
from bagnet_keras.transfer.backbones import Backbone, build_backbone, get_backbone
from bagnet_keras.transfer.evaluation import classification_results


def feature_extractor(
    backbone: str | Backbone | keras.Model,
    weights: str | os.PathLike | None = "pretrained",
    input_shape: tuple | None = None,
    include_preprocessing: bool = False,
) -> keras.Model:
    """The backbone followed by global average pooling: images -> (N, C) features.

    ``include_preprocessing=True`` (a backbone given by name): the extractor takes RGB pixels in
    [0, 255] and applies the backbone's preprocessing itself (`build_backbone`).

    Examples
    --------
    >>> feature_extractor("vgg16", weights=None, input_shape=(32, 32, 3)).output_shape
    (None, 512)
    """
    if isinstance(backbone, keras.Model):
        inputs, features = backbone.inputs[0], backbone.outputs[0]
    else:
        record = get_backbone(backbone)
        inputs = keras.Input(input_shape or (record.input_size, record.input_size, 3))
        features = build_backbone(record, inputs, weights, include_preprocessing)
    if len(features.shape) != 4:
        raise ValueError(f"The backbone outputs shape {features.shape}; it must output a feature map (N, H, W, C).")
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(features), name="features")


def extract_features(extractor: keras.Model, data) -> tuple[np.ndarray, np.ndarray | dict | None]:
    """Features of ``data`` (an image array, or batches of ``(images, labels)``) and the labels if any.

    Labels given as a dict by head (`bagnet_keras.transfer.labels.with_heads`) come back as a dict of arrays.
    """
    if isinstance(data, np.ndarray):
        check_image_size(extractor, data.shape)
        return np.asarray(extractor.predict(data, verbose=0)), None
    features, labels = [], []
    for batch in batches(data, 32):  # as NumPy: a tf.data batch is a TensorFlow tensor on every backend
        images, targets = batch.images, batch.labels
        check_image_size(extractor, images.shape)
        features.append(np.asarray(extractor.predict_on_batch(images)))
        by_head = isinstance(targets, dict)
        labels.append({k: np.asarray(v) for k, v in targets.items()} if by_head else np.asarray(targets))
    if not features:
        raise ValueError("The dataset is empty.")
    if isinstance(labels[0], dict):
        return np.concatenate(features), {head: np.concatenate([b[head] for b in labels]) for head in labels[0]}
    return np.concatenate(features), np.concatenate(labels)


class SVMBaseline(ClassifierMixin, BaseEstimator):
    """Standardise, then a linear SVM whose C is chosen by stratified cross-validation.

    Parameters
    ----------
    Cs : sequence of float
        Candidate values of C.
    cv : int
        Folds of the cross-validation.
    random_state : int

    Attributes
    ----------
    C_ : float
        The chosen C.
    pipeline_ : sklearn.pipeline.Pipeline
        Scaler and SVM refitted on all the training features with ``C_``.
    classes_ : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (20, 5)), rng.normal(3, 1, (20, 5))]); y = np.repeat([0, 1], 20)
    >>> SVMBaseline(cv=3).fit(x, y).score(x, y)
    1.0
    """

    def __init__(self, *, Cs: Sequence[float] = (0.001, 0.01, 0.1, 1.0, 10.0), cv: int = 5, random_state: int = 0):
        self.Cs = Cs
        self.cv = cv
        self.random_state = random_state

    def fit(self, features: np.ndarray, labels: np.ndarray) -> SVMBaseline:
        features, labels = np.asarray(features), np.asarray(labels).ravel()
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"Features must be (N, D) for N labels. Received: {features.shape} and {labels.shape}")
        if not self.Cs or any(not c > 0 for c in self.Cs):
            raise ValueError(f"`Cs` must be positive numbers. Received: Cs={self.Cs!r}")
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        svm = LinearSVC(random_state=self.random_state, max_iter=20000)
        search = GridSearchCV(make_pipeline(StandardScaler(), svm), {"linearsvc__C": list(self.Cs)}, cv=folds)
        search.fit(features, labels)
        self.C_ = float(search.best_params_["linearsvc__C"])
        self.pipeline_ = search.best_estimator_
        self.cv_results_ = search.cv_results_
        self.classes_ = self.pipeline_.classes_
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        return self.pipeline_.decision_function(np.asarray(features))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict(np.asarray(features))


def svm_baseline(
    backbone: str | Backbone | keras.Model,
    train,
    test,
    class_names: Sequence[str],
    *,
    weights: str | os.PathLike | None = "pretrained",
    input_shape: tuple | None = None,
    **svm_options,
) -> dict:
    """Fit `SVMBaseline` on the pooled features of ``train`` and report on ``test``.

    ``train`` and ``test`` are batches of ``(images, labels)`` preprocessed
    for the backbone (single-head labels). Returns the metrics of
    `bagnet_keras.transfer.evaluation.classification_results` plus ``"C"``.

    Examples
    --------
    >>> svm_baseline("vgg16", train, test, class_names=cities)["accuracy"]  # doctest: +SKIP
    0.71
    """
    extractor = feature_extractor(backbone, weights, input_shape)
    x_train, y_train = extract_features(extractor, train)
    x_test, y_test = extract_features(extractor, test)
    return svm_results(SVMBaseline(**svm_options).fit(x_train, y_train), x_test, y_test, class_names)


def svm_results(svm: SVMBaseline, features: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """`bagnet_keras.transfer.evaluation.classification_results` of a fitted `SVMBaseline`, plus its ``"C"``."""
    scores = svm.decision_function(features)
    if scores.ndim == 1:  # two classes: one margin, positive for classes_[1]
        scores = np.stack([-scores, scores], axis=1)
    full = np.full((len(features), len(class_names)), -np.inf)  # classes absent from training never win
    full[:, svm.classes_.astype(int)] = scores
    return {**classification_results(labels, full, class_names), "C": svm.C_}
