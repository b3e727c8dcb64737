"""The guard against TensorFlow/oneDNN's crash in the weight gradient of narrow 1x1 strided convolutions (issue 17)."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from bagnet_keras import BagNet, fit_classifier
from bagnet_keras.transfer import OneDNNCrashWarning, onednn
from bagnet_keras.transfer.heads import build_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def fresh_guard(monkeypatch):
    monkeypatch.setattr(onednn, "_warned", set())
    # The suite's TensorFlow runs without oneDNN (tests/conftest.py); the guard and tools/onednn_check.py's
    # child process see TensorFlow as users have it.
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(onednn, "_tensorflow_uses_onednn", lambda: True)


def _narrow_classifier():
    """A tiny BagNet whose first shortcut (1x1, stride 2) reads the stem's 4 channels: at risk on every kernel."""
    backbone = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, include_top=False, input_shape=(32, 32, 3)
    )
    return build_classifier(backbone, {"label": 2}, mode="scratch")


def _data():
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, np.arange(8) % 2)).batch(4)


def test_reproducer_verdict_and_the_guard(monkeypatch):
    """tools/onednn_check.py runs the pattern in a child process; where it crashes, the guard must fire."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.onednn_check"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict in ("affected", "not affected")
    print(f"tools/onednn_check.py on this machine: {verdict} ({done.stdout.strip().splitlines()[-2]})")
    if verdict == "affected":
        assert onednn.onednn_isa() in ("avx512", "avx2")
    else:  # the detection is still checked, with the CPU check mocked
        monkeypatch.setattr(onednn, "onednn_isa", lambda: "avx512")
    # epochs=0: the warning comes before any training step, and no step runs here (it could crash).
    with pytest.warns(OneDNNCrashWarning, match=r"conv2_block1_0_conv.*TF_ENABLE_ONEDNN_OPTS=0"):
        fit_classifier(_narrow_classifier(), _data(), epochs=0, verbose=0)


def test_reproducer_reports_failures_as_errors():
    """A child that fails without a crash is an error (exit status 2), never a verdict."""
    sys.path.insert(0, ROOT)
    from tools import onednn_check

    with pytest.raises(RuntimeError, match="not a crash"):
        onednn_check.check(steps=1, env={**os.environ, "PYTHONPATH": "", "PYTHONHOME": "/nonexistent"})


def test_detection_nested_trainable_and_narrow_only():
    inner_input = keras.Input((16, 16, 8))
    risky = keras.layers.Conv2D(4, 1, strides=2, name="risky")(inner_input)
    inner = keras.Model(inner_input, risky, name="inner")
    inputs = keras.Input((16, 16, 8))
    branches = [
        inner(inputs),
        keras.layers.Conv2D(4, 1, name="stride1")(inputs)[:, ::2, ::2],
        keras.layers.Conv2D(4, 3, strides=2, padding="same", name="three_by_three")(inputs),
        keras.layers.Conv2D(4, 1, strides=2, name="wide")(keras.layers.Conv2D(16, 1, name="widen")(inputs)),
        keras.layers.Conv2D(4, 1, strides=(1, 2), name="row_stride")(inputs)[:, ::2],
    ]
    model = keras.Model(inputs, keras.layers.Concatenate()(branches))
    assert sorted(onednn.risky_strided_convs(model)) == ["inner/risky", "row_stride"]
    assert onednn.risky_strided_convs(model, max_channels=4) == []
    model.get_layer("row_stride").trainable = False
    inner.trainable = False  # a frozen backbone computes no weight gradient
    assert onednn.risky_strided_convs(model) == []


def test_warns_once_with_the_workarounds(monkeypatch):
    monkeypatch.setattr(onednn, "onednn_isa", lambda: "avx512")
    model = _narrow_classifier()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert onednn.warn_if_onednn_crash_risk(model) == ["conv2_block1_0_conv"]
        assert onednn.warn_if_onednn_crash_risk(model) == ["conv2_block1_0_conv"]
    assert len(caught) == 1 and caught[0].category is OneDNNCrashWarning
    message = str(caught[0].message)
    for workaround in ("at least 16 input channels", "even size", "DNNL_MAX_CPU_ISA=AVX2", "TF_ENABLE_ONEDNN_OPTS=0"):
        assert workaround in message
    # AVX2 kernels crash only up to 4 channels, on any batch size: no advice to use even batches there.
    monkeypatch.setattr(onednn, "onednn_isa", lambda: "avx2")
    monkeypatch.setattr(onednn, "_warned", set())
    with pytest.warns(OneDNNCrashWarning) as caught:
        onednn.warn_if_onednn_crash_risk(model)
    assert "even size" not in str(caught[0].message) and "at least 5 input channels" in str(caught[0].message)
    monkeypatch.setattr(onednn, "onednn_isa", lambda: None)
    monkeypatch.setattr(onednn, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert onednn.warn_if_onednn_crash_risk(model) == []


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "avx512"),
        ({"DNNL_MAX_CPU_ISA": "AVX2"}, "avx2"),
        ({"DNNL_MAX_CPU_ISA": "avx2_vnni"}, "avx2"),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "avx512"),
        ({"DNNL_MAX_CPU_ISA": "SSE41"}, None),
        ({"TF_ENABLE_ONEDNN_OPTS": "0"}, None),
    ],
)
def test_instruction_set_follows_the_environment(monkeypatch, env, expected):
    monkeypatch.setattr(onednn, "_cpu_isa", lambda: "avx512")
    monkeypatch.setattr(onednn, "_tensorflow_uses_onednn", lambda: True)
    for name in ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert onednn.onednn_isa() == expected


@pytest.mark.parametrize("backbone", ["bagnet33", "densenet121"])
@pytest.mark.parametrize("mode", ["finetune", "scratch"])
def test_published_backbones_do_not_trigger_the_guard(monkeypatch, backbone, mode):
    monkeypatch.setattr(onednn, "onednn_isa", lambda: "avx512")
    model = build_classifier(backbone, {"city": 10, "region": 2}, mode=mode, weights=None, input_shape=(224, 224, 3))
    assert onednn.risky_strided_convs(model) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert onednn.warn_if_onednn_crash_risk(model) == []
