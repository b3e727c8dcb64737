"""The explorer's data: what a CNN and a BagNet see at every position of a few images, joined in one record.

`explorer_data` gathers, for a chosen handful of images (a few per class,
misclassified ones included), what the page `bagnet_keras.report.explorer_page`
shows when a person points at a position (Olah et al., "The Building Blocks
of Interpretability", Distill 2018):

- for the CNN, its layer's NMF groups (`bagnet_keras.explain.factorize`) at
  every position: each group's activation and its attribution to each class
  (`LayerGroups.attribution(..., spatial=True)`), each group shown by its
  feature visualisation (`bagnet_keras.explain.visualization`) and its
  strongest dataset crops;
- for the BagNet, each patch's exact class evidence and, per class, the
  class concept it falls into (`ClassConcepts.assign`);
- per class, the maps to compare (Grad-CAM, the CNN's best map by the
  comparison's deletion measure, BagNet evidence) with their per-image
  measures and sanity verdicts from `bagnet_keras.metrics.comparison`.

Only the chosen images go through the models here; the dataset-level parts
(groups, concepts, comparison) come from their own streamed, committed passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from bagnet_keras.core.graph import score_function
from bagnet_keras.explain.atlas import gather
from bagnet_keras.metrics.comparison import is_bagnet
from bagnet_keras.report.page import png_bytes, png_url


def image_url(pixels: np.ndarray) -> str:
    """A PNG ``data:`` URL of an image (H, W, 3) or a grey map (H, W), uint8 or floats in 0..255.

    Examples
    --------
    >>> image_url(np.zeros((2, 2, 3))).startswith("data:image/png;base64,")
    True
    """
    array = np.clip(np.round(np.asarray(pixels, dtype="float64")), 0, 255).astype("uint8")
    return png_url(png_bytes(array, optimize=True))


def heat_url(heatmap: np.ndarray) -> str:
    """A grey PNG of a map scaled from its min (0) to its max (255); a constant map is all 0."""
    m = np.asarray(heatmap, dtype="float64")
    low, span = float(m.min()), float(m.max() - m.min())
    return image_url((m - low) / span * 255 if span > 0 else np.zeros_like(m))


def choose_images(
    labels: np.ndarray, predicted: Mapping[str, np.ndarray], per_class: int = 2, misclassified: int = 4
) -> list[int]:
    """The first ``per_class`` images of each class and the first ``misclassified`` ones any model got wrong.

    Examples
    --------
    >>> choose_images(np.array([0, 0, 0, 1, 1]), {"m": np.array([0, 1, 0, 1, 1])}, per_class=1, misclassified=1)
    [0, 1, 3]
    """
    labels = np.asarray(labels).reshape(-1)
    chosen = [int(i) for c in np.unique(labels) for i in np.flatnonzero(labels == c)[:per_class]]
    wrong = np.zeros(len(labels), bool)
    for p in predicted.values():
        wrong |= np.asarray(p).reshape(-1)[: len(labels)] != labels
    chosen += [int(i) for i in np.flatnonzero(wrong) if int(i) not in chosen][:misclassified]
    return sorted(chosen)


def _round(array) -> list:
    """Nested lists of floats for the page: a float32 to 9 significant digits (read back exactly), anything else to
    12, so that the page's 3 digits are those of the Python value (rounding to few digits here and to 3 there
    would now and then show another last digit)."""
    values = np.asarray(array)
    digits = 9 if values.dtype == np.float32 else 12
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(values.astype("float64")).tolist()


def _geometry(g) -> dict:
    return {"patch_size": int(g.patch_size), "stride": int(g.stride), "offset": int(g.offset)}


def _cnn_part(model, groups, x: np.ndarray, data, visualizations, batch_size: int) -> dict:
    """The CNN's groups at every position of ``x``, their visualisations and their strongest crops."""
    activation = groups.maps(x, batch_size=batch_size)  # (N, h, w, G)
    attribution = groups.attribution(x, batch_size=batch_size, spatial=True)  # (N, K, h, w, G)
    crops = [groups.crops(data, g, count=4, batch_size=batch_size) for g in range(len(groups.components))]
    return {
        "name": model.name,
        "layer": groups.layer,
        "grid": list(activation.shape[1:3]),
        "geometry": _geometry(groups.geometry),
        "groups": [
            {
                "name": f"group {g}",
                "visualization": None if visualizations is None else image_url(visualizations[g]),
                "examples": [image_url(c) for c in crops[g]],
            }
            for g in range(len(groups.components))
        ],
        "activation": _round(activation),
        "attribution": _round(np.moveaxis(attribution, 1, -1)),  # (N, h, w, G, K)
    }


