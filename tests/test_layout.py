"""The package's layout: public names, import direction, a light command line, old .keras files (issue 14)."""

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import bagnet_keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "bagnet_keras")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# Every name `from bagnet_keras import ...` gave before the subpackages (commit 19a0a26), plus later ones.
PUBLIC_BEFORE = [
    "BagNet",
    "BagNet17",
    "BagNet33",
    "BagNet9",
    "bagnet_geometry",
    "BaseCAM",
    "build_classifier",
    "cam",
    "coarse_labels",
    "decode_predictions",
    "deprocess_input",
    "evaluate_classifier",
    "evidence_map",
    "evidence_maps",
    "evidence_model",
    "EvidenceMap",
    "fit_classifier",
    "Geometry",
    "GradCAM",
    "GradCAMPlusPlus",
    "guided_backprop",
    "guided_gradcam",
    "imagenet_classes",
    "LayerCAM",
    "load_checkpoint",
    "load_imagenet_weights",
    "occlusion",
    "preprocess_input",
    "receptive_field",
    "save_model",
    "ScoreCAM",
    "svm_baseline",
    "SVMBaseline",
    "top_patches",
    "TopPatches",
    "UnsafeCheckpointError",
    "with_heads",
    "OneDNNCrashWarning",
]

# What each subpackage may import: downwards only (app -> report -> metrics -> explain -> models -> core,
# transfer -> models), and data_tools from the application alone.
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "explain": {"core", "models", "explain"},
    "transfer": {"core", "models", "transfer"},
    "metrics": {"core", "models", "explain", "metrics"},
    "report": {"core", "models", "explain", "metrics", "report"},
    "app": {"core", "models", "explain", "transfer", "metrics", "report", "app", "data_tools"},
}


