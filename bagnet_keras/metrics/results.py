"""The result of a comparison (`Comparison`), assembled from its per-batch parts, with its tables and aggregates.

`bagnet_keras.metrics.comparison.compare` measures a dataset batch by batch
and commits each batch as a part (`bagnet_keras.core.stream`); `assemble`
reads the parts in order and builds the result: every per-image row, the
curves, the aggregates with bootstrap intervals computed from the rows, and
the few images (with their maps) that a report shows. Images and maps of
the others are never held. Nothing here runs a model or loads TensorFlow.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bagnet_keras.core.commit import atomic_target, write_atomic
from bagnet_keras.core.stream import merged_store
from bagnet_keras.metrics.faithfulness import mean_ci, per_class_accuracy

# Metrics aggregated per (model, method); "deletion_on_<model>" columns are added per other model.
_MAP_METRICS = ("deletion_area", "insertion_area", "linearity_sum", "linearity_joint", "pointing", "energy")

#: Misclassified images whose maps a comparison keeps for the report, besides the first ``report_images``.
MISCLASSIFIED_SHOWN = 24


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
        Accuracy per model, per-class accuracy per model and their correlation between models,
        ``passes`` (model inputs scored per image, by model), ``seconds``: time spent per part
        (maps of each model and method, the masking passes, ...), and ``layers``: ``"model/method"`` ->
        the layer each CAM-family map explains at.
    curves : dict
        ``(model, method)`` -> ``"deletion"`` and ``"insertion"`` curves on the explained model, and
        ``"deletion_on_<other>"``, the same cells masked for each other model, each (N, steps + 1).
    labels : ndarray or None
        (N,) the true classes.
    shown : ndarray
        (S,) indices of the images whose pixels and maps are kept for the report: the first
        ``report_images`` and the first misclassified ones (by any model).
    images : ndarray or None
        (S, H, W, 3) uint8: those images as shown (the preprocessing undone by ``deprocess``).
    maps : dict
        ``(model, method)`` -> their heatmaps (S, H, W).
    evidence : dict
        For the first BagNet among the models: ``"model"`` (its name), ``"predicted"`` (S, H, W) its
        evidence for its predicted class on the pixels, and ``"boxes"`` (S, 3, 4) the boxes of the three
        patches with the most evidence for the true class; empty without a BagNet.
    patches : dict
        Class index -> `TopPatches` of that BagNet over the class's images (patch pixels as uint8).
    sanity : dict
        The sanity checks of every model and method (`bagnet_keras.metrics.sanity.sanity_checks`), when
        ``compare(..., sanity=n)`` asked for them; empty otherwise.

    `bagnet_keras.report.html.write_report` draws the report from these alone, running no model.
    """

    rows: list = field(default_factory=list)
    correlations: list = field(default_factory=list)
    model_rows: list = field(default_factory=list)
    aggregates: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    labels: np.ndarray | None = None
    shown: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    images: np.ndarray | None = None
    maps: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)
    patches: dict = field(default_factory=dict)
    sanity: dict = field(default_factory=dict)

    def aggregate(self, model: str, method: str, metric: str) -> dict:
        """The aggregate row of one metric (KeyError if it was not computed)."""
        for row in self.aggregates:
            if (row["model"], row["method"], row["metric"]) == (model, method, metric):
                return row
        raise KeyError((model, method, metric))

    def sanity_verdicts(self) -> dict[tuple[str, str], dict[str, bool | None]]:
        """``(model, method)`` -> ``{"randomization": passed, "invariance": passed}`` of the checks that were run
        (None: undecided, the maps were constant); empty without sanity checks.

        Examples
        --------
        >>> sanity = {"randomization": [{"model": "m", "method": "gradcam", "passed": None}], "invariance": []}
        >>> Comparison(sanity=sanity).sanity_verdicts()
        {('m', 'gradcam'): {'randomization': None}}
        """
        verdicts: dict = {}
        for check in ("randomization", "invariance"):
            for e in (self.sanity or {}).get(check, []):
                passed = None if e["passed"] is None else bool(e["passed"])
                verdicts.setdefault((e["model"], e["method"]), {})[check] = passed
        return verdicts

    def save(self, output_dir: str | os.PathLike) -> list[str]:
        """Write ``rows.csv``, ``correlations.csv``, ``models.csv``, ``aggregates.csv``, ``comparison.json``
        and, with sanity checks, ``sanity.json``.

        Each file is written row by row through a temporary file (no second copy of the tables in memory)
        and renamed when complete.
        """
        os.makedirs(output_dir, exist_ok=True)
        written = []
        tables = {
            "rows": self.rows,
            "correlations": self.correlations,
            "models": self.model_rows,
            "aggregates": self.aggregates,
        }
        for name, table in tables.items():
            written.append(_write_csv(os.path.join(output_dir, f"{name}.csv"), table))
        path = os.path.join(output_dir, "comparison.json")
        with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write('{"summary": ' + json.dumps(_plain(self.summary), sort_keys=True))
            for name, key in (
                ("aggregates", "aggregates"),
                ("rows", "rows"),
                ("correlations", "correlations"),
                ("models", "models"),
            ):
                f.write(f',\n"{name}": [')
                for k, row in enumerate(tables[key]):
                    f.write((",\n " if k else "\n ") + json.dumps(_plain(row), sort_keys=True))
                f.write("\n]")
            f.write("}\n")
        written.append(path)
        if self.sanity:
            written.append(write_atomic(os.path.join(output_dir, "sanity.json"), json.dumps(_plain(self.sanity))))
        return written


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
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in table for key in row)))
        writer.writeheader()
        for row in table:
            writer.writerow(_plain(row))
    return path