def _bagnet_part(model, concepts, x: np.ndarray, data, batch_size: int) -> dict:
    """The BagNet's exact evidence at every patch of ``x``, and the class concept each patch falls into."""
    from bagnet_keras.explain.evidence import evidence_for

    ev = evidence_for(model, None)
    features = np.asarray(ev.native(x, batch_size))  # (N, h, w, D)
    evidence = features @ np.asarray(ev.kernel) + np.asarray(ev.bias)
    n_classes = evidence.shape[-1]
    concept_of = np.full(evidence.shape, -1, dtype=int)
    listed = {}
    if concepts is not None:
        for c in range(n_classes):
            concept_of[..., c] = concepts.assign(features, c)
            listed[str(c)] = [
                {
                    "share": float(concept.share),
                    "examples": [
                        image_url(p) for p in concepts.crops(data, concept.examples[:4], batch_size=batch_size)
                    ],
                }
                for concept in concepts.concepts.get(c, [])
            ]
    return {
        "name": model.name,
        "grid": list(evidence.shape[1:3]),
        "geometry": _geometry(ev.geometry),
        "evidence": _round(evidence),
        "concept": concept_of.tolist(),
        "concepts": listed,
    }


def _map_specs(models: Mapping, cnn: str | None, bagnet: str | None, comparison) -> list[tuple[str, str, str]]:
    """``(model, method, label)`` of the maps compared per class: Grad-CAM, the CNN's best map, BagNet evidence."""
    specs = []
    if cnn is not None:
        specs.append((cnn, "gradcam", f"{cnn} Grad-CAM"))
        if comparison is not None:
            theirs = [m for model, m in comparison.maps if model == cnn]
            scored = {m: comparison.aggregate(cnn, m, "deletion_area")["mean"] for m in theirs}
            if scored:
                best = min(scored, key=scored.get)
                if best != "gradcam":
                    specs.append((cnn, best, f"{cnn}'s best map by deletion: {best}"))
    if bagnet is not None:
        specs.append((bagnet, "evidence", f"{bagnet} evidence"))
    return specs


def _verdicts(comparison, model: str, method: str, indices: Sequence[int]) -> tuple[dict, dict, dict]:
    """Per image measures, their means, and the sanity verdicts of one map, from the comparison (or empty)."""
    if comparison is None:
        return {}, {}, {"randomization": None, "invariance": None}
    rows = {r["image"]: r for r in comparison.rows if (r["model"], r["method"]) == (model, method)}
    measures = [m for m in ("pointing", "deletion_area") if any(m in r for r in rows.values())]
    scores = {m: [rows.get(i, {}).get(m) for i in indices] for m in measures}
    summary = {m: comparison.aggregate(model, method, m)["mean"] for m in measures}
    checks = comparison.sanity_verdicts().get((model, method), {})
    return scores, summary, {check: checks.get(check) for check in ("randomization", "invariance")}


def _maps_part(models: Mapping, specs, x: np.ndarray, n_classes: int, comparison, indices) -> list[dict]:
    from bagnet_keras.explain.registry import explain

    out = []
    for model, method, label in specs:
        per_class = [explain(models[model], x, method, class_index=c) for c in range(n_classes)]  # K x (N, H, W)
        scores, summary, sanity = _verdicts(comparison, model, method, indices)
        out.append(
            {
                "model": model,
                "method": method,
                "label": label,
                "heat": [[heat_url(per_class[c][i]) for c in range(n_classes)] for i in range(len(x))],
                "scores": {m: [None if v is None else float(v) for v in values] for m, values in scores.items()},
                "summary": {m: float(v) for m, v in summary.items()},
                "sanity": sanity,
            }
        )
    return out


def _roles(models: Mapping, groups, cnn: str | None, bagnet: str | None) -> tuple[str | None, str | None]:
    """Which model is the BagNet (exact evidence) and which the CNN (the model ``groups`` factorised)."""
    if bagnet is None:
        bagnet = next((name for name, m in models.items() if is_bagnet(m)), None)
    if cnn is None and groups is not None:
        cnn = next((name for name, m in models.items() if m is groups._model), None)
    for role, name in (("cnn", cnn), ("bagnet", bagnet)):
        if name is not None and name not in models:
            raise ValueError(f"`{role}`={name!r} is not one of the models {sorted(models)}.")
    if cnn is not None and groups is None:
        raise ValueError(f"The CNN {cnn!r} is shown by its NMF groups: pass groups=factorize(...).")
    return cnn, bagnet


