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


def _tiny(out, *extra):
    return ["--out", str(out), "--weights", "none", "--image-size", "32", "--epochs", "1", *extra]


def test_offline_on_a_dataset_folder_with_the_best_models_explained(example, tmp_path, capsys):
    images, labels = textures(8, 72, seed=13)
    for k, city in enumerate(["Paris", "Tokyo", "New York"]):
        (tmp_path / "data" / city).mkdir(parents=True)
        for i, image in enumerate(images[labels == k]):
            Image.fromarray(image).save(tmp_path / "data" / city / f"{i:03d}.jpg", quality=95)
    argv = _tiny(tmp_path / "runs", "--data", str(tmp_path / "data"), "--backbones", "vgg16", "bagnet9")
    argv += ["--modes", "transfer", "--explain-images", "4", "--sanity", "1", "--visualization-steps", "8"]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert set(results) == {"vgg16/transfer", "bagnet9/transfer"}
    assert set(results["vgg16/transfer"]) == {"city", "region"}
    assert results["vgg16/transfer"]["region"]["class_names"] == ["Eastern", "Western"]
    # the study's table and its figure, from the results
    table = (tmp_path / "runs" / "results.md").read_text()
    accuracy = results["vgg16/transfer"]["region"]["accuracy"]
    assert f"| vgg16 | transfer | {results['vgg16/transfer']['city']['accuracy']:.3f} | {accuracy:.3f} |" in table
    assert table in out and (tmp_path / "runs" / "results.png").stat().st_size > 0
    assert sorted(os.listdir(tmp_path / "runs" / "vgg16" / "transfer")) == [
        "backup",
        "best.keras",
        "city.keras",
        "confusion_city.png",
        "confusion_region.png",
        "history.csv",
        "run.json",
    ]
    # Grad-CAM of the CNN beside the BagNet's evidence, the atlas and the explorer
    assert "explaining cnn: vgg16/transfer" in out and "explaining bagnet: bagnet9/transfer" in out
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
