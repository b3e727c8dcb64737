"""A self-contained HTML atlas of what models learned across a dataset: units, factorised groups, class concepts.

`write_atlas` draws, per model, from results already computed (no model
runs here except for the crops' projections, which `FeatureAtlas.examples`
computes): for each layer the strongest units with their top activations'
receptive-field crops beside the guided-backprop projections (Zeiler &
Fergus Fig. 2); the NMF groups of a layer with their top regions and their
attribution to each class (Building Blocks); a BagNet's class x concept table
with example patches; and the feature evolution and invariance figures when
given. Every figure is also written as a PNG under ``figures/``; the HTML is
written through a temporary file.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from bagnet_keras.core.commit import write_atomic
from bagnet_keras.core.files import display_images
from bagnet_keras.core.geometry import position_boxes
from bagnet_keras.report.page import Figures, html_document, html_table
from bagnet_keras.report.plot import plot_evolution, plot_invariance, projection_display


@dataclass
class ModelAtlas:
    """What the atlas page shows of one model; every part is optional."""

    atlas: object = None  # FeatureAtlas
    groups: object = None  # LayerGroups
    group_images: np.ndarray | None = None  # images the group attributions are averaged over
    concepts: object = None  # ClassConcepts
    evolution: list = field(default_factory=list)  # FeatureEvolution.records
    invariance: object = None  # InvarianceCurves


def _grid(rows: Sequence[tuple[str, np.ndarray]], columns: int) -> Figure:
    """One row of small images per entry: ``(title, images (n, h, w, 3) in 0..1)``."""
    fig = Figure(figsize=(1.1 * columns, 1.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (title, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
        axes[r, 0].set_title(title, fontsize=7, loc="left")
    return fig


def _units_section(name: str, entry: ModelAtlas, data, figure, deprocess, preprocess, max_units: int) -> list[str]:
    atlas = entry.atlas
    parts = [
        f"<h3>Units: strongest activations over {atlas.n_images} images</h3>"
        '<p class="note">Each row: one unit (channel), its top activations\' receptive fields (left) and the '
        "guided-backprop projection of each single activation (right, grey = 0).</p>"
    ]
    for layer in atlas.layers:
        rows = []
        for unit in atlas.units[layer][:max_units]:
            crops, projections = atlas.examples(data, layer, int(unit), preprocess=preprocess)
            shown = display_images(crops, deprocess) / 255.0
            both = np.concatenate([shown, projection_display(projections)])
            rows.append((f"{layer.split('/')[-1]} unit {unit}", both))
        parts.append(figure(_grid(rows, 2 * atlas.k), f"{name}_units_{layer.replace('/', '_')}", f"units of {layer}"))
    return parts


def _groups_section(
    name: str, entry: ModelAtlas, data, figure, deprocess, preprocess, class_names: Sequence[str]
) -> list[str]:
    from bagnet_keras.explain.atlas import crop_boxes, gather

    groups = entry.groups
    n = len(groups.components)
    rows, boxes_ok = [], groups.geometry is not None
    for g in range(n):
        top = groups.top(g)
        if not top or not boxes_ok:
            continue
        images = gather(data, sorted({t[0] for t in top}), preprocess=preprocess)
        boxes = position_boxes(groups.geometry, np.array([t[1] for t in top]), np.array([t[2] for t in top]))
        crops = crop_boxes(np.stack([images[t[0]] for t in top]), boxes)
        rows.append((f"group {g}", display_images(crops, deprocess) / 255.0))
    parts = [
        f"<h3>Building blocks: {n} groups of {html.escape(groups.layer)}</h3>"
        "<p class=\"note\">Non-negative matrix factorisation of the layer's activations; each row: a group's "
        "strongest regions over the data. The table: each group's mean attribution to each class logit "
        "(gradient x activation, split by the group's share; the groups add up to the layer's "
        "total).</p>"
    ]
    if rows:
        parts.append(figure(_grid(rows, groups.values.shape[1]), f"{name}_groups", "factorised groups"))
    if entry.group_images is not None:
        mean = groups.attribution(entry.group_images).mean(axis=0)  # (classes, groups)
        header = ["class", *[f"group {g}" for g in range(n)]]
        table_rows = [[class_names[c] if c < len(class_names) else c, *map(float, mean[c])] for c in range(len(mean))]
        parts.append(html_table(header, table_rows, "mean attribution of each group to each class logit"))
    return parts


def _concepts_section(
    name: str, entry: ModelAtlas, data, figure, deprocess, preprocess, class_names: Sequence[str], max_concepts: int = 4
) -> list[str]:
    found = entry.concepts
    header = ["class", *[f"concept {j}" for j in range(max_concepts)]]
    table_rows, rows = [], []
    for c, concepts in found.concepts.items():
        label = class_names[c] if c < len(class_names) else str(c)
        shares = [f"{k.share:.0%} ({k.n_patches})" for k in concepts[:max_concepts]]
        table_rows.append([label, *shares, *[""] * (max_concepts - len(shares))])
        for j, concept in enumerate(concepts[:max_concepts]):
            crops = found.crops(data, concept.examples, preprocess=preprocess)
            rows.append((f"{label}, concept {j}: {concept.share:.0%}", display_images(crops, deprocess) / 255.0))
    width = max((len(k.examples) for concepts in found.concepts.values() for k in concepts), default=1)
    return [
        "<h3>Class concepts (BagNet)</h3>"
        '<p class="note">Each class\'s patches with the most evidence for it, clustered by their features; '
        "a concept's share of the class's top-patch evidence, and (patches).</p>",
        html_table(header, table_rows, "class x concept"),
        figure(_grid(rows, width), f"{name}_concepts", "concept examples"),
    ]


def write_atlas(
    entries: Mapping[str, ModelAtlas],
    data,
    output_dir: str | os.PathLike,
    class_names: Sequence[str] = (),
    *,
    preprocess: Callable | None = None,
    deprocess: Callable | None = None,
    title: str = "Feature atlas",
    max_units: int = 16,
) -> str:
    """Write ``atlas.html`` (and ``figures/*.png``) into ``output_dir``; returns the page's path.

    Parameters
    ----------
    entries : mapping model name -> ModelAtlas
    data : the images the results were computed on (read again for the crops), preprocessed or raw with
        ``preprocess``
    output_dir : path
        Nothing is written outside it.
    class_names : sequence of str
    preprocess, deprocess : callables, optional
        The models' preprocessing, and its inverse for showing crops (min-max scaling without one).
    title : str
    max_units : int
        Units shown per layer.

    Examples
    --------
    >>> entries = {"cnn": ModelAtlas(atlas=feature_atlas(cnn, x, ["conv5_relu"]))}  # doctest: +SKIP
    >>> path = write_atlas(entries, x, "runs/atlas")  # doctest: +SKIP
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    figure = Figures(output_dir)
    names = list(class_names)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for name, entry in entries.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts += _model_sections(name, entry, data, figure, deprocess, preprocess, names, max_units)
    return write_atomic(os.path.join(output_dir, "atlas.html"), html_document(title, parts))


def _model_sections(
    name: str, entry: ModelAtlas, data, figure, deprocess, preprocess, names: Sequence[str], max_units: int
) -> list[str]:
    """One model's sections: units, groups, concepts, evolution, invariance (those it has)."""
    parts = []
    if entry.atlas is not None:
        parts += _units_section(name, entry, data, figure, deprocess, preprocess, max_units)
    if entry.groups is not None:
        parts += _groups_section(name, entry, data, figure, deprocess, preprocess, names)
    if entry.concepts is not None and entry.concepts.concepts:
        parts += _concepts_section(name, entry, data, figure, deprocess, preprocess, names)
    if entry.evolution:
        parts += [
            "<h3>Feature evolution</h3>",
            figure(plot_evolution(entry.evolution), f"{name}_evolution", "feature evolution"),
        ]
    if entry.invariance is not None:
        parts += [
            "<h3>Invariance</h3>",
            figure(plot_invariance(entry.invariance), f"{name}_invariance", "invariance curves"),
        ]
    return parts
