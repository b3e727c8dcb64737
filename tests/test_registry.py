"""One registry of explanation methods, one call shape, one target score (issue 14, item 4); one table of
methods that everything reads (issue 28)."""

import importlib
import itertools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from bagnet_keras import BagNet, build_classifier, compare
from bagnet_keras.core import graph
from bagnet_keras.explain import methods, registry
from bagnet_keras.explain.registry import METHODS, explain

# Every method on several new models, each called once or twice: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager


@pytest.fixture(scope="module")
def softmax_model():
    """A softmax-headed BagNet classifier, and the same layers ending at its logits."""
    keras.utils.set_random_seed(0)
    backbone = BagNet(
        blocks=(1, 1, 1, 1),
        kernel3=(1, 1, 0, 0),
        base_width=4,
        stem_width=16,
        include_top=False,
        input_shape=(32, 32, 3),
    )
    model = build_classifier(backbone, {"label": 3}, mode="scratch")
    # Scale the head so that the softmax saturates differently from the logits.
    logits = model.get_layer("label_logits")
    logits.kernel.assign(logits.kernel * 40.0)
    return model, keras.Model(model.input, logits.output)


def _x():
    return np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")


@pytest.mark.backends
# the rollouts need a model with attention: tests/test_transformers.py explains the logit and the probability there
@pytest.mark.parametrize("method", [name for name, row in METHODS.items() if not row.transformer_only])
def test_every_method_explains_the_logit_by_default_and_the_probability_when_asked(softmax_model, method):
    model, logits_model = softmax_model
    x, classes = _x(), np.array([0, 2])
    by_logit = explain(model, x, method, class_index=classes)
    assert by_logit.shape == (2, 32, 32) and by_logit.dtype == np.float32
    # the softmax left out of the model == a model that never had one
    np.testing.assert_allclose(by_logit, explain(logits_model, x, method, class_index=classes), rtol=1e-4, atol=1e-5)
    if method == "evidence":
        with pytest.raises(ValueError, match="target='logit' only"):
            explain(model, x, method, class_index=classes, target="probability")
        return
    by_probability = explain(model, x, method, class_index=classes, target="probability")
    # the model's own softmax == the softmax applied to a logits model's output
    np.testing.assert_allclose(
        by_probability,
        explain(logits_model, x, method, class_index=classes, target="probability"),
        rtol=1e-4,
        atol=1e-5,
    )
    assert not np.allclose(by_probability, by_logit, atol=1e-3), "the target made no difference"


def test_a_dense_layer_with_a_softmax_activation_is_explained_by_its_logits():
    keras.utils.set_random_seed(2)
    conv = keras.layers.Conv2D(6, 3, activation="relu", name="conv")
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    head = keras.layers.Dense(3, activation="softmax", name="head")
    model = keras.Model(inputs, head(features))
    logits = keras.Model(inputs, keras.layers.Dense(3, name="plain")(features))
    logits.get_layer("plain").set_weights(head.get_weights())
    x = np.random.default_rng(3).normal(size=(3, 16, 16, 3)).astype("float32")
    for method in ("gradcam", "occlusion", "guided_backprop"):
        np.testing.assert_allclose(
            explain(model, x, method, class_index=1), explain(logits, x, method, class_index=1), rtol=1e-4, atol=1e-5
        )
    assert head.activation is keras.activations.softmax  # the layer was only borrowed
    # the faithfulness curves score the same logits, and their probabilities are the model's own
    from bagnet_keras.metrics.faithfulness import logit_fn, probability_fn

    np.testing.assert_allclose(logit_fn(model)(x), logits.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probability_fn(logit_fn(model))(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_bad_method_and_target_name_the_value():
    with pytest.raises(ValueError, match="'nope'.*gradcam"):
        explain(None, _x(), "nope")
    with pytest.raises(ValueError, match="target='softmax'"):
        explain(
            keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]),
            np.ones((1, 4, 4, 3)),
            "gradcam",
            target="softmax",
        )
    assert registry.TARGETS == graph.TARGETS


