"""The `explain` and `compare` commands: load models and images from files, measure, write the report.

Examples
--------
>>> explain_images("bagnet33", ["street.jpg"], "runs/explain", weights="imagenet")  # doctest: +SKIP
'runs/explain/report.html'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from bagnet_keras.core.commit import write_atomic
from bagnet_keras.core.graph import input_reader
from bagnet_keras.core.inputs import check_image_model, n_classes_of, output_index
from bagnet_keras.core.layers import PixelAffine
from bagnet_keras.core.validation import check_int
from bagnet_keras.explain.atlas import image_batches
from bagnet_keras.metrics.comparison import compare
from bagnet_keras.metrics.faithfulness import logit_fn
from bagnet_keras.report.html import write_report
from bagnet_keras.transfer.backbones import get_backbone, get_preprocessing


def load_model(spec: str, weights: str | None = None) -> tuple[keras.Model, object]:
    """A model and its preprocessing from a ``.keras`` file or a backbone name (with its classifier top).

    Names of BagNets build the BagNet with ``weights`` (``"imagenet"``, a
    checkpoint path, or None); other names build the keras.applications
    classifier. A ``.keras`` file is loaded in Keras' safe mode (no code from
    the file runs); its preprocessing is the BagNets' (ImageNet, as
    `bagnet_keras.preprocess_input`) unless the caller knows better, and None for
    a model that preprocesses in its first layer (``include_preprocessing=True``).
    """
    if spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise ValueError(f"Model file {spec!r} does not exist.")
        try:
            model = keras.models.load_model(spec, safe_mode=True)
        except (OSError, ValueError, TypeError, KeyError) as error:
            # Keras says "File format not supported" or fails deep in deserialisation: name the file.
            raise ValueError(f"Cannot load {spec!r} as a Keras model ({error}).") from None
        check_image_model(model, source=spec)
        if isinstance(input_reader(model), PixelAffine):
            return model, None
        return model, get_backbone("bagnet33").preprocess
    record = get_backbone(spec)
    if record.bagnet:
        model = record.builder(weights=weights, classifier_activation=None)
    else:
        model = record.builder(weights=weights)
    return model, record.preprocess


def _check_classes(models: dict, output, data: str, class_names: Sequence[str]) -> None:
    """The dataset's classes are the models' classes, in folder order: anything else mislabels every image."""
    for name, model in models.items():
        n = n_classes_of(model, output_index(model, output))
        if n != len(class_names):
            raise ValueError(
                f"Model {name!r} scores {n} classes but the dataset {data!r} has {len(class_names)} "
                f"({', '.join(class_names)}): give the dataset the model was trained on, with one folder per class."
            )


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
    max_images: int | None = 64,
    progress: bool = True,
    target: str = "logit",
    batch_size: int | None = None,
    shard: tuple[int, int] | None = None,
    jit_compile: bool = False,
    dtype_policy: str | None = None,
    preprocess: str | None = None,
) -> str | None:
    """Explain one model's top prediction for image files (or a dataset folder) and write the report.

    The maps are measured as in `bagnet_keras.metrics.comparison` for the predicted class, batch by
    batch; the results are committed under ``output_dir/comparison`` as they go, so the same call
    again resumes a killed run. A ``shard`` writes no report (`merge` does, from all shards) and
    returns None. ``preprocess`` names the backbone whose preprocessing the model expects
    (``"mobilenetv2"``: pixels to [-1, 1]); by default a backbone name's own, and ImageNet's mean and
    standard deviation for a ``.keras`` file.
    """
    from bagnet_keras.core.files import read_image
    from bagnet_keras.metrics.comparison import default_batch_size
    from bagnet_keras.models.inference import with_dtype_policy
    from data_tools.loader import ImageFiles

    net, own = load_model(model, weights)
    preprocess = own if preprocess is None else get_preprocessing(preprocess)
    # Zero is not "the default": None is.
    batch_size = check_int(batch_size, "batch_size", low=1, allow_none=True) or default_batch_size()
    names = None
    if isinstance(images, str):
        files = ImageFiles(images, (image_size, image_size), split=split, max_images=max_images)
        names = files.class_names
    else:
        files = np.stack([read_image(path, (image_size, image_size)) for path in images])
    top = with_dtype_policy(net, dtype_policy) if dtype_policy is not None else net
    scorer = logit_fn(top, batch_size=batch_size, jit_compile=jit_compile)

    def batches():
        # Each batch is explained for the model's own top class, computed as the batch is read.
        for x in image_batches(files, batch_size, preprocess):
            yield x, scorer(x).argmax(axis=1)

    names = _class_names(net, names)
    result = compare(
        {"model": net},
        batches(),
        methods=methods,
        progress=progress,
        target=target,
        deprocess=_deprocess(preprocess),
        batch_size=batch_size,
        shard=shard,
        jit_compile=jit_compile,
        dtype_policy=dtype_policy,
        output_dir=os.path.join(output_dir, "comparison"),
    )
    _write_classes(output_dir, names)
    if shard is not None:
        return None
    return write_report(result, names, output_dir, title=f"Explanations of {model}")


def methods_by_model(models: Mapping[str, str], methods: Sequence[str] | None) -> Sequence[str] | dict | None:
    """The methods each model is explained by: ``METHOD`` for every model, ``NAME:METHOD`` for model NAME alone.

    Examples
    --------
    >>> methods_by_model({"bagnet": "b.keras", "cnn": "c.keras"}, ["gradcam", "bagnet:evidence", "cnn:saliency"])
    {'bagnet': ['gradcam', 'evidence'], 'cnn': ['gradcam', 'saliency']}
    >>> methods_by_model({"cnn": "c.keras"}, ["gradcam"])
    ['gradcam']
    """
    if methods is None or not any(":" in m for m in methods):
        return methods
    chosen = {name: [m for m in methods if ":" not in m] for name in models}
    for item in methods:
        name, sep, method = item.partition(":")
        if not sep:
            continue
        if name not in chosen:
            raise ValueError(
                f"--methods {item!r} names model {name!r}, which is not one of the models "
                f"({', '.join(models)}); write NAME:METHOD with a --model NAME."
            )
        chosen[name].append(method)
    return chosen


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
    max_images: int | None = None,
    progress: bool = True,
    target: str = "logit",
    batch_size: int | None = None,
    shard: tuple[int, int] | None = None,
    jit_compile: bool = False,
    dtype_policy: str | None = None,
    sanity: int = 0,
) -> str | None:
    """Compare the explanations of trained models (``.keras`` files) on a dataset split and write the report.

    ``preprocess`` names the backbone whose preprocessing the models expect (``"none"``: models built with
    ``include_preprocessing=True``, which take the pixels themselves). The images are read
    ``batch_size`` at a time and the results committed under ``output_dir/comparison`` as they go:
    memory does not grow with the split, and the same call again resumes a killed run. A ``shard``
    (index, count) measures its part of the split and writes no report: `merge` joins the shards'
    folders and writes it; it returns None. ``methods`` name a method for every model or, as
    ``NAME:METHOD``, for one (`methods_by_model`).
    """
    from data_tools.loader import ImageFiles

    methods = methods_by_model(models, methods)
    loaded = {name: load_model(path)[0] for name, path in models.items()}
    size = (image_size, image_size)
    files = ImageFiles(data, size, split=split, max_images=max_images)
    _check_classes(loaded, output, data, files.class_names)
    mask_files = ImageFiles(data, size, split=split, masks_root=masks, max_images=max_images) if masks else None
    prep = get_preprocessing(preprocess)
    result = compare(
        loaded,
        files,
        files.labels,
        masks=mask_files,
        methods=methods,
        output=output,
        progress=progress,
        n_classes=len(files.class_names),
        target=target,
        deprocess=_deprocess(prep),
        preprocess=prep,
        batch_size=batch_size,
        shard=shard,
        jit_compile=jit_compile,
        dtype_policy=dtype_policy,
        sanity=sanity,
        output_dir=os.path.join(output_dir, "comparison"),
    )
    _write_classes(output_dir, files.class_names)
    if shard is not None:
        return None
    return write_report(result, files.class_names, output_dir, title="Explanations compared")


def merge(output_dir: str, shard_dirs: Sequence[str]) -> str:
    """Join the output folders of finished shards of `compare_models` (or `explain_images`) and write the report.

    The merged tables go to ``output_dir/comparison``, the report to ``output_dir/report.html``. Shards of
    `atlas_models` are joined by `merge_atlas_shards` (the page goes to ``output_dir/atlas.html``).
    """
    from bagnet_keras.metrics.results import merge_shards

    if os.path.abspath(output_dir) in {os.path.abspath(d) for d in shard_dirs}:
        raise ValueError(f"The merged output folder {output_dir!r} is one of the shards' folders; choose another.")
    if shard_dirs and os.path.exists(os.path.join(shard_dirs[0], ATLAS_FILE)):
        return merge_atlas_shards(output_dir, shard_dirs)
    result = merge_shards([os.path.join(d, "comparison") for d in shard_dirs], os.path.join(output_dir, "comparison"))
    with open(os.path.join(shard_dirs[0], CLASSES_FILE), encoding="utf-8") as f:
        names = json.load(f)
    return write_report(result, names, output_dir, title="Explanations compared")


#: Optimisation steps of each feature visualisation on the explorer page, unless asked otherwise.
EXPLORER_STEPS = 128
#: The atlas command's settings in its output folder: a shard's, for `merge`.
ATLAS_FILE = "atlas.json"
#: The committed passes over the data (per model: units, groups, concepts) in an atlas's output folder.
PASSES = "passes"


def atlas_models(
    models: Mapping[str, str],
    data: str,
    output_dir: str,
    split: str | None = "test",
    image_size: int = 224,
    preprocess: str = "bagnet33",
    layers: Sequence[str] | None = None,
    units: int = 16,
    k: int = 9,
    groups: int = 6,
    concepts: int = 4,
    max_images: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    explore: bool = False,
    visualization_steps: int = EXPLORER_STEPS,
) -> str | None:
    """The feature atlas of trained models (``.keras`` files) over a dataset split, as ``output_dir/atlas.html``.

    Per model: the ``units`` strongest units (by mean activation) of each layer (default: its last layer
    with a spatial output) with their ``k`` top activations, ``groups`` NMF groups of the last of those
    layers, and for a BagNet its class concepts. Every pass over the data commits its batches under
    ``output_dir/passes``, so the same call after a kill resumes. With ``shard=(i, n)`` only that shard's
    batches are measured and no page is written (returns None); `merge` joins the shards' folders.
    With ``explore``, the same passes also make ``output_dir/explorer.html`` (`explore_models`), whose
    feature visualisations take ``visualization_steps`` optimisation steps.
    """
    from bagnet_keras.core.graph import last_spatial_layer

    for name in models:
        if not name or not all(ch.isalnum() or ch in "-_." for ch in name) or name.startswith("."):
            raise ValueError(f"Model name {name!r} must be letters, digits, '-', '_' or '.' (it names a folder).")
    settings = {
        "models": {name: os.path.abspath(path) for name, path in models.items()},
        "data": os.path.abspath(data),
        "split": split,
        "image_size": image_size,
        "preprocess": preprocess,
        "layers": list(layers) if layers else None,
        "units": units,
        "k": k,
        "groups": groups,
        "concepts": concepts,
        "max_images": max_images,
        "batch_size": batch_size,
    }
    if explore:  # only then: an atlas run folder of an earlier version has no such key, and merges as before
        settings["explore"] = True
        if visualization_steps != EXPLORER_STEPS:
            settings["visualization_steps"] = check_int(visualization_steps, "visualization_steps", low=1)
    files, prep = _atlas_data(settings)
    entries = {}
    for name, path in models.items():
        model = load_model(path)[0]
        chosen = list(layers) if layers else [last_spatial_layer(model)[0]]
        entries[name] = _atlas_passes(name, model, files, prep, chosen, settings, output_dir, shard, progress)
    _write_classes(output_dir, files.class_names)
    write_atomic(os.path.join(output_dir, ATLAS_FILE), json.dumps({**settings, "shard": shard}, indent=1))
    if shard is not None:
        return None
    return _write_pages(entries, files, prep, output_dir, settings)


def explore_models(models: Mapping[str, str], data: str, output_dir: str, **options) -> str | None:
    """``output_dir/explorer.html`` (and ``atlas.html``) of a CNN and a BagNet (``.keras`` files) over a dataset.

    The explorer joins, at every position of a few test images, the CNN's NMF groups (their activation,
    their attribution to each class, their feature visualisation and strongest crops) and the BagNet's
    exact patch evidence and class concepts (`bagnet_keras.report.explorer`). Its passes over the data are
    the atlas's (`atlas_models`, whose ``options`` it takes): committed, resumable and sharded alike.
    """
    path = atlas_models(models, data, output_dir, explore=True, **options)
    return None if path is None else os.path.join(output_dir, "explorer.html")


def _write_pages(entries: dict, files, prep, output_dir: str, settings: dict) -> str:
    """The atlas page and, for an explore run, the explorer page beside it."""
    # The explorer's models are checked first: a refused explore run writes neither page.
    explored = _explored_models(entries) if settings.get("explore") else None
    path = _write_atlas_page(entries, files, prep, output_dir)
    if explored is not None:
        steps = settings.get("visualization_steps", EXPLORER_STEPS)
        _write_explorer_page(entries, files, prep, output_dir, *explored, visualization_steps=steps)
    return path


def _explored_models(entries: dict) -> tuple[str | None, str | None]:
    """The explorer's CNN (its last layer factorised into groups) and BagNet (with class concepts)."""
    bagnet = next((name for name, entry in entries.items() if entry.concepts is not None), None)
    cnn = next((name for name, entry in entries.items() if entry.groups is not None and name != bagnet), None)
    if cnn is None and bagnet is None:
        raise ValueError(
            f"The explorer needs a CNN whose last layer factorises (after a ReLU) or a BagNet; none of "
            f"{sorted(entries)} is either. Give such a model with --model NAME=PATH, or run `bagnet-keras atlas`."
        )
    return cnn, bagnet


