"""Compare explanations across models on the same images, batch by batch: which map is faithful to which model.

`compare` computes, for every model and method, one heatmap per image (for
the image's true class) and then the numbers of `bagnet_keras.metrics.faithfulness`:
deletion and insertion areas (of the true class's probability) on the
explained model and deletion on every other model (cross-model masking),
masking linearity (of its logit), pointing game and energy in the
ground-truth mask where one is given, rank correlations between all maps of
an image, shuffle sensitivity of each model, and the correlation of the
models' per-class accuracies.

It streams: images are read ``batch_size`` at a time (from arrays or a
dataset), each batch's masked copies of all its images go through each model
in full batches (`bagnet_keras.metrics.masking`), and the batch's rows are
committed as one part (`bagnet_keras.core.stream`) before the next batch is
read. Only the images a report shows are kept. With ``output_dir`` the parts
are files: a killed run, started again with the same arguments, skips the
batches it committed and ends with exactly the rows of an uninterrupted run.
The result (`bagnet_keras.metrics.results.Comparison`) is assembled from the
parts: tidy per-image rows and aggregates with bootstrap intervals.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.backend import has_accelerator, require_tensorflow
from bagnet_keras.core.batches import batches, is_array
from bagnet_keras.core.files import display_images
from bagnet_keras.core.graph import check_target, find_layer, iter_layers
from bagnet_keras.core.inputs import check_image_model, check_images, output_index
from bagnet_keras.core.layers import StemConv
from bagnet_keras.core.stream import MemoryStore, PartStore, check_shard, digest, function_name, run_parts
from bagnet_keras.core.tokens import attends
from bagnet_keras.core.validation import check_int, check_number, check_positive_int
from bagnet_keras.explain.cam import cam_layer
from bagnet_keras.explain.evidence import evidence_map
from bagnet_keras.explain.registry import METHODS, explain, parse_method
from bagnet_keras.metrics.faithfulness import (
    curve_area,
    energy_in_mask,
    logit_fn,
    pointing_game,
    rank_correlation,
    shuffle_sensitivity,
)
from bagnet_keras.metrics.masking import (
    Passes,
    class_scores,
    deletion_passes,
    insertion_passes,
    rank_positions,
    score_passes,
    single_cell_passes,
)
from bagnet_keras.metrics.results import MISCLASSIFIED_SHOWN, Comparison, assemble
from bagnet_keras.metrics.sanity import sanity_checks
from bagnet_keras.models.bagnet import bagnet_top
from bagnet_keras.models.inference import with_dtype_policy

__all__ = ["Comparison", "compare", "default_batch_size", "is_bagnet"]


def is_bagnet(model: keras.Model, output: int | str | None = None) -> bool:
    """Whether ``model`` is a BagNet (its stem) with a BagNet top on ``output``, so it has exact evidence maps.

    Any network ending in average pooling and a linear layer has such a top;
    only a BagNet's small receptive field makes each position's value the
    evidence of one local patch.
    """
    try:
        bagnet_top(model, output)
    except ValueError:
        return False
    return any(isinstance(layer, StemConv) for _, layer in iter_layers(model))


def default_batch_size() -> int:
    """Images per model call when none is given: 16 on CPUs, 64 where Keras sees an accelerator.

    On a CPU a batch of 16 BagNet-33 inputs of 224 x 224 already keeps every
    core busy, and its activations stay near a gigabyte; a GPU needs larger
    batches to be busy.
    """
    return 64 if has_accelerator() else 16


@dataclass
class _Settings:
    """The arguments of one comparison but its models and data, each checked on creation."""

    output: int | str | None = None
    steps: int = 20
    cell: int = 8
    linearity_k: int = 10
    shuffle_grid: int = 4
    n_classes: int | None = None
    progress: bool = True
    target: str = "logit"
    deprocess: Callable | None = None
    patches_per_class: int = 8
    batch_size: int | None = None
    output_dir: str | None = None
    report_images: int = 12
    preprocess: Callable | None = None
    shard: tuple[int, int] | None = None
    jit_compile: bool = False
    strategy: object = None
    dtype_policy: str | None = None
    sanity: int = 0
    sanity_shift: float = 1.0

    def __post_init__(self):
        require_tensorflow("strategy", self.strategy)  # first: refused before the backend is asked anything
        check_target(self.target)
        self.batch_size = default_batch_size() if self.batch_size is None else self.batch_size
        for name in ("batch_size", "steps", "cell", "linearity_k", "shuffle_grid", "patches_per_class"):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        self.n_classes = check_int(self.n_classes, "n_classes", low=1, allow_none=True)
        self.report_images = check_int(self.report_images, "report_images", low=0)
        self.sanity = check_int(self.sanity, "sanity", low=0)
        self.sanity_shift = check_number(self.sanity_shift, "sanity_shift")
        self.shard = check_shard(self.shard)
        if self.shard is not None and self.output_dir is None:
            raise ValueError("A shard commits its batches for merge_shards to join: give it an output_dir.")

    def wanted(self, index: int) -> bool:
        """Whether batch ``index`` is this run's (all are, unless it is a shard)."""
        return self.shard is None or index % self.shard[1] == self.shard[0]


