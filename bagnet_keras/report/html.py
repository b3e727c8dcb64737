"""A self-contained HTML report of a `Comparison` (bagnet_keras.metrics): one file, figures embedded, PNGs beside it.

`write_report` draws, from the comparison alone (no model runs): the study's
findings with their verdicts, the models' accuracies, one matrix of every
map's faithfulness measures (mean and interval, the best of each marked)
with its sanity checks, the mean deletion and insertion curves, the
masking experiment, the sanity checks' numbers, the agreement between maps, per-image rows
of overlays (image with the boxes of the BagNet's most predictive patches,
then every map, then the BagNet's evidence for the predicted class),
per-class galleries of the BagNet's most informative patches, and the
misclassified images. Every figure is also written as a PNG under
``figures/``; the HTML is written through a temporary file.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bagnet_keras.core.commit import write_atomic
from bagnet_keras.explain.methods import method_names
from bagnet_keras.explain.registry import parse_method
from bagnet_keras.metrics.comparison import Comparison
from bagnet_keras.report.findings import MEASURE_DIRECTIONS, Finding, higher_is_better
from bagnet_keras.report.page import Figures, Raw, html_document, html_table
from bagnet_keras.report.plot import (
    plot_curves,
    plot_heatmap,
    plot_overlay,
    plot_patches,
    plot_randomization,
)


def _overlays(
    display: np.ndarray,
    indices: Sequence[int],
    columns: Mapping[str, np.ndarray],
    boxes: Mapping[int, np.ndarray],
    titles: Sequence[str],
) -> Figure:
    """One row per image; ``indices`` are positions in ``display``, the columns' maps and ``boxes``."""
    cols = 1 + len(columns)
    fig = Figure(figsize=(2.0 * cols, 2.3 * len(indices)), layout="constrained")
    axes = fig.subplots(len(indices), cols, squeeze=False)
    for r, i in enumerate(indices):
        axes[r, 0].imshow(display[i])
        axes[r, 0].set_axis_off()
        axes[r, 0].set_title(titles[r], fontsize=7)
        for top, left, bottom, right in boxes.get(i, []):
            axes[r, 0].add_patch(
                Rectangle(
                    (left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="yellow", linewidth=1
                )
            )
        for ax, (name, maps) in zip(axes[r, 1:], columns.items(), strict=True):
            # Signed maps (evidence) in the authors' diverging colours, in every row alike.
            draw = plot_heatmap if np.min(maps) < 0 else plot_overlay
            draw(maps[i], display[i], ax=ax, title=name if r == 0 else None)
    return fig


#: The white-box attributions of the BagNet paper's masking experiment, and the other gradient maps.
WHITE_BOX = (
    "saliency",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "epsilon_lrp",
    "deeplift",
    "guided_backprop",
    "gradcam",
    "gradcam++",
    "layercam",
)


def _describe(spec: str) -> str:
    method, options = parse_method(spec)
    return method.description + (f" (at layer {options['layer']})" if options else "")


def _spatial_sensitivity(comparison: Comparison, figure) -> list[str]:
    """The paper's masking experiment: the BagNet's most informative cells masked for each other model,
    beside that model's own maps' cells, scored on that model."""
    bagnet = comparison.evidence.get("model")
    evidence = comparison.curves.get((bagnet, "evidence"), {})
    parts = []
    for other in dict.fromkeys(m for m, _ in comparison.curves):
        if other == bagnet or f"deletion_on_{other}" not in evidence:
            continue
        curves = {f"{bagnet} evidence": evidence[f"deletion_on_{other}"]}
        curves.update(
            {f"{other} {method}": c["deletion"] for (m, method), c in comparison.curves.items() if m == other}
        )
        fig = plot_curves(curves, f"cells masked, scored on {other}")
        parts.append(figure(fig, f"spatial_sensitivity_{other}", f"spatial sensitivity of {other}"))
    if not parts:
        return []
    return [
        '<h2>Spatial sensitivity</h2><p class="note">The BagNet paper\'s masking experiment: the 8x8 cells '
        "that the BagNet's evidence ranks highest are masked (image mean) one more at a time and the other "
        "model scores the masked images, beside the cells its own maps rank highest. The lower curve found "
        "the cells that model depends on.</p>",
        *parts,
    ]


def _sanity_rows(sanity: Mapping) -> list[list]:
    """One row per map: the final rank correlation and verdict of randomisation, the change and verdict of the shift."""
    shift = {(e["model"], e["method"]): e for e in sanity["invariance"]}
    rows = []
    for e in sanity["randomization"]:
        s = shift[e["model"], e["method"]]
        final = e["spearman"][-1]
        verdict = "n/a (constant maps)" if e["passed"] is None else "pass" if e["passed"] else "FAIL"
        rows.append(
            [
                e["model"],
                e["method"],
                float("nan") if final is None else final,
                verdict,
                s["difference"],
                "pass" if s["passed"] else "FAIL",
            ]
        )
    return rows


def _trust(sanity: Mapping, figure) -> list[str]:
    """The section "Can these maps be trusted?": both sanity checks per model and method, and the curves."""
    if not sanity:
        return []
    header = [
        "model",
        "method",
        "rank correlation, all layers random",
        "randomisation",
        "change under input shift",
        "input invariance",
    ]
    return [
        "<h2>Can these maps be trusted?</h2>"
        f'<p class="note">Two sanity checks on the first {sanity["images"]} images. Model randomisation '
        "(Adebayo et al. 2018): the layers are re-initialised from the top down and each map recomputed for the "
        "same class; a map that explains the model must change, so it passes when its mean Spearman rank "
        f"correlation (absolute values) with the original falls below {sanity['threshold']} once every layer "
        "is random. Input invariance (Kindermans et al. 2017): a copy of the model takes the images shifted "
        f"by {sanity['shift']:g} and absorbs the shift in its first layer's bias, so it computes the same "
        "function; a map passes when it is the same for both (mean absolute change over the mean absolute "
        f"value at most {sanity['tolerance']:g}).</p>" + html_table(header, _sanity_rows(sanity)),
        figure(
            plot_randomization(sanity["randomization"], sanity["threshold"]),
            "randomization",
            "cascading randomisation curves",
        ),
    ]


def _findings_section(findings: Sequence[Finding | str | Mapping]) -> str:
    """The findings as a table: each one's verdict mark, its claim, and the numbers behind it in small print."""
    css = {True: "holds", False: "fails", None: "neutral"}
    rows = []
    for finding in findings:
        finding = finding if isinstance(finding, Finding) else Finding.from_json(finding)
        rows.append(
            [
                Raw(f'<span class="{css[finding.holds]}">{finding.mark}</span>'),
                finding.claim,
                Raw(f'<span class="numbers">{html.escape(finding.numbers)}</span>'),
            ]
        )
    return "<h2>Findings</h2>" + html_table(["", "finding", "numbers"], rows, css_class="findings")


def _models_section(comparison: Comparison, name_of: list[str]) -> str:
    """The models' accuracies: overall, with tiles shuffled, and per class."""
    summary = comparison.summary
    per_class = summary["per_class_accuracy"]
    header = ["model", "accuracy", "kept top class when tiles are shuffled", *name_of]
    # overall: with the half-width of the 95 % interval where the models' aggregates (method "") hold it
    overall = {(a["model"], a["metric"]): a for a in comparison.aggregates if not a["method"]}
    rows = [
        [
            name,
            *[
                _measure_cell(overall[name, metric], False) if (name, metric) in overall else summary[key][name]
                for key, metric in (("accuracy", "correct"), ("shuffle_kept", "shuffle_kept"))
            ],
            *[float(v) if v is not None else float("nan") for v in per_class[name][: len(name_of)]],
        ]
        for name in summary["accuracy"]
    ]
    layers = summary.get("layers", {})
    where = "; ".join(f"{html.escape(key)} at <code>{html.escape(path)}</code>" for key, path in layers.items())
    return (
        "<h2>Models</h2>"
        + html_table(
            header, rows, "accuracy on these images (overall: mean ± half-width of the 95 % interval) and per class"
        )
        + (f'<p class="note">Layers the CAM methods explain: {where}.</p>' if where else "")
    )


def _map_measures(comparison: Comparison) -> dict[tuple[str, str], dict[str, dict]]:
    """``(model, method)`` -> measure -> its aggregate row, for every map (not the models' or pairs' rows)."""
    table: dict = {}
    for a in comparison.aggregates:
        if a["method"] and a["metric"] != "spearman":
            table.setdefault((a["model"], a["method"]), {})[a["metric"]] = a
    return table


def _measure_order(measures) -> list[str]:
    """The known measures in their `MEASURE_DIRECTIONS` order, then the others (``deletion_on_*``) sorted."""
    measures = set(measures)
    return [m for m in MEASURE_DIRECTIONS if m in measures] + sorted(measures - set(MEASURE_DIRECTIONS))


def _best_maps(table: Mapping[tuple, Mapping[str, Mapping]], metric: str) -> set:
    """The maps with the best mean of ``metric`` (`higher_is_better`); ties all count, and a column where every
    map ties, or whose direction is unknown, has none.

    Examples
    --------
    >>> table = {("cnn", "gradcam"): {"pointing": {"mean": 0.5}}, ("bagnet", "evidence"): {"pointing": {"mean": 0.9}}}
    >>> _best_maps(table, "pointing"), _best_maps(table, "linearity_sum")
    ({('bagnet', 'evidence')}, set())
    """
    direction = higher_is_better(metric)
    means = {key: float(row[metric]["mean"]) for key, row in table.items() if metric in row}
    means = {key: value for key, value in means.items() if np.isfinite(value)}
    if direction is None or not means or (len(means) > 1 and len(set(means.values())) == 1):
        return set()
    best = max(means.values()) if direction else min(means.values())
    return {key for key, value in means.items() if value == best}


def _significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, never in exponent notation (``"0"`` for zero).

    Examples
    --------
    >>> [_significant(v) for v in (0.0123456, 0.038, 0.59999, 1234.5, -0.0000341, 0.0)], _significant(0.0236, 2)
    (['0.0123', '0.0380', '0.600', '1230', '-0.0000341', '0'], '0.024')
    """
    if not np.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    text = f"{value:#.{digits}g}"  # "#": trailing zeros kept (0.600)
    if "e" in text:  # written out instead: 1230, 0.0000341
        text = np.format_float_positional(float(text), trim="-")
    return text.rstrip(".")


def _measure_cell(row: Mapping | None, best: bool) -> Raw | str:
    """``mean ± half-width of the 95 % interval`` (3 and 2 significant digits), bold with a star where best, the
    interval itself in the tooltip; ``–`` where the measure was not computed for the map."""
    if row is None or not np.isfinite(row["mean"]):
        return "–" if row is None else "n/a"
    half = (row["high"] - row["low"]) / 2
    mean = _significant(row["mean"]) + (" ★" if best else "")
    tip = f"95 % interval {_significant(row['low'])} to {_significant(row['high'])}, n = {row['n']}"
    text = f"<b>{mean}</b>" if best else mean
    if np.isfinite(half):  # beneath the mean, in small print: the columns stay narrow
        text += f'<br><span class="pm">± {_significant(half, 2)}</span>'
    return Raw(f'<span title="{html.escape(tip)}">{text}</span>')


_CHECK = {True: ("✓", "holds", "passed"), False: ("✗", "fails", "failed"), None: ("–", "neutral", "undecided")}


#: The sanity checks' names on the page.
_CHECK_NAMES = {"randomization": "randomisation", "invariance": "input shift"}


def _sanity_verdicts(comparison: Comparison) -> dict[tuple[str, str], dict[str, bool | None]]:
    """``(model, method)`` -> ``{"randomisation": passed, "input shift": passed}`` (None: constant maps)."""
    return {
        key: {_CHECK_NAMES[check]: passed for check, passed in checks.items()}
        for key, checks in comparison.sanity_verdicts().items()
    }


def _check_cell(verdicts: Mapping | None, check: str) -> Raw:
    if verdicts is None or check not in verdicts:
        return Raw('<span class="neutral" title="not checked">–</span>')
    mark, css, word = _CHECK[verdicts[check]]
    return Raw(f'<span class="{css}" title="{check}: {word}">{mark}</span>')


def _sanity_phrase(verdicts: Mapping | None) -> str:
    if not verdicts:
        return "not sanity-checked"
    failed = [check for check, passed in verdicts.items() if passed is False]
    if failed:
        return f"fails the {' and the '.join(failed)} check"
    undecided = [check for check, passed in verdicts.items() if passed is None]
    if undecided:
        return f"{' and '.join(undecided)} check undecided (constant maps)"
    return "passes both sanity checks" if len(verdicts) == 2 else f"passes the {next(iter(verdicts))} check"


def _lead_sentence(best: Mapping[str, set], verdicts: Mapping) -> str:
    """Which map is best by which measure, and how it fares in the sanity checks."""
    wins: dict = {}
    for metric, keys in best.items():
        for key in sorted(keys):
            wins.setdefault(key, []).append(metric)
    if not wins:
        return "No measure tells the maps apart."
    said = []
    for key in sorted(wins, key=lambda key: -len(wins[key])):
        names = [metric.replace("_", " ") for metric in wins[key]]
        listing = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        said.append(f"{'/'.join(key)} is best by {listing} ({_sanity_phrase(verdicts.get(key))})")
    return "Best maps: " + "; ".join(said) + "."


def _faithfulness_section(comparison: Comparison) -> list[str]:
    """One matrix of the maps' measures (best of each marked) with their sanity checks, and what each method is."""
    table = _map_measures(comparison)
    measures = _measure_order({metric for row in table.values() for metric in row})
    best = {metric: _best_maps(table, metric) for metric in measures}
    verdicts = _sanity_verdicts(comparison)
    arrow = {True: " ↑", False: " ↓", None: ""}
    # the measures' names as in aggregates.csv, with spaces so that the headers wrap
    named = [m.replace("_", " ") + arrow[higher_is_better(m)] for m in measures]
    header = ["model", "method", *named, "random\u00adisation", "input shift"]  # a soft hyphen: a narrow column
    rows = [
        [
            model,
            method,
            *[_measure_cell(table[model, method].get(m), (model, method) in best[m]) for m in measures],
            *[_check_cell(verdicts.get((model, method)), check) for check in ("randomisation", "input shift")],
        ]
        for model, method in table
    ]
    order = method_names()
    used = sorted({method for _, method in comparison.maps}, key=lambda m: (order.index(m.split("@")[0]), m))
    return [
        "<h2>Faithfulness</h2>"
        f'<p class="lead">{html.escape(_lead_sentence(best, verdicts))}</p>'
        + '<div class="wide">'
        + html_table(header, rows, "each map's measures: mean ± half-width of the 95 % interval", "matrix")
        + "</div>"
        + '<p class="note">↓ lower is better, ↑ higher; ★ the best of a column. Deletion area: mean probability '
        "of the true class while the map's highest-ranked 8x8 cells are masked with the image mean; "
        "deletion on X: the same cells masked for model X; insertion area: cells restored into a masked image; "
        "linearity sum / joint: logit drop summed over single cells vs all at once (equal for a bag of local "
        "features; neither is better); pointing, energy: agreement with the ground-truth masks. "
        "Randomisation and input shift: the sanity checks below (✓ passed, ✗ failed, – not run or "
        "undecided).</p>",
        '<p class="note">Methods: ' + "; ".join(html.escape(_describe(m)) for m in used) + ".</p>",
    ]


def _curves_section(comparison: Comparison, figure) -> str:
    """The mean deletion and insertion curves of every map."""
    deletion = {f"{m}/{meth}": c["deletion"] for (m, meth), c in comparison.curves.items()}
    insertion = {f"{m}/{meth}": c["insertion"] for (m, meth), c in comparison.curves.items()}
    deletion_fig = plot_curves(deletion, "deletion (on the explained model)")
    insertion_fig = plot_curves(insertion, "insertion", "cells restored")
    return (
        "<h2>Deletion and insertion curves</h2>"
        + figure(deletion_fig, "deletion", "deletion curves")
        + figure(insertion_fig, "insertion", "insertion curves")
    )


def _agreement_section(comparison: Comparison) -> str:
    """How alike the maps rank the cells: their Spearman correlation per image."""
    rows = [
        [a["model"], a["method"], a["mean"], a["low"], a["high"], a["n"]]
        for a in comparison.aggregates
        if a["metric"] == "spearman"
    ]
    return "<h2>Agreement between maps</h2>" + html_table(
        ["map", "map", "Spearman mean", "low", "high", "n"],
        rows,
        "rank correlation of the maps over 8x8 cells, per image",
    )


class _Gallery:
    """Rows of overlays of the images the comparison kept (``Comparison.shown``), six images to a figure."""

    def __init__(self, comparison: Comparison, name_of: list[str], figure):
        self.figure, self.name_of = figure, name_of
        self.display = comparison.images / 255.0
        self.position = {int(image): p for p, image in enumerate(comparison.shown)}
        self.labels = np.asarray(comparison.labels).astype(int)
        self.models = list(comparison.summary["accuracy"])
        self.predicted = {
            name: np.array([r["predicted"] for r in comparison.model_rows if r["model"] == name])
            for name in self.models
        }
        self.columns = {f"{m}/{meth}": maps for (m, meth), maps in comparison.maps.items()}
        self.boxes: dict[int, np.ndarray] = {}
        bagnet = comparison.evidence.get("model")
        if bagnet is not None:
            self.columns[f"{bagnet}/evidence, predicted class"] = comparison.evidence["predicted"]
            self.boxes = dict(enumerate(comparison.evidence["boxes"]))

    def kept(self, indices) -> list[int]:
        """Those of ``indices`` whose maps the comparison kept."""
        return [i for i in indices if i in self.position]

    def wrong(self) -> list[int]:
        """The images some model misclassified."""
        return [i for i in range(len(self.labels)) if any(self.predicted[m][i] != self.labels[i] for m in self.models)]

    def figures(self, indices: list[int], name: str, alt: str) -> list[str]:
        """The overlays of ``indices``, six images to a figure, named ``{name}_{start:03d}``."""
        return [
            self.figure(self._overlays(indices[start : start + 6]), f"{name}_{start:03d}", alt)
            for start in range(0, len(indices), 6)
        ]

    def _overlays(self, indices: list[int]) -> Figure:
        titles = [
            f"#{i} {self.name_of[self.labels[i]]}\n"
            + "\n".join(f"{m}: {self.name_of[self.predicted[m][i]]}" for m in self.models)
            for i in indices
        ]
        return _overlays(self.display, [self.position[i] for i in indices], self.columns, self.boxes, titles)


def _images_sections(comparison: Comparison, name_of: list[str], figure, max_images: int) -> list[str]:
    """The images with their maps, the BagNet's most informative patches per class, the misclassified images."""
    gallery = _Gallery(comparison, name_of, figure)
    parts = [
        '<h2>Images</h2><p class="note">First column: the image with the boxes of the 3 patches with '
        "the most evidence for the true class (BagNet). Red: evidence for the class, blue: against; "
        "other maps are scaled to [0, 1].</p>",
        *gallery.figures(gallery.kept(range(min(max_images, len(gallery.labels)))), "images", "maps of images"),
    ]
    bagnet = comparison.evidence.get("model")
    if bagnet is not None:
        parts.append(f"<h2>Most informative patches per class ({html.escape(bagnet)})</h2>")
        for c, best in sorted(comparison.patches.items()):
            fig = plot_patches(best, title=f"{name_of[c]}: most evidence for the class")
            parts.append(figure(fig, f"patches_{c:03d}", f"patches of {name_of[c]}"))
    wrong = gallery.wrong()
    parts.append(f"<h2>Misclassified ({len(wrong)})</h2>")
    if not wrong:
        parts.append("<p>Every image was classified correctly by every model.</p>")
    parts += gallery.figures(gallery.kept(wrong)[:24], "misclassified", "misclassified images")
    return parts


def write_report(
    comparison: Comparison,
    class_names: Sequence[str],
    output_dir: str | os.PathLike,
    *,
    title: str = "Grad-CAM and BagNet evidence",
    findings: Sequence[Finding | str] = (),
    max_images: int = 12,
) -> str:
    """Write ``report.html`` (and ``figures/*.png``) into ``output_dir``; returns the report's path.

    The report is drawn from the comparison alone (its images, maps,
    curves, tables and BagNet views); no model runs here. Images are shown
    with their maps where the comparison kept them (``Comparison.shown``:
    the first ones and the first misclassified ones).

    Parameters
    ----------
    comparison : Comparison
        From `bagnet_keras.metrics.comparison.compare` (give it ``deprocess=`` so the images look right).
    class_names : sequence of str
    output_dir : path
        Output folder; nothing is written outside it.
    title : str
    findings : sequence of Finding or str
        What a study concludes, shown at the top with their verdicts (`bagnet_keras.report.findings.Finding`;
        a string is a claim without a verdict, a dict is read by ``Finding.from_json``).
    max_images : int
        Images shown with all their maps (misclassified ones come in addition).

    Returns
    -------
    str

    Examples
    --------
    >>> result = compare({"cnn": cnn, "bagnet": bagnet}, x_test, y_test, deprocess=deprocess_input)  # doctest: +SKIP
    >>> path = write_report(result, names, "runs/report")  # doctest: +SKIP
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    figure = Figures(output_dir)
    if comparison.images is None or comparison.labels is None:
        raise ValueError("This comparison holds no images; make it with bagnet_keras.compare (it keeps them).")
    name_of = list(class_names)
    models = list(comparison.summary["accuracy"])
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{len(comparison.labels)} images, {len(name_of)} classes, models: '
        f"{html.escape(', '.join(models))}.</p>",
    ]
    if findings:
        parts.append(_findings_section(findings))
    parts.append(_models_section(comparison, name_of))
    parts += _faithfulness_section(comparison)
    parts.append(_curves_section(comparison, figure))
    parts += _spatial_sensitivity(comparison, figure)
    parts += _trust(comparison.sanity, figure)
    parts.append(_agreement_section(comparison))
    parts += _images_sections(comparison, name_of, figure, max_images)
    return write_atomic(os.path.join(output_dir, "report.html"), html_document(title, parts))
