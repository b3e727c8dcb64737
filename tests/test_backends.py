"""The same answers on every Keras backend: what JAX and PyTorch compute equals TensorFlow's (issue 25 says
what is ported so far; `backend_case.results` lists it).

Each backend runs in a subprocess (Keras picks its backend once, at import) on a model saved here and the
same images; the results must equal this process's TensorFlow ones to 1e-4 of their largest value.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from backend_case import results

BACKENDS = {"jax": "jax", "torch": "torch"}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from bagnet_keras import BagNet

    folder = tmp_path_factory.mktemp("backends")
    keras.utils.set_random_seed(0)
    model = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=4, classes=5, input_shape=(48, 48, 3))
    # BatchNorm statistics away from 0 and 1, so that folding them into the convolutions is exercised
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(len(layer.name))
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    model.save(folder / "bagnet.keras")
    images = np.random.default_rng(1).uniform(0, 1, (3, 48, 48, 3)).astype("float32")
    np.save(folder / "images.npy", images)
    return folder, results(model, images)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_gives_tensorflows_answers(case, backend):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[dev]' installs it)")
    folder, expected = case
    script = os.path.join(os.path.dirname(__file__), "backend_case.py")
    env = {**os.environ, "KERAS_BACKEND": backend, "KERAS_HOME": str(folder / "keras_home")}
    out = folder / f"{backend}.npz"
    done = subprocess.run(
        [sys.executable, script, str(folder / "bagnet.keras"), str(folder / "images.npy"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = np.load(out, allow_pickle=False)
    assert str(found["backend"]) == backend
    for name, value in expected.items():
        scale = max(float(np.abs(value).max()), 1e-12)
        np.testing.assert_allclose(found[name], value, rtol=0, atol=1e-4 * scale, err_msg=name)