def _check_data(images, labels, masks) -> None:
    """A ValueError where the labels or masks beside an image array do not fit it."""
    if not is_array(images):
        return
    n_images = len(images)
    if labels is None:
        raise ValueError("`labels` are needed with an image array (one true class per image).")
    if len(labels) != n_images:
        raise ValueError(f"`labels` must have one class per image ({n_images}). Received {len(labels)}.")
    if masks is not None and tuple(np.shape(masks)) != tuple(np.shape(images)[:3]):
        raise ValueError(
            f"`masks` must be (N, H, W) = {tuple(np.shape(images)[:3])}. Received {tuple(np.shape(masks))}."
        )


def _chunks(images, labels, masks, settings: _Settings) -> Iterator[tuple | None]:
    """``(images, labels, masks)`` of each batch of exactly ``batch_size`` images (`bagnet_keras.core.batches`).

    A dataset's batches are re-cut to ``batch_size``, so that batch numbers (parts, shards) mean the same
    images as for an array; labels by head give the explained head's. Another shard's batches are None.
    """
    for start, x, y in batches(images, settings.batch_size, labels=labels, wanted=settings.wanted, exact=True):
        if x is None:
            yield None
            continue
        if y is None:
            raise ValueError("A dataset given as `images` must yield (images, labels) batches.")
        if isinstance(y, Mapping):
            if settings.output is None or settings.output not in y:
                raise ValueError(f"The dataset's labels are by head {sorted(y)}; pass output=<head name>.")
            y = y[settings.output]
        yield x, y, None if masks is None else np.asarray(masks[start : start + len(x)])


@dataclass
class _Setup:
    """What every batch of one comparison is measured with."""

    models: Mapping[str, keras.Model]
    scorers: dict
    keys: list
    output: int | str | None
    target: str
    steps: int
    cell: int
    linearity_k: int
    shuffle_grid: int
    batch_size: int
    bagnet: str | None
    deprocess: Callable | None
    report_images: int
    patches_per_class: int
    has_masks: bool


def _prepare(models, methods, settings: _Settings, has_masks: bool) -> tuple[_Setup, dict]:
    """The comparison's `_Setup` and the ``run.json`` arguments that identify its rows."""
    if not isinstance(models, Mapping) or not models:
        raise ValueError("`models` must map names to Keras models, e.g. {'cnn': cnn, 'bagnet': bagnet}.")
    for model in models.values():
        check_image_model(model, channels=None)
    output = settings.output
    per_model = _methods(models, methods, output)
    keys = [(name, method) for name in models for method in per_model[name]]
    if not keys:
        raise ValueError("No maps to measure: `methods` names none for any model.")
    sizes = {name: int(model.outputs[output_index(model, output)].shape[-1]) for name, model in models.items()}
    weights = {name: digest(*model.get_weights()) for name, model in models.items()}
    strategy = settings.strategy
    if settings.dtype_policy is not None:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            models = {name: with_dtype_policy(model, settings.dtype_policy) for name, model in models.items()}
    settings.n_classes = settings.n_classes or max(sizes.values())
    setup = _Setup(
        models=models,
        scorers={
            name: logit_fn(model, output, settings.batch_size, settings.jit_compile, strategy)
            for name, model in models.items()
        },
        keys=keys,
        output=output,
        target=settings.target,
        steps=settings.steps,
        cell=settings.cell,
        linearity_k=settings.linearity_k,
        shuffle_grid=settings.shuffle_grid,
        batch_size=settings.batch_size,
        bagnet=next((name for name, model in models.items() if is_bagnet(model, output)), None),
        deprocess=settings.deprocess,
        report_images=settings.report_images,
        patches_per_class=settings.patches_per_class,
        has_masks=has_masks,
    )
    return setup, _run_arguments(settings, weights, per_model, has_masks)