def assemble(
    store,
    keys: list[tuple[str, str]],
    models: list[str],
    n_classes: int,
    report_images: int,
    patches_per_class: int,
    bagnet: str | None,
) -> Comparison:
    """The `Comparison` of a run from its committed parts (read one at a time, in order).

    ``keys`` are the run's (model, method) maps in the order the parts number them.
    """
    parts = _Parts(keys, models, report_images, patches_per_class, bagnet)
    for index in store.indices():
        parts.add(*store.read(index))
    if not parts.labels:
        raise ValueError("The comparison holds no images (no batch was measured).")
    result = parts.result
    result.labels = np.asarray(parts.labels, dtype=int)
    result.curves = {
        key: {kind: np.concatenate(c) for kind, c in curves.items() if sum(map(len, c)) == len(parts.labels)}
        for key, curves in parts.curves.items()
    }
    _set_shown(result, parts.shown, keys, bagnet)
    result.patches = _top_patches(parts.candidates)
    result.aggregates = _aggregate(result.rows, result.correlations, result.model_rows)
    result.summary = _summary(result, models, n_classes, dict(parts.seconds), dict(parts.passes))
    return result


class _Parts:
    """What `assemble` gathers from the parts: their rows, curves, the images shown and the best patches."""

    def __init__(self, keys: list, models: list[str], report_images: int, patches_per_class: int, bagnet):
        self.keys, self.bagnet = keys, bagnet
        self.report_images, self.patches_per_class = report_images, patches_per_class
        self.result = Comparison()
        self.curves: dict = {key: {"deletion": [], "insertion": []} for key in keys}
        self.others = {key: [(m, other) for m, other in enumerate(models) if other != key[0]] for key in keys}
        self.labels, self.seconds, self.passes = [], Counter(), Counter()
        self.shown: list = []  # (image, pixels, maps, (evidence, boxes) or None) for the report
        self.candidates: dict[int, list] = {}  # class -> best patches so far: (score, image, box, pixels)
        self.wrong_kept = 0

    def add(self, arrays, meta: dict) -> None:
        self.result.rows += meta["rows"]
        self.result.correlations += meta["correlations"]
        self.result.model_rows += meta["model_rows"]
        self.labels += meta["labels"]
        self.seconds.update(meta["seconds"])
        self.passes.update(meta["passes"])
        self._add_curves(arrays)
        self._add_shown(arrays, meta)
        if self.bagnet is not None:
            self._add_patches(arrays)

    def _add_curves(self, arrays) -> None:
        for j, key in enumerate(self.keys):
            for kind in ("deletion", "insertion"):
                self.curves[key][kind].append(arrays[f"{kind}_{j}"])
            for m, other in self.others[key]:
                if f"deletion_{j}_on_{m}" in arrays:  # parts written before these curves were kept have none
                    self.curves[key].setdefault(f"deletion_on_{other}", []).append(arrays[f"deletion_{j}_on_{m}"])

    def _add_shown(self, arrays, meta: dict) -> None:
        """Keep the first ``report_images`` images and the first `MISCLASSIFIED_SHOWN` misclassified ones."""
        for p, image in enumerate(arrays["shown_index"].tolist()):
            wrong = any(not r["correct"] for r in meta["model_rows"] if r["image"] == image)
            first = image < self.report_images
            if not first and not (wrong and self.wrong_kept < MISCLASSIFIED_SHOWN):
                continue
            self.wrong_kept += wrong
            maps = [arrays[f"shown_map_{j}"][p] for j in range(len(self.keys))]
            ev = (arrays["shown_evidence"][p], arrays["shown_boxes"][p]) if self.bagnet is not None else None
            self.shown.append((image, arrays["shown_images"][p], maps, ev))

    def _add_patches(self, arrays) -> None:
        for q, c in enumerate(arrays["patch_class"].tolist()):
            self.candidates.setdefault(c, []).append(
                (
                    float(arrays["patch_score"][q]),
                    int(arrays["patch_image"][q]),
                    arrays["patch_boxes"][q],
                    arrays["patch_pixels"][q],
                )
            )
        k = self.patches_per_class
        for c in self.candidates:  # keep the best k: what later parts can still be compared with
            self.candidates[c] = sorted(self.candidates[c], key=lambda item: (-item[0], item[1]))[:k]


