"""The HTML report: written self-contained, and rendered for real in headless Chromium."""

import os
import re
from html.parser import HTMLParser

import keras
import numpy as np
import pytest
from browser import page, screenshot

from bagnet_keras import BagNet, deprocess_input, preprocess_input
from bagnet_keras.metrics.comparison import compare
from bagnet_keras.report.findings import Finding, higher_is_better
from bagnet_keras.report.html import write_report
from bagnet_keras.transfer.heads import build_classifier
from data_tools.synthetic import motif_scene

SIZE = 48
CLASSES = ["cross", "ring", "dot_above_bar"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    keras.utils.set_random_seed(0)
    bagnet = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=8, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    cnn = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
        ]
    )
    models = {"cnn": build_classifier(cnn, 3, mode="scratch"), "bagnet": build_classifier(bagnet, 3, mode="scratch")}
    scenes = [motif_scene(CLASSES[i % 3], seed=i, size=SIZE) for i in range(6)]
    images = preprocess_input(np.stack([s[0] for s in scenes]).astype("float32"))
    masks = np.stack([s[1] for s in scenes])
    labels = [i % 3 for i in range(6)]
    methods = {"cnn": ["gradcam", "saliency", "deeplift"], "bagnet": ["evidence", "gradcam"]}
    result = compare(
        models,
        images,
        labels,
        masks=masks,
        methods=methods,
        steps=4,
        linearity_k=3,
        progress=False,
        deprocess=deprocess_input,
        sanity=2,
    )
    folder = tmp_path_factory.mktemp("report")
    findings = [
        Finding("BagNet evidence points into the masks", True, "3 of 6 images"),
        Finding("The CNN's Grad-CAM points into the masks", False, "1 of 6 images"),
        "A sentence of an older run, without a verdict.",
    ]
    path = write_report(result, CLASSES, folder, findings=findings)
    return path, folder, result


def test_report_is_one_self_contained_file_with_pngs_beside_it(report):
    path, folder, _ = report
    text = open(path, encoding="utf-8").read()
    assert not re.search(r'src="(?!data:image/png;base64,)', text), "an image is not embedded"
    assert text.count("<img ") == len(os.listdir(folder / "figures"))
    for section in (
        "Findings",
        "Models",
        "Faithfulness",
        "Deletion and insertion curves",
        "Spatial sensitivity",
        "Can these maps be trusted?",
        "Agreement between maps",
        "Images",
        "Most informative patches per class",
        "Misclassified",
    ):
        assert f"<h2>{section}" in text, section
    assert sorted(os.listdir(folder)) == ["figures", "report.html"]


def test_report_renders_in_headless_chromium(report):
    path, folder, _ = report
    with page(path, folder.parent / "chromium_profile") as driver:
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"
        )
        assert images and all(complete and width > 0 for _, complete, width in images), images
        tables = driver.execute_script("return document.querySelectorAll('table').length;")
        assert tables == 5  # findings, models, the faithfulness matrix, sanity checks, agreement between maps
        colours = driver.execute_script(
            "return Array.from(document.querySelectorAll('table.findings td:first-child span'))"
            ".map(s => [s.textContent, getComputedStyle(s).color]);"
        )
        assert colours == [["✓", "rgb(26, 127, 55)"], ["✗", "rgb(198, 40, 40)"], ["•", "rgb(136, 136, 136)"]]
        headings = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent);")
        assert "Faithfulness" in headings
        shot = screenshot(driver, folder.parent / "report_screenshot.png")
        assert shot.stat().st_size > 10_000
        print(f"\nscreenshot of the report: {shot}")


def test_the_report_is_drawn_from_the_comparison_alone(report, monkeypatch, tmp_path):
    """No model runs in write_report: everything it shows was kept by compare."""
    _, _, result = report

    def forbidden(*args, **kwargs):
        raise AssertionError("write_report ran a model")

    for name in ("__call__", "predict", "predict_on_batch"):
        monkeypatch.setattr(keras.Model, name, forbidden)
    path = write_report(result, CLASSES, tmp_path)
    assert "Most informative patches per class (bagnet)" in open(path, encoding="utf-8").read()
    assert result.images.dtype == np.uint8 and result.images.shape == (6, SIZE, SIZE, 3)
    assert result.evidence["boxes"].shape == (6, 3, 4) and sorted(result.patches) == [0, 1, 2]