def _run_arguments(settings: _Settings, weights: dict, per_model: dict, has_masks: bool) -> dict:
    """What makes two runs' rows different: a rerun must match all of it to resume."""
    return {
        "models": weights,
        "dtype_policy": settings.dtype_policy,
        "methods": per_model,
        "output": settings.output,
        "steps": settings.steps,
        "cell": settings.cell,
        "linearity_k": settings.linearity_k,
        "shuffle_grid": settings.shuffle_grid,
        "target": settings.target,
        "batch_size": settings.batch_size,
        "n_classes": settings.n_classes,
        "masks": has_masks,
        "report_images": settings.report_images,
        "patches_per_class": settings.patches_per_class,
        "preprocess": function_name(settings.preprocess),
        "shard": settings.shard,
        "jit_compile": bool(settings.jit_compile),
        "replicas": 1 if settings.strategy is None else settings.strategy.num_replicas_in_sync,
        "sanity": settings.sanity,
        "sanity_shift": settings.sanity_shift,
    }


class _Clock:
    """Seconds spent per part of a batch's measurement, for the report's table of costs."""

    def __init__(self):
        self.seconds: Counter = Counter()

    @contextlib.contextmanager
    def __call__(self, part: str):
        begin = time.perf_counter()
        yield
        self.seconds[part] += time.perf_counter() - begin


def _checked_batch(setup: _Setup, x, labels, masks) -> tuple:
    """The batch's images (float32), labels (ints) and masks (bool), or a ValueError naming what does not fit."""
    x = check_images(x, 1, channels=None)
    labels = np.asarray(labels).astype(int).ravel()
    if len(labels) != len(x):
        raise ValueError(f"`labels` must have one class per image ({len(x)}). Received {len(labels)}.")
    if setup.has_masks:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != x.shape[:3]:
            raise ValueError(f"`masks` must be (N, H, W) = {x.shape[:3]} for these images. Received {masks.shape}.")
    return x, labels, masks


def _measure(setup: _Setup, index: int, batch: tuple) -> tuple[dict, dict]:
    """Every number of one batch of images, and what the report may show of them: a part's arrays and meta."""
    x, labels, masks = _checked_batch(setup, *batch)
    start = index * setup.batch_size
    timed, passes = _Clock(), Counter()
    logits, predicted, kept = _predictions(setup, x, start, timed, passes)
    maps = {}
    for key in setup.keys:
        with timed(f"maps {key[0]}/{key[1]}"):
            maps[key] = explain(
                setup.models[key[0]],
                x,
                key[1],
                class_index=labels,
                output=setup.output,
                target=setup.target,
                batch_size=setup.batch_size,
            )
    with timed("masking passes"):
        curves, linearity = _masking(setup, x, labels, maps, logits, passes)
    arrays = _curve_arrays(setup, curves)
    rows = _map_rows(setup, start, labels, predicted, curves, linearity, maps, masks)
    with timed("rank correlations"):
        correlations = _correlations(setup, start, maps)
    arrays.update(_shown(setup, x, labels, predicted, maps, start, timed))
    meta = {
        "labels": labels.tolist(),
        "rows": rows,
        "model_rows": _model_rows(setup, start, labels, predicted, kept),
        "correlations": correlations,
        "seconds": dict(timed.seconds),
        "passes": dict(passes),
    }
    return arrays, meta


