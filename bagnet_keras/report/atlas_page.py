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

from bagnet_keras.core.commit import write_atomic
from bagnet_keras.core.files import display_images
from bagnet_keras.report.page import Figures, html_document, html_table, png_bytes
from bagnet_keras.report.plot import plot_evolution, plot_invariance, projection_display


@dataclass
class ModelAtlas:
    """What the atlas page shows of one model; every part is optional.

    ``visualizations`` maps ``(layer, unit)`` (the layer's path in ``atlas.layers``, or its name) to a feature
    visualisation of that unit, an image (h, w, 3) of floats in [0, 1]; ``group_visualizations`` maps a group's
    index in ``groups`` to one. Each is shown as the first tile of its unit's (group's) row.
    """

    atlas: object = None  # FeatureAtlas
    groups: object = None  # LayerGroups
    group_images: np.ndarray | None = None  # images the group attributions are averaged over
    concepts: object = None  # ClassConcepts
    evolution: list = field(default_factory=list)  # FeatureEvolution.records
    invariance: object = None  # InvarianceCurves
    visualizations: dict = field(default_factory=dict)  # (layer, unit) -> image (h, w, 3) in [0, 1]
    group_visualizations: dict = field(default_factory=dict)  # group index -> image (h, w, 3) in [0, 1]


#: A tile's side in pixels: each image is upscaled to it without smoothing.
TILE = 100
#: The space between tiles, and above a line whose tiles have titles, in pixels.
GAP, TITLE = 6, 16
#: Tiles in one line of a figure: about the page's width (1100 px), so the page shows them at full size.
LINE = 10


@dataclass
class _Line:
    """One line of tiles: images (h, w, 3) in 0..1 or None (an empty tile), and titles by tile index."""

    tiles: list
    labels: dict = field(default_factory=dict)


@dataclass
class Grid:
    """A figure of tiles: its pixels (H, W, 3) uint8 and each tile's ``(top, left, title)`` (``TILE`` px square).

    Drawn with NumPy and Pillow: a page of hundreds of tiles takes a fraction of a second, where one
    Matplotlib axes per tile took seconds.
    """

    pixels: np.ndarray
    tiles: list

    def png(self) -> bytes:
        # not optimised: on a page-wide grid that takes 8 times as long for 0.5 % fewer bytes
        return png_bytes(self.pixels)

    def tile(self, top: int, left: int) -> np.ndarray:
        return self.pixels[top : top + TILE, left : left + TILE]


def _grid(lines: Sequence[_Line]) -> Grid:
    """Lines of ``TILE``-pixel tiles with their titles above them, on white.

    Examples
    --------
    >>> grid = _grid([_Line([np.zeros((4, 4, 3)), None], {0: "unit 3"}), _Line([None, np.ones((4, 4, 3))])])
    >>> grid.pixels.shape, grid.tiles
    ((234, 218, 3), [(22, 6, 'unit 3'), (128, 112, '')])
    >>> grid.tile(22, 6).max(), grid.tile(128, 112).min()
    (np.uint8(0), np.uint8(255))
    """
    from PIL import Image, ImageDraw, ImageFont

    columns = max((len(line.tiles) for line in lines), default=1) or 1
    heights = [TILE + GAP + (TITLE if line.labels else 0) for line in lines]
    canvas = np.full((sum(heights) + GAP, columns * (TILE + GAP) + GAP, 3), 255, np.uint8)
    titles, tiles, top = [], [], GAP
    for line, h in zip(lines, heights, strict=True):
        image_top = top + (TITLE if line.labels else 0)
        for c, image in enumerate(line.tiles):
            left = GAP + c * (TILE + GAP)
            if image is not None:
                canvas[image_top : image_top + TILE, left : left + TILE] = _tile_pixels(image)
            if image is not None or c in line.labels:
                tiles.append((image_top, left, line.labels.get(c, "")))
            if c in line.labels:
                titles.append((left, top, line.labels[c]))
        top += h
    picture = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default(size=10)
    for left, y, text in titles:
        draw.text((left, y + 2), text, fill=(0, 0, 0), font=font)
    return Grid(np.asarray(picture), tiles)


def _tile_pixels(image: np.ndarray) -> np.ndarray:
    """``image`` (h, w, 3) in [0, 1] as a ``TILE`` x ``TILE`` uint8 tile: upscaled by repeating pixels (centred on
    white where it is not square)."""
    image = np.round(np.clip(np.asarray(image, "float64"), 0, 1) * 255).astype(np.uint8)
    h, w = image.shape[:2]
    side = max(h, w)
    square = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = image
    source = np.arange(TILE) * side // TILE  # the source pixel of each tile pixel
    return square[source][:, source]