def _write_explorer_page(
    entries: dict, files, prep, output_dir: str, cnn: str | None, bagnet: str | None, visualization_steps: int
) -> str:
    from bagnet_keras.report.explorer import write_explorer

    chosen = [name for name in (cnn, bagnet) if name is not None]
    return write_explorer(
        {name: entries[name].atlas._model for name in chosen},
        files,
        files.labels,
        output_dir,
        files.class_names,
        groups=entries[cnn].groups if cnn else None,
        concepts=entries[bagnet].concepts if bagnet else None,
        preprocess=prep,
        cnn=cnn,
        bagnet=bagnet,
        visualization_steps=visualization_steps,
        title="What the models see, position by position",
    )


def _atlas_data(settings: dict):
    from data_tools.loader import ImageFiles

    files = ImageFiles(
        settings["data"], (settings["image_size"],) * 2, split=settings["split"], max_images=settings["max_images"]
    )
    return files, get_preprocessing(settings["preprocess"])


def _atlas_passes(name, model, files, prep, layers, settings, output_dir, shard, progress):
    """One model's passes over the data (units, groups, concepts), committed under ``output_dir/passes/name``."""
    from bagnet_keras.explain.atlas import feature_atlas
    from bagnet_keras.explain.concepts import class_concepts
    from bagnet_keras.explain.factorize import factorize
    from bagnet_keras.metrics.comparison import is_bagnet
    from bagnet_keras.report.atlas_page import ModelAtlas

    folder = os.path.join(output_dir, PASSES, name)
    options = dict(batch_size=settings["batch_size"], preprocess=prep, progress=progress, shard=shard)
    atlas = feature_atlas(
        model, files, layers, units=settings["units"], k=settings["k"], folder=os.path.join(folder, "units"), **options
    )
    entry = ModelAtlas(atlas=atlas)
    channels = int(atlas.mean[atlas.layers[-1]].shape[0])
    try:
        entry.groups = factorize(
            model,
            files,
            atlas.layers[-1],
            n_groups=min(settings["groups"], channels),
            k=settings["k"],
            folder=os.path.join(folder, "groups"),
            **options,
        )
    except ValueError as error:  # a layer with negative activations has no NMF; the rest of the page stands
        print(f"{name}: no factorised groups ({error})")
    if is_bagnet(model):
        entry.concepts = class_concepts(
            model,
            files,
            files.labels,
            n_concepts=settings["concepts"],
            folder=os.path.join(folder, "concepts"),
            **options,
        )
    return entry