def _predictions(setup: _Setup, x, start: int, timed: _Clock, passes: Counter) -> tuple[dict, dict, dict]:
    """Each model's logits and top classes, and whether its top class survives shuffling the tiles."""
    n = len(x)
    # Tiles that do not cover the image whole leave a crop, which needs its own pass for the top class before.
    whole = x.shape[1] % setup.shuffle_grid == 0 and x.shape[2] % setup.shuffle_grid == 0
    logits, predicted, kept = {}, {}, {}
    for name, scorer in setup.scorers.items():
        with timed(f"predict {name}"):
            logits[name] = np.asarray(scorer(x), dtype="float64")
        predicted[name] = logits[name].argmax(axis=1)
        with timed(f"shuffle test {name}"):
            kept[name] = shuffle_sensitivity(scorer, x, setup.shuffle_grid, seed=start, predicted=predicted[name]) == 1
        passes[name] += (2 if whole else 3) * n
    return logits, predicted, kept


def _model_rows(setup: _Setup, start: int, labels, predicted: dict, kept: dict) -> list[dict]:
    """One row per image and model: its prediction and the shuffle test."""
    return [
        {
            "image": start + i,
            "model": name,
            "label": int(labels[i]),
            "predicted": int(predicted[name][i]),
            "correct": bool(predicted[name][i] == labels[i]),
            "shuffle_kept": bool(kept[name][i]),
        }
        for i in range(len(labels))
        for name in setup.models
    ]


def _curve_arrays(setup: _Setup, curves: dict) -> dict:
    """The batch's deletion and insertion curves as a part's arrays."""
    arrays = {}
    for j, (name, method) in enumerate(setup.keys):
        arrays[f"deletion_{j}"] = curves[name, method][name]
        arrays[f"insertion_{j}"] = curves[name, method]["insertion"]
        for m, other in enumerate(setup.models):  # the same cells masked for the other models
            if other != name:
                arrays[f"deletion_{j}_on_{m}"] = curves[name, method][other]
    return arrays


def _map_rows(setup: _Setup, start: int, labels, predicted, curves, linearity, maps, masks) -> list[dict]:
    """One row per image and map: its curves' areas, masking linearity, and the mask's measures where given."""
    rows = []
    for i in range(len(labels)):
        for name, method in setup.keys:
            row = {
                "image": start + i,
                "label": int(labels[i]),
                "model": name,
                "method": method,
                "predicted": int(predicted[name][i]),
            }
            for other in setup.models:
                area = curve_area(curves[name, method][other][i])
                row["deletion_area" if other == name else f"deletion_on_{other}"] = area
            row["insertion_area"] = curve_area(curves[name, method]["insertion"][i])
            row["linearity_sum"], row["linearity_joint"] = linearity[name, method][i]
            if setup.has_masks and masks[i].any():
                row["pointing"] = pointing_game(maps[name, method][i], masks[i])
                row["energy"] = energy_in_mask(maps[name, method][i], masks[i])
            rows.append(row)
    return rows


def _correlations(setup: _Setup, start: int, maps: dict) -> list[dict]:
    """The rank correlation of every two maps of each image."""
    return [
        {
            "image": start + i,
            "map_a": "/".join(a),
            "map_b": "/".join(b),
            "spearman": rank_correlation(maps[a][i], maps[b][i], setup.cell),
        }
        for i in range(len(next(iter(maps.values()))))
        for a, b in itertools.combinations(setup.keys, 2)
    ]


def _shown(setup: _Setup, x, labels, predicted: dict, maps: dict, start: int, timed: _Clock) -> dict:
    """The images the report shows (the first ones and the first misclassified), their maps and BagNet views."""
    n = len(x)
    wrong = np.any([predicted[name] != labels for name in setup.models], axis=0)
    first = start + np.arange(n) < setup.report_images
    chosen = np.flatnonzero(first | (wrong & (np.cumsum(wrong) <= MISCLASSIFIED_SHOWN)))
    arrays = {"shown_index": start + chosen}
    arrays["shown_images"] = (
        display_images(x[chosen], setup.deprocess) if len(chosen) else np.zeros((0, *x.shape[1:3], 3), np.uint8)
    )
    for j, key in enumerate(setup.keys):
        arrays[f"shown_map_{j}"] = maps[key][chosen]
    if setup.bagnet is not None:
        with timed(f"report views {setup.bagnet}"):
            arrays.update(_bagnet_views(setup, x, labels, predicted[setup.bagnet], chosen, start))
    return arrays


@dataclass
class _Cells:
    """One batch's masking plan: its images and labels, the cells each map ranks first, and the fills."""

    x: np.ndarray
    labels: np.ndarray
    positions: dict
    steps: int
    k: int
    fills: np.ndarray


