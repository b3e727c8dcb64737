"""The atlas page and command (issue 11): written from trained-model files, rendered in headless Chromium."""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
from browser import page, screenshot
from PIL import Image

from bagnet_keras import BagNet
from bagnet_keras.app.cli import main
from bagnet_keras.app.demo import small_cnn
from bagnet_keras.explain.atlas import feature_atlas
from bagnet_keras.explain.factorize import factorize
from bagnet_keras.report import atlas_page
from bagnet_keras.report.plot import projection_display
from bagnet_keras.transfer.heads import build_classifier
from data_tools.clean import clean
from data_tools.split import split
from data_tools.synthetic import motif_scene

SIZE = 48
CLASSES = ["cross", "ring", "triangle"]


def test_atlas_command_writes_a_page_that_renders(tmp_path, capsys):
    data = tmp_path / "scenes"
    for k, label in enumerate(CLASSES):
        (data / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(motif_scene(label, seed=10 * k + i, size=SIZE)[0]).save(data / label / f"{i}.png")
    clean(str(data), min_size=32, progress=False)
    split(str(data), seed=0)
    keras.utils.set_random_seed(0)
    bagnet = BagNet(
        blocks=(1, 1, 1, 1),
        kernel3=(1, 1, 1, 0),
        base_width=8,
        stem_width=16,
        include_top=False,
        input_shape=(SIZE, SIZE, 3),
    )
    for name, backbone in (("bagnet", bagnet), ("cnn", small_cnn((SIZE, SIZE, 3), 8))):
        build_classifier(backbone, {"label": 3}, mode="scratch").save(tmp_path / f"{name}.keras")
    out = tmp_path / "atlas"
    argv = [
        "atlas",
        "--model",
        f"bagnet={tmp_path / 'bagnet.keras'}",
        "--model",
        f"cnn={tmp_path / 'cnn.keras'}",
        "--data",
        str(data),
        "--split",
        "train",
        "--image-size",
        str(SIZE),
        "--units",
        "3",
        "--k",
        "4",
        "--groups",
        "2",
        "--batch-size",
        "4",
    ]
    # `explore` is `atlas` with the explorer page beside it: the same passes, the same atlas page
    assert main(["explore", *argv[1:], "--out", str(out)]) == 0
    assert f"explorer: {out / 'explorer.html'}" in capsys.readouterr().out
    explorer = (out / "explorer.html").read_text()
    assert '"maps"' in explorer and '"groups"' in explorer and "https://" not in explorer
    text = (out / "atlas.html").read_text()
    assert not re.search(r'src="(?!data:image/png;base64,)', text), "an image is not embedded"
    for section in ("Units: strongest activations", "Building blocks", "Class concepts (BagNet)"):
        assert section in text, section
    assert text.count("<img ") == len(os.listdir(out / "figures"))
    assert sorted(os.listdir(out)) == ["atlas.html", "atlas.json", "classes.json", "explorer.html", "figures", "passes"]
    with page(out / "atlas.html", tmp_path / "profile") as driver:
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        # units, groups and concepts of the BagNet; units and groups of the CNN
        assert len(images) == 5 and all(done and width > 0 for done, width in images), images
        assert driver.execute_script("return document.querySelectorAll('table').length;") >= 3
        # every figure at its own size, not scaled down (its tiles stay at least 96 px)
        sizes = driver.execute_script("return Array.from(document.images).map(i => [i.width, i.naturalWidth]);")
        assert all(width == natural for width, natural in sizes), sizes
        shot = screenshot(driver, tmp_path / "atlas_screenshot.png")
        assert shot.stat().st_size > 10_000
        print(f"\nscreenshot of the atlas: {shot}")

    # Two shards and merge give the page of the one run, figure for figure
    shards = [str(tmp_path / f"shard-{i}") for i in range(2)]
    for i, folder in enumerate(shards):
        assert main([*argv, "--shard", f"{i}/2", "--out", folder]) == 0
        assert not os.path.exists(os.path.join(folder, "atlas.html"))
    assert main(["merge", str(tmp_path / "merged"), *shards]) == 0
    assert (tmp_path / "merged" / "atlas.html").read_text() == text
    other = tmp_path / "other"
    shutil.copytree(shards[1], other)
    settings = json.loads((other / "atlas.json").read_text())
    (other / "atlas.json").write_text(json.dumps({**settings, "k": 3}))
    assert main(["merge", str(tmp_path / "bad"), shards[0], str(other)]) == 2
    assert "not shards of the same atlas run (differing: k)" in capsys.readouterr().err

    # A model the explorer cannot show (no BagNet, no ReLU before the last layer to factorise): refused before
    # either page is written
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Conv2D(4, 3, strides=4, name="conv")(inputs)
    build_classifier(keras.Model(inputs, features), {"label": 3}, mode="scratch").save(tmp_path / "plain.keras")
    refused = tmp_path / "refused"
    plain = ["explore", "--model", f"plain={tmp_path / 'plain.keras'}", *argv[5:], "--out", str(refused)]
    assert main(plain) == 2
    assert "The explorer needs a CNN whose last layer factorises" in capsys.readouterr().err
    assert not {"atlas.html", "explorer.html"} & set(os.listdir(refused))


def test_projections_show_their_pattern_not_one_grey():
    # a guided-backprop projection is sparse: most pixels small, a few very large
    rng = np.random.default_rng(0)
    projection = rng.normal(scale=0.01, size=(1, 32, 32, 3))
    projection[0, 16, 16] = 5.0
    shown = projection_display(projection)
    assert shown.min() >= 0 and shown.max() <= 1 and shown[0, 16, 16].tolist() == [1.0, 1.0, 1.0]
    assert np.mean(np.abs(shown - 0.5) > 0.1) > 0.3  # not one grey
    assert projection_display(np.zeros((1, 4, 4, 3))).tolist() == np.full((1, 4, 4, 3), 0.5).tolist()


def test_visualisations_come_first_and_every_tile_is_large(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv")])
    x = np.random.default_rng(0).uniform(size=(6, 12, 12, 3)).astype("float32")
    atlas = feature_atlas(model, x, ["conv"], units=2, k=3, progress=False)
    groups = factorize(model, x, "conv", n_groups=2, k=3, progress=False)
    visual = np.zeros((8, 8, 3))
    visual[..., 0] = 1.0
    unit = int(atlas.units[atlas.layers[0]][1])
    entry = atlas_page.ModelAtlas(
        atlas=atlas, groups=groups, visualizations={("conv", unit): visual}, group_visualizations={1: visual}
    )
    drawn = {}

    class Recording(atlas_page.Figures):
        def __call__(self, fig, name, alt):
            html = super().__call__(fig, name, alt)
            drawn[name] = fig
            return html

    monkeypatch.setattr(atlas_page, "Figures", Recording)
    text = open(atlas_page.write_atlas({"m": entry}, x, tmp_path), encoding="utf-8").read()
    assert "feature visualisation" in text
    assert sorted(drawn) == ["m_groups", "m_units_conv"]
    for name, grid in drawn.items():
        titled = [(top, left) for top, left, title in grid.tiles if title == "visualisation"]
        assert len(titled) == 1, name  # one unit (group) has a visualisation: the first tile of its line
        top, left = titled[0]
        assert np.array_equal(grid.tile(top, left), np.broadcast_to([255, 0, 0], (100, 100, 3)))
        first_line = sorted((t for t in grid.tiles if t[0] == top), key=lambda t: t[1])
        assert first_line[0][:2] == (top, left)
        assert first_line[1][2] in (f"conv unit {unit}", "group 1")
        # every tile 100 px on the page (no figure wider than the page's 1100 px, so none is scaled down)
        assert grid.pixels.shape[1] <= 1100 and atlas_page.TILE == 100
    wrong = atlas_page.ModelAtlas(atlas=atlas, visualizations={("conv", unit): np.zeros((8, 8))})
    with pytest.raises(
        ValueError, match=r"images \(h, w, 3\) in \[0, 1\]; the one of \('conv', \d+\) has shape \(8, 8\)"
    ):
        atlas_page.write_atlas({"m": wrong}, x, tmp_path / "wrong")