def test_compare_and_the_command_line_read_the_registry(softmax_model, capsys):
    from bagnet_keras.app.cli import main

    model, _ = softmax_model
    x, labels = _x(), np.array([0, 1])
    result = compare({"bagnet": model}, x, labels, methods=["guided_backprop", "gradcam"], steps=2, progress=False)
    np.testing.assert_allclose(result.maps["bagnet", "gradcam"], explain(model, x, "gradcam", class_index=labels))
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in METHODS) and "--target" in help_text
    with pytest.raises(SystemExit):
        main(["compare", "--model", "a=b.keras", "--data", "d", "--methods", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.backends
def test_explainer_fixes_model_method_and_target(softmax_model):
    import bagnet_keras

    model, _ = softmax_model
    x = _x()
    run = bagnet_keras.explainer(model, "layercam", target="probability")
    np.testing.assert_array_equal(
        run(x, class_index=[1, 0]), explain(model, x, "layercam", class_index=[1, 0], target="probability")
    )
    with pytest.raises(ValueError, match="'nope'"):
        bagnet_keras.explainer(model, "nope")
    assert isinstance(bagnet_keras.explain, type(bagnet_keras))  # the subpackage, not hidden by a function


def _table(path: str, header: str) -> list[list[str]]:
    """The rows of the markdown table under ``header`` in ``path`` (relative to the checkout), as their cells."""
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), path), encoding="utf-8") as f:
        text = f.read()
    assert header in text, f"{path} has no table {header}"
    lines = text[text.index(header) :].splitlines()[2:]
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines)
    return [[cell.strip().strip("`") for cell in row.strip("|").split("|")] for row in rows]


def test_the_tables_of_methods_are_the_table_of_methods():
    full = "| method | what it shows | family | takes a layer | BagNet only | transformers only | implementation |"
    expected = [
        [m.name, m.description, m.family]
        + ["yes" if flag else "no" for flag in (m.takes_layer, m.bagnet_only, m.transformer_only)]
        + [m.implementation]
        for m in methods.METHODS.values()
    ]
    assert _table("docs/methods/index.md", full) == expected
    # README's: each method linked to its page
    pages = {m: m.replace("++", "pp").replace("_", "-") for m in methods.METHODS}
    expected = [
        [f"[`{m.name}`](docs/methods/{pages[m.name]}.md)", m.description, m.family] for m in methods.METHODS.values()
    ]
    assert _table("README.md", "| method | what it shows | family |") == expected


def test_every_row_names_its_implementation_and_every_family_how_it_is_called():
    assert set(registry.FAMILIES) == set(methods.FAMILIES)
    for row in methods.METHODS.values():
        implementation = row.load()
        assert callable(implementation) and implementation.__module__ == row.module, row
    assert methods.method_names() == list(methods.METHODS) == list(METHODS)
    assert registry.LAYERED == ("gradcam", "gradcam++", "layercam", "scorecam", "guided_gradcam")
    # cam() and attribution() take their own family's rows, and name the rest
    cam_module = importlib.import_module("bagnet_keras.explain.cam")  # the package's `cam` is the function
    attribution_module = importlib.import_module("bagnet_keras.explain.attribution")
    assert cam_module.CAM_METHODS["layercam"] is cam_module.LayerCAM
    assert list(attribution_module.ATTRIBUTIONS) == [row.name for row in methods.methods_of("attribution")]
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="method='saliency'"):
        cam_module.cam(model, np.ones((1, 8, 8, 3)), method="saliency")
    with pytest.raises(ValueError, match="method='gradcam'"):
        attribution_module.attribution(model, np.ones((1, 8, 8, 3)), method="gradcam")
    with pytest.raises(ValueError, match="family='nope'"):
        methods.Method("x", "y", "nope", "a:b")


def test_the_table_and_the_registry_load_no_tensorflow():
    code = (
        "import sys; from bagnet_keras.explain.methods import method_names; "
        "from bagnet_keras.explain.registry import TARGETS, parse_method; parse_method('gradcam@c'); "
        "print(len(method_names()), [m for m in ('tensorflow', 'keras') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == [str(len(METHODS)), "[]"]


def test_a_registered_function_is_a_row_of_the_table():
    @registry.register("ones_test", "ones everywhere", takes_layer=True)
    def ones(model, images, class_index, output, target, layer=None):
        return np.full(np.shape(images)[:3], 1.0 if layer is None else 2.0)

    try:
        row = METHODS["ones_test"]
        assert (row.family, row.takes_layer, row.implementation.endswith("ones")) == ("custom", True, True)
        assert explain(None, _x(), "ones_test@somewhere").max() == 2.0
        with pytest.raises(ValueError, match="registered already"):
            registry.register("ones_test", "again")(ones)
    finally:
        del METHODS["ones_test"]
