"""Bad inputs a person really gives, on every command and the main Python entry points (issue 29).

Each case ends in one of three outcomes: a clear error (a ValueError, or exit status 2 with one line
on stderr and no traceback) that names the value; a warning that names the file; or correct output.
After a refusal, the output folder is exactly as it was. The number checks themselves are tested
with generated values (Hypothesis).
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import pytest
from compare_case import motif_dataset, saved_models
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bagnet_keras.app.cli import main
from bagnet_keras.core.validation import check_int, check_number


def tree(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content); {} for a folder that does not exist."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def _one_class_dataset(root) -> None:
    """A cleaned, split dataset of one class (rings): the models score three."""
    from data_tools.clean import clean
    from data_tools.split import split
    from data_tools.synthetic import motif_scene

    (root / "ring").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(motif_scene("ring", seed=i, size=48)[0]).save(root / "ring" / f"{i}.png")
    clean(str(root), min_size=32, progress=False)
    split(str(root), ratios=(0.5, 0.25, 0.25))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small cleaned dataset, two tiny saved models and the odd files the cases give."""
    root = tmp_path_factory.mktemp("world")
    motif_dataset(root / "data")
    saved_models(root)
    keras.Sequential(
        [
            keras.Input((48, 48, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    ).save(root / "gray.keras")
    a, b = keras.Input((48, 48, 3)), keras.Input((4,))
    pooled = keras.layers.GlobalAveragePooling2D()(a)
    keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([pooled, b]))).save(root / "two.keras")
    keras.Sequential([keras.Input((48, 48, 3)), keras.layers.Conv2D(2, 3)]).save(root / "features.keras")
    _one_class_dataset(root / "one")
    Image.new("RGB", (1, 1)).save(root / "dot.png")
    Image.new("1", (20_000, 10_000)).save(root / "bomb.png")
    (root / "page.pth.tar").write_text("<!DOCTYPE html><html>Sign in</html>")
    (root / "empty.pth.tar").write_bytes(b"")
    (root / "fake.png").write_text("not an image")
    return root


def _compare(world, *extra, model=None):
    model = model or f"cnn={world / 'cnn.keras'}"
    return ["compare", "--model", model, "--data", str(world / "data"), "--image-size", "48", *extra]


def _explain(world, *extra):
    return ["explain", "--model", str(world / "cnn.keras"), "--image-size", "48", *extra]


# (name, argv(world, out), what the one line on stderr must say). Each is refused with exit status 2.
COMMAND_CASES = [
    (
        "explain --image-size 0",
        lambda w, o: _explain(w, "--data", str(w / "data"), "--out", o, "--image-size", "0"),
        r"--image-size=0",
    ),
    (
        "explain --image-size -5",
        lambda w, o: _explain(w, "--data", str(w / "data"), "--out", o, "--image-size", "-5"),
        r"--image-size=-5",
    ),
    (
        "explain --batch-size 0",
        lambda w, o: _explain(w, "--data", str(w / "data"), "--out", o, "--batch-size", "0"),
        r"--batch-size=0",
    ),
    ("explain a fake image", lambda w, o: _explain(w, "--images", str(w / "fake.png"), "--out", o), r"fake\.png"),
    (
        "explain --preprocess nope",
        lambda w, o: _explain(w, "--data", str(w / "data"), "--out", o, "--preprocess", "nope"),
        r"Unknown backbone 'nope'",
    ),
    (
        "explain a bomb",
        lambda w, o: _explain(w, "--images", str(w / "bomb.png"), "--out", o),
        r"bomb\.png.*bomb",
    ),
    (
        "explain a missing model",
        lambda w, o: ["explain", "--model", str(w / "no.keras"), "--images", str(w / "dot.png"), "--out", o],
        r"no\.keras",
    ),
    (
        "explain a two-input model",
        lambda w, o: [
            "explain",
            "--model",
            str(w / "two.keras"),
            "--images",
            str(w / "dot.png"),
            "--out",
            o,
            "--image-size",
            "48",
        ],
        r"2 inputs",
    ),
    (
        "explain a feature extractor",
        lambda w, o: [
            "explain",
            "--model",
            str(w / "features.keras"),
            "--images",
            str(w / "dot.png"),
            "--out",
            o,
            "--image-size",
            "48",
        ],
        r"features\.keras.*class scores",
    ),
    (
        "compare a one-channel model",
        lambda w, o: _compare(w, "--out", o, model=f"gray={w / 'gray.keras'}"),
        r"gray\.keras.*1 channel",
    ),
    (
        "compare gradcam@no_such_layer",
        lambda w, o: _compare(w, "--out", o, "--methods", "gradcam@no_such_layer"),
        r"no_such_layer",
    ),
    (
        "compare a dataset of one class",
        lambda w, o: ["compare", "--model", f"cnn={w / 'cnn.keras'}", "--data", str(w / "one"), "--out", o],
        r"scores 3 classes but the dataset .* has 1 \(ring\)",
    ),
    ("compare --max-images -3", lambda w, o: _compare(w, "--out", o, "--max-images", "-3"), r"--max-images=-3"),
    ("compare --batch-size 0", lambda w, o: _compare(w, "--out", o, "--batch-size", "0"), r"--batch-size=0"),
    ("compare --sanity -1", lambda w, o: _compare(w, "--out", o, "--sanity", "-1"), r"--sanity=-1"),
    ("compare --shard 3/2", lambda w, o: _compare(w, "--out", o, "--shard", "3/2"), r"3/2"),
    (
        "compare a missing data folder",
        lambda w, o: ["compare", "--model", f"cnn={w / 'cnn.keras'}", "--data", str(w / "nowhere"), "--out", o],
        r"nowhere",
    ),
    (
        "atlas --k 0",
        lambda w, o: ["atlas", "--model", f"cnn={w / 'cnn.keras'}", "--data", str(w / "data"), "--out", o, "--k", "0"],
        r"--k=0",
    ),
    (
        "atlas --units 0",
        lambda w, o: [
            "atlas",
            "--model",
            f"cnn={w / 'cnn.keras'}",
            "--data",
            str(w / "data"),
            "--out",
            o,
            "--units",
            "0",
        ],
        r"--units=0",
    ),
    ("demo --epochs -1", lambda w, o: ["demo", "--out", o, "--epochs", "-1"], r"--epochs=-1"),
    ("demo --per-class 0", lambda w, o: ["demo", "--out", o, "--per-class", "0"], r"--per-class=0"),
    ("demo --data missing", lambda w, o: ["demo", "--out", o, "--data", str(w / "missing")], r"missing"),
    (
        "predict --weights an HTML page",
        lambda w, o: ["predict", "--weights", str(w / "page.pth.tar")],
        r"page\.pth\.tar",
    ),
    (
        "predict --weights an empty file",
        lambda w, o: ["predict", "--weights", str(w / "empty.pth.tar")],
        r"empty\.pth\.tar",
    ),
    ("predict --image a bomb", lambda w, o: ["predict", "--image", str(w / "bomb.png")], r"bomb\.png"),
    ("crawl -n 0", lambda w, o: ["crawl", o, "--labels", "a", "-n", "0"], r"-n=0|--per-class=0"),
    ("crawl --threads 0", lambda w, o: ["crawl", o, "--labels", "a", "--threads", "0"], r"--threads=0"),
    ("clean --workers 0", lambda w, o: ["clean", o, "--workers", "0"], r"--workers=0"),
    ("clean --min-size 0", lambda w, o: ["clean", o, "--min-size", "0"], r"--min-size=0"),
    ("split --ratios that do not sum to 1", lambda w, o: ["split", o, "--ratios", "0.5", "0.2", "0.2"], r"ratios"),
    ("split a missing folder", lambda w, o: ["split", os.path.join(o, "nothing")], r"nothing"),
]


def _run_refused(argv, capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusal of a bad option value
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("name", "argv", "said"), COMMAND_CASES, ids=[case[0] for case in COMMAND_CASES])
def test_a_refused_command_names_the_value_and_leaves_its_folder_as_it_was(world, tmp_path, capsys, name, argv, said):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("what was here before")
    before = tree(out)
    err = _run_refused(argv(world, str(out)), capsys)
    assert re.search(said, err), err
    assert tree(out) == before, f"{name}: the refused run changed {sorted(set(tree(out)) ^ set(before))}"


def test_a_refused_run_does_not_block_the_corrected_one(world, tmp_path, capsys):
    out = str(tmp_path / "compare")
    _run_refused(_compare(world, "--out", out, "--methods", "gradcam@no_such_layer"), capsys)
    assert main(_compare(world, "--out", out, "--methods", "gradcam", "--max-images", "4", "--sanity", "0")) == 0
    assert os.path.isfile(os.path.join(out, "report.html"))


def test_a_tiny_image_is_explained_with_a_warning_that_names_it(world, tmp_path, capsys):
    with pytest.warns(UserWarning, match=r"dot\.png.*smaller than"):
        assert main(_explain(world, "--images", str(world / "dot.png"), "--out", str(tmp_path / "x"))) == 0
    assert os.path.isfile(tmp_path / "x" / "report.html")


@pytest.fixture(scope="module")
def api_cases(world):
    """Name -> (call, what its error must say): the Python entry points with one bad argument each."""
    from bagnet_keras import (
        BagNet,
        build_classifier,
        compare,
        decode_predictions,
        evidence_map,
        feature_atlas,
        fit_classifier,
    )
    from bagnet_keras.core.graph import iter_layers
    from bagnet_keras.explain import cam, factorize, occlusion, top_patches
    from bagnet_keras.metrics import input_invariance, invariance
    from data_tools.clean import clean
    from data_tools.loader import image_dataset
    from data_tools.split import split

    cnn = keras.saving.load_model(world / "cnn.keras")
    bagnet = keras.saving.load_model(world / "bagnet.keras")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 48, 48, 3)).astype("float32")
    data = str(world / "data")
    conv = next(path for path, layer in iter_layers(cnn) if isinstance(layer, keras.layers.Conv2D))
    cases = [
        ("evidence_map batch_size=0", lambda: evidence_map(bagnet, x, batch_size=0), "batch_size=0"),
        ("top_patches k=0", lambda: top_patches(bagnet, x, class_index=0, k=0), "k=0"),
        ("top_patches class_index=3", lambda: top_patches(bagnet, x, class_index=3), "class_index=3"),
        ("cam batch_size=np.int64(0)", lambda: cam(cnn, x, batch_size=np.int64(0)), "batch_size=np.int64(0)"),
        ("cam method='nope'", lambda: cam(cnn, x, method="nope"), "nope"),
        ("occlusion patch_size=0", lambda: occlusion(cnn, x, patch_size=0), "patch_size=0"),
        ("compare steps=0", lambda: compare({"cnn": cnn}, x, [0, 1], steps=0), "steps=0"),
        ("compare n_classes=0", lambda: compare({"cnn": cnn}, x, [0, 1], n_classes=0), "n_classes=0"),
        ("feature_atlas k=0", lambda: feature_atlas(cnn, x, [conv], k=0), "k=0"),
        ("factorize n_groups=0", lambda: factorize(cnn, x, conv, n_groups=0), "n_groups"),
        ("fit_classifier(model, None)", lambda: fit_classifier(cnn, None), "train"),
        (
            "fit_classifier learning_rate=nan",
            lambda: fit_classifier(cnn, image_dataset(data, (48, 48)), learning_rate=float("nan")),
            "learning_rate=nan",
        ),
        ("build_classifier heads=1", lambda: build_classifier("vgg16", 1), "2 classes"),
        ("BagNet classes=0", lambda: BagNet(classes=0), "classes=0"),
        ("decode_predictions top=0", lambda: decode_predictions(np.zeros((1, 1000)), top=0), "top=0"),
        ("image_dataset batch_size=0", lambda: image_dataset(data, (48, 48), batch_size=0), "batch_size=0"),
        ("clean workers=0", lambda: clean(data, workers=0), "workers=0"),
        ("split copy_to inside the dataset", lambda: split(data, copy_to=os.path.join(data, "copy")), "copy_to"),
        ("cam normalize='x'", lambda: cam(cnn, x, normalize="x"), "normalize='x'"),
        ("occlusion stride=1.5", lambda: occlusion(cnn, x, stride=1.5), "stride=1.5"),
        (
            "input_invariance shift=nan",
            lambda: input_invariance(cnn, x, ["gradcam"], shift=float("nan")),
            "shift=nan",
        ),
        ("invariance translate=nan", lambda: invariance(cnn, x, [conv], translate=[float("nan")]), "translate=nan"),
    ]
    return {case[0]: case[1:] for case in cases}


