"""Compare explanations across models on the same images: which map is faithful to which model, and where they agree.

`compare` computes, for every model and method, one heatmap per image (for
the image's true class) and then the numbers of `bagnet_keras.metrics.faithfulness`:
deletion and insertion areas (of the true class's probability) on the
explained model and deletion on every other model (cross-model masking),
masking linearity (of its logit), pointing game and
energy in the ground-truth mask where one is given, rank correlations between
all maps of an image, shuffle sensitivity of each model, and the correlation
of the models' per-class accuracies. The result holds tidy per-image rows
and aggregates with bootstrap confidence intervals, and writes CSV and JSON.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.commit import write_atomic
from bagnet_keras.core.files import display_images
from bagnet_keras.core.graph import check_target, iter_layers
from bagnet_keras.core.inputs import check_images, output_index
from bagnet_keras.core.layers import StemConv
from bagnet_keras.explain.evidence import evidence_map, top_patches
from bagnet_keras.explain.registry import METHODS, explain
from bagnet_keras.metrics.faithfulness import (
    curve_area,
    deletion_curve,
    energy_in_mask,
    insertion_curve,
    logit_fn,
    masking_linearity,
    mean_ci,
    per_class_accuracy,
    pointing_game,
    probability_fn,
    rank_correlation,
    shuffle_sensitivity,
)
from bagnet_keras.models.bagnet import bagnet_top

# Metrics aggregated per (model, method); "deletion_on_<model>" columns are added per other model.
_MAP_METRICS = ("deletion_area", "insertion_area", "linearity_sum", "linearity_joint", "pointing", "energy")


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


@dataclass
class Comparison:
    """The result of `compare`.

    Attributes
    ----------
    rows : list of dict
        One per (image, model, method): ``image``, ``label``, ``model``,
        ``method``, ``predicted``, ``deletion_area``, ``insertion_area``,
        ``deletion_on_<other model>``, ``linearity_sum``, ``linearity_joint``,
        and ``pointing`` and ``energy`` when masks were given.
    correlations : list of dict
        One per image and pair of maps: ``image``, ``map_a``, ``map_b``, ``spearman``.
    model_rows : list of dict
        One per (image, model): ``predicted``, ``correct``, ``shuffle_kept``.
    aggregates : list of dict
        Per (model, method) and metric: ``mean``, ``low``, ``high`` (95 % bootstrap interval), ``n``.
    summary : dict
        Accuracy per model, per-class accuracy per model and their correlation between models, and
        ``seconds``: time spent per part (maps of each model and method, deletion, insertion, ...).
    maps : dict
        ``(model, method)`` -> heatmaps (N, H, W), for figures.
    curves : dict
        ``(model, method)`` -> deletion and insertion curves on the explained model, each (N, steps + 1).
    images : ndarray or None
        (N, H, W, 3) uint8: the images as shown (the preprocessing undone by ``deprocess``).
    labels : ndarray or None
        (N,) the true classes.
    evidence : dict
        For the first BagNet among the models: ``"model"`` (its name), ``"predicted"`` (N, H, W) its
        evidence for its predicted class on the pixels, and ``"boxes"`` (N, 3, 4) the boxes of the three
        patches with the most evidence for the true class; empty without a BagNet.
    patches : dict
        Class index -> `TopPatches` of that BagNet over the class's images (patch pixels as uint8).

    `bagnet_keras.report.html.write_report` draws the report from these alone, running no model.
    """

    rows: list = field(default_factory=list)
    correlations: list = field(default_factory=list)
    model_rows: list = field(default_factory=list)
    aggregates: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    evidence: dict = field(default_factory=dict)
    patches: dict = field(default_factory=dict)

    def aggregate(self, model: str, method: str, metric: str) -> dict:
        """The aggregate row of one metric (KeyError if it was not computed)."""
        for row in self.aggregates:
            if (row["model"], row["method"], row["metric"]) == (model, method, metric):
                return row
        raise KeyError((model, method, metric))

    def save(self, output_dir: str | os.PathLike) -> list[str]:
        """Write ``rows.csv``, ``correlations.csv``, ``models.csv``, ``aggregates.csv`` and ``comparison.json``."""
        os.makedirs(output_dir, exist_ok=True)
        written = []
        for name, table in (("rows", self.rows), ("correlations", self.correlations),
                            ("models", self.model_rows), ("aggregates", self.aggregates)):  # fmt: skip
            written.append(_write_csv(os.path.join(output_dir, f"{name}.csv"), table))
        payload = {"summary": self.summary, "aggregates": self.aggregates, "rows": self.rows,
                   "correlations": self.correlations, "models": self.model_rows}  # fmt: skip
        text = json.dumps(_plain(payload), indent=2, sort_keys=True)
        path = write_atomic(os.path.join(output_dir, "comparison.json"), text)
        return [*written, path]


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_csv(path: str, table: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(key for row in table for key in row)))
    writer.writeheader()
    writer.writerows(_plain(table))
    return write_atomic(path, text.getvalue())


def _collect(images, labels, output):
    """Arrays from a dataset of ``(images, labels)`` batches (labels by head when a dict); arrays pass through."""
    if isinstance(images, np.ndarray) or keras.ops.is_tensor(images) or isinstance(images, list):
        if labels is None:
            raise ValueError("`labels` are needed with an image array (one true class per image).")
        return images, labels
    xs, ys = [], []
    for batch in images:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("A dataset given as `images` must yield (images, labels) batches.")
        x, y = batch[0], batch[1]
        if isinstance(y, Mapping):
            if output is None or output not in y:
                raise ValueError(f"The dataset's labels are by head {sorted(y)}; pass output=<head name>.")
            y = y[output]
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    if not xs:
        raise ValueError("The dataset is empty.")
    return np.concatenate(xs), np.concatenate(ys) if labels is None else labels


def compare(
    models: Mapping[str, keras.Model],
    images,
    labels: Sequence[int] | None = None,
    masks: np.ndarray | None = None,
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
) -> Comparison:
    """Explain the same images with every model and method, and measure the maps.

    Parameters
    ----------
    models : mapping name -> keras.Model
        E.g. ``{"cnn": finetuned_vgg, "bagnet": finetuned_bagnet}``; all take
        the same preprocessed ``images``.
    images : array (N, H, W, C), or a dataset of ``(images, labels)`` batches
        Preprocessed images (a `data_tools.loader.image_dataset` split, for example).
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

    Returns
    -------
    Comparison

    Examples
    --------
    >>> result = compare({"cnn": cnn, "bagnet": bagnet}, x_test, y_test, masks=masks)  # doctest: +SKIP
    >>> result.aggregate("bagnet", "evidence", "deletion_area")["mean"]  # doctest: +SKIP
    0.41
    """
    check_target(target)
    if not isinstance(models, Mapping) or not models:
        raise ValueError("`models` must map names to Keras models, e.g. {'cnn': cnn, 'bagnet': bagnet}.")
    images, labels = _collect(images, labels, output)
    x = check_images(images, 1, channels=None)
    labels = np.asarray(labels).astype(int).ravel()
    if len(labels) != len(x):
        raise ValueError(f"`labels` must have one class per image ({len(x)}). Received {len(labels)}.")
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != x.shape[:3]:
            raise ValueError(f"`masks` must be (N, H, W) = {x.shape[:3]}. Received {masks.shape}.")
    per_model = _methods(models, methods, output)
    scorers = {name: logit_fn(model, output) for name, model in models.items()}
    probabilities = {name: probability_fn(scorer) for name, scorer in scorers.items()}
    sizes = {name: int(model.outputs[output_index(model, output)].shape[-1]) for name, model in models.items()}
    n_classes = n_classes or max(sizes.values())
    result = Comparison()
    seconds: Counter = Counter()

    @contextlib.contextmanager
    def timed(part: str):
        start = time.perf_counter()
        yield
        seconds[part] += time.perf_counter() - start

    predicted = {}
    for name, scorer in scorers.items():
        with timed(f"predict {name}"):
            predicted[name] = scorer(x).argmax(axis=1)
        with timed(f"shuffle test {name}"):
            kept = shuffle_sensitivity(scorer, x, grid=shuffle_grid)
        for i in range(len(x)):
            result.model_rows.append({"image": i, "model": name, "label": int(labels[i]),
                                      "predicted": int(predicted[name][i]),
                                      "correct": bool(predicted[name][i] == labels[i]),
                                      "shuffle_kept": bool(kept[i])})  # fmt: skip
    total = sum(len(m) for m in per_model.values())
    bar = tqdm(total=total * len(x), desc="compare", unit="map", disable=None if progress else True)
    for name, model in models.items():
        for method in per_model[name]:
            with timed(f"maps {name}/{method}"):
                maps = explain(model, x, method, class_index=labels, output=output, target=target)
            result.maps[name, method] = maps
            deletion, insertion = [], []
            for i in range(len(x)):
                row = {"image": i, "label": int(labels[i]), "model": name, "method": method,
                       "predicted": int(predicted[name][i])}  # fmt: skip
                for other, probability in probabilities.items():
                    with timed(f"deletion on {other}"):
                        curve = deletion_curve(probability, x[i], maps[i], labels[i], steps, cell)
                    if other == name:
                        deletion.append(curve)
                        row["deletion_area"] = curve_area(curve)
                    else:
                        row[f"deletion_on_{other}"] = curve_area(curve)
                with timed(f"insertion on {name}"):
                    curve = insertion_curve(probabilities[name], x[i], maps[i], labels[i], steps, cell)
                insertion.append(curve)
                row["insertion_area"] = curve_area(curve)
                with timed(f"linearity on {name}"):
                    row["linearity_sum"], row["linearity_joint"] = masking_linearity(
                        scorers[name], x[i], maps[i], labels[i], linearity_k, cell
                    )
                if masks is not None and masks[i].any():
                    row["pointing"] = pointing_game(maps[i], masks[i])
                    row["energy"] = energy_in_mask(maps[i], masks[i])
                result.rows.append(row)
                bar.update(1)
            result.curves[name, method] = {"deletion": np.stack(deletion), "insertion": np.stack(insertion)}
    bar.close()
    keys = list(result.maps)
    start = time.perf_counter()
    for i in range(len(x)):
        for a, b in itertools.combinations(keys, 2):
            rho = rank_correlation(result.maps[a][i], result.maps[b][i], cell)
            result.correlations.append({"image": i, "map_a": "/".join(a), "map_b": "/".join(b), "spearman": rho})
    seconds["rank correlations"] += time.perf_counter() - start
    result.aggregates = _aggregate(result.rows, result.correlations, result.model_rows)
    result.images, result.labels = display_images(x, deprocess), labels
    bagnet = next((name for name, model in models.items() if is_bagnet(model, output)), None)
    if bagnet is not None:
        with timed(f"report figures {bagnet}"):
            _bagnet_views(result, bagnet, models[bagnet], x, labels, predicted[bagnet], output, deprocess,
                          patches_per_class, n_classes)  # fmt: skip
    accuracy = {name: per_class_accuracy(labels, predicted[name], n_classes) for name in models}
    result.summary = {
        "n_images": len(x),
        "accuracy": {name: float((predicted[name] == labels).mean()) for name in models},
        "per_class_accuracy": {name: acc.tolist() for name, acc in accuracy.items()},
        "per_class_accuracy_correlation": {
            f"{a}/{b}": _pearson(accuracy[a], accuracy[b]) for a, b in itertools.combinations(models, 2)
        },
        "shuffle_kept": {name: float(np.mean([r["shuffle_kept"] for r in result.model_rows if r["model"] == name]))
                         for name in models},  # fmt: skip
        "seconds": dict(seconds),
    }
    return result


def _bagnet_views(result, name, model, x, labels, predicted, output, deprocess, k, n_classes) -> None:
    """What the report shows of a BagNet beside the maps: evidence for its prediction, boxes, patch galleries."""
    true = evidence_map(model, x, class_index=labels, output=output)
    grid_boxes = true.boxes().reshape(-1, 4)  # the same positions for every image
    best = np.argsort(-true.maps.reshape(len(x), -1), axis=1, kind="stable")[:, :3]
    result.evidence = {
        "model": name,
        "predicted": evidence_map(model, x, class_index=predicted, output=output).upsample(),
        "boxes": grid_boxes[best],
    }
    for c in range(n_classes):
        if np.any(labels == c):
            patches = top_patches(model, x[labels == c], c, k=k, output=output)
            patches.patches = display_images(patches.patches, deprocess)
            result.patches[c] = patches


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
            if method not in METHODS:
                raise ValueError(f"Unknown method {method!r} for model {name!r}; choose from {', '.join(METHODS)}.")
            if METHODS[method].bagnet_only and not is_bagnet(model, output):
                raise ValueError(f"Model {name!r} is not a BagNet: it has no {method!r} maps; use a CAM method.")
        chosen[name] = wanted
    return chosen


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    both = ~(np.isnan(a) | np.isnan(b))
    if both.sum() < 2 or np.ptp(a[both]) == 0 or np.ptp(b[both]) == 0:
        return float("nan")
    return float(np.corrcoef(a[both], b[both])[0, 1])


def _aggregate(rows: list[dict], correlations: list[dict], model_rows: list[dict]) -> list[dict]:
    out = []
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["model"], row["method"]), []).append(row)
    for (model, method), group in groups.items():
        metrics = [m for m in _MAP_METRICS if any(m in r for r in group)]
        metrics += sorted({k for r in group for k in r if k.startswith("deletion_on_")})
        for metric in metrics:
            values = [float(r[metric]) for r in group if metric in r]
            mean, low, high = mean_ci(values)
            out.append({"model": model, "method": method, "metric": metric,
                        "mean": mean, "low": low, "high": high, "n": len(values)})  # fmt: skip
    pairs: dict = {}
    for row in correlations:
        pairs.setdefault((row["map_a"], row["map_b"]), []).append(row["spearman"])
    for (a, b), values in pairs.items():
        mean, low, high = mean_ci(values)
        out.append({"model": a, "method": b, "metric": "spearman", "mean": mean, "low": low, "high": high,
                    "n": int(np.sum(~np.isnan(values)))})  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in model_rows):
        for metric in ("correct", "shuffle_kept"):
            mean, low, high = mean_ci([float(r[metric]) for r in model_rows if r["model"] == model])
            out.append({"model": model, "method": "", "metric": metric, "mean": mean, "low": low, "high": high,
                        "n": sum(r["model"] == model for r in model_rows)})  # fmt: skip
    return out