def _write_atlas_page(entries: dict, files, prep, output_dir: str) -> str:
    from bagnet_keras.report.atlas_page import write_atlas

    with_groups = [entry for entry in entries.values() if entry.groups is not None]
    if with_groups:  # the images the groups' maps are shown on: read once for every model
        images = next(iter(image_batches(files, 32, prep)))
        for entry in with_groups:
            entry.group_images = images
    return write_atlas(
        entries,
        files,
        output_dir,
        files.class_names,
        preprocess=prep,
        deprocess=_deprocess(prep),
        title="What the models learned across the dataset",
    )


def _atlas_settings(shard_dirs: Sequence[str]) -> dict:
    """The settings the shards of one atlas run share (their ``atlas.json`` less the shard), or a ValueError."""
    runs = []
    for folder in shard_dirs:
        path = os.path.join(folder, ATLAS_FILE)
        if not os.path.exists(path):
            raise ValueError(
                f"{folder!r} holds no atlas run ({ATLAS_FILE} is missing): name the --out folder of "
                "every shard of one `bagnet-keras atlas` run."
            )
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    settings = {key: value for key, value in runs[0].items() if key != "shard"}
    for folder, run in zip(shard_dirs, runs, strict=True):
        other = {key: value for key, value in run.items() if key != "shard"}
        if other != settings:
            differing = sorted(key for key in set(other) | set(settings) if other.get(key) != settings.get(key))
            raise ValueError(
                f"{folder!r} and {shard_dirs[0]!r} are not shards of the same atlas run (differing: "
                f"{', '.join(differing)}); merge the shards of one run only."
            )
    return settings


