"""Evaluating classifiers per head: accuracy, top-k, per-class accuracy, confusion matrix, report; JSON out.

Examples
--------
>>> import numpy as np
>>> result = classification_results(np.array([0, 1, 1]), np.eye(2)[[0, 1, 0]], ["a", "b"])
>>> result["accuracy"], result["per_class_accuracy"]
(0.6666666666666666, {'a': 1.0, 'b': 0.5})
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from bagnet_keras.core.batches import batches
from bagnet_keras.core.commit import write_atomic
from bagnet_keras.core.graph import output_names
from bagnet_keras.core.inputs import check_image_size


def classification_results(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], top_k: int = 5) -> dict:
    """The metrics of one head from true labels (N,) and class scores (N, K), as plain JSON-ready values."""
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores)
    if scores.ndim != 2 or len(scores) != len(labels) or scores.shape[1] != len(class_names):
        raise ValueError(
            f"Scores must be (N, {len(class_names)}) for {len(labels)} labels and {len(class_names)} class names. "
            f"Received: {scores.shape}"
        )
    k = min(top_k, len(class_names))
    predicted = scores.argmax(axis=1)
    ranked = np.argsort(-scores, axis=1)[:, :k]
    indices = list(range(len(class_names)))
    matrix = confusion_matrix(labels, predicted, labels=indices)
    totals = matrix.sum(axis=1)
    return {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        f"top_{k}_accuracy": float((ranked == labels[:, None]).any(axis=1).mean()),
        "per_class_accuracy": {
            name: float(matrix[i, i] / totals[i]) if totals[i] else None for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
        "report": classification_report(
            labels, predicted, labels=indices, target_names=list(class_names), output_dict=True, zero_division=0
        ),
    }


def evaluate_classifier(
    model, dataset, class_names: Mapping[str, Sequence[str]] | Sequence[str], top_k: int = 5
) -> dict:
    """Results of every head of ``model`` on ``dataset`` (batches of ``(images, labels)``), by head name.

    ``class_names`` is a mapping head -> names, or the names of a single head.

    Examples
    --------
    >>> results = evaluate_classifier(model, test, {"city": cities, "region": ["East", "West"]})  # doctest: +SKIP
    >>> results["city"]["accuracy"]  # doctest: +SKIP
    0.83
    """
    heads = output_names(model)
    if not isinstance(class_names, Mapping):
        if len(heads) != 1:
            raise ValueError(f"The model has heads {heads}; give `class_names` as a mapping head -> names.")
        class_names = {heads[0]: class_names}
    labels = {head: [] for head in heads}
    scores = {head: [] for head in heads}
    # as NumPy: a tf.data batch is a TensorFlow tensor on every backend (32 cuts an array; batches come as they are)
    for batch in batches(dataset, 32):
        images, targets = batch.images, batch.labels
        if targets is None:
            raise ValueError("`dataset` must yield (images, labels) batches; these have no labels.")
        check_image_size(model, images.shape)
        if not isinstance(targets, Mapping):
            targets = {heads[0]: targets}
        output = model.predict_on_batch(images)
        if not isinstance(output, Mapping):
            output = {heads[0]: output}
        for head in heads:
            labels[head].append(np.asarray(targets[head]))
            scores[head].append(np.asarray(output[head]))
    if not labels[heads[0]]:
        raise ValueError("The dataset is empty.")
    return {
        head: classification_results(
            np.concatenate(labels[head]), np.concatenate(scores[head]), class_names[head], top_k
        )
        for head in heads
    }


def save_json(results: dict, path: str | os.PathLike) -> None:
    """Write ``results`` as indented JSON through a temporary file."""
    write_atomic(path, json.dumps(results, indent=2, sort_keys=True))
