"""Pretrained weights: the registry, download and cache, and torch -> Keras conversion.

One record per published model (timm style), read by one loader. The
authors' PyTorch checkpoint is fetched with ``keras.utils.get_file`` into the
Keras cache under a temporary name, checked against the sha256 prefix in its
file name, renamed, and converted once to a ``.weights.h5`` file beside it
(also written under a temporary name, then renamed). Later calls load that.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np

from bagnet_keras.core.commit import atomic_target, file_sha256
from bagnet_keras.core.layers import StemConv
from bagnet_keras.models.torch_checkpoint import load_checkpoint, state_dict_from_checkpoint

#: Where the authors published the ImageNet checkpoints.
DEFAULT_BASE_URL = (
    "https://bitbucket.org/wielandbrendel/bag-of-feature-pretrained-models/raw/"
    "249e8fa82c0913623a807d9d35eeab9da7dcc2a8/"
)
#: Environment variable that overrides the base URL (mirrors, tests).
BASE_URL_ENV = "BAGNET_KERAS_WEIGHTS_URL"
CACHE_SUBDIR = "models"


class PretrainedConfig(NamedTuple):
    """One published model: its file, hash prefix, architecture, input and classes."""

    filename: str
    sha256_prefix: str
    blocks: tuple = (3, 4, 6, 3)
    kernel3: tuple = (1, 1, 1, 1)
    strides: tuple = (2, 2, 2, 1)
    base_width: int = 64
    classes: int = 1000
    input_size: int = 224
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)


PRETRAINED = {
    "bagnet9": PretrainedConfig("bagnet8-34f4ccd2.pth.tar", "34f4ccd2", kernel3=(1, 1, 0, 0)),
    "bagnet17": PretrainedConfig("bagnet16-105524de.pth.tar", "105524de", kernel3=(1, 1, 1, 0)),
    "bagnet33": PretrainedConfig("bagnet32-2ddd53ed.pth.tar", "2ddd53ed", kernel3=(1, 1, 1, 1)),
}


def _cache_dir(cache_dir: str | None) -> str:
    """The Keras cache's ``models`` folder, resolved as keras.utils.get_file does."""
    base = os.path.expanduser(cache_dir or os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    try:
        os.makedirs(os.path.join(base, CACHE_SUBDIR), exist_ok=True)
    except OSError:
        pass
    if not os.access(base, os.W_OK):
        base = os.path.join(tempfile.gettempdir(), ".keras")
        os.makedirs(os.path.join(base, CACHE_SUBDIR), exist_ok=True)
    return os.path.join(base, CACHE_SUBDIR)


def fetch_checkpoint(variant: str, base_url: str | None = None, cache_dir: str | None = None) -> str:
    """Download (once) and verify the authors' checkpoint of a BagNet.

    Parameters
    ----------
    variant : {"bagnet9", "bagnet17", "bagnet33"}
    base_url : str, optional
        Folder URL holding the checkpoint; default: the environment variable
        ``BAGNET_KERAS_WEIGHTS_URL``, else the authors' repository.
    cache_dir : str, optional
        Keras cache root (default ``~/.keras`` or ``$KERAS_HOME``); files go to
        its ``models`` folder.

    Returns
    -------
    str
        Path of the verified checkpoint in the cache.

    Examples
    --------
    >>> from bagnet_keras.models.weights import fetch_checkpoint
    >>> fetch_checkpoint("bagnet33")  # doctest: +SKIP
    '/home/me/.keras/models/bagnet32-2ddd53ed.pth.tar'
    """
    if variant not in PRETRAINED:
        raise ValueError(f"No pretrained weights for {variant!r}; available: {sorted(PRETRAINED)}.")
    config = PRETRAINED[variant]
    base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    url = base_url.rstrip("/") + "/" + config.filename
    return fetch_file(config.filename, url, config.sha256_prefix, cache_dir, what=f"the {variant} ImageNet weights")


def fetch_file(
    filename: str, url: str, sha256_prefix: str | None = None, cache_dir: str | None = None, what: str = "the file"
) -> str:
    """Download ``url`` once into the Keras cache as ``filename``, through a ``.part`` file, and verify it.

    With ``sha256_prefix``, a cached or downloaded file whose sha256 does not
    start with it is refused (and a download is not kept). Returns the path.
    """
    folder = _cache_dir(cache_dir)
    final = os.path.join(folder, filename)

    if os.path.exists(final):
        actual = file_sha256(final) if sha256_prefix else ""
        if not actual.startswith(sha256_prefix or ""):
            raise ValueError(
                f"The cached file {final} has sha256 {actual[:16]}..., not the expected "
                f"prefix {sha256_prefix}. Delete it (it will be downloaded again) or "
                f"replace it with the file from {url}."
            )
        return final

    partial = filename + ".part"
    try:
        # A fresh download every time: a .part left by a killed process is never trusted.
        downloaded = keras.utils.get_file(
            partial, origin=url, cache_dir=os.path.dirname(folder), cache_subdir=CACHE_SUBDIR, force_download=True
        )
    except Exception as e:
        _remove(os.path.join(folder, partial))
        raise OSError(
            f"Could not download {what} from {url} ({e}). Without network access, download that file "
            f"by hand and place it at {final}, or pass weights=<path of the file>."
        ) from e
    if sha256_prefix:
        actual = file_sha256(downloaded)
        if not actual.startswith(sha256_prefix):
            _remove(downloaded)
            raise ValueError(
                f"The file downloaded from {url} is incomplete or not the published one: "
                f"its sha256 starts with {actual[:8]}, expected {sha256_prefix}. Nothing was "
                "kept in the cache; try again."
            )
    os.replace(downloaded, final)
    return final


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))  # torch (out, in, kh, kw) -> Keras (kh, kw, in, out)


