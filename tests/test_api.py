"""The public API: what the top level and each subpackage export, the deprecated old names, and
``import bagnet_keras`` being enough for ``keras.saving.load_model`` (issue 28)."""

import importlib
import os
import subprocess
import sys
import warnings

import pytest

import bagnet_keras

SUBPACKAGES = ["core", "models", "explain", "metrics", "transfer", "report"]
NEWCOMER = {
    "BagNet",
    "BagNet9",
    "BagNet17",
    "BagNet33",
    "preprocess_input",
    "deprocess_input",
    "decode_predictions",
    "evidence_map",
    "explainer",
    "compare",
    "write_report",
    "feature_atlas",
    "build_classifier",
    "fit_classifier",
}


def test_the_top_level_holds_what_a_newcomer_needs():
    assert set(bagnet_keras.__all__) == NEWCOMER
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in NEWCOMER:
            assert getattr(bagnet_keras, name) is not None


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(f"bagnet_keras.{package}")
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None, f"bagnet_keras.{package}.{name}"


def test_a_function_named_like_its_module_is_the_function():
    from bagnet_keras.explain import attribution, cam, factorize, occlusion
    from bagnet_keras.explain.cam import GradCAM
    from bagnet_keras.metrics import correspondence, invariance

    for function in (cam, attribution, occlusion, factorize, invariance, correspondence):
        assert callable(function) and not isinstance(function, type(sys)), function
    assert GradCAM.__module__ == "bagnet_keras.explain.cam"


def test_the_one_call_form_is_found_where_a_user_looks():
    import bagnet_keras.explain

    assert bagnet_keras.explain.explain.__module__ == "bagnet_keras.explain.registry"


@pytest.mark.parametrize("name", sorted(bagnet_keras._MOVED))
def test_old_top_level_names_warn_and_name_their_new_home(name):
    home = bagnet_keras._MOVED[name]
    with pytest.warns(DeprecationWarning, match=f"from {home} import {name}"):
        value = getattr(bagnet_keras, name)
    assert value is getattr(importlib.import_module(home), name)


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        bagnet_keras.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def saved_bagnet(tmp_path_factory) -> str:
    from bagnet_keras.models import BagNet

    path = str(tmp_path_factory.mktemp("saved") / "m.keras")
    BagNet(blocks=(1, 1, 1, 1), base_width=8, stem_width=8, classes=3, input_shape=(40, 40, 3)).save(path)
    return path


@pytest.mark.parametrize(
    "imports",
    [
        "import keras; import bagnet_keras",
        "import bagnet_keras; import keras",
        # a core module first: it imports Keras as it loads, and the modules that register the package's
        # classes import it back (this was a circular ImportError); they register when imported
        "from bagnet_keras.core.backend import compile_function; import bagnet_keras.models, keras",
    ],
)
def test_import_bagnet_keras_is_enough_to_load_a_saved_model(saved_bagnet, imports):
    """In a fresh process: nothing of the package is used before load_model, in either order of imports."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    load = f"{imports}; m = keras.saving.load_model({saved_bagnet!r}); print(type(m).__name__)"
    done = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "BagNetModel"


def test_import_bagnet_keras_loads_no_keras():
    code = "import sys, bagnet_keras, bagnet_keras.explain.methods; print('keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