def _block(title: str, rows: Sequence[Sequence[np.ndarray]], visual: np.ndarray | None, lead: bool) -> list[_Line]:
    """The lines of one unit, group or concept: ``rows`` of tiles (its crops, and the projections beneath them),
    cut into pieces of at most `LINE` tiles, each after a lead tile (its visualisation, first) when ``lead``."""
    per_line = LINE - int(lead)
    lines = []
    for start in range(0, max(1, max(len(row) for row in rows)), per_line):
        for k, row in enumerate(rows):
            first = start == 0 and k == 0
            labels = {int(lead): title} if first else {}
            if first and visual is not None:
                labels[0] = "visualisation"
            head = [visual if first else None] if lead else []
            lines.append(_Line(head + list(row[start : start + per_line]), labels))
    return lines


def _visual(image, key, field_name: str) -> np.ndarray:
    """A feature visualisation checked: an image (h, w, 3) of numbers (shown clipped to [0, 1])."""
    array = np.asarray(image, dtype="float64")
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"`ModelAtlas.{field_name}` holds images (h, w, 3) in [0, 1]; the one of {key!r} has shape {array.shape}."
        )
    return array


def _units_section(name: str, entry: ModelAtlas, data, figure, deprocess, preprocess, max_units: int) -> list[str]:
    atlas = entry.atlas
    visuals = {
        (atlas.path(layer), int(unit)): _visual(image, (layer, unit), "visualizations")
        for (layer, unit), image in entry.visualizations.items()
    }
    parts = [
        f"<h3>Units: strongest activations over {atlas.n_images} images</h3>"
        '<p class="note">Each unit (channel): a line of its top activations\' receptive fields and, beneath each, '
        "the guided-backprop projection of that single activation (grey = 0; each scaled by the 99th percentile "
        "of its own magnitudes, so its pattern shows and its strongest pixels saturate)"
        + (", after the unit's feature visualisation" if visuals else "")
        + ".</p>"
    ]
    for layer in atlas.layers:
        lead = any(key[0] == layer for key in visuals)
        lines = []
        for unit in atlas.units[layer][:max_units]:
            crops, projections = atlas.examples(data, layer, int(unit), preprocess=preprocess)
            shown = display_images(crops, deprocess) / 255.0
            title = f"{layer.split('/')[-1]} unit {unit}"
            lines += _block(title, [shown, projection_display(projections)], visuals.get((layer, int(unit))), lead)
        parts.append(figure(_grid(lines), f"{name}_units_{layer.replace('/', '_')}", f"units of {layer}"))
    return parts


def _groups_section(
    name: str, entry: ModelAtlas, data, figure, deprocess, preprocess, class_names: Sequence[str]
) -> list[str]:
    groups = entry.groups
    n = len(groups.components)
    rows, boxes_ok = [], groups.geometry is not None
    lead = bool(entry.group_visualizations)
    for g in range(n):
        top = groups.top(g)
        if not top or not boxes_ok:
            continue
        crops = groups.crops(data, g, preprocess=preprocess)
        visual = entry.group_visualizations.get(g)
        visual = None if visual is None else _visual(visual, g, "group_visualizations")
        rows += _block(f"group {g}", [display_images(crops, deprocess) / 255.0], visual, lead)
    parts = [
        f"<h3>Building blocks: {n} groups of {html.escape(groups.layer)}</h3>"
        "<p class=\"note\">Non-negative matrix factorisation of the layer's activations; each row: a group's "
        "strongest regions over the data. The table: each group's mean attribution to each class logit "
        "(gradient x activation, split by the group's share; the groups add up to the layer's "
        "total)." + (" A group's feature visualisation comes first." if lead else "") + "</p>"
    ]
    if rows:
        parts.append(figure(_grid(rows), f"{name}_groups", "factorised groups"))
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
            rows += _block(
                f"{label}, concept {j}: {concept.share:.0%}", [display_images(crops, deprocess) / 255.0], None, False
            )
    return [
        "<h3>Class concepts (BagNet)</h3>"
        '<p class="note">Each class\'s patches with the most evidence for it, clustered by their features; '
        "a concept's share of the class's top-patch evidence, and (patches).</p>",
        html_table(header, table_rows, "class x concept"),
        figure(_grid(rows), f"{name}_concepts", "concept examples"),
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