def _predicted(models: Mapping, data, preprocess, comparison, batch_size: int) -> dict[str, np.ndarray]:
    """Each model's predicted class per image: from the comparison, or one streamed pass over the data."""
    if comparison is not None and comparison.model_rows:
        n = 1 + max(r["image"] for r in comparison.model_rows)
        out = {name: np.full(n, -1) for name in models}
        for r in comparison.model_rows:
            if r["model"] in out:
                out[r["model"]][r["image"]] = r["predicted"]
        return out
    from bagnet_keras.explain.atlas import image_batches

    out = {name: [] for name in models}
    for x in image_batches(data, batch_size, preprocess):
        for name, model in models.items():
            out[name].append(np.argmax(np.asarray(score_function(model, 0, "logit")(x)), axis=-1))
    return {name: np.concatenate(p) if p else np.zeros(0, int) for name, p in out.items()}


def _group_visualizations(model, groups, preprocess, steps: int, seed: int, progress: bool) -> np.ndarray:
    """Each NMF group's feature visualisation: the image that most excites its direction in the layer."""
    from bagnet_keras.explain.objectives import direction
    from bagnet_keras.explain.visualization import feature_visualization

    objectives = [direction(groups.layer, component) for component in groups.components]
    return feature_visualization(
        model, objectives, steps=steps, preprocess=preprocess, seed=seed, progress=progress
    ).images


def explorer_data(
    models: Mapping[str, keras.Model],
    data,
    labels,
    class_names: Sequence[str],
    *,
    groups=None,
    concepts=None,
    comparison=None,
    indices: Sequence[int] | None = None,
    per_class: int = 2,
    misclassified: int = 4,
    preprocess: Callable | None = None,
    visualizations: np.ndarray | None = None,
    visualization_steps: int = 128,
    cnn: str | None = None,
    bagnet: str | None = None,
    title: str = "What the models see",
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Everything the explorer page shows, for a few images of ``data`` (pixels 0..255, ``preprocess``-ed for
    the models): see the module's description and `bagnet_keras.report.explorer_page.render_explorer`.

    ``groups`` (`factorize` of the CNN) and ``concepts`` (`class_concepts` of the BagNet) are the
    dataset-level passes; ``comparison`` (`compare`) adds the maps' measures and sanity verdicts.
    ``visualizations`` (G, H, W, 3) are the groups' feature visualisations, made with
    ``visualization_steps`` steps when not given (0: none).

    Examples
    --------
    >>> page = explorer_data({"cnn": cnn}, x, y, names, groups=factorize(cnn, x, "conv3"))  # doctest: +SKIP
    >>> sorted(page)  # doctest: +SKIP
    ['bagnet', 'class_names', 'cnn', 'images', 'maps', 'title']
    """
    cnn, bagnet = _roles(models, groups, cnn, bagnet)
    labels = np.asarray(labels).reshape(-1)
    if indices is None:
        predicted = _predicted(models, data, preprocess, comparison, batch_size)
        indices = choose_images(labels, predicted, per_class, misclassified)
    found = gather(data, indices, batch_size)
    pixels = np.stack([found[int(i)] for i in indices]).astype("float32")
    x = pixels if preprocess is None else np.asarray(preprocess(pixels.copy()), "float32")
    scores = {name: np.asarray(score_function(m, 0, "probability")(x)) for name, m in models.items()}
    images = [
        {
            "index": int(i),
            "label": int(labels[i]),
            "src": image_url(pixels[n]),
            "size": list(pixels.shape[1:3]),
            "models": {
                m: {"predicted": int(np.argmax(p[n])), "probabilities": _round(p[n])} for m, p in scores.items()
            },
        }
        for n, i in enumerate(indices)
    ]
    if cnn is not None and visualizations is None and visualization_steps:
        visualizations = _group_visualizations(models[cnn], groups, preprocess, visualization_steps, seed, progress)
    return {
        "title": title,
        "class_names": list(class_names),
        "images": images,
        "cnn": None if cnn is None else _cnn_part(models[cnn], groups, x, data, visualizations, batch_size),
        "bagnet": None if bagnet is None else _bagnet_part(models[bagnet], concepts, x, data, batch_size),
        "maps": _maps_part(
            models, _map_specs(models, cnn, bagnet, comparison), x, len(class_names), comparison, indices
        ),
    }


def write_explorer(
    models: Mapping[str, keras.Model],
    data,
    labels,
    output_dir: str | os.PathLike,
    class_names: Sequence[str],
    **options,
) -> str:
    """Write ``output_dir/explorer.html``: one self-contained page, no network request (`explorer_data`'s options).

    Examples
    --------
    >>> write_explorer({"cnn": cnn, "bagnet": bagnet}, x, y, "runs/explore", names, groups=groups)  # doctest: +SKIP
    'runs/explore/explorer.html'
    """
    from bagnet_keras.report.explorer_page import write_explorer_page

    page = explorer_data(models, data, labels, class_names, **options)
    os.makedirs(output_dir, exist_ok=True)
    return write_explorer_page(page, str(output_dir))