def merge_atlas_shards(output_dir: str, shard_dirs: Sequence[str]) -> str:
    """Join the output folders of finished shards of `atlas_models` and write the atlas page into ``output_dir``.

    The page equals that of one unsharded run. It reads the data again, only for the images it shows.
    """
    from bagnet_keras.explain.atlas import merge_atlas
    from bagnet_keras.explain.concepts import merge_concepts
    from bagnet_keras.explain.factorize import merge_groups
    from bagnet_keras.report.atlas_page import ModelAtlas

    settings = _atlas_settings(shard_dirs)
    files, prep = _atlas_data(settings)
    entries = {}
    for name, path in settings["models"].items():
        model = load_model(path)[0]
        folders = [os.path.join(d, PASSES, name) for d in shard_dirs]
        entry = ModelAtlas(
            atlas=merge_atlas(model, [os.path.join(f, "units") for f in folders], units=settings["units"])
        )
        if any(os.path.isdir(os.path.join(f, "groups")) for f in folders):
            entry.groups = merge_groups(model, [os.path.join(f, "groups") for f in folders])
        if any(os.path.isdir(os.path.join(f, "concepts")) for f in folders):
            entry.concepts = merge_concepts(
                model, [os.path.join(f, "concepts") for f in folders], n_concepts=settings["concepts"]
            )
        entries[name] = entry
    _write_classes(output_dir, files.class_names)
    return _write_pages(entries, files, prep, output_dir, settings)


#: The class names of a run's output folder, for `merge` (written once the comparison is done).
CLASSES_FILE = "classes.json"


def _write_classes(output_dir: str, names: Sequence[str]) -> None:
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, CLASSES_FILE), json.dumps(list(names)))


def _deprocess(preprocess):
    """The inverse of a backbone's preprocessing where this package knows it, else min-max display."""
    from bagnet_keras.models.imagenet import deprocess_input, preprocess_input

    return deprocess_input if preprocess is preprocess_input else None