def _masking(setup: _Setup, x, labels, maps, logits, passes: Counter) -> tuple[dict, dict]:
    """Deletion curves on every model, insertion curves and masking linearity on the explained one.

    All deletion copies of the batch are built once and go through every model; each model's own
    copies (insertion, single cells) follow in full batches.
    """
    n = len(x)
    positions = {key: rank_positions(maps[key], setup.cell) for key in setup.keys}
    n_cells = next(iter(positions.values())).shape[1]
    fills = x.reshape(n, -1, x.shape[-1]).mean(axis=1)
    cells = _Cells(x, labels, positions, min(setup.steps, n_cells), min(setup.linearity_k, n_cells), fills)
    curves, deletion_logits = _deletion_curves(setup, cells, logits, passes)
    linearity = {}
    for name in setup.models:
        own = [key for key in setup.keys if key[0] == name]
        if own:
            linearity.update(_own_curves(setup, cells, name, own, logits, deletion_logits[name], curves, passes))
    return curves, linearity


def _deletion_curves(setup: _Setup, cells: _Cells, logits, passes: Counter) -> tuple[dict, dict]:
    """Every map's deletion curve on every model, and each model's logits of the deleted copies."""
    n, s = len(cells.x), cells.steps
    deletion = Passes.concat([deletion_passes(cells.positions[key], s) for key in setup.keys])
    scored = score_passes(setup.scorers, cells.x, deletion, cells.labels, setup.cell, setup.batch_size, cells.fills)
    base = {}  # k = 0: the unmasked image's probability, from the batch's own forward pass
    for name in setup.models:
        passes[name] += len(deletion)
        logit, lse = class_scores(logits[name], cells.labels)
        base[name] = np.exp(logit - lse)
    curves: dict = {}
    for j, key in enumerate(setup.keys):
        rows = slice(j * n * s, (j + 1) * n * s)
        curves[key] = {}
        for name, (logit, lse) in scored.items():
            probability = np.exp(logit[rows] - lse[rows]).reshape(n, s)
            curves[key][name] = np.concatenate([base[name][:, None], probability], axis=1)
    return curves, {name: logit for name, (logit, _) in scored.items()}


def _own_curves(setup: _Setup, cells: _Cells, name: str, own: list, logits, deleted, curves, passes) -> dict:
    """Insertion curves (into ``curves``) and masking linearity of the maps ``own`` of model ``name``."""
    n, s, k = len(cells.x), cells.steps, cells.k
    parts = []
    for key in own:
        parts += [insertion_passes(cells.positions[key], s), single_cell_passes(cells.positions[key], k)]
        if k > s:  # masking linearity's joint masking is not on the deletion curve
            parts.append(Passes(np.arange(n), cells.positions[key] < k))
    mine = Passes.concat(parts)
    scorer = {name: setup.scorers[name]}
    logit, lse = score_passes(scorer, cells.x, mine, cells.labels, setup.cell, setup.batch_size, cells.fills)[name]
    passes[name] += len(mine)
    unmasked = logits[name][np.arange(n), cells.labels]
    linearity, offset = {}, 0
    for key in own:
        j = setup.keys.index(key)
        rows = slice(offset, offset + n * (s + 1))
        curves[key]["insertion"] = np.exp(logit[rows] - lse[rows]).reshape(n, -1)
        offset += n * (s + 1)
        singles = logit[offset : offset + n * k].reshape(n, k)
        offset += n * k
        if k > s:
            joint = logit[offset : offset + n]
            offset += n
        else:
            joint = deleted[j * n * s : (j + 1) * n * s].reshape(n, s)[:, k - 1]
        linearity[key] = [(float(np.sum(unmasked[i] - singles[i])), float(unmasked[i] - joint[i])) for i in range(n)]
    return linearity


