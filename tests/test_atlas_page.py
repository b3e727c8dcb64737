"""The atlas page and command (issue 11): written from trained-model files, rendered in headless Chromium."""

import json
import os
import re
import shutil

import keras
from browser import page, screenshot
from PIL import Image

from bagnet_keras import BagNet
from bagnet_keras.app.cli import main
from bagnet_keras.app.demo import small_cnn
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
    assert main([*argv, "--out", str(out)]) == 0
    text = (out / "atlas.html").read_text()
    assert not re.search(r'src="(?!data:image/png;base64,)', text), "an image is not embedded"
    for section in ("Units: strongest activations", "Building blocks", "Class concepts (BagNet)"):
        assert section in text, section
    assert text.count("<img ") == len(os.listdir(out / "figures"))
    assert sorted(os.listdir(out)) == ["atlas.html", "atlas.json", "classes.json", "figures", "passes"]
    with page(out / "atlas.html", tmp_path / "profile") as driver:
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        # units, groups and concepts of the BagNet; units and groups of the CNN
        assert len(images) == 5 and all(done and width > 0 for done, width in images), images
        assert driver.execute_script("return document.querySelectorAll('table').length;") >= 3
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