_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _torch_keys(layer: keras.layers.Layer) -> list[tuple[str, Callable]]:
    """The authors' state-dict keys of a layer of `bagnet_keras.models.bagnet`, in weight order, with converters."""
    if isinstance(layer, StemConv):
        # The authors' conv1 (1x1) and conv2 (3x3) are the two factors of the stem.
        return [("conv1.weight", _conv_kernel), ("conv2.weight", _conv_kernel)]
    if isinstance(layer, keras.layers.Dense) and layer.name == "logits":
        return [("fc.weight", np.transpose), ("fc.bias", np.asarray)]
    if layer.name == "conv1_bn":
        return [(f"bn1.{k}", np.asarray) for k in _BN_KEYS]
    parts = layer.name.split("_")  # conv{stage}_block{i}_{j}_{conv|bn}
    if len(parts) != 4 or not isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization)):
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) is not part of a BagNet.")
    stage, block, j, kind = parts
    prefix = f"layer{int(stage[4:]) - 1}.{int(block[5:]) - 1}."
    prefix += f"downsample.{0 if kind == 'conv' else 1}" if j == "0" else f"{kind}{j}"
    if kind == "conv":
        return [(prefix + ".weight", _conv_kernel)]
    return [(f"{prefix}.{k}", np.asarray) for k in _BN_KEYS]


def state_dict_to_keras(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy the authors' BagNet state dict into a model built by `bagnet_keras.models.bagnet`.

    Every weighted layer must find its tensors with the right shapes; the
    error names the first that does not. ``fc.*`` is ignored when the model
    has no top; ``num_batches_tracked`` is always ignored.

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> from bagnet_keras.models.torch_checkpoint import load_checkpoint, state_dict_from_checkpoint
    >>> model = BagNet(blocks=(1, 1, 1, 1), classes=10)  # doctest: +SKIP
    >>> state_dict_to_keras(model, state_dict_from_checkpoint(load_checkpoint("mini33.pth.tar")))  # doctest: +SKIP
    """
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for (name, convert), variable in zip(_torch_keys(layer), layer.weights, strict=True):
            if name not in state_dict:
                raise ValueError(
                    f"The checkpoint has no '{name}' for layer {layer.name!r}: it is not a "
                    "checkpoint of this BagNet configuration."
                )
            value = convert(np.asarray(state_dict[name], dtype="float32"))
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"Checkpoint tensor '{name}' has shape {tuple(state_dict[name].shape)}, which "
                    f"does not fit layer {layer.name!r} (Keras shape {tuple(variable.shape)}): the "
                    "checkpoint is of another configuration (blocks, kernel3, classes)."
                )
            values.append(value)
            used.add(name)
        layer.set_weights(values)
    has_top = any(layer.name == "logits" for layer in model.layers)
    unused = sorted(
        k
        for k in set(state_dict) - used
        if not k.endswith("num_batches_tracked") and (has_top or not k.startswith("fc."))
    )
    if unused:
        raise ValueError(
            f"The checkpoint has tensors this model does not use, e.g. {unused[:3]}: it is of "
            "another BagNet configuration (blocks, kernel3)."
        )


def load_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Load an authors' checkpoint (``.pth``, ``.pth.tar``) or a Keras weights file into a BagNet.

    Examples
    --------
    >>> from bagnet_keras import BagNet33
    >>> model = BagNet33(weights=None)
    >>> load_weights(model, "bagnet32-2ddd53ed.pth.tar")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        model.load_weights(path)
        return
    if path.endswith((".keras", ".h5")):
        raise ValueError(
            f"weights={path!r}: pass a PyTorch checkpoint or a '.weights.h5' file; load a whole "
            "'.keras' model with keras.models.load_model."
        )
    state_dict_to_keras(model, state_dict_from_checkpoint(load_checkpoint(path)))


def imagenet_weights_file(
    variant: str,
    build_full_model: Callable[[], keras.Model],
    base_url: str | None = None,
    cache_dir: str | None = None,
) -> str:
    """The converted ``.weights.h5`` file of a pretrained model, made once.

    Parameters
    ----------
    variant : str
        A key of `PRETRAINED`.
    build_full_model : callable
        Returns the model with its full top (``classes`` of the record),
        randomly initialised; the checkpoint is copied into it and saved.
    base_url, cache_dir : str, optional
        As in `fetch_checkpoint`.

    Returns
    -------
    str
        Path of the Keras weights file beside the checkpoint in the cache.

    Examples
    --------
    >>> from bagnet_keras import BagNet
    >>> imagenet_weights_file("bagnet33", lambda: BagNet())  # doctest: +SKIP
    '/home/me/.keras/models/bagnet32-2ddd53ed.weights.h5'
    """
    checkpoint = fetch_checkpoint(variant, base_url=base_url, cache_dir=cache_dir)
    stem = checkpoint[: -len(".pth.tar")] if checkpoint.endswith(".pth.tar") else os.path.splitext(checkpoint)[0]
    converted = stem + ".weights.h5"
    if not os.path.exists(converted):
        full = build_full_model()
        state_dict_to_keras(full, state_dict_from_checkpoint(load_checkpoint(checkpoint)))
        with atomic_target(converted) as tmp:
            full.save_weights(tmp)
    return converted