def _bagnet_views(setup: _Setup, x, labels, predicted, chosen, start) -> dict:
    """What the report shows of a BagNet beside the maps: evidence for its prediction, boxes, patch candidates."""
    model = setup.models[setup.bagnet]
    true = evidence_map(model, x, class_index=labels, output=setup.output, batch_size=setup.batch_size)
    grid_boxes = true.boxes().reshape(-1, 4)  # the same positions for every image
    flat = true.maps.reshape(len(x), -1)
    best = np.argsort(-flat, axis=1, kind="stable")[:, :3]
    views = {"shown_boxes": grid_boxes[best[chosen]]}
    if len(chosen):
        views["shown_evidence"] = evidence_map(
            model, x[chosen], class_index=predicted[chosen], output=setup.output, batch_size=setup.batch_size
        ).upsample()
    else:
        views["shown_evidence"] = np.zeros((0, *x.shape[1:3]), "float32")
    found = []  # (class, score, image, box, pixels): the best patch of each image, the best k per class
    for c in np.unique(labels):
        mine = []
        for i in np.flatnonzero(labels == c):
            position = np.argsort(flat[i])[::-1][0]  # as `top_patches` with max_per_image=1 picks it
            top, left, bottom, right = grid_boxes[position]
            mine.append(
                (int(c), float(flat[i, position]), start + int(i), grid_boxes[position], x[i, top:bottom, left:right])
            )
        found += sorted(mine, key=lambda item: (-item[1], item[2]))[: setup.patches_per_class]
    q = true.patch_size
    views["patch_class"] = np.array([f[0] for f in found], dtype=int)
    views["patch_score"] = np.array([f[1] for f in found], dtype="float32")
    views["patch_image"] = np.array([f[2] for f in found], dtype=int)
    views["patch_boxes"] = np.array([f[3] for f in found], dtype=int).reshape(-1, 4)
    views["patch_pixels"] = (
        display_images(np.stack([f[4] for f in found]), setup.deprocess) if found else np.zeros((0, q, q, 3), np.uint8)
    )
    return views


