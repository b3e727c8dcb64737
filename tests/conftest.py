import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TRACED = os.environ.get("BAGNET_KERAS_TEST_TRACED") == "1"
if not TRACED:
    # The suite runs without oneDNN. On its tiny models TensorFlow's own kernels are faster (oneDNN makes its
    # primitives for each new shape: about 6% of the suite's time), and the `eager` tests need it: an eager
    # gradient computes every gradient of each operation on the way, a convolution's kernel gradient too,
    # which a graph prunes when nothing asks for it, and oneDNN's kernel gradient of a narrow 1x1 strided
    # convolution (the tests' tiny BagNets have one) crashes the process (bagnet_keras/transfer/onednn.py).
    # TensorFlow reads this when it starts.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
TINY = ("tiny33", "tiny9", "tiny21")


def fixture_path(name: str) -> str:
    return os.path.join(FIXTURES, name)


def tiny_config(name: str) -> dict:
    with open(fixture_path(f"{name}.json")) as f:
        return json.load(f)


def tiny_outputs(name: str):
    return np.load(fixture_path(f"{name}_outputs.npz"))


def build_tiny(name: str, **kwargs):
    from bagnet_keras import BagNet

    c = tiny_config(name)
    kwargs.setdefault("classifier_activation", None)
    return BagNet(c["blocks"], c["kernel3"], c["strides"], c["base_width"], classes=c["classes"], **kwargs)


@pytest.fixture(autouse=True)
def _isolated_keras_home(tmp_path, monkeypatch):
    """No test reads or writes the user's Keras cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


@pytest.fixture(autouse=True)
def _eager_where_marked(request):
    """A test marked ``eager`` runs TensorFlow's compiled functions (and Keras' predict and fit) eagerly.

    The same operations on the same values, without tracing. Where a test builds many models and calls each
    of their functions once (every method on every model), tracing is most of its time, and eager calls
    halve it; where it calls the same functions many times (training, a comparison), graphs are faster, and
    they are what users run. A test marked ``traced`` runs as graphs in a module marked ``eager`` (it checks
    the tracing itself, or a compiled path). ``BAGNET_KERAS_TEST_TRACED=1`` runs every test as graphs, with
    oneDNN.
    """
    import keras

    marked = request.node.get_closest_marker("eager") and not request.node.get_closest_marker("traced")
    if keras.backend.backend() != "tensorflow" or TRACED or not marked:
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


# The modules with the longest tests, longest first (`pytest --durations=0` tells). They run first and the
# short tests fill in around them (`make test` has pytest-xdist's workers steal each other's queued tests);
# collected last, they left one worker running alone for minutes. Each module stays in one piece, so its
# module fixtures are built once per worker.
SLOW_FIRST = (
    "test_demo.py",
    "test_street_city.py",
    "test_transfer.py",
    "test_killpoints.py",
    "test_compare_stream.py",
    "test_atlas_page.py",
    "test_release.py",
    "test_docs.py",
    "test_cli.py",
    "test_sanity.py",
    "test_models.py",
    "test_registry.py",
    "test_compare.py",
    "test_backends.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the collection order within each rank