class _Tables(HTMLParser):
    """The tables of a page: rows of cells, each cell its text and whether it is bold."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.bold, self.in_cell = [], 0, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append(["", False])
            self.in_cell = True
        elif tag == "b":
            self.bold += 1

    def handle_endtag(self, tag):
        if tag == "b":
            self.bold -= 1
        elif tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data):
        if self.in_cell:
            cell = self.tables[-1][-1][-1]
            cell[0] += data
            cell[1] = cell[1] or bool(self.bold and data.strip())


def test_findings_are_one_line_each_with_their_mark_and_numbers(report):
    path, _, _ = report
    findings = _Tables(open(path, encoding="utf-8").read()).tables[0]
    assert [[text for text, _ in row] for row in findings] == [
        ["", "finding", "numbers"],
        ["✓", "BagNet evidence points into the masks", "3 of 6 images"],
        ["✗", "The CNN's Grad-CAM points into the masks", "1 of 6 images"],
        ["•", "A sentence of an older run, without a verdict.", ""],
    ]


def test_the_faithfulness_matrix_has_a_row_per_map_and_marks_the_best_of_each_measure(report):
    path, _, result = report
    text = open(path, encoding="utf-8").read()
    section = text[text.index("<h2>Faithfulness</h2>") :]
    header, *rows = _Tables(section).tables[0]
    header = [name for name, _ in header]
    assert header[:2] == ["model", "method"] and header[-2:] == ["random\u00adisation", "input shift"]
    measures = [name.removesuffix(" ↑").removesuffix(" ↓").replace(" ", "_") for name in header[2:-2]]
    maps = {(a["model"], a["method"]) for a in result.aggregates if a["method"] and a["metric"] != "spearman"}
    assert maps == set(result.maps)
    assert sorted((row[0][0], row[1][0]) for row in rows) == sorted(maps)  # one row per (model, method)
    expected_measures = {a["metric"] for a in result.aggregates if (a["model"], a["method"]) in maps}
    assert sorted(measures) == sorted(expected_measures) and {"deletion_area", "pointing"} <= set(measures)
    starred = 0
    for column, metric in enumerate(measures, start=2):
        means = {}
        for row in rows:
            key, (cell, bold) = (row[0][0], row[1][0]), row[column]
            if metric == f"deletion_on_{key[0]}":  # a map's cells masked for its own model: deletion_area
                assert cell == "–"
                continue
            mean = result.aggregate(*key, metric)["mean"]
            shown, half = cell.split("±")  # the mean (and its star), then the half-width beneath it
            assert float(shown.removesuffix(" ★")) == pytest.approx(mean, rel=5e-3, abs=1e-9), (key, metric, cell)
            row_ = result.aggregate(*key, metric)
            assert float(half) == pytest.approx((row_["high"] - row_["low"]) / 2, rel=0.05, abs=1e-9)
            means[key] = mean
            assert bold == ("★" in cell), cell
        direction = higher_is_better(metric)
        best = (max if direction else min)(means.values())
        expected = (
            set() if direction is None or len(set(means.values())) == 1 else {k for k, v in means.items() if v == best}
        )
        assert {(row[0][0], row[1][0]) for row in rows if "★" in row[column][0]} == expected, metric
        starred += bool(expected)
    assert starred >= 2  # deletion and insertion areas at least tell these maps apart
    verdicts = {(e["model"], e["method"]): e["passed"] for e in result.sanity["randomization"]}
    mark = {True: "✓", False: "✗", None: "–"}
    assert {(row[0][0], row[1][0]): row[-2][0] for row in rows} == {k: mark[v] for k, v in verdicts.items()}
    lead = re.search(r'<p class="lead">(.*?)</p>', section).group(1)
    assert lead.startswith("Best maps: ") and "sanity" in lead