def compare(
    models: Mapping[str, keras.Model],
    images,
    labels: Sequence[int] | None = None,
    masks: np.ndarray | None = None,
    *,
    methods: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    output: int | str | None = None,
    steps: int = 20,
    cell: int = 8,
    linearity_k: int = 10,
    shuffle_grid: int = 4,
    n_classes: int | None = None,
    progress: bool = True,
    target: str = "logit",
    deprocess: Callable | None = None,
    patches_per_class: int = 8,
    batch_size: int | None = None,
    output_dir: str | None = None,
    report_images: int = 12,
    preprocess: Callable | None = None,
    shard: tuple[int, int] | None = None,
    jit_compile: bool = False,
    strategy=None,
    dtype_policy: str | None = None,
    sanity: int = 0,
    sanity_shift: float = 1.0,
) -> Comparison:
    """Explain the same images with every model and method, and measure the maps, batch by batch.

    Parameters
    ----------
    models : mapping name -> keras.Model
        E.g. ``{"cnn": finetuned_vgg, "bagnet": finetuned_bagnet}``; all take
        the same preprocessed ``images``.
    images : array (N, H, W, C), or a dataset of ``(images, labels)`` batches
        Preprocessed images (a `data_tools.loader.image_dataset` split, for
        example). Arrays may be memory maps: only ``batch_size`` images are
        read at a time.
    labels : sequence of N ints, optional
        True classes (taken from the dataset when one is given); maps are computed for them.
    masks : array (N, H, W) of bool, optional
        Ground-truth object masks, for the pointing game and energy in mask.
    methods : sequence or mapping name -> sequence, optional
        Methods for every model, or per model: names in
        `bagnet_keras.explain.registry.METHODS`. Default: ``"evidence"`` and
        ``"gradcam"`` for BagNets, ``"gradcam"`` for the others.
    output : int or str, optional
        The head to explain in multi-output models.
    steps : int
        Cells masked (deletion) or restored (insertion), k = 0..steps.
    cell : int
        Side of the masked cells (8 in the paper).
    linearity_k : int
        Cells of the masking-linearity test.
    shuffle_grid : int
        Tiles per side for the shuffle test.
    n_classes : int, optional
        For per-class accuracies; default: the models' output size.
    progress : bool
        Show a progress bar when the output is a terminal.
    target : {"logit", "probability"}
        The class score every map explains (the curves always measure the probability).
    deprocess : callable, optional
        Undoes the models' preprocessing, for the images the report shows
        (e.g. `bagnet_keras.deprocess_input`); default: min-max scaling.
    patches_per_class : int
        Size of each class's gallery of a BagNet's most informative patches.
    batch_size : int, optional
        Images read at a time, and inputs per model call (the masked copies of
        several images share a call). It bounds the memory: the activations
        of one batch. Default: `default_batch_size`.
    output_dir : str, optional
        Commit each batch's results into this folder as it goes
        (``parts/``, ``run.json``) and the tables at the end (``rows.csv``,
        ``comparison.json``, ...). The same call again resumes a killed run
        (finished batches are not recomputed); other arguments, models or
        data in the same folder raise a ValueError.
    report_images : int
        The first images whose pixels and maps are kept for the report
        (besides the first 24 misclassified ones).
    preprocess : callable, optional
        Applied to each batch as it is read (e.g. `bagnet_keras.preprocess_input`), so ``images`` can be
        raw pixels: a uint8 memory map, or a `data_tools.loader.ImageFiles` of a dataset folder.
    shard : (index, count), optional
        Measure only the batches whose number is ``index`` modulo ``count``: one of ``count`` processes,
        machines or cluster jobs sharing the data, each with its own ``output_dir``.
        `bagnet_keras.metrics.merge_shards` joins the finished shards into the comparison of the whole run.
    jit_compile : bool
        Compile the models' forward passes (the masked copies, the shuffle test) with XLA: faster on
        GPUs; the numbers equal those without it up to float rounding (tests/test_compare.py checks 1e-4).
    strategy : tf.distribute.Strategy, optional
        Run the passes on all replicas of this strategy (``MirroredStrategy()`` on a machine with several
        GPUs; build the models under its scope): each batch of masked copies is split across them.
    dtype_policy : {"mixed_float16", "mixed_bfloat16"}, optional
        Compute the maps and passes with copies of the models in this Keras dtype policy
        (`bagnet_keras.models.inference.with_dtype_policy`): mixed precision, about twice as fast on
        GPUs. Scores and probabilities stay float32; the rows move by float16 rounding
        (tests/test_compare.py measures it).
    sanity : int
        Run the sanity checks (`bagnet_keras.metrics.sanity`: cascading model randomisation, input
        invariance with ``sanity_shift``) of every model and method on the first ``sanity`` images of
        the first batch; the result is ``Comparison.sanity`` and the report's "Can these maps be
        trusted?". 0: no checks. A sharded run makes them in shard 0.
    sanity_shift : float
        The constant added to the inputs of the input invariance test.

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import keras, numpy as np
    >>> keras.utils.set_random_seed(0)
    >>> cnn = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    >>> x = np.random.default_rng(0).normal(size=(5, 16, 16, 3)).astype("float32")
    >>> result = compare({"cnn": cnn}, x, [0, 1, 0, 1, 0], steps=4, batch_size=2, progress=False)
    >>> len(result.rows), sorted(result.aggregate("cnn", "gradcam", "deletion_area"))
    (5, ['high', 'low', 'mean', 'method', 'metric', 'model', 'n'])
    """
    settings = _Settings(
        output=output,
        steps=steps,
        cell=cell,
        linearity_k=linearity_k,
        shuffle_grid=shuffle_grid,
        n_classes=n_classes,
        progress=progress,
        target=target,
        deprocess=deprocess,
        patches_per_class=patches_per_class,
        batch_size=batch_size,
        output_dir=output_dir,
        report_images=report_images,
        preprocess=preprocess,
        shard=shard,
        jit_compile=jit_compile,
        strategy=strategy,
        dtype_policy=dtype_policy,
        sanity=sanity,
        sanity_shift=sanity_shift,
    )
    if isinstance(images, list):  # a list of images, not of batches: sliced as an array
        images = np.asarray(images)
    _check_data(images, labels, masks)
    setup, arguments = _prepare(models, methods, settings, masks is not None)
    store = MemoryStore() if output_dir is None else PartStore(output_dir, arguments, "compare")
    with store:
        count, first = _passes(store, setup, settings, _chunks(images, labels, masks, settings), _total(images))
        details = _details(store, setup, settings, arguments["methods"], first)
        store.finish(count, details)
        if not store.indices():  # a shard without batches: the others hold the run's images
            return Comparison(summary={"n_images": 0})
        result = assemble(
            store,
            setup.keys,
            list(setup.models),
            settings.n_classes,
            settings.report_images,
            settings.patches_per_class,
            setup.bagnet,
        )
        result.sanity = details.get("sanity", {})
        result.summary["layers"] = details["layers"]
        if output_dir is not None:
            result.save(output_dir)
    return result