API_NAMES = [
    "evidence_map batch_size=0",
    "top_patches k=0",
    "top_patches class_index=3",
    "cam batch_size=np.int64(0)",
    "cam method='nope'",
    "occlusion patch_size=0",
    "compare steps=0",
    "compare n_classes=0",
    "feature_atlas k=0",
    "factorize n_groups=0",
    "fit_classifier(model, None)",
    "fit_classifier learning_rate=nan",
    "build_classifier heads=1",
    "BagNet classes=0",
    "decode_predictions top=0",
    "image_dataset batch_size=0",
    "clean workers=0",
    "split copy_to inside the dataset",
    "cam normalize='x'",
    "occlusion stride=1.5",
    "input_invariance shift=nan",
    "invariance translate=nan",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_a_bad_argument_to_the_library_is_a_value_error_naming_it(world, api_cases, name):
    assert set(api_cases) == set(API_NAMES)
    before = tree(world / "data")
    call, said = api_cases[name]
    with pytest.raises(ValueError, match=re.escape(said)):
        call()
    assert tree(world / "data") == before


ANYTHING = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.integers(-100, 100).map(np.int64),
    st.floats(-10, 10).map(np.float32),
)


@settings(max_examples=300, deadline=None)
@given(value=ANYTHING, low=st.integers(-5, 5), span=st.integers(0, 10))
def test_check_int_accepts_exactly_the_integers_in_range(value, low, span):
    high = low + span
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if is_int and low <= value <= high:
        assert check_int(value, "n", low=low, high=high) == value
    else:
        with pytest.raises(ValueError, match=re.escape(f"Received: n={value!r}")):
            check_int(value, "n", low=low, high=high)


