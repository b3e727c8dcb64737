"""Figures: heatmaps over images, method-by-image grids, patch galleries.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot,
so nothing is shown and no global figure state is touched; save it with
``fig.savefig(path)``. Maps must already be at the image's resolution
(`EvidenceMap.upsample`, `cam`, `occlusion` give that), so overlays line up
to the pixel.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bagnet_keras.core.commit import write_atomic
from bagnet_keras.core.files import to_display
from bagnet_keras.explain.evidence import EvidenceMap, TopPatches


def _edges(image: np.ndarray) -> np.ndarray:
    """Canny edges of the image as a float mask with NaN off the edges (drawn transparent)."""
    import cv2

    grey = (to_display(image).mean(axis=-1) * 255).astype("uint8")
    edges = (cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 50, 150) > 0).astype("float64")
    edges[edges == 0] = np.nan
    return edges


def _new_axes(ax: Axes | None, size=(4, 4)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _check_map(heatmap, image) -> np.ndarray:
    heatmap = np.asarray(heatmap, dtype="float64")
    if heatmap.ndim != 2:
        raise ValueError(f"`heatmap` must be 2-D (H, W). Received shape {heatmap.shape}.")
    if image is not None and np.shape(image)[:2] != heatmap.shape:
        raise ValueError(
            f"`heatmap` {heatmap.shape} and `image` {np.shape(image)[:2]} differ in size; place the map on the "
            "image first (EvidenceMap.upsample(), or maps from cam/occlusion, are at the input's size)."
        )
    return heatmap


def plot_heatmap(
    heatmap,
    image=None,
    *,
    ax: Axes | None = None,
    percentile: float = 99,
    cmap: str = "RdBu_r",
    alpha: float = 0.4,
    deprocess: Callable | None = None,
    title: str | None = None,
) -> Figure:
    """Signed evidence, as the BagNet authors draw it: a diverging map centred on zero, image edges on top.

    Colours are clipped at the ``percentile`` of |heatmap| on both sides,
    so red is evidence for the class, blue against, white none.

    Examples
    --------
    >>> fig = plot_heatmap(np.random.default_rng(0).normal(size=(32, 32)), np.zeros((32, 32, 3)))
    >>> type(fig).__name__
    'Figure'
    """
    heatmap = _check_map(heatmap, image)
    fig, ax = _new_axes(ax)
    limit = np.percentile(np.abs(heatmap), percentile) or 1.0
    ax.imshow(heatmap, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    if image is not None:
        edges = _edges(deprocess(image) if deprocess else image)
        ax.imshow(edges, cmap="Greys", vmin=0, vmax=1, alpha=alpha, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9, wrap=True)  # at the figure edge, which cut a long one in the last column
    return fig


def plot_overlay(
    heatmap,
    image,
    *,
    ax: Axes | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    deprocess: Callable | None = None,
    title: str | None = None,
) -> Figure:
    """A non-negative map (Grad-CAM, occlusion) in colour over the image.

    Examples
    --------
    >>> fig = plot_overlay(np.ones((8, 8)), np.zeros((8, 8, 3)))
    >>> len(fig.axes)
    1
    """
    heatmap = _check_map(heatmap, image)
    fig, ax = _new_axes(ax)
    ax.imshow(to_display(image, deprocess), interpolation="nearest")
    high = heatmap.max()
    ax.imshow(heatmap, cmap=cmap, alpha=alpha, vmin=min(heatmap.min(), 0), vmax=high if high > 0 else 1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9, wrap=True)  # at the figure edge, which cut a long one in the last column
    return fig


def plot_evidence(result: EvidenceMap, images, index: int = 0, **kwargs) -> Figure:
    """`plot_heatmap` of image ``index`` of an `EvidenceMap`, placed on the pixels by its geometry.

    Examples
    --------
    >>> from bagnet_keras import BagNet, evidence_map
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=4, classes=3, classifier_activation=None)
    >>> x = np.zeros((1, 48, 48, 3))
    >>> fig = plot_evidence(evidence_map(model, x), x)
    """
    maps = result.upsample()
    if maps.ndim != 3:
        raise ValueError("plot_evidence draws one class per image: use evidence_map, not evidence_maps.")
    kwargs.setdefault("title", f"class {result.class_index[index]}, patch {result.patch_size}px")
    return plot_heatmap(maps[index], np.asarray(images)[index], **kwargs)


def plot_grid(
    images,
    maps: Mapping[str, np.ndarray],
    *,
    deprocess: Callable | None = None,
    size: float = 2.2,
    row_titles: list[str] | None = None,
) -> Figure:
    """Images down the rows, the image then one column per method.

    Signed maps (a method with negative values in any image, e.g. BagNet
    evidence) are drawn with `plot_heatmap`, non-negative ones with
    `plot_overlay`; each column keeps one style for all its rows.

    Parameters
    ----------
    images : array (N, H, W, C)
    maps : mapping of name to array (N, H, W)
    deprocess : callable, optional
        Undoes the model's preprocessing for display.
    size : float
        Inches per panel.
    row_titles : list of str, optional

    Examples
    --------
    >>> x = np.zeros((2, 8, 8, 3))
    >>> fig = plot_grid(x, {"a": np.ones((2, 8, 8)), "b": -np.ones((2, 8, 8))})
    >>> len(fig.axes)
    6
    """
    images = np.asarray(images)
    for name, m in maps.items():
        if np.shape(m) != images.shape[:3]:
            raise ValueError(f"Map {name!r} has shape {np.shape(m)}; expected {images.shape[:3]} (N, H, W).")
    cols = 1 + len(maps)
    fig = Figure(figsize=(size * cols, size * len(images)), layout="constrained")
    axes = fig.subplots(len(images), cols, squeeze=False)
    signed = {name: bool(np.min(m) < 0) for name, m in maps.items()}
    for n, row in enumerate(axes):
        row[0].imshow(to_display(images[n], deprocess))
        row[0].set_axis_off()
        if row_titles:
            row[0].set_title(row_titles[n], fontsize=9)
        for ax, (name, m) in zip(row[1:], maps.items(), strict=True):
            draw = plot_heatmap if signed[name] else plot_overlay
            draw(m[n], images[n], ax=ax, deprocess=deprocess, title=name if n == 0 else None)
    return fig


def plot_patches(
    patches: TopPatches,
    *,
    deprocess: Callable | None = None,
    cols: int = 8,
    size: float = 1.2,
    title: str | None = None,
) -> Figure:
    """A gallery of the most informative patches of a class, best first, with scores and sources.

    Examples
    --------
    >>> from bagnet_keras.explain.evidence import TopPatches
    >>> top = TopPatches(np.arange(3.0), np.arange(3), np.zeros((3, 4), int), np.zeros((3, 9, 9, 3)), 1)
    >>> len(plot_patches(top, cols=2).axes)
    4
    """
    k = len(patches.scores)
    rows = -(-k // cols)
    fig = Figure(figsize=(size * min(k, cols), size * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, min(k, cols), squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, patch, score, source in zip(axes, patches.patches, patches.scores, patches.image_index, strict=False):
        ax.imshow(to_display(patch, deprocess), interpolation="nearest")
        ax.set_title(f"{score:.2f} (#{source})", fontsize=7)
    fig.suptitle(title or f"Most informative patches, class {patches.class_index}", fontsize=9)
    return fig


def plot_confusion(
    matrix, class_names, normalize: bool = True, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted), counts written in the cells.

    ``normalize`` colours each row by its share (per-class accuracy on the diagonal).

    Examples
    --------
    >>> plot_confusion([[5, 1], [2, 4]], ["East", "West"]).axes[0].get_xlabel()
    'predicted'
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(class_names):
        raise ValueError(f"`matrix` must be square with one row per class ({len(class_names)}). Got {matrix.shape}")
    side = max(3.0, 0.45 * len(class_names) + 1.5)
    fig, ax = _new_axes(ax, (side, side))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    high = shares.max() / 2 if shares.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if shares[i, j] > high else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_curves(
    curves: Mapping[str, np.ndarray], title: str = "", xlabel: str = "cells masked", ax: Axes | None = None
) -> Figure:
    """Mean curve of each entry (rows: images) with a 95 % band (mean +- 1.96 standard errors).

    Examples
    --------
    >>> fig = plot_curves({"evidence": np.array([[1.0, 0.5, 0.2], [0.8, 0.4, 0.1]])}, "deletion")
    >>> fig.axes[0].get_title()
    'deletion'
    """
    fig, ax = _new_axes(ax, (4.5, 3.2))
    for name, values in curves.items():
        values = np.asarray(values, dtype="float64")
        k = np.arange(values.shape[1])
        mean = values.mean(axis=0)
        half = 1.96 * values.std(axis=0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0 * mean
        ax.plot(k, mean, label=name)
        ax.fill_between(k, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("probability of the true class")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


def plot_randomization(entries: Sequence[Mapping], threshold: float = 0.5) -> Figure:
    """Cascading randomisation curves: per model, each method's mean rank correlation with its original maps.

    ``entries`` are the ``randomization`` entries of `bagnet_keras.metrics.sanity.sanity_checks` (``model``,
    ``method``, ``layers``, ``spearman``); the dashed line is the pass threshold.

    Examples
    --------
    >>> entry = {"model": "cnn", "method": "gradcam", "layers": ["out", "conv"], "spearman": [0.6, 0.1]}
    >>> plot_randomization([entry]).axes[0].get_title()
    'cnn'
    """
    models = list(dict.fromkeys(e["model"] for e in entries))
    fig = Figure(figsize=(4.5 * len(models), 3.4), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        mine = [e for e in entries if e["model"] == model]
        for e in mine:
            values = np.array([np.nan if v is None else v for v in e["spearman"]], dtype="float64")
            ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=e["method"])
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1)
        layers = mine[0]["layers"]
        ticks = np.unique(np.linspace(1, len(layers), min(len(layers), 6)).round().astype(int))
        ax.set_xticks(ticks, [layers[t - 1] for t in ticks], rotation=45, ha="right", fontsize=6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("re-initialised down to this layer")
        ax.set_ylabel("rank correlation with the original maps")
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7)
    return fig


def plot_invariance(curves) -> Figure:
    """Zeiler & Fergus Fig. 5: per transformation, each layer's mean feature distance and the true class's
    probability, over the transformation's values (`bagnet_keras.metrics.invariance.InvarianceCurves`).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> curves = SimpleNamespace(values={"rotate": [0, 90]}, layers=["gap"],
    ...                          distance={("rotate", "gap"): np.array([[0.0], [0.5]])},
    ...                          probability={"rotate": np.array([[0.9], [0.4]])})
    >>> [ax.get_title() for ax in plot_invariance(curves).axes]
    ['rotate: feature distance', 'rotate: probability of the true class']
    """
    kinds = list(curves.values)
    fig = Figure(figsize=(8, 2.8 * len(kinds)), layout="constrained")
    axes = fig.subplots(len(kinds), 2, squeeze=False)
    for (left, right), kind in zip(axes, kinds, strict=True):
        values = curves.values[kind]
        ticks = np.arange(len(values))
        for layer in curves.layers:
            left.plot(ticks, curves.distance[kind, layer].mean(axis=1), marker=".", label=layer)
        right.plot(ticks, curves.probability[kind].mean(axis=1), marker=".", color="black")
        for ax, title in ((left, "feature distance"), (right, "probability of the true class")):
            ax.set_xticks(ticks, [str(v) for v in values], fontsize=7)
            ax.set_xlabel(kind)
            ax.set_title(f"{kind}: {title}", fontsize=10)
        left.set_ylabel("||f(T x) - f(x)|| / ||f(x)||")
        right.set_ylim(0, 1)
        left.legend(fontsize=7)
    return fig


def projection_display(projections: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Projections (N, h, w, C) shown as Zeiler & Fergus do: grey for zero, each scaled symmetrically by its own
    magnitude, positive values brighter and negative darker per channel.

    Each projection is divided by the ``percentile`` of its absolute values (its largest where that is zero)
    and clipped: a guided-backprop projection is sparse, and scaled by its single largest value nine tenths of
    its pixels would show as one grey. ``percentile=100`` scales by the largest magnitude.

    Examples
    --------
    >>> p = np.array([[[[-8.0, 0.0, 1.0, 1.0, 1.0]]]])
    >>> projection_display(p, percentile=100).ravel().tolist()
    [0.0, 0.5, 0.5625, 0.5625, 0.5625]
    >>> projection_display(p, percentile=50).ravel().tolist()
    [0.0, 0.5, 1.0, 1.0, 1.0]
    """
    projections = np.asarray(projections, dtype="float64")
    magnitude = np.abs(projections).reshape(len(projections), -1)
    span = np.percentile(magnitude, percentile, axis=1) if magnitude.size else np.zeros(len(projections))
    span = np.where(span > 0, span, magnitude.max(axis=1, initial=0.0))
    span = np.where(span > 0, span, 1.0).reshape(-1, *[1] * (projections.ndim - 1))
    return np.clip(0.5 + 0.5 * projections / span, 0, 1)