def _total(images) -> int | None:
    """The images of the data when it says so without being read (for the progress bar)."""
    return len(images) if is_array(images) else None


def _passes(store, setup: _Setup, settings: _Settings, chunks: Iterator, total: int | None) -> tuple[int, list]:
    """Measure and commit every batch of this run not committed yet; the batches the data has, and its first.

    The first batch is kept (read on a resumed run too) where the sanity checks need it.
    """
    bar = tqdm(total=total, desc="compare", unit="image", disable=None if settings.progress else True)
    first: list = []

    def measure(index: int, batch: tuple) -> tuple[dict, dict]:
        if settings.preprocess is not None:
            batch = (np.asarray(settings.preprocess(np.asarray(batch[0], dtype="float32"))), *batch[1:])
        part = _measure(setup, index, batch)
        bar.update(len(batch[0]))
        return part

    def kept() -> Iterator:
        for index, chunk in enumerate(chunks):
            if index == 0 and chunk is not None and settings.sanity:
                first.append(chunk)
            yield chunk

    with bar:
        committed = store.indices()
        if committed and settings.progress:
            bar.write(
                f"compare: {len(committed)} batches of {settings.batch_size} images were committed in "
                f"{settings.output_dir} by an earlier run; measuring the rest"
            )
        _, count = run_parts(store, kept(), measure, skip=lambda index: not settings.wanted(index))
    if count == 0:
        raise ValueError("`images` is empty: there is no image to compare.")
    return count, first


def _details(store, setup: _Setup, settings: _Settings, per_model: dict, first: list) -> dict:
    """What ``complete.json`` records for reading the parts back, with the sanity checks of the first batch."""
    details = {
        "keys": setup.keys,
        "models": list(setup.models),
        "n_classes": settings.n_classes,
        "report_images": settings.report_images,
        "patches_per_class": settings.patches_per_class,
        "bagnet": setup.bagnet,
        "layers": _cam_layers(setup),
    }
    earlier = store.finished() or {}
    if "sanity" in earlier:  # a finished run again (same arguments): its checks stand
        details["sanity"] = earlier["sanity"]
    elif first:
        x0 = np.asarray(first[0][0][: settings.sanity], dtype="float32")
        if settings.preprocess is not None:
            x0 = np.asarray(settings.preprocess(x0))
        details["sanity"] = sanity_checks(
            setup.models,
            per_model,
            x0,
            np.asarray(first[0][1][: settings.sanity]).astype(int),
            output=settings.output,
            target=settings.target,
            shift=settings.sanity_shift,
        )
    return details


def _cam_layers(setup: _Setup) -> dict[str, str]:
    """``"model/method"`` -> the layer each CAM-family map explains at (the default one where none was named)."""
    layers = {}
    for name, method in setup.keys:
        row, options = parse_method(method)
        if row.takes_layer:
            layers[f"{name}/{method}"] = cam_layer(setup.models[name], options.get("layer"))
    return layers


def _methods(models, methods, output) -> dict[str, list[str]]:
    chosen = {}
    for name, model in models.items():
        if methods is None:
            wanted = ["evidence", "gradcam"] if is_bagnet(model, output) else ["gradcam"]
        elif isinstance(methods, Mapping):
            wanted = list(methods.get(name, []))
        else:
            wanted = list(methods)
        for method in wanted:
            if method.partition("@")[0] not in METHODS:
                raise ValueError(
                    f"Unknown method {method!r} for model {name!r}; choose from {', '.join(METHODS)} "
                    "(a CAM method may name its layer: 'gradcam@<layer>')."
                )
            row, options = parse_method(method)
            if row.bagnet_only and not is_bagnet(model, output):
                raise ValueError(f"Model {name!r} is not a BagNet: it has no {method!r} maps; use a CAM method.")
            if row.transformer_only and not attends(model):
                raise ValueError(f"Model {name!r} has no attention: it has no {method!r} maps; use a CAM method.")
            if "layer" in options:
                find_layer(model, options["layer"])  # a missing layer is refused before anything is written
        chosen[name] = wanted
    return chosen
