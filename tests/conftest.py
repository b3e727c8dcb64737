import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