@pytest.mark.parametrize("name", PUBLIC_BEFORE)
def test_every_public_name_is_still_importable(name):
    """A newcomer's name stays at the top; the rest resolve there with a DeprecationWarning (issue 28)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        value = getattr(bagnet_keras, name)
    assert not isinstance(value, type(bagnet_keras)), f"bagnet_keras.{name} is a module"
    if name in bagnet_keras._MOVED:
        assert name in importlib.import_module(bagnet_keras._MOVED[name]).__all__
    else:
        assert name in bagnet_keras.__all__ and name in dir(bagnet_keras)


def test_entry_points_are_functions_at_the_top():
    from bagnet_keras.metrics.comparison import compare
    from bagnet_keras.report.html import write_report

    assert bagnet_keras.compare is compare and bagnet_keras.write_report is write_report
    from bagnet_keras.explain import cam, occlusion

    assert callable(cam) and callable(occlusion)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bagnet_keras.nope  # noqa: B018


def _imports(path):
    """(line, top-level target) of every bagnet_keras / data_tools import in a file, function bodies included."""
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module + "." + alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "data_tools":
                yield node.lineno, "data_tools"
            elif parts[0] == "bagnet_keras" and len(parts) > 1:
                # a public name imported from the top is charged to the subpackage that defines it
                yield node.lineno, bagnet_keras._EXPORTS.get(parts[1], parts[1]).split(".")[0]


def test_imports_point_downwards_only():
    upward = []
    for package in ALLOWED:
        folder = os.path.join(PACKAGE, package)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                for line, target in _imports(os.path.join(folder, name)):
                    if target not in ALLOWED[package]:
                        upward.append(f"bagnet_keras/{package}/{name}:{line} imports {target}")
    assert not upward, "\n".join(upward)
    flat = [name for name in os.listdir(PACKAGE) if name.endswith(".py") and name != "__init__.py"]
    assert not flat, f"modules outside the subpackages: {flat}"


def _run(*args):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def test_crawl_help_and_data_tools_load_no_tensorflow():
    console_script = "import sys; from bagnet_keras.app.cli import main; sys.exit(main(['crawl', '--help']))"
    code, out, err = _run("-c", console_script)
    assert code == 0 and "bagnet-keras crawl" in out
    imported = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if "|" in line]
    assert "bagnet_keras.app.cli" in imported
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")], "crawl --help loaded TensorFlow"
    code, _, err = _run("-c", "import bagnet_keras, data_tools.crawl")
    imported = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if "|" in line]
    assert code == 0 and "data_tools.crawl" in imported and "tensorflow" not in imported


def test_a_keras_file_saved_before_the_move_still_loads():
    """tests/fixtures/pre_layout_bagnet.keras was saved by commit 19a0a26, when the classes lived in
    bagnet_keras.layers and bagnet_keras.inference; their registered names did not change."""
    import zipfile

    import keras
    from packaging.version import Version

    from bagnet_keras.models import BagNetModel

    path = os.path.join(FIXTURES, "pre_layout_bagnet.keras")
    with zipfile.ZipFile(path) as archive:
        saved_by = json.loads(archive.read("metadata.json"))["keras_version"]
    if Version(keras.__version__) < Version(saved_by):
        # Keras reads files of its own version and older ones; 3.15 writes BatchNormalization arguments 3.13 lacks
        pytest.skip(f"the fixture was saved by Keras {saved_by}, which Keras {keras.__version__} cannot read")
    model = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(model, BagNetModel)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = np.load(os.path.join(FIXTURES, "pre_layout_bagnet_out.npy"))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)


PRIVATE_KERAS = (
    "_keras_history",
    "_inbound_nodes",
    "_outbound_nodes",
    "_nodes_by_depth",
    "_run_through_graph",
    "._functional",
    "_symbolic_build",
    "_distribute_strategy",
)


def test_private_keras_internals_live_in_the_graph_module_alone():
    found = []
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".py") and os.path.relpath(path, PACKAGE) != os.path.join("core", "graph.py"):
                text = open(path, encoding="utf-8").read()
                found += [f"{os.path.relpath(path, ROOT)}: {attr}" for attr in PRIVATE_KERAS if attr in text]
    assert not found, found


BACKEND_MODULE = os.path.join("core", "backend.py")
# TensorFlow beyond the backend module: tf.data (the input format on every backend), tf.distribute and
# TensorFlow's own start-up and oneDNN checks.
TENSORFLOW_ALLOWED = {
    os.path.join("app", "cli.py"),
    os.path.join("metrics", "faithfulness.py"),
    os.path.join("transfer", "labels.py"),
    os.path.join("transfer", "onednn.py"),
    os.path.join("transfer", "training.py"),
}


def test_backend_specific_code_lives_in_the_backend_module():
    found = []
    for folder, _, names in os.walk(PACKAGE):
        for name in (n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, PACKAGE)
            if relative == BACKEND_MODULE:
                continue
            text = open(path, encoding="utf-8").read()
            imports = re.findall(r"^\s*(?:import|from) (tensorflow|jax|torch)\b", text, re.M)
            found += [f"{relative}: {m}" for m in imports if m != "tensorflow" or relative not in TENSORFLOW_ALLOWED]
    assert not found, found


def test_predict_falls_back_to_keras_when_the_graph_walk_is_unavailable(monkeypatch):
    """A Keras release without the private graph API must still let BagNet33().predict(x) work."""
    import keras

    from bagnet_keras import BagNet
    from bagnet_keras.core import graph
    from bagnet_keras.models import inference

    model = BagNet(blocks=(1, 1, 1, 1), base_width=4, classes=3, classifier_activation=None)
    x = np.random.default_rng(0).normal(size=(3, 40, 40, 3)).astype("float32")
    folded = model.predict(x, verbose=0)
    keras_loop = []
    original = keras.Model.predict
    monkeypatch.setattr(keras.Model, "predict", lambda self, *a, **k: keras_loop.append(1) or original(self, *a, **k))
    assert graph.graph_walk_available(model) and not keras_loop
    # as under a Keras release whose private graph API this package does not know
    monkeypatch.setattr(inference, "graph_walk_available", lambda model: False)
    np.testing.assert_allclose(model.predict(x, verbose=0), folded, atol=1e-4)
    assert keras_loop == [1]


def test_graph_walk_needs_the_private_api():
    import keras

    from bagnet_keras.core import graph

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert not graph.graph_walk_available(Subclassed())
    assert graph.graph_walk_available(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
