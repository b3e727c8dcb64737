"""The main job, offline: what a BagNet and an ordinary CNN look at, measured, on generated scenes with known answers.

`run_demo` generates scenes of six classes with ground-truth masks (`data_tools.synthetic.motif_scene`): four
told apart by a small motif (a disc among them, so that only its hole tells a ring), two that hold the same
dot and bar and differ only in their arrangement. It cleans and splits them like a crawled dataset, trains a
small BagNet and a small CNN from scratch on the CPU, compares their explanations
(`bagnet_keras.metrics.comparison`: BagNet evidence against the CNN's Grad-CAM at two layers, Layer-CAM and
the white-box attributions, with their sanity checks), states what the numbers say, and writes the HTML
report. With ``data=`` it runs on a dataset folder instead (no masks), and with ``weights="imagenet"`` it
fine-tunes BagNet-33 and DenseNet-121 (the same input preprocessing) instead of training small models.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from bagnet_keras.core.commit import check_arguments, write_atomic
from bagnet_keras.core.validation import check_int
from bagnet_keras.metrics.comparison import Comparison, compare
from bagnet_keras.models.bagnet import BagNet
from bagnet_keras.models.imagenet import deprocess_input, preprocess_input
from bagnet_keras.report.findings import Finding, percent
from bagnet_keras.report.html import write_report
from bagnet_keras.transfer.heads import build_classifier
from bagnet_keras.transfer.training import fit_classifier


def small_cnn(input_shape: tuple, width: int = 16) -> keras.Model:
    """An ordinary CNN feature extractor (conv-BN-ReLU, max pooling) whose receptive field spans the image.

    Examples
    --------
    >>> small_cnn((64, 64, 3)).output_shape
    (None, 4, 4, 128)
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for stage, filters in enumerate((width, 2 * width, 4 * width, 4 * width, 8 * width)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"conv{stage + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"conv{stage + 1}_relu")(x)
        if stage < 4:
            x = keras.layers.MaxPooling2D(name=f"pool{stage + 1}")(x)
    return keras.Model(inputs, x, name="small_cnn")


def small_bagnet(input_shape: tuple, width: int = 16) -> keras.Model:
    """A BagNet-17 feature extractor (one block per stage): each position sees a 17 x 17 patch.

    The stem has at least 16 channels whatever ``width`` is: the first shortcut (1x1, stride 2) reads the
    stem, and training such a convolution on fewer channels crashes TensorFlow's oneDNN on AVX-512 CPUs
    when a batch has an odd size (issue 17; ``tools/onednn_check.py`` reproduces it).

    Examples
    --------
    >>> small_bagnet((64, 64, 3)).output_shape
    (None, 6, 6, 512)
    """
    return BagNet(
        blocks=(1, 1, 1, 1),
        kernel3=(1, 1, 1, 0),
        base_width=width,
        stem_width=max(width, 16),
        include_top=False,
        input_shape=input_shape,
        name="small_bagnet",
    )


#: Optimisation steps of the demo's feature visualisations: feature_visualization's own default (at 128, one
#: unit of the full demo's BagNet stayed below its strongest test image).
VISUALIZATION_STEPS = 256

#: The white-box attributions of the BagNet paper's masking experiment (and two more gradient maps).
WHITE_BOX = ("saliency", "gradient_x_input", "integrated_gradients", "smoothgrad", "epsilon_lrp", "deeplift")


def demo_methods(fine_layer: str) -> dict[str, list[str]]:
    """What the demo explains: BagNet evidence and Grad-CAM; for the CNN, Grad-CAM at its last conv layer and,
    so that the BagNet meets the CNN's best map, Grad-CAM and Layer-CAM at a finer layer and every white-box
    attribution.

    Examples
    --------
    >>> demo_methods("conv3_relu")["cnn"][:3]
    ['gradcam', 'gradcam@conv3_relu', 'layercam@conv3_relu']
    """
    return {
        "bagnet": ["evidence", "gradcam"],
        "cnn": ["gradcam", f"gradcam@{fine_layer}", f"layercam@{fine_layer}", *WHITE_BOX],
    }


def _passes_sanity(result: Comparison, model: str, method: str) -> bool:
    """Whether a map passed both sanity checks (False where they were not run)."""
    checks = result.sanity_verdicts().get((model, method), {})
    return checks.get("randomization") is True and bool(checks.get("invariance"))


def _mean(values) -> float:
    """The mean of ``values`` as a float; NaN when there are none."""
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else float("nan")


def _pointing_finding(result: Comparison, motif: set, bagnet: str, cnn: str, cnn_maps: list) -> Finding:
    """The pointing game on the local-motif classes: BagNet evidence against each of the CNN's maps."""

    def pointing(model, method):
        return _mean(
            r["pointing"]
            for r in result.rows
            if (r["model"], r["method"]) == (model, method) and r["label"] in motif and "pointing" in r
        )

    ev, cam_bag = pointing(bagnet, "evidence"), pointing(bagnet, "gradcam")
    scores = {method: pointing(cnn, method) for method in cnn_maps}
    best = max(scores, key=lambda m: (scores[m], m == "gradcam"))
    numbers = f"BagNet evidence {percent(ev)}; best CNN map {best} {percent(scores[best])}"
    trusted = [m for m in cnn_maps if _passes_sanity(result, cnn, m)]
    if result.sanity and trusted:
        second = max(trusted, key=lambda m: scores[m])
        numbers += f"; best passing both sanity checks {second} {percent(scores[second])}"
    listing = ", ".join(f"{m} {percent(v)}" for m, v in scores.items())
    numbers += f"; all CNN maps: {listing}; Grad-CAM of the BagNet {percent(cam_bag)}"
    return Finding(
        "Pointing game on the local-motif classes: BagNet evidence hits the motif at least as often as the "
        "CNN's best map",
        ev >= scores[best],
        numbers,
    )


def _arrangement_finding(result: Comparison, pair: set, class_names: Sequence[str], bagnet: str, cnn: str) -> Finding:
    """The arrangement-only pair: out of a bag of local features' reach, within a CNN's."""
    accuracy = {
        m: _mean(r["correct"] for r in result.model_rows if r["model"] == m and r["label"] in pair)
        for m in (bagnet, cnn)
    }
    return Finding(
        "On the arrangement-only pair only the CNN sees the arrangement (BagNet below 75 %, CNN at least)",
        accuracy[bagnet] < 0.75 <= accuracy[cnn],
        f"{' vs '.join(class_names[c] for c in sorted(pair))}: BagNet {percent(accuracy[bagnet])}, "
        f"CNN {percent(accuracy[cnn])} (chance 50 %)",
    )


def _deletion_finding(result: Comparison, bagnet: str, cnn: str, cnn_maps: list) -> Finding:
    """Deletion on the BagNet: its own maps against the CNN's best map's cells."""
    own = {
        method: result.aggregate(bagnet, method, "deletion_area")["mean"]
        for (model, method) in result.maps
        if model == bagnet
    }
    on_bagnet = {method: result.aggregate(cnn, method, f"deletion_on_{bagnet}")["mean"] for method in cnn_maps}
    best = min(on_bagnet, key=on_bagnet.get)
    own[f"CNN's best map ({best})"] = on_bagnet[best]
    lowest = min(own, key=own.get)
    return Finding(
        "Deletion area on the BagNet (lower: its top cells matter more) is lowest for BagNet evidence",
        lowest == "evidence",
        ", ".join(f"{k} {v:.3f}" for k, v in own.items()),
    )


def _masking_finding(result: Comparison, bagnet: str, cnn: str, white: list) -> Finding:
    """The BagNet paper's masking experiment: the BagNet's cells masked for the CNN, against its own attributions'."""
    crossed = result.aggregate(bagnet, "evidence", f"deletion_on_{cnn}")["mean"]
    theirs = {m: result.aggregate(cnn, m, "deletion_area")["mean"] for m in white}
    strongest = min(theirs, key=theirs.get)
    listing = ", ".join(f"{m} {v:.3f}" for m, v in theirs.items())
    return Finding(
        "Masking the cells the BagNet finds most informative hurts the CNN at least as much as its own best "
        "attribution's (as in the BagNet paper)",
        crossed <= theirs[strongest],
        f"CNN's deletion area: BagNet's cells {crossed:.3f}; best own attribution {strongest} "
        f"{theirs[strongest]:.3f}; all its white-box attributions: {listing}",
    )


def _sanity_finding(sanity: dict) -> Finding:
    """Which maps failed which sanity check (a plain statement: some maps are expected to fail)."""
    failed = []
    for e, s in zip(sanity["randomization"], sanity["invariance"], strict=True):
        why = [w for w, bad in (("randomisation", e["passed"] is False), ("input shift", not s["passed"])) if bad]
        if why:
            failed.append(f"{e['model']} {e['method']} ({' and '.join(why)})")
    checked = len(sanity["randomization"])
    claim = f"Sanity checks on {sanity['images']} test images: " + (
        f"{len(failed)} of {checked} maps fail one or both" if failed else f"all {checked} maps pass both"
    )
    return Finding(claim, None, f"failed: {', '.join(failed)}" if failed else "")


def demo_findings(
    result: Comparison, labels: np.ndarray, class_names: Sequence[str], bagnet: str, cnn: str
) -> list[Finding]:
    """The demo's claims, each with its verdict and its numbers (`bagnet_keras.report.findings.Finding`).

    BagNet evidence is compared with the CNN's best map by each measure (named), not with one chosen map.

    Examples
    --------
    >>> for finding in demo_findings(result, files.labels, names, "bagnet", "cnn"):  # doctest: +SKIP
    ...     print(finding)
    ✓ Pointing game on the local-motif classes: BagNet evidence hits ... — BagNet evidence 91 %; ...
    """
    from data_tools.synthetic import ARRANGEMENT_CLASSES, LOCAL_CLASSES

    cnn_maps = [method for model, method in result.maps if model == cnn]
    motif = {class_names.index(c) for c in LOCAL_CLASSES if c in class_names}
    pair = {class_names.index(c) for c in ARRANGEMENT_CLASSES if c in class_names}
    findings = []
    if motif and any("pointing" in r for r in result.rows):
        findings.append(_pointing_finding(result, motif, bagnet, cnn, cnn_maps))
    if pair:
        findings.append(_arrangement_finding(result, pair, class_names, bagnet, cnn))
    findings.append(_deletion_finding(result, bagnet, cnn, cnn_maps))
    white = [m for m in cnn_maps if m in WHITE_BOX]
    if white and (bagnet, "evidence") in result.maps:
        findings.append(_masking_finding(result, bagnet, cnn, white))
    if result.sanity:
        findings.append(_sanity_finding(result.sanity))
    accuracy = result.summary["accuracy"]
    findings.append(Finding("Test accuracy", None, f"BagNet {percent(accuracy[bagnet])}, CNN {percent(accuracy[cnn])}"))
    return findings


def _atlas(models, entries, files, masks, names, output_dir: str, preprocess, steps: int) -> list[Finding]:
    """The atlas page (``atlas.html``) of both models with their units' visualisations, and its findings."""
    from bagnet_keras.app.demo_atlas import atlas_findings
    from bagnet_keras.app.demo_visualization import demo_visualizations
    from bagnet_keras.report.atlas_page import write_atlas

    seen = demo_visualizations(models, entries, names, preprocess, steps=steps)
    seen.save(os.path.join(output_dir, VISUALIZATIONS_FILE))
    write_atlas(
        entries,
        files,
        output_dir,
        names,
        preprocess=preprocess,
        deprocess=deprocess_input,
        title="What the demo's CNN and BagNet learned",
        max_units=12,
    )
    findings = seen.findings()
    if masks is None:
        return findings
    atlas, groups, concepts = entries["cnn"].atlas, entries["cnn"].groups, entries["bagnet"].concepts
    return findings + atlas_findings(
        atlas, groups, concepts, np.asarray(masks[: len(masks)], dtype=bool), files.labels, names
    )


#: The demo's feature visualisations (units of both models, the CNN's NMF groups), kept for the explorer.
VISUALIZATIONS_FILE = "visualizations.npz"


def _dataset_passes(models, files, preprocess, progress: bool) -> dict:
    """The passes over the test images: the CNN's units and NMF groups, the BagNet's units and class concepts."""
    from bagnet_keras.core.graph import last_spatial_layer
    from bagnet_keras.explain.atlas import feature_atlas
    from bagnet_keras.explain.concepts import class_concepts
    from bagnet_keras.explain.factorize import factorize
    from bagnet_keras.report.atlas_page import ModelAtlas

    options = dict(preprocess=preprocess, progress=progress, batch_size=64)
    layer = last_spatial_layer(models["cnn"])[0]
    atlas = feature_atlas(models["cnn"], files, [layer], k=9, **options)
    groups = factorize(models["cnn"], files, layer, n_groups=6, k=9, **options)
    concepts = class_concepts(models["bagnet"], files, files.labels, n_concepts=4, patches=100, **options)
    bagnet_units = feature_atlas(
        models["bagnet"], files, [last_spatial_layer(models["bagnet"])[0]], units=8, k=9, **options
    )
    sample = np.asarray(preprocess(np.asarray(files[:64], dtype="float32")))
    return {
        "cnn": ModelAtlas(atlas=atlas, groups=groups, group_images=sample),
        "bagnet": ModelAtlas(atlas=bagnet_units, concepts=concepts),
    }


def _explorer(models, entries, files, names, output_dir: str, preprocess, result: Comparison, progress: bool) -> str:
    """``explorer.html``: the atlas's groups and concepts and the comparison's verdicts, at every position of a
    few test images."""
    from bagnet_keras.app.demo_visualization import DemoVisualizations
    from bagnet_keras.report.explorer import write_explorer

    seen = DemoVisualizations.load(os.path.join(output_dir, VISUALIZATIONS_FILE))
    return write_explorer(
        models,
        files,
        files.labels,
        output_dir,
        names,
        groups=entries["cnn"].groups,
        concepts=entries["bagnet"].concepts,
        comparison=result,
        preprocess=preprocess,
        visualizations=None if seen is None else seen.groups,
        cnn="cnn",
        bagnet="bagnet",
        title="What the demo's CNN and BagNet see, position by position",
        progress=progress,
    )


class _Stages:
    """The demo's finished stages, in ``<output_dir>/stages.json`` (written atomically after each stage)."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "stages.json")
        self.finished = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.finished = json.load(f)

    def done(self, stage: str) -> bool:
        return stage in self.finished

    def mark(self, stage: str) -> None:
        if stage not in self.finished:
            self.finished.append(stage)
            write_atomic(self.path, json.dumps(self.finished))


def run_demo(
    output_dir: str = "runs/demo",
    data: str | None = None,
    weights: str | None = None,
    per_class: int = 400,
    image_size: int = 64,
    epochs: int = 30,
    width: int = 8,
    seed: int = 0,
    patience: int | None = None,
    visualization_steps: int = VISUALIZATION_STEPS,
    progress: bool = True,
) -> str:
    """Generate (or take) a dataset, train a BagNet and a CNN, compare their explanations, write the report.

    Parameters
    ----------
    output_dir : str
        Output folder: ``data/`` and ``masks/`` (generated), ``models/``, ``comparison/``, ``report.html``,
        ``atlas.html`` (the units, groups and class concepts of both models, with their feature
        visualisations) and ``explorer.html`` (what both models see at each position of a few images),
        with ``run.json`` (the arguments) and ``stages.json`` (the stages done). Running the demo again into
        it goes on where it stopped: finished stages are skipped, training resumes from its last epoch;
        other arguments into the same folder are refused.
    data : str, optional
        A dataset folder (one sub-folder per class, e.g. crawled) instead of the generated scenes.
    weights : None or "imagenet"
        ``"imagenet"`` fine-tunes BagNet-33 and DenseNet-121 (224 x 224) instead of training small models.
    per_class, image_size, epochs, width, seed
        Generated images per class, their side, training epochs, width of the small BagNet (the CNN
        gets twice as many channels), seed.
    patience : int, optional
        Early stopping on validation loss; default none (the small BagNet's validation loss rises while
        its accuracy still improves).
    visualization_steps : int
        Optimisation steps of each feature visualisation of the atlas and the explorer.
    progress : bool

    Returns
    -------
    str
        The report's path.

    Examples
    --------
    >>> run_demo("runs/demo")  # doctest: +SKIP
    'runs/demo/report.html'
    """
    from data_tools.loader import ImageFiles

    _check_demo_arguments(data, weights, per_class, image_size, epochs, width, seed, patience)
    check_int(visualization_steps, "visualization_steps", low=1)
    say = _Say(progress)
    os.makedirs(output_dir, exist_ok=True)
    # A rerun of the same demo goes on where it stopped (each stage below resumes or is skipped when done);
    # one with other arguments into the same folder is refused rather than mixed with it.
    check_arguments(
        output_dir,
        dict(
            data=data,
            weights=weights,
            per_class=per_class,
            image_size=image_size,
            epochs=epochs,
            width=width,
            seed=seed,
            patience=patience,
            # recorded only when not the default, so that the run folders of earlier versions still resume
            **({} if visualization_steps == VISUALIZATION_STEPS else {"visualization_steps": visualization_steps}),
        ),
    )
    stages = _Stages(output_dir)
    keras.utils.set_random_seed(seed)
    data, masks_root = _prepare_data(data, output_dir, stages, say, per_class, image_size, seed)
    setup = demo_setup(weights, image_size, width)
    size = (setup.image_size, setup.image_size)
    models, names = _train(setup, data, output_dir, say, epochs=epochs, patience=patience, seed=seed)
    files = ImageFiles(data, size, split="test")
    masks = ImageFiles(data, size, split="test", masks_root=masks_root) if masks_root else None
    say(f"comparing explanations on {len(files)} test images")
    result = compare(
        models,
        files,
        files.labels,
        masks=masks,
        methods=demo_methods(setup.fine_layer),
        progress=progress,
        n_classes=len(names),
        deprocess=deprocess_input,
        preprocess=setup.preprocess,
        sanity=min(8, len(files)),
        output_dir=os.path.join(output_dir, "comparison"),
    )
    findings = demo_findings(result, files.labels, names, "bagnet", "cnn")
    atlas_findings, entries = _atlas_stage(
        models, files, masks, names, output_dir, setup.preprocess, stages, say, visualization_steps
    )
    findings += atlas_findings
    _explorer_stage(models, entries, files, names, output_dir, setup.preprocess, result, stages, say)
    for finding in findings:
        say(finding)
    path = os.path.join(output_dir, "report.html")
    # A finished run's report stays: the same comparison and findings would draw the same figures again.
    if not (stages.done("report") and os.path.exists(path)):
        write_report(result, names, output_dir, title="What a BagNet and a CNN look at", findings=findings)
        stages.mark("report")
    say(f"report: {os.path.abspath(path)}")
    return path


class _Say:
    """Prints a stage's message with the seconds since the demo started (nothing without progress)."""

    def __init__(self, progress: bool):
        self.progress = progress
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.progress:
            print(f"[{time.monotonic() - self.start:6.1f} s] {message}", flush=True)


def _check_demo_arguments(data, weights, per_class, image_size, epochs, width, seed, patience) -> None:
    """Refuse a bad argument before anything is written: a refused demo leaves its output folder as it was."""
    if data is not None and not os.path.isdir(data):
        raise ValueError(f"`data` must be a dataset folder (one sub-folder per class). Received: data={data!r}")
    _check_weights(weights)
    check_int(per_class, "per_class", low=1)
    check_int(image_size, "image_size", low=32)
    check_int(epochs, "epochs", low=1)
    check_int(width, "width", low=1)
    check_int(seed, "seed", low=0)
    check_int(patience, "patience", low=1, allow_none=True)


def _prepare_data(data, output_dir: str, stages: _Stages, say: _Say, per_class: int, image_size: int, seed: int):
    """The dataset folder, generated when none is given, cleaned and split once; and the masks' folder (or None)."""
    from data_tools.clean import clean
    from data_tools.split import split
    from data_tools.synthetic import write_motif_dataset

    masks_root = None
    if data is None:
        data, masks_root = os.path.join(output_dir, "data"), os.path.join(output_dir, "masks")
        if not stages.done("generate"):
            say(f"generating {per_class} scenes per class into {data}")
            write_motif_dataset(data, masks_root, per_class, image_size, seed)
            stages.mark("generate")
    if not stages.done("clean and split"):
        say("clean and split")
        # A generated scene may lose a line of uniform margin to the crop; it stays usable.
        report = clean(data, min_size=min(64, image_size // 2), progress=say.progress)
        say(f"clean kept {report.kept} images ({report.duplicates} near-duplicates, {report.rejected} unusable)")
        _check_split(split(data, seed=seed), data)
        stages.mark("clean and split")
    return data, masks_root


def _check_split(counts: dict, data: str) -> None:
    """A ValueError naming the empty split, where the dataset is too small to give each split an image."""
    sizes = {name: sum(counts[name].values()) for name in ("train", "val", "test")}
    empty = [name for name, size in sizes.items() if not size]
    if empty:
        listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise ValueError(
            f"The dataset {data!r} is too small for the demo: its {' and '.join(empty)} split would be empty "
            f"(images per split: {listed}; split 80/10/10 %). Give it about 10 or more images per class."
        )


@dataclass
class DemoSetup:
    """The demo's two models before training, and what they share.

    ``backbones`` maps ``"bagnet"`` and ``"cnn"`` to a backbone name (fine-tuned) or a Keras model
    (trained from scratch); both models take the same ``preprocess``-ed images of side ``image_size``;
    ``fine_layer`` is the CNN's finer layer for Grad-CAM and Layer-CAM (`demo_methods`).
    """

    backbones: dict
    preprocess: Callable
    fine_layer: str
    image_size: int


def demo_setup(weights: str | None, image_size: int, width: int) -> DemoSetup:
    """The models the demo trains: small ones from scratch (``weights=None``) or BagNet-33 and DenseNet-121.

    Examples
    --------
    >>> setup = demo_setup(None, 64, 8)
    >>> setup.fine_layer, setup.image_size, sorted(setup.backbones)
    ('conv3_relu', 64, ['bagnet', 'cnn'])
    """
    _check_weights(weights)
    if weights == "imagenet":
        from bagnet_keras.transfer.backbones import get_backbone

        # DenseNet-121's ImageNet preprocessing is the BagNets' (torch-style mean and std), so both
        # models explain the very same input arrays.
        backbones = {"bagnet": "bagnet33", "cnn": "densenet121"}
        preprocess = {name: get_backbone(b).preprocess for name, b in backbones.items()}
        _check_one_preprocessing(preprocess)
        # 14 x 14 at 224, where the last dense block's 7 x 7 is coarse
        return DemoSetup(backbones, preprocess["bagnet"], "conv4_block24_concat", 224)
    shape = (image_size, image_size, 3)
    backbones = {"bagnet": small_bagnet(shape, width), "cnn": small_cnn(shape, 2 * width)}
    # a quarter of the input's side: 16 x 16 at 64 px, against conv5's 4 x 4
    return DemoSetup(backbones, preprocess_input, "conv3_relu", image_size)


def _check_weights(weights) -> None:
    if weights not in (None, "imagenet"):
        raise ValueError(f"`weights` must be None (small models from scratch) or 'imagenet'. Received: {weights!r}")


def _check_one_preprocessing(preprocess: dict) -> None:
    probe = np.linspace(0, 255, 48, dtype="float32").reshape(1, 4, 4, 3)
    if not np.allclose(np.asarray(preprocess["bagnet"](probe.copy())), np.asarray(preprocess["cnn"](probe.copy()))):
        raise ValueError("The demo compares both models on the same preprocessed images; use one preprocessing.")


def _train(setup: DemoSetup, data: str, output_dir: str, say: _Say, epochs: int, patience, seed: int):
    """Both models trained (or their training resumed) under ``output_dir/models``, and the class names."""
    from data_tools.loader import image_dataset

    size = (setup.image_size, setup.image_size)
    train = image_dataset(data, size, batch_size=32, split="train", preprocess=setup.preprocess, cache=True, seed=seed)
    val = image_dataset(data, size, batch_size=64, split="val", preprocess=setup.preprocess, cache=True)
    names = train.class_names
    models = {}
    for name, backbone in setup.backbones.items():
        say(f"training the {name} ({'fine-tuning ' + backbone if isinstance(backbone, str) else 'from scratch'})")
        mode = "finetune" if isinstance(backbone, str) else "scratch"
        model = build_classifier(
            backbone, {"label": len(names)}, mode=mode, input_shape=(*size, 3), dropout=0.3, name=name
        )
        fit_classifier(
            model,
            train,
            val,
            epochs=epochs,
            head_epochs=max(1, epochs // 3),
            learning_rate=1e-3,
            patience=patience,
            output_dir=os.path.join(output_dir, "models", name),
            seed=seed,
            verbose="auto" if say.progress else 0,
        )
        models[name] = model
    return models, names


def _atlas_stage(models, files, masks, names, output_dir: str, preprocess, stages: _Stages, say: _Say, steps: int):
    """The atlas page, made once (``stages.json``), and its findings, kept in ``atlas_findings.json``; and the
    passes over the data when they were made here (else None)."""
    atlas_file = os.path.join(output_dir, "atlas_findings.json")
    entries = None
    if not stages.done("atlas"):
        say("the atlas: what the CNN's last conv layer and the BagNet's classes are made of, over the test images")
        entries = _dataset_passes(models, files, preprocess, say.progress)
        findings = _atlas(models, entries, files, masks, names, output_dir, preprocess, steps)
        write_atomic(atlas_file, json.dumps([f.to_json() for f in findings]))
        stages.mark("atlas")
    with open(atlas_file, encoding="utf-8") as f:
        return [Finding.from_json(value) for value in json.load(f)], entries


def _explorer_stage(models, entries, files, names, output_dir: str, preprocess, result, stages, say) -> None:
    """The explorer page, made once (a demo folder of an earlier version gains it when run again)."""
    if not stages.done("explorer"):
        say("the explorer: what both models see at each position of a few test images")
        entries = entries or _dataset_passes(models, files, preprocess, say.progress)
        _explorer(models, entries, files, names, output_dir, preprocess, result, say.progress)
        stages.mark("explorer")
