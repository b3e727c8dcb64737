"""examples/street_city.py, the study end to end: offline on a dataset folder, and crawled from 127.0.0.1."""

import importlib.util
import json
import os

import pytest
from PIL import Image
from search_server import SearchServer, jpeg_bytes

from data_tools.synthetic import textures

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "street_city.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("street_city", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_vgg(include_top=False, weights=None, input_tensor=None):
    """VGG16's layout (blocks of 3x3 convolutions and ReLUs, then max pooling; its layer names) at a width of 8."""
    import keras

    x = input_tensor
    for block, convs in enumerate((1, 1, 2), start=1):
        for i in range(1, convs + 1):
            x = keras.layers.Conv2D(8 * block, 3, padding="same", activation="relu", name=f"block{block}_conv{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(keras.utils.get_source_inputs(input_tensor), x, name="tiny_vgg")


@pytest.fixture
def tiny_backbones(monkeypatch):
    """The study's two kinds of backbone, small: a VGG-shaped CNN and a BagNet of one block per stage.

    Registered beside the real ones, so the example builds, trains and explains them by name as it does
    VGG16 and BagNet-33 (those at full size cost minutes of CPU for the same code path).
    """
    import functools

    from bagnet_keras import BagNet
    from bagnet_keras.models.imagenet import preprocess_input
    from bagnet_keras.transfer.backbones import BACKBONES, Backbone

    tiny_bagnet = functools.partial(BagNet, (1, 1, 1, 1), (1, 1, 0, 0), base_width=8, stem_width=16)
    monkeypatch.setitem(BACKBONES, "tinyvgg", Backbone("tinyvgg", _tiny_vgg, preprocess_input, None, 32, "block3"))
    bagnet = Backbone("tinybagnet", tiny_bagnet, preprocess_input, None, 32, "conv4_block1", bagnet=True)
    monkeypatch.setitem(BACKBONES, "tinybagnet", bagnet)


def _tiny(out, *extra):
    return ["--out", str(out), "--weights", "none", "--image-size", "32", "--epochs", "1", *extra]


def test_offline_on_a_dataset_folder_with_the_best_models_explained(example, tiny_backbones, tmp_path, capsys):
    images, labels = textures(8, 72, seed=13)
    for k, city in enumerate(["Paris", "Tokyo", "New York"]):
        (tmp_path / "data" / city).mkdir(parents=True)
        for i, image in enumerate(images[labels == k]):
            Image.fromarray(image).save(tmp_path / "data" / city / f"{i:03d}.jpg", quality=95)
    argv = _tiny(tmp_path / "runs", "--data", str(tmp_path / "data"), "--backbones", "tinyvgg", "tinybagnet")
    argv += ["--modes", "transfer", "--explain-images", "4", "--sanity", "1", "--visualization-steps", "8"]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert set(results) == {"tinyvgg/transfer", "tinybagnet/transfer"}
    assert set(results["tinyvgg/transfer"]) == {"city", "region"}
    assert results["tinyvgg/transfer"]["region"]["class_names"] == ["Eastern", "Western"]
    # the study's table and its figure, from the results
    table = (tmp_path / "runs" / "results.md").read_text()
    accuracy = results["tinyvgg/transfer"]["region"]["accuracy"]
    assert f"| tinyvgg | transfer | {results['tinyvgg/transfer']['city']['accuracy']:.3f} | {accuracy:.3f} |" in table
    assert table in out and (tmp_path / "runs" / "results.png").stat().st_size > 0
    assert sorted(os.listdir(tmp_path / "runs" / "tinyvgg" / "transfer")) == [
        "backup",
        "best.keras",
        "city.keras",
        "confusion_city.png",
        "confusion_region.png",
        "history.csv",
        "run.json",
    ]
    # Grad-CAM of the CNN beside the BagNet's evidence, the atlas and the explorer
    assert "explaining cnn: tinyvgg/transfer" in out and "explaining bagnet: tinybagnet/transfer" in out
    explained = tmp_path / "runs" / "explain"
    comparison = json.loads((explained / "comparison" / "comparison.json").read_text())
    assert comparison["summary"]["n_images"] == 3  # the test split holds 3
    assert {(row["model"], row["method"]) for row in comparison["aggregates"]} >= {
        ("cnn", "gradcam"),
        ("bagnet", "evidence"),
    }
    for page in ("report.html", "atlas.html", "explorer.html"):
        assert "https://" not in (explained / page).read_text()


def test_crawled_from_the_image_host(example, tmp_path, capsys):
    server = SearchServer()
    try:
        for c, city in enumerate(example.CITIES):
            query = example.QUERY.format(label=city)
            server.results[query] = [f"/img/{c}_{i}.jpg" for i in range(10)]
            for i in range(10):
                server.images[f"{c}_{i}.jpg"] = jpeg_bytes(100 * c + i, size=64)
        argv = _tiny(tmp_path / "runs", "--endpoint", server.url, "--per-class", "10", "--backbones", "vgg16")
        assert example.main([*argv, "--modes", "svm", "--explain-images", "0"]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    assert "crawled: {" in out and "| vgg16 | svm |" in out
    manifest = (tmp_path / "runs" / "data" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) >= 100 and all(json.loads(line)["class"] in example.CITIES for line in manifest)
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert results["vgg16/svm"]["city"]["class_names"] == sorted(example.CITIES)