def plot_evolution(records: Sequence[Mapping]) -> Figure:
    """Zeiler & Fergus Fig. 4: one row per unit, one column per recorded epoch, the projection of its strongest
    activation (`bagnet_keras.explain.evolution.FeatureEvolution.records`).

    Examples
    --------
    >>> records = [{"epoch": e, "unit": 3, "projection": np.ones((5, 5, 3)) * e} for e in (1, 5)]
    >>> [ax.get_title() for ax in plot_evolution(records).axes]
    ['unit 3, epoch 1', 'unit 3, epoch 5']
    """
    units = list(dict.fromkeys(r["unit"] for r in records))
    epochs = sorted({r["epoch"] for r in records})
    fig = Figure(figsize=(1.6 * len(epochs), 1.7 * len(units)), layout="constrained")
    axes = fig.subplots(len(units), len(epochs), squeeze=False)
    for r in records:
        ax = axes[units.index(r["unit"]), epochs.index(r["epoch"])]
        ax.imshow(projection_display(np.asarray(r["projection"])[None])[0])
        ax.set_title(f"unit {r['unit']}, epoch {r['epoch']}", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> str:
    """Write ``fig`` to ``path`` (format from the extension) through a temporary file, so no half-written file remains.

    Examples
    --------
    >>> save_figure(plot_overlay(np.ones((8, 8)), np.zeros((8, 8, 3))), "overlay.png")  # doctest: +SKIP
    'overlay.png'
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1]
    if not suffix:
        raise ValueError(f"`path` needs an extension that names the format (.png, .pdf, .svg). Received: {path!r}")
    return write_atomic(path, render_figure(fig, suffix[1:], dpi))


def render_figure(fig: Figure, format: str = "png", dpi: int = 100) -> bytes:
    """The bytes of ``fig`` as a file of ``format`` (``"png"``, ``"pdf"``, ``"svg"``).

    Examples
    --------
    >>> render_figure(plot_overlay(np.ones((8, 8)), np.zeros((8, 8, 3))))[:4]
    b'\\x89PNG'
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format=format, dpi=dpi)
    return buffer.getvalue()
