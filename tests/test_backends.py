"""The same answers on every Keras backend: what JAX and PyTorch compute equals TensorFlow's (issue 25 says
what is ported so far; `backend_case.results` lists it).

Each backend runs in a subprocess (Keras picks its backend once, at import), started as soon as the
models are saved, on those models and the same images; every map and every number of the comparison must
equal this process's TensorFlow ones to 1e-4 of their largest value (NaN where TensorFlow's is NaN).
`make test-backends` runs this module, with JAX and PyTorch installed.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from backend_case import comparison, results, transformer_results

BACKENDS = {"jax": "jax", "torch": "torch"}
# A rank correlation is not continuous in its inputs: two pixels equal on one backend and one float32 step
# apart on another rank differently. Spearman's rho of the randomised models' maps (2,304 pixels, many near
# zero) moved by up to 1.2e-4 of its largest value between TensorFlow and JAX; every other number holds 1e-4.
RANK_TOLERANCE = 1e-3
pytestmark = pytest.mark.skipif(
    not any(importlib.util.find_spec(module) for module in BACKENDS.values()),
    reason="neither JAX nor PyTorch is installed (`make test-backends` installs them)",
)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from bagnet_keras import BagNet
    from data_tools.synthetic import motif_scene

    folder = tmp_path_factory.mktemp("backends")
    keras.utils.set_random_seed(0)
    bagnet = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=4, classes=5, input_shape=(48, 48, 3))
    # BatchNorm statistics away from 0 and 1, so that folding them into the convolutions is exercised
    for layer in bagnet.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(len(layer.name))
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    cnn = keras.Sequential(
        [
            keras.Input((48, 48, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ]
    )
    models = {"bagnet": bagnet, "cnn": cnn}
    vit = _vit()
    for name, model in {**models, "vit": vit}.items():
        model.save(folder / f"{name}.keras")
    scenes = [motif_scene(label, seed=seed, size=48) for seed, label in enumerate(["cross", "ring", "triangle"])]
    images = np.stack([image for image, _ in scenes]).astype("float32") / 255.0
    masks, labels = np.stack([mask for _, mask in scenes]), np.array([0, 1, 2])
    np.savez(folder / "case.npz", images=images, masks=masks, labels=labels)
    # the other backends compute while this process computes TensorFlow's answers
    running = {name: _start(folder, name) for name, module in BACKENDS.items() if importlib.util.find_spec(module)}
    try:
        expected = results(bagnet, images)
        expected.update(transformer_results(vit, images))
        expected.update(comparison(models, images, labels, masks, folder))
    except BaseException:
        for process in running.values():
            process.kill()
        raise
    return folder, expected, running


def _vit() -> keras.Model:
    """A small keras-hub ViT (6 x 6 patches of 8 pixels, 2 blocks), its weights drawn with NumPy."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(48, 48, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    vit = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=5)
    rng = np.random.default_rng(7)
    for weight in vit.weights:
        shape = tuple(weight.shape)
        scale = 1 / np.sqrt(np.prod(shape[:-1])) if len(shape) >= 2 else 0.1
        offset = 1.0 if weight.path.endswith("gamma") else 0.0
        weight.assign((offset + scale * rng.normal(size=shape)).astype("float32"))
    return vit


def _start(folder, backend: str) -> subprocess.Popen:
    """backend_case.py under ``backend``, its output in a file (a pipe nobody reads yet could fill and stall it)."""
    script = os.path.join(os.path.dirname(__file__), "backend_case.py")
    env = {**os.environ, "KERAS_BACKEND": backend, "KERAS_HOME": str(folder / f"keras_home_{backend}")}
    with open(folder / f"{backend}.log", "w") as log:
        return subprocess.Popen([sys.executable, script, str(folder)], stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_gives_tensorflows_answers(case, backend):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed (`make test-backends` installs it)")
    folder, expected, running = case
    process = running[backend]
    try:
        process.wait(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, (folder / f"{backend}.log").read_text()[-3000:]
    found = np.load(folder / f"{backend}.npz", allow_pickle=False)
    assert str(found["backend"]) == backend
    assert set(found.files) == {"backend", *expected}
    # A map's largest value is its own; a number of the comparison is measured against the largest of its
    # measure over every model and method (a residual such as linearity_sum can be near 0 on its own).
    largest = {}
    for name, value in expected.items():
        key = name.rsplit("/", 1)[-1] if "/" in name else name
        finite = np.abs(value[np.isfinite(value)]) if np.ndim(value) else np.abs(value[None][np.isfinite(value)])
        largest[key] = max(largest.get(key, 1e-12), float(finite.max()) if finite.size else 0.0)
    for name, value in expected.items():
        measure = name.rsplit("/", 1)[-1] if "/" in name else name
        tolerance = RANK_TOLERANCE if measure == "randomization_spearman" else 1e-4
        np.testing.assert_allclose(found[name], value, rtol=0, atol=tolerance * largest[measure], err_msg=name)
