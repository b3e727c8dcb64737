"""Transfer learning, fine-tuning and scratch training on generated textures; heads stay explainable."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bagnet_keras import BagNet, evidence_map, preprocess_input
from bagnet_keras.transfer.backbones import get_backbone
from bagnet_keras.transfer.baselines import SVMBaseline, extract_features, feature_extractor, svm_baseline
from bagnet_keras.transfer.evaluation import evaluate_classifier, save_json
from bagnet_keras.transfer.heads import build_classifier, head_layers, set_trainable
from bagnet_keras.transfer.labels import coarse_labels, with_heads
from bagnet_keras.transfer.training import BestCheckpoint, fit_classifier, save_model
from data_tools.synthetic import TEXTURES, textures

SIZE = 32
REGION = {"horizontal": "lines", "vertical": "lines", "checker": "grid"}


def _data(n_per_class, seed, batch=16, shuffle=False):
    images, labels = textures(n_per_class, SIZE, seed=seed)
    x = preprocess_input(images.astype("float32"))
    data = tf.data.Dataset.from_tensor_slices((x, labels))
    if shuffle:
        data = data.shuffle(len(x), seed=seed)
    return x, labels, data.batch(batch)


def _tiny_bagnet():
    # stem_width 16: training the first shortcut (1x1, stride 2) on fewer channels crashes TensorFlow's oneDNN on
    # AVX-512 CPUs (issue 17, tools/onednn_check.py).
    return BagNet(
        blocks=(1, 1, 1, 1),
        kernel3=(1, 1, 0, 0),
        base_width=8,
        stem_width=16,
        include_top=False,
        input_shape=(SIZE, SIZE, 3),
    )


def _copy(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


@pytest.fixture(scope="module")
def pretrained():
    """A tiny BagNet backbone trained from scratch on a source set of textures (our 'ImageNet')."""
    keras.utils.set_random_seed(0)
    model = build_classifier(_tiny_bagnet(), {"texture": 3}, mode="scratch")
    _, _, source = _data(40, seed=10, shuffle=True)
    fit_classifier(model, source, epochs=12, learning_rate=3e-2, patience=None, verbose=0)
    return keras.Model(model.input, model.get_layer("avg_pool").input, name="pretrained")


def _backbone_weights(model):
    heads = head_layers(model)
    return {w.path: np.array(w) for layer in model.layers if layer.name not in heads for w in layer.weights}


@pytest.mark.parametrize("mode", ["transfer", "finetune", "scratch"])
def test_each_mode_learns(pretrained, mode):
    keras.utils.set_random_seed(1)
    backbone = _copy(pretrained) if mode != "scratch" else _tiny_bagnet()
    model = build_classifier(backbone, {"texture": 3}, mode=mode, trainable_from="conv4_block1")
    before = _backbone_weights(model)
    _, _, train = _data(30, seed=1, shuffle=True)
    x_test, y_test, test = _data(20, seed=2)
    history = fit_classifier(
        model,
        train,
        test,
        epochs=15 if mode == "scratch" else 8,
        head_epochs=4,
        learning_rate=1e-2 if mode == "scratch" else 3e-2,
        finetune_learning_rate=3e-3,
        patience=None,
        verbose=0,
    )
    accuracy = evaluate_classifier(model, test, list(TEXTURES))["texture"]["accuracy"]
    print(f"\n{mode}: test accuracy {accuracy:.3f} (chance 0.333), phases {sorted(set(history['phase']))}")
    assert accuracy > 0.6
    after = _backbone_weights(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    if mode == "transfer":
        assert changed == set()  # bit for bit
    elif mode == "finetune":
        assert changed and all(path.startswith(("conv4_", "conv5_")) for path in changed), sorted(changed)
        assert not any("_bn/" in path for path in changed)  # BatchNorm stays frozen while fine-tuning
        assert history["phase"][0] == "heads" and history["phase"][-1] == "finetune"
    else:
        assert any(path.startswith("conv1_") for path in changed)


def test_two_head_bagnet_evidence_is_exact(pretrained):
    keras.utils.set_random_seed(2)
    model = build_classifier(
        _copy(pretrained), {"texture": 3, "region": 2}, mode="finetune", trainable_from="conv5_block1", dropout=0.3
    )
    _, _, train = _data(10, seed=3)
    train, names = with_heads(train, list(TEXTURES), "texture", {"region": REGION})
    fit_classifier(model, train, epochs=1, head_epochs=1, verbose=0)
    x, _, _ = _data(2, seed=4)
    for head in ("texture", "region"):
        logits = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer(f"{head}_logits").output)(x))
        result = evidence_map(model, x, output=head)
        mean = result.maps.mean(axis=(1, 2))
        chosen = logits[np.arange(len(x)), result.class_index]
        assert np.allclose(mean, chosen, rtol=1e-5, atol=1e-6 * np.abs(chosen).max()), head
        assert result.class_index.tolist() == logits.argmax(axis=1).tolist()
        assert evidence_map(model, x[:1], output=head, stride=1).maps.shape == (1, SIZE, SIZE)
    assert names["region"] == ["grid", "lines"]


def test_save_load_predict_identical_and_interrupted_checkpoint(tmp_path, monkeypatch):
    keras.utils.set_random_seed(3)
    model = build_classifier(_tiny_bagnet(), {"texture": 3, "region": 2}, mode="scratch", dropout=0.2)
    _, _, train = _data(6, seed=5)
    train, _ = with_heads(train, list(TEXTURES), "texture", {"region": REGION})
    fit_classifier(model, train, train, epochs=2, output_dir=tmp_path, verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["backup", "best.keras", "history.csv", "run.json"]
    x, _, _ = _data(2, seed=6)
    path = tmp_path / "model.keras"
    save_model(model, path)
    loaded = keras.models.load_model(path)
    for head in ("texture", "region"):
        assert np.array_equal(model.predict(x, verbose=0)[head], loaded.predict(x, verbose=0)[head])

    good = (tmp_path / "best.keras").read_bytes()

    def crash(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a zip")
        raise OSError("disk full")

    checkpoint = BestCheckpoint(tmp_path / "best.keras", monitor="loss")
    checkpoint.set_model(model)
    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.on_epoch_end(0, {"loss": 0.1})
    assert (tmp_path / "best.keras").read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["backup", "best.keras", "history.csv", "model.keras", "run.json"]


def test_svm_baseline_matches_scikit_learn_on_the_same_features(pretrained):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    _, _, train = _data(15, seed=7)
    _, _, test = _data(10, seed=8)
    result = svm_baseline(pretrained, train, test, list(TEXTURES), Cs=(0.01, 0.1, 1.0), cv=3)
    extractor = feature_extractor(pretrained)
    x_train, y_train = extract_features(extractor, train)
    x_test, y_test = extract_features(extractor, test)
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    pipeline = make_pipeline(StandardScaler(), LinearSVC(random_state=0, max_iter=20000))
    reference = GridSearchCV(pipeline, {"linearsvc__C": [0.01, 0.1, 1.0]}, cv=folds).fit(x_train, y_train)
    assert result["C"] == reference.best_params_["linearsvc__C"]
    assert result["accuracy"] == pytest.approx(reference.score(x_test, y_test))
    assert result["accuracy"] > 0.6
    # The test features never reach the fit: changing them changes nothing learned.
    svm = SVMBaseline(Cs=(0.01, 0.1, 1.0), cv=3).fit(x_train, y_train)
    assert np.array_equal(svm.predict(x_test), reference.predict(x_test))


def test_evaluation_results_are_json(tmp_path, pretrained):
    model = build_classifier(_copy(pretrained), {"texture": 3}, mode="transfer")
    _, _, test = _data(4, seed=9)
    results = evaluate_classifier(model, test, list(TEXTURES), top_k=2)
    save_json(results, tmp_path / "results.json")
    loaded = json.loads((tmp_path / "results.json").read_text())["texture"]
    assert loaded["n"] == 12 and len(loaded["confusion_matrix"]) == 3 and "top_2_accuracy" in loaded
    assert set(loaded["per_class_accuracy"]) == set(TEXTURES) and "macro avg" in loaded["report"]


def test_keras_applications_backbone_flat_and_finetune_prefix():
    model = build_classifier("vgg16", {"city": 4, "region": 2}, mode="finetune", weights=None, input_shape=(32, 32, 3))
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert trainable == ["block5_conv1", "block5_conv2", "block5_conv3", "city_logits", "region_logits"]
    assert model.get_layer("block5_conv3") is not None  # the backbone's own layer names, for Grad-CAM
    set_trainable(model, "transfer")
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert trainable == ["city_logits", "region_logits"]


def test_mirrored_strategy(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():  # a backbone given as a model must be built under the strategy too
        backbone = _tiny_bagnet()
    model = build_classifier(backbone, 3, mode="scratch", strategy=strategy)
    _, _, train = _data(4, seed=11)
    history = fit_classifier(model, train, epochs=1, strategy=strategy, verbose=0)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_classifier("alexnet", 3), "Unknown backbone 'alexnet'"),
        (lambda: build_classifier("vgg16", {"city": 0}, weights=None), "city=0"),
        (lambda: build_classifier("vgg16", {"city": 3}, mode="freeze", weights=None), "mode='freeze'"),
        (lambda: build_classifier("vgg16", {"avg_pool": 3}, weights=None), "'avg_pool'"),
        (lambda: build_classifier("vgg16", 3, mode="finetune", trainable_from="block9", weights=None), "'block9'"),
        (lambda: coarse_labels(["Berlin", "Kyiv"], {"Berlin": "West"}), "'Kyiv' is not in the label mapping"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=float("nan")), "learning_rate=nan"),
        (dict(learning_rate=0), "learning_rate=0"),
        (dict(finetune_learning_rate=float("inf")), "finetune_learning_rate=inf"),
        (dict(epochs=-1), "epochs=-1"),
        (dict(head_epochs=2.0), "head_epochs=2.0"),
    ],
)
def test_fit_refuses_bad_numbers_before_touching_the_model(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_classifier(None, None, **kwargs)


def test_numpy_integers_count_as_integers():
    from bagnet_keras.models.imagenet import decode_predictions
    from bagnet_keras.transfer.heads import _check_heads

    assert _check_heads({"city": np.int64(3)}) == {"city": 3} and _check_heads(np.int64(2)) == {"predictions": 2}
    assert len(decode_predictions(np.eye(1, 1000), top=np.int64(2))[0]) == 2


def test_images_of_the_wrong_size_for_a_fixed_size_backbone():
    model = build_classifier("vgg16", 3, weights=None, input_shape=(32, 32, 3))
    data = tf.data.Dataset.from_tensor_slices((np.zeros((2, 48, 48, 3), "float32"), [0, 1])).batch(2)
    with pytest.raises(ValueError, match=r"Images of shape \(48, 48, 3\) do not fit .* takes \(32, 32, 3\)"):
        fit_classifier(model, data, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"\(48, 48, 3\)"):
        evaluate_classifier(model, data, ["a", "b", "c"])
    assert get_backbone("bagnet33").input_size is None  # BagNets take any size


def test_confusion_figure_from_results(pretrained):
    from bagnet_keras.report.plot import plot_confusion

    model = build_classifier(_copy(pretrained), {"texture": 3}, mode="transfer")
    _, _, test = _data(3, seed=12)
    result = evaluate_classifier(model, test, list(TEXTURES))["texture"]
    fig = plot_confusion(result["confusion_matrix"], result["class_names"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum(int(t) for t in texts) == 9


def _legacy_h5(model, path):
    """A Keras 2 weights file (the format the Places365 weights are published in), written with h5py."""
    import h5py

    with h5py.File(path, "w") as f:
        layers = [layer for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for layer in layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = names
            for name, w in zip(names, layer.weights, strict=True):
                group.create_dataset(name.decode(), data=np.array(w))


def test_vgg16_places365_weights_from_a_path_and_a_url(tmp_path, monkeypatch):
    import http.server
    import threading

    from bagnet_keras.transfer.backbones import VGG16Places365, places365_preprocess

    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    _legacy_h5(source, tmp_path / "places.h5")
    expected = [np.array(w) for w in source.weights]

    model = build_classifier("vgg16_places365", 5, weights=str(tmp_path / "places.h5"), input_shape=(32, 32, 3))
    loaded = [np.array(w) for layer in model.layers if layer.name.startswith("block") for w in layer.weights]
    assert all(np.array_equal(a, b) for a, b in zip(expected, loaded, strict=True))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (tmp_path / "places.h5").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
        monkeypatch.setenv("BAGNET_KERAS_PLACES365_URL", f"http://127.0.0.1:{server.server_address[1]}/places.h5")
        downloaded = VGG16Places365(input_shape=(32, 32, 3))
    finally:
        server.shutdown()
        server.server_close()
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(expected, downloaded.weights, strict=True))
    assert os.listdir(tmp_path / "keras" / "models") == ["places.h5"]

    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    assert np.allclose(places365_preprocess(x), np.asarray(places365_preprocess(tf.constant(x))))
    assert np.allclose(places365_preprocess(x)[..., 0], x[..., 2] - 122.679)
    with pytest.raises(ValueError, match="include_top=False"):
        VGG16Places365(include_top=True)


# -- resumable training (issue 16)


@pytest.mark.backends
def test_training_killed_in_epoch_3_resumes_from_the_end_of_epoch_2(tmp_path, monkeypatch):
    from killpoint import train

    from bagnet_keras.transfer.resume import EpochBackup

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run(
        [sys.executable, train.__file__, str(out), "3"], capture_output=True, text=True, env=env, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((out / "backup" / "state.json").read_text())
    assert state["epoch"] == 2 and not state["complete"] and len(state["history"]["loss"]) == 2
    # the backup of the end of epoch 2, read the way Keras reads it: weights and the optimizer's state
    keras.utils.set_random_seed(0)
    saved = build_classifier(_tiny_bagnet(), {"texture": 3}, mode="scratch")
    saved.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    saved.optimizer.build(saved.trainable_variables)
    saved.load_weights(out / "backup" / state["weights"])
    assert int(saved.optimizer.iterations.numpy()) == 2 * 3  # two epochs of three batches

    starts = []  # what each epoch of the rerun starts from

    def on_epoch_begin(self, epoch, logs=None):
        starts.append((epoch, self.model.get_weights(), [np.array(v) for v in self.model.optimizer.variables]))

    monkeypatch.setattr(EpochBackup, "on_epoch_begin", on_epoch_begin, raising=False)
    history = train.run(str(out))
    assert [epoch for epoch, _, _ in starts] == [2, 3]  # Keras counts from 0: epochs 3 and 4
    _, weights, optimizer = starts[0]
    assert all(np.array_equal(a, b) for a, b in zip(weights, saved.get_weights(), strict=True))
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(optimizer, saved.optimizer.variables, strict=True))
    assert len(history["loss"]) == 4 and history["phase"] == ["train"] * 4
    state = json.loads((out / "backup" / "state.json").read_text())
    assert state["complete"] and state["epoch"] == 4
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,phase,") and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    # the best model where README says: <output_dir>/best.keras
    best = keras.models.load_model(out / "best.keras", safe_mode=True)
    assert best.output_names == ["texture"]


def test_same_seed_same_model_one_line_per_epoch_and_a_finished_run_not_repeated(tmp_path, capsys):
    """Three properties of one training, checked on the same two runs (each trains a model, the cost here):

    - the same seeds give the same model;
    - off a terminal (pytest captures stdout), verbose="auto" writes one line an epoch and no progress bar;
    - the same call again into a finished output folder trains nothing; other arguments are refused.
    """
    predictions = []
    for k in range(2):
        keras.utils.set_random_seed(5)  # the initial weights
        model = build_classifier(_tiny_bagnet(), {"texture": 3}, mode="scratch")
        _, _, train = _data(4, seed=14, shuffle=True)
        history = fit_classifier(model, train, train, epochs=2, seed=7, patience=None, output_dir=tmp_path / str(k))
        x, _, _ = _data(1, seed=15)
        predictions.append(model.predict(x, verbose=0)["texture"])
        lines = capsys.readouterr().out.splitlines()
        assert [line.split(" (")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
        assert all("val_loss" in line and "\r" not in line for line in lines)
    assert np.array_equal(predictions[0], predictions[1])

    trained = model.get_weights()
    calls = []
    fit = keras.Model.fit
    try:
        keras.Model.fit = lambda self, *a, **k: calls.append(k) or fit(self, *a, **k)
        again = fit_classifier(model, train, train, epochs=2, seed=7, patience=None, output_dir=tmp_path / "1")
    finally:
        keras.Model.fit = fit
    assert again == history and not calls
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trained, strict=True))
    refused = r"other arguments \(differing: epochs, learning_rate\).*another output folder"
    with pytest.raises(ValueError, match=refused):
        fit_classifier(
            model, train, train, epochs=3, learning_rate=0.1, seed=7, patience=None, output_dir=tmp_path / "1"
        )


def test_fit_creates_no_variable_inside_a_trace():
    """Keras' TensorFlow trainer traces a train step that created variables twice: fit_classifier builds them."""
    created = []

    def creator(next_creator, **kwargs):
        created.append((kwargs.get("name"), tf.inside_function()))
        return next_creator(**kwargs)

    model = build_classifier(_tiny_bagnet(), {"texture": 3}, mode="scratch")
    _, _, train = _data(2, seed=16)
    with tf.variable_creator_scope(creator):
        fit_classifier(model, train, train, epochs=1, patience=None, verbose=0)
    assert any(name == "iteration" for name, _ in created)  # the optimizer's, made here
    assert [name for name, inside in created if inside] == []


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_training(tmp_path):
    """Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy: the same weights, a falling loss."""
    script = os.path.join(os.path.dirname(__file__), "multiworker.py")
    ports = ",".join(map(str, _free_ports(2)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
    workers = [
        subprocess.Popen(
            [sys.executable, script, str(k), ports, str(tmp_path / f"worker{k}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    chief, other = results
    assert chief["chief"] and not other["chief"]
    assert chief["weights"] == other["weights"]  # BatchNorm's moving statistics included
    assert chief["loss"] == other["loss"] and chief["val_loss"] == other["val_loss"]
    assert chief["loss"][-1] < 0.5 * chief["loss"][0]
    # Only the chief writes its output folder.
    assert sorted(os.listdir(tmp_path / "worker0")) == ["backup", "best.keras", "history.csv", "run.json"]
    assert not os.path.exists(tmp_path / "worker1")