def _set_shown(result: Comparison, shown: list, keys: list, bagnet: str | None) -> None:
    """The report's images, their maps and the BagNet's evidence and boxes, stacked."""
    result.shown = np.array([item[0] for item in shown], dtype=int)
    result.images = np.stack([item[1] for item in shown]) if shown else None
    result.maps = {key: np.stack([item[2][j] for item in shown]) for j, key in enumerate(keys)} if shown else {}
    if bagnet is not None and shown:
        result.evidence = {
            "model": bagnet,
            "predicted": np.stack([item[3][0] for item in shown]),
            "boxes": np.stack([item[3][1] for item in shown]),
        }


def _top_patches(candidates: dict[int, list]) -> dict:
    """Class index -> `TopPatches` of the best patches gathered; empty without a BagNet."""
    if not candidates:
        return {}
    from bagnet_keras.explain.evidence import TopPatches

    return {
        c: TopPatches(
            scores=np.array([b[0] for b in candidates[c]], dtype="float32"),
            image_index=np.array([b[1] for b in candidates[c]]),
            boxes=np.stack([b[2] for b in candidates[c]]),
            patches=np.stack([b[3] for b in candidates[c]]),
            class_index=c,
        )
        for c in sorted(candidates)
    }


def merge_shards(folders, output_dir: str | os.PathLike | None = None) -> Comparison:
    """The comparison of a whole run from the folders of its finished shards (``compare(..., shard=(i, n))``).

    The rows, aggregates and report views equal those of one unsharded run
    over the same data with the same arguments. Raises ValueError, naming
    the folder and the value, for folders that are not the finished shards
    0..n-1 of one run (other models or arguments, a shard missing, twice or
    unfinished).

    Parameters
    ----------
    folders : sequence of paths
        Each shard's ``output_dir``.
    output_dir : path, optional
        Write the tables (`Comparison.save`) here.

    Examples
    --------
    >>> shards = [f"runs/compare/shard-{i}" for i in range(3)]
    >>> result = merge_shards(shards, "runs/compare/merged")  # doctest: +SKIP
    """
    store, complete = merged_store([os.fspath(f) for f in folders])
    keys = [tuple(key) for key in complete["keys"]]
    result = assemble(
        store,
        keys,
        complete["models"],
        complete["n_classes"],
        complete["report_images"],
        complete["patches_per_class"],
        complete["bagnet"],
    )
    result.sanity = complete.get("sanity", {})
    result.summary["layers"] = complete.get("layers", {})  # shards of an earlier version recorded none
    if output_dir is not None:
        result.save(output_dir)
    return result