@settings(max_examples=300, deadline=None)
@given(value=ANYTHING)
def test_check_number_accepts_exactly_the_finite_positive_numbers(value):
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if real and np.isfinite(value) and value > 0:
        assert check_number(value, "rate", low=0, low_open=True) == float(value)
    else:
        with pytest.raises(ValueError, match=re.escape(f"Received: rate={value!r}")):
            check_number(value, "rate", low=0, low_open=True)


def test_a_strategy_on_another_backend_is_refused_with_the_backend_named(monkeypatch):
    import tensorflow as tf

    from bagnet_keras.core import backend
    from bagnet_keras.metrics.comparison import compare
    from bagnet_keras.metrics.faithfulness import logit_fn
    from bagnet_keras.transfer.heads import build_classifier
    from bagnet_keras.transfer.training import fit_classifier

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D()])
    strategy = tf.distribute.get_strategy()
    data = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 3), "float32"), np.zeros(2, "int32"))).batch(2)
    monkeypatch.setattr(backend, "backend", lambda: "jax")  # as under KERAS_BACKEND=jax
    calls = [
        lambda: build_classifier(model, 2, mode="scratch", strategy=strategy),
        lambda: logit_fn(model, strategy=strategy),
        lambda: compare({"m": model}, np.zeros((1, 8, 8, 3), "float32"), [0], strategy=strategy, progress=False),
        lambda: fit_classifier(model, data, epochs=1, strategy=strategy, verbose=0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="needs the TensorFlow backend; Keras runs on 'jax' here"):
            call()
