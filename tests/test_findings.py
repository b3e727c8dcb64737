"""Findings (issue 24): one-line claims with a verdict and their numbers; the demo's findings built from a
hand-made comparison (no model runs)."""

import json

import numpy as np
import pytest

from bagnet_keras.app.demo import demo_findings
from bagnet_keras.app.demo_atlas import atlas_findings
from bagnet_keras.metrics.results import Comparison
from bagnet_keras.report.findings import Finding, higher_is_better
from data_tools.synthetic import ARRANGEMENT_CLASSES, MOTIF_CLASSES


def test_a_finding_is_one_line_with_its_mark_and_keeps_through_json():
    holds = Finding("BagNet evidence points into the motifs", np.float64(0.9) >= np.float64(0.8), "91 % vs 85 %")
    assert holds.holds is True and type(holds.holds) is bool  # a numpy verdict is stored as a plain bool
    assert str(holds) == "✓ BagNet evidence points into the motifs — 91 % vs 85 %"
    assert str(Finding("The CNN wins", False)) == "✗ The CNN wins"
    assert Finding("Test accuracy", None, "BagNet 90 %").mark == "•"
    written = json.dumps([holds.to_json()])
    assert [Finding.from_json(v) for v in json.loads(written)] == [holds]


def test_findings_of_older_run_folders_still_load():
    # atlas_findings.json of older runs: a JSON list of sentences
    old = json.loads(json.dumps(["Atlas of the CNN's last conv layer (conv5_relu): ...: holds."]))
    (finding,) = [Finding.from_json(v) for v in old]
    assert finding == Finding("Atlas of the CNN's last conv layer (conv5_relu): ...: holds.", None)
    with pytest.raises(ValueError, match="Received: 3"):
        Finding.from_json(3)
    with pytest.raises(ValueError, match="verdict"):
        Finding.from_json({"claim": "x", "verdict": True})
    with pytest.raises(TypeError, match="holds=nan"):
        Finding("x", float("nan"))


def test_the_direction_of_every_measure():
    assert higher_is_better("deletion_area") is False and higher_is_better("deletion_on_bagnet") is False
    assert higher_is_better("insertion_area") is True
    assert higher_is_better("pointing") is True and higher_is_better("energy") is True
    assert higher_is_better("linearity_sum") is None and higher_is_better("spearman") is None


def _aggregate(model, method, metric, mean):
    return {"model": model, "method": method, "metric": metric, "mean": mean, "low": mean, "high": mean, "n": 4}


def _comparison() -> tuple[Comparison, list[str]]:
    """A comparison made by hand: the BagNet's evidence points into every motif, the CNN's maps into half."""
    names = [*MOTIF_CLASSES, *ARRANGEMENT_CLASSES]
    cnn_maps = ["gradcam", "gradcam@conv3_relu", "saliency"]
    maps = {("bagnet", "evidence"): None, ("bagnet", "gradcam"): None, **{("cnn", m): None for m in cnn_maps}}
    rows = [
        {"model": model, "method": method, "label": label, "pointing": float(model == "bagnet" or label % 2)}
        for (model, method) in maps
        for label in range(3)
    ]
    model_rows = [
        {"model": model, "label": label, "correct": float(model == "cnn" or label < 3)}
        for model in ("bagnet", "cnn")
        for label in range(5)
    ]
    deletion = {"evidence": 0.1, "gradcam": 0.3, "saliency": 0.4, "gradcam@conv3_relu": 0.35}
    aggregates = [_aggregate("bagnet", m, "deletion_area", deletion[m]) for m in ("evidence", "gradcam")]
    aggregates += [_aggregate("cnn", m, "deletion_on_bagnet", 0.2) for m in cnn_maps]
    aggregates += [_aggregate("cnn", m, "deletion_area", deletion[m]) for m in cnn_maps]
    aggregates.append(_aggregate("bagnet", "evidence", "deletion_on_cnn", 0.5))
    sanity = {
        "images": 8,
        "randomization": [{"model": m, "method": k, "passed": k != "saliency"} for m, k in maps],
        "invariance": [{"model": m, "method": k, "passed": True} for m, k in maps],
    }
    summary = {"accuracy": {"bagnet": 0.6, "cnn": 1.0}}
    result = Comparison(
        rows=rows, model_rows=model_rows, aggregates=aggregates, summary=summary, maps=maps, sanity=sanity
    )
    return result, names


def test_demo_findings_state_their_verdicts_and_numbers():
    result, names = _comparison()
    findings = demo_findings(result, np.zeros(0, int), names, "bagnet", "cnn")
    assert all(isinstance(f, Finding) and "\n" not in str(f) for f in findings)
    by_start = {f.claim.split()[0]: f for f in findings}
    pointing = by_start["Pointing"]
    assert pointing.holds is True and "BagNet evidence 100 %" in pointing.numbers
    assert "best CNN map gradcam 33 %" in pointing.numbers and "Grad-CAM of the BagNet 100 %" in pointing.numbers
    assert "best passing both sanity checks gradcam 33 %" in pointing.numbers
    arrangement = by_start["On"]
    assert arrangement.holds is True and "BagNet 0 %, CNN 100 % (chance 50 %)" in arrangement.numbers
    deletion = by_start["Deletion"]
    assert (
        deletion.holds is True and deletion.numbers == "evidence 0.100, gradcam 0.300, CNN's best map (gradcam) 0.200"
    )
    masking = by_start["Masking"]
    assert masking.holds is False and "BagNet's cells 0.500; best own attribution saliency 0.400" in masking.numbers
    sanity = by_start["Sanity"]
    assert sanity.holds is None and sanity.claim == "Sanity checks on 8 test images: 1 of 5 maps fail one or both"
    assert sanity.numbers == "failed: cnn saliency (randomisation)"
    assert str(findings[-1]) == "• Test accuracy — BagNet 60 %, CNN 100 %"
    # what the demo keeps in its run folder, and reads back
    assert [Finding.from_json(v) for v in json.loads(json.dumps([f.to_json() for f in findings]))] == findings


def test_atlas_findings_are_findings():
    assert atlas_findings(None, None, None, np.zeros((1, 8, 8), bool), np.zeros(1, int), ["cross"]) == []


def test_the_atlas_finding_names_the_purest_unit():
    from types import SimpleNamespace

    masks = np.zeros((4, 8, 8), bool)
    masks[:, :2, :2] = True  # every image's motif: its top-left corner
    labels = np.zeros(4, int)
    geometry = SimpleNamespace(offset=0, stride=2, patch_size=2)
    tops = {0: [(i % 4, 0, 0, 1.0) for i in range(9)], 1: [(i % 4, 3, 3, 1.0) for i in range(9)]}
    atlas = SimpleNamespace(
        layers=["cnn/conv5_relu"],
        geometry={"cnn/conv5_relu": geometry},
        k=9,
        units={"cnn/conv5_relu": np.array([0, 1])},
        top=lambda layer, unit: tops[unit],
        row={"cnn/conv5_relu": np.array([[0] * 9, [3] * 9])},
        column={"cnn/conv5_relu": np.array([[0] * 9, [3] * 9])},
    )
    (finding,) = atlas_findings(atlas, None, None, masks, labels, ["cross"])
    assert finding.holds is True and finding.claim.startswith("Atlas of the CNN's last conv layer (conv5_relu): ")
    assert finding.numbers.startswith("purest unit 0: top 9 regions on the cross motif 9 of 9; 1 units or groups")