def _summary(result: Comparison, models: list[str], n_classes: int, seconds: dict, passes: dict) -> dict:
    labels = result.labels
    predicted = {name: np.array([r["predicted"] for r in result.model_rows if r["model"] == name]) for name in models}
    accuracy = {name: per_class_accuracy(labels, predicted[name], n_classes) for name in models}
    return {
        "n_images": len(labels),
        "accuracy": {name: float((predicted[name] == labels).mean()) for name in models},
        "per_class_accuracy": {name: acc.tolist() for name, acc in accuracy.items()},
        "per_class_accuracy_correlation": {
            f"{a}/{b}": _pearson(accuracy[a], accuracy[b]) for a, b in itertools.combinations(models, 2)
        },
        "shuffle_kept": {
            name: float(np.mean([r["shuffle_kept"] for r in result.model_rows if r["model"] == name]))
            for name in models
        },
        "passes": {name: passes.get(name, 0) / len(labels) for name in models},
        "seconds": seconds,
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    both = ~(np.isnan(a) | np.isnan(b))
    if both.sum() < 2 or np.ptp(a[both]) == 0 or np.ptp(b[both]) == 0:
        return float("nan")
    return float(np.corrcoef(a[both], b[both])[0, 1])


def _aggregate(rows: list[dict], correlations: list[dict], model_rows: list[dict]) -> list[dict]:
    """Mean and 95 % bootstrap interval of every metric: per map, per pair of maps, per model."""
    return _map_aggregates(rows) + _correlation_aggregates(correlations) + _model_aggregates(model_rows)


def _aggregate_row(model: str, method: str, metric: str, values, n: int) -> dict:
    mean, low, high = mean_ci(values)
    return {"model": model, "method": method, "metric": metric, "mean": mean, "low": low, "high": high, "n": n}


def _map_aggregates(rows: list[dict]) -> list[dict]:
    out = []
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["model"], row["method"]), []).append(row)
    for (model, method), group in groups.items():
        metrics = [m for m in _MAP_METRICS if any(m in r for r in group)]
        metrics += sorted({k for r in group for k in r if k.startswith("deletion_on_")})
        for metric in metrics:
            values = [float(r[metric]) for r in group if metric in r]
            out.append(_aggregate_row(model, method, metric, values, len(values)))
    return out


def _correlation_aggregates(correlations: list[dict]) -> list[dict]:
    """Spearman correlation of each pair of maps (``model`` and ``method`` hold the two maps' names)."""
    pairs: dict = {}
    for row in correlations:
        pairs.setdefault((row["map_a"], row["map_b"]), []).append(row["spearman"])
    out = []
    for (a, b), values in pairs.items():
        values = np.asarray(values, dtype="float64")
        out.append(_aggregate_row(a, b, "spearman", values, int(np.sum(~np.isnan(values)))))
    return out


def _model_aggregates(model_rows: list[dict]) -> list[dict]:
    out = []
    for model in dict.fromkeys(r["model"] for r in model_rows):
        for metric in ("correct", "shuffle_kept"):
            values = [float(r[metric]) for r in model_rows if r["model"] == model]
            out.append(_aggregate_row(model, "", metric, values, sum(r["model"] == model for r in model_rows)))
    return out
