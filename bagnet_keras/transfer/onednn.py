"""A guard against a TensorFlow/oneDNN crash when training narrow 1x1 strided convolutions on x86 CPUs.

TensorFlow (2.20 and 2.21 at least) runs CPU convolutions through oneDNN.
oneDNN's ``jit_1x1`` kernel for the *weight gradient* of a 1x1 convolution
with stride 2 and few input channels corrupts memory: the process dies with
``double free or corruption`` (SIGABRT) or a segmentation fault, without a
Python traceback. With AVX-512 kernels (seen on AMD Zen 5 and Intel Sapphire
Rapids) it happens for 1 to 15 input channels when the batch size is odd,
typically on the last, partial batch of an epoch; with AVX2 kernels (an AVX2
CPU, or ``DNNL_MAX_CPU_ISA=AVX2``) for 1 to 4 input channels on any batch
size. Forward passes are not affected, nor are stride 1 or 16 and more input
channels. ``tools/onednn_check.py`` in the repository reproduces it and says
whether the machine it runs on is affected.

BagNet-33 and the keras.applications backbones have no such layer (their
narrowest 1x1 strided convolution reads 64 or more channels); small models
such as ``BagNet(base_width=8)`` have one (the first shortcut reads the stem,
whose width ``stem_width`` defaults to ``base_width``). Switching oneDNN off
for everything would cost much of the CPU's speed, so `fit_classifier` only
warns, and only where the pattern is present and the CPU and TensorFlow's
settings expose it.
"""

from __future__ import annotations

import functools
import os
import warnings

import keras

#: Per oneDNN instruction set: the most input channels seen to crash, and whether even batch sizes were safe.
#: Measured with tools/onednn_check.py's pattern on an Intel Sapphire Rapids (TensorFlow 2.21, oneDNN 3.7):
#: AVX-512 kernels crash for 1-15 channels on odd batches only; AVX2 kernels (DNNL_MAX_CPU_ISA=AVX2)
#: crash for 1-4 channels on any batch size and pass for 5-15; SSE4.1 kernels never crashed.
CRASHING = {"avx512": (15, True), "avx2": (4, False)}

#: What each setting costs, measured with bench/forward.py on 2 Intel Sapphire Rapids cores, against
#: 10.4 (BagNet-33) and 30.9 (ResNet-50) images/s with the default kernels (see README, 'Known issues').
WORKAROUND_COST = {
    "TF_ENABLE_ONEDNN_OPTS=0": "CPU inference measured 0.67x as fast for BagNet-33, 0.80x for ResNet-50",
    "DNNL_MAX_CPU_ISA=AVX2": "CPU inference measured 0.62x as fast for BagNet-33, 0.40x for ResNet-50",
}

_warned: set[tuple[str, ...]] = set()


class OneDNNCrashWarning(RuntimeWarning):
    """Training this model may crash the process in TensorFlow's oneDNN kernels on this CPU."""


def risky_strided_convs(model: keras.Layer, max_channels: int = 15) -> list[str]:
    """Names of the trainable 1x1 strided ``Conv2D`` layers with at most ``max_channels`` input channels.

    Nested models are searched too; their layers are named ``outer/inner``.
    A layer counts only if its kernel will be trained (the layer and every
    model around it are trainable), since only the weight gradient crashes.

    Parameters
    ----------
    model : keras.Model or keras.Layer
    max_channels : int
        15 finds the layers at risk on AVX-512 CPUs (see `CRASHING`).

    Returns
    -------
    list of str

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> risky_strided_convs(BagNet(blocks=(1, 1, 1, 1), base_width=8, include_top=False))
    ['conv2_block1_0_conv']
    >>> risky_strided_convs(BagNet(blocks=(1, 1, 1, 1), base_width=8, stem_width=16, include_top=False))
    []
    """
    found = []

    def visit(layer: keras.Layer, prefix: str) -> None:
        if not layer.trainable:
            return
        if isinstance(layer, keras.layers.Conv2D) and layer.built and tuple(layer.kernel_size) == (1, 1):
            channels = int(layer.kernel.shape[-2]) * layer.groups
            if max(layer.strides) > 1 and channels <= max_channels:
                found.append(prefix + layer.name)
        for inner in getattr(layer, "layers", ()):
            visit(inner, f"{prefix}{layer.name}/" if layer is not model else prefix)

    visit(model, "")
    return found


