"""The `explain` and `compare` commands: load models and images from files, measure, write the report.

Examples
--------
>>> explain_images("bagnet33", ["street.jpg"], "runs/explain", weights="imagenet")  # doctest: +SKIP
'runs/explain/report.html'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from bagnet_keras.metrics.comparison import compare
from bagnet_keras.metrics.faithfulness import logit_fn
from bagnet_keras.report.html import write_report
from bagnet_keras.transfer.backbones import get_backbone


def load_model(spec: str, weights: str | None = None) -> tuple[keras.Model, object]:
    """A model and its preprocessing from a ``.keras`` file or a backbone name (with its classifier top).

    Names of BagNets build the BagNet with ``weights`` (``"imagenet"``, a
    checkpoint path, or None); other names build the keras.applications
    classifier. A ``.keras`` file is loaded in Keras' safe mode (no code from
    the file runs); its preprocessing is the BagNets' (ImageNet, as
    `bagnet_keras.preprocess_input`) unless the caller knows better.
    """
    if spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise ValueError(f"Model file {spec!r} does not exist.")
        return keras.models.load_model(spec, safe_mode=True), get_backbone("bagnet33").preprocess
    record = get_backbone(spec)
    if record.bagnet:
        model = record.builder(weights=weights, classifier_activation=None)
    else:
        model = record.builder(weights=weights)
    return model, record.preprocess


def _class_names(model: keras.Model, names: Sequence[str] | None) -> list[str]:
    n = int(model.outputs[0].shape[-1])
    if names is not None and len(names) == n:
        return list(names)
    if n == 1000:
        from bagnet_keras.models.imagenet import imagenet_classes

        return [name for _, name in imagenet_classes()]
    return [f"class {k}" for k in range(n)]


def explain_images(
    model: str,
    images: Sequence[str] | str,
    output_dir: str,
    weights: str | None = None,
    methods: Sequence[str] | None = None,
    image_size: int = 224,
    split: str | None = None,
    max_images: int = 64,
    progress: bool = True,
    target: str = "logit",
) -> str:
    """Explain one model's top prediction for image files (or a dataset folder) and write the report.

    The maps are measured as in `bagnet_keras.metrics.comparison` for the predicted class.
    """
    from bagnet_keras.core.files import read_image
    from data_tools.loader import load_arrays

    net, preprocess = load_model(model, weights)
    names = None
    if isinstance(images, str):
        pixels, _, _, names, _ = load_arrays(images, (image_size, image_size), split=split, max_images=max_images)
    else:
        pixels = np.stack([read_image(path, (image_size, image_size)) for path in images])
    x = np.asarray(preprocess(pixels.astype("float32")))
    predicted = logit_fn(net)(x).argmax(axis=1)
    models = {"model": net}
    result = compare(models, x, predicted, methods=methods, progress=progress, target=target,
                     deprocess=_deprocess(preprocess))  # fmt: skip
    result.save(os.path.join(output_dir, "comparison"))
    return write_report(result, _class_names(net, names), output_dir, title=f"Explanations of {model}")


def compare_models(
    models: Mapping[str, str],
    data: str,
    output_dir: str,
    split: str | None = "test",
    image_size: int = 224,
    preprocess: str = "bagnet33",
    masks: str | None = None,
    methods: Sequence[str] | None = None,
    output: str | None = None,
    max_images: int | None = 200,
    progress: bool = True,
    target: str = "logit",
) -> str:
    """Compare the explanations of trained models (``.keras`` files) on a dataset split and write the report.

    ``preprocess`` names the backbone whose preprocessing the models expect.
    """
    from data_tools.loader import load_arrays

    loaded = {name: load_model(path)[0] for name, path in models.items()}
    pixels, labels, mask_arrays, names, _ = load_arrays(data, (image_size, image_size), split=split,
                                                        masks_root=masks, max_images=max_images)  # fmt: skip
    prep = get_backbone(preprocess).preprocess
    x = np.asarray(prep(pixels.astype("float32")))
    result = compare(loaded, x, labels, masks=mask_arrays, methods=methods, output=output, progress=progress,
                     n_classes=len(names), target=target, deprocess=_deprocess(prep))  # fmt: skip
    result.save(os.path.join(output_dir, "comparison"))
    return write_report(result, names, output_dir, title="Explanations compared")


def _deprocess(preprocess):
    """The inverse of a backbone's preprocessing where this package knows it, else min-max display."""
    from bagnet_keras.models.imagenet import deprocess_input, preprocess_input

    return deprocess_input if preprocess is preprocess_input else None

