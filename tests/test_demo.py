"""The main job end to end at a tiny scale (the full-size run and its numbers: README, bench notes)."""

import json
import os
import re

import numpy as np

from bagnet_keras.app.cli import main
from bagnet_keras.app.demo import small_bagnet, small_cnn
from bagnet_keras.core.geometry import receptive_field
from data_tools.synthetic import ARRANGEMENT_CLASSES, motif_scene, motif_template


def test_demo_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    # 16 visualisation steps keep the test short; its checks are stated with their numbers either way
    argv = ["demo", "--visualization-steps", "16", "--out", str(out), "--per-class", "12", "--image-size", "48"]
    argv += ["--epochs", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed
    for claim in (
        "Pointing game on the local-motif classes",
        "arrangement-only pair",
        "Deletion area on the BagNet",
        "Masking the cells the BagNet finds most informative",
        "Sanity checks on",
        "Atlas of the CNN's last conv layer",
        "BagNet class concepts",
        "The cnn's unit visualisations excite their units",
        "The bagnet's unit visualisations excite their units",
        "class visualisation of each motif class contains",
    ):
        assert claim in printed
    assert sorted(os.listdir(out)) == [
        "atlas.html",
        "atlas_findings.json",
        "comparison",
        "data",
        "explorer.html",
        "figures",
        "masks",
        "models",
        "report.html",
        "run.json",
        "stages.json",
        "visualizations.npz",
    ]
    summary = json.loads((out / "comparison" / "comparison.json").read_text())["summary"]
    assert set(summary["accuracy"]) == {"bagnet", "cnn"} and summary["n_images"] > 0
    text = (out / "report.html").read_text()
    assert "<h2>Findings</h2>" in text and re.search(r'<span class="(holds|fails)">[✓✗]</span>', text)
    explorer = (out / "explorer.html").read_text()
    assert '"maps"' in explorer and "http://" not in explorer and "https://" not in explorer

    # The same command again skips what is done: no scenes generated, nothing cleaned, no epoch trained, the
    # report not drawn again.
    written = {p: os.path.getmtime(p) for p in [*(out / "data").rglob("*"), out / "report.html"] if p.is_file()}
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "generating" not in again and "clean kept" not in again and "epoch 1/" not in again
    assert {p: os.path.getmtime(p) for p in written} == written
    assert f"report: {out / 'report.html'}" in again
    assert [line.split("] ", 1)[1] for line in again.splitlines() if "Test accuracy" in line] == [
        line.split("] ", 1)[1] for line in printed.splitlines() if "Test accuracy" in line
    ]
    # Other arguments into the same folder: refused, not mixed.
    assert main([*argv[:-1], "2"]) == 2
    assert "holds a run with other arguments (differing: epochs)" in capsys.readouterr().err


def test_the_arrangement_pair_is_out_of_reach_of_the_bagnet_patches():
    # No patch of the demo's BagNet can hold the dot and the bar at once, so it cannot see how they are arranged.
    patch = receptive_field(small_bagnet((64, 64, 3))).patch_size
    for label in ARRANGEMENT_CLASSES:
        for seed in range(20):
            _, mask = motif_scene(label, seed)
            ys, xs = np.nonzero(mask)
            # the parts are the mask's two connected blobs; their gap along the arrangement axis
            axis = ys if label == "dot_above_bar" else xs
            values = np.unique(axis)
            gap = np.max(np.diff(values)) - 1
            assert gap > patch, (label, seed, gap, patch)
    assert receptive_field(small_cnn((64, 64, 3))).patch_size >= 64  # while the CNN sees the whole scene


def test_the_disc_is_the_ring_with_its_hole_filled():
    ring, disc = motif_template("ring") > 0, motif_template("disc") > 0
    hole = np.zeros_like(ring)
    hole[5:8, 5:8] = True  # the template's centre is (6, 6)
    assert not (ring & hole).any() and np.array_equal(disc, ring | hole)
    image, mask = motif_scene("disc", seed=3)
    assert image.shape == (64, 64, 3) and 2 * disc.sum() <= mask.sum()  # two discs, dilated by one pixel


def test_demo_takes_a_dataset_folder_as_it_is(tmp_path):
    """A folder given is cleaned and split in place, once, and has no masks; from there the demo runs as on its
    generated scenes (test_demo_command_writes_the_report), with the maps' measures that need no mask."""
    from PIL import Image

    from bagnet_keras.app.demo import _prepare_data, _Say, _Stages
    from data_tools.manifest import read_manifest

    folder, out = tmp_path / "streets", tmp_path / "out"
    for k, label in enumerate(["cross", "ring", "triangle"]):
        (folder / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(motif_scene(label, seed=100 + 10 * k + i, size=48)[0]).save(
                folder / label / f"{i}.jpg", quality=95
            )
    out.mkdir()
    data, masks = _prepare_data(str(folder), str(out), _Stages(str(out)), _Say(False), 400, 48, 0)
    assert (data, masks) == (str(folder), None)
    records = read_manifest(str(folder))
    assert len(records) == 24 and {r["split"] for r in records.values()} == {"train", "val", "test"}
    assert sorted(os.listdir(out)) == ["stages.json"]  # nothing generated beside the folder
    before = (folder / "manifest.jsonl").read_bytes()
    assert _prepare_data(str(folder), str(out), _Stages(str(out)), _Say(False), 400, 48, 0) == (str(folder), None)
    assert (folder / "manifest.jsonl").read_bytes() == before  # a rerun does not split again


def test_imagenet_demo_pair_shares_one_preprocessing():
    from bagnet_keras.transfer.backbones import get_backbone

    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    a = np.asarray(get_backbone("bagnet33").preprocess(x.copy()))
    b = np.asarray(get_backbone("densenet121").preprocess(x.copy()))
    assert np.allclose(a, b)  # so `demo --weights imagenet` explains one input array with both models


def test_demo_on_a_folder_too_small_to_split_says_so(tmp_path):
    import pytest
    from PIL import Image

    from bagnet_keras.app.demo import run_demo

    for k, label in enumerate(["cross", "ring"]):
        (tmp_path / "few" / label).mkdir(parents=True)
        for i in range(4):
            image = motif_scene(label, seed=200 + 10 * k + i, size=48)[0]
            Image.fromarray(image).save(tmp_path / "few" / label / f"{i}.jpg", quality=95)
    with pytest.raises(ValueError, match=r"too small for the demo: its (val and )?test split would be empty"):
        run_demo(str(tmp_path / "out"), data=str(tmp_path / "few"), image_size=48, epochs=1, progress=False)
    assert not (tmp_path / "out" / "models").exists()  # stopped before training