def _isa_cap() -> str | None:
    """The instruction set that DNNL_MAX_CPU_ISA (or ONEDNN_MAX_CPU_ISA) limits oneDNN to, if any."""
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if not isa or isa.startswith(("AVX512", "AVX10", "ALL", "DEFAULT")):
        return None
    return "avx2" if isa.startswith("AVX2") else "older"


@functools.cache
def _cpu_isa() -> str | None:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    if __cpu_features__.get("AVX512F"):
        return "avx512"
    return "avx2" if __cpu_features__.get("AVX2") else None


@functools.cache
def _tensorflow_uses_onednn() -> bool:
    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port

        built_with_onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        built_with_onednn = True  # the official x86 builds are; warning needlessly beats crashing silently
    return built_with_onednn and not tf.config.list_physical_devices("GPU")


def onednn_isa() -> str | None:
    """The instruction set of the oneDNN convolution kernels TensorFlow uses here: "avx512", "avx2" or None.

    None when TensorFlow is not the Keras backend, is built without oneDNN, a
    GPU takes the convolutions, ``TF_ENABLE_ONEDNN_OPTS=0`` is set, or the CPU
    (or ``DNNL_MAX_CPU_ISA``) offers neither AVX2 nor AVX-512. The environment
    is read now; TensorFlow reads it when it starts, so set those variables
    before importing it.

    Examples
    --------
    >>> onednn_isa() in ("avx512", "avx2", None)
    True
    """
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("0", "false"):
        return None
    if keras.backend.backend() != "tensorflow" or _isa_cap() == "older":
        return None
    isa = _cpu_isa()
    if isa == "avx512" and _isa_cap() == "avx2":
        isa = "avx2"
    return isa if isa is not None and _tensorflow_uses_onednn() else None


def warn_if_onednn_crash_risk(model: keras.Model) -> list[str]:
    """Warn (`OneDNNCrashWarning`, once per set of layers) if training ``model`` here can hit the oneDNN crash.

    Returns the names of the layers at risk under the kernels in use (see
    `onednn_isa` and `CRASHING`), an empty list where there are none. Only
    the model's layers are inspected and the CPU check is cached, so this
    costs nothing measurable before a training run.

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> warn_if_onednn_crash_risk(BagNet(blocks=(1, 1, 1, 1), base_width=8, stem_width=16, include_top=False))
    []
    """
    isa = onednn_isa()
    if isa is None:
        return []
    max_channels, even_batches_safe = CRASHING[isa]
    layers = risky_strided_convs(model, max_channels)
    if not layers or tuple(layers) in _warned:
        return layers
    _warned.add(tuple(layers))
    off = "TF_ENABLE_ONEDNN_OPTS=0"
    workarounds = [
        f"give these layers at least {max_channels + 1} input channels (16 is safe with every kernel "
        f"measured; for a BagNet, stem_width=16)"
    ]
    if even_batches_safe:
        workarounds.append(
            "train only on batches of an even size (an even batch size and dataset.batch(..., drop_remainder=True))"
        )
        avx2 = "DNNL_MAX_CPU_ISA=AVX2"
        workarounds.append(
            f"set {avx2} before TensorFlow starts if every such layer has more than "
            f"{CRASHING['avx2'][0]} input channels ({WORKAROUND_COST[avx2]})"
        )
    workarounds.append(f"set {off} before TensorFlow starts ({WORKAROUND_COST[off]})")
    warnings.warn(
        f"Training may crash this process (segmentation fault or 'double free or corruption', no traceback): "
        f"TensorFlow's oneDNN {isa.upper()} kernels corrupt memory in the weight gradient of 1x1 strided Conv2D "
        f"layers with at most {max_channels} input channels"
        f"{' when a batch has an odd size' if even_batches_safe else ''}. Layers at risk: {', '.join(layers)}. "
        f"Workarounds: {'; or '.join(workarounds)}. tools/onednn_check.py in the repository tells whether a "
        f"machine is affected; see README, 'Known issues'.",
        OneDNNCrashWarning,
        stacklevel=3,
    )
    return layers
