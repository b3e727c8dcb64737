"""keras-hub's vision transformers (ViT, DeiT, DINOv2) as backbones, loaded by preset name on first use.

keras-hub is an optional extra (``pip install "bagnet-keras[hub]"``). A preset downloads once from
Kaggle into kagglehub's cache (``$KAGGLEHUB_CACHE``, by default ``~/.cache/kagglehub``); offline,
with the preset not cached, loading fails with one error naming the preset and that folder. A
preset may also be a local folder written by ``backbone.save_to_preset(folder)``.
"""

from __future__ import annotations

import importlib
import os

import keras

#: Short names (the issue's ``"vit_base_patch16_224"``) and the keras-hub preset each one loads.
PRESETS: dict[str, str] = {
    **{
        f"vit_{size}_patch{patch}_{side}": f"vit_{size}_patch{patch}_{side}_imagenet"
        for size, patch, side in [
            ("base", 16, 224),
            ("base", 16, 384),
            ("large", 16, 224),
            ("large", 16, 384),
            ("base", 32, 384),
            ("large", 32, 384),
        ]
    },
    **{
        f"deit_{size}_distilled_patch16_224": f"deit_{size}_distilled_patch16_224_imagenet"
        for size in ("tiny", "small", "base")
    },
    **{f"dinov2_{size}": f"dinov2_{size}" for size in ("small", "base", "large", "giant")},
}


def require_keras_hub():
    """The ``keras_hub`` module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("keras_hub")
    except ImportError:
        raise ImportError(
            "Vision-transformer backbones come from keras-hub, an optional extra: "
            'pip install "bagnet-keras[hub]" (or pip install keras-hub).'
        ) from None


def cache_folder() -> str:
    """Where kagglehub keeps downloaded presets (``$KAGGLEHUB_CACHE`` or ``~/.cache/kagglehub``)."""
    return os.environ.get("KAGGLEHUB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kagglehub"))


def load_hub_backbone(preset: str | os.PathLike, load_weights: bool = True, **config) -> keras.Model:
    """keras-hub's backbone for ``preset`` (a name of `PRESETS`, a keras-hub preset, or a preset folder).

    ``config`` overrides the preset's configuration, e.g. ``image_shape=(224, 224, 3)`` for DINOv2,
    whose presets are made for 518-pixel images and interpolate their position embeddings to others.

    Examples
    --------
    >>> backbone = load_hub_backbone("vit_base_patch16_224")  # doctest: +SKIP
    >>> backbone.output.shape  # doctest: +SKIP
    (None, 197, 768)
    """
    keras_hub = require_keras_hub()
    handle = os.fspath(preset)
    handle = PRESETS.get(handle, handle)
    try:
        return keras_hub.models.Backbone.from_preset(handle, load_weights=load_weights, **config)
    except Exception as error:  # noqa: BLE001 - offline, kagglehub and requests fail in many ways
        raise OSError(
            f"Could not load the keras-hub preset {handle!r} ({type(error).__name__}: {error}). Presets download "
            f"once from Kaggle into {cache_folder()} (set KAGGLEHUB_CACHE to move it); offline, run once with "
            "network access, or pass a folder written by backbone.save_to_preset(folder)."
        ) from error


def hub_builder(preset: str, **config):
    """A keras.applications-style builder (``include_top``, ``weights``, ``input_tensor``) for ``preset``.

    ``weights`` is the preset itself (its pretrained weights, the default), None (the preset's
    architecture with random weights; its configuration still comes from the preset) or a weights file.
    ``config`` goes to `load_hub_backbone`.
    """

    def build(include_top: bool = False, weights: str | None = preset, input_tensor=None) -> keras.Model:
        if include_top:
            raise ValueError(f"A keras-hub backbone ({preset!r}) has no ImageNet top here; use include_top=False.")
        if weights not in (None, preset) and not os.path.isfile(str(weights)):
            raise ValueError(
                f"`weights` must be 'pretrained', None or a weights file for {preset!r}. Received: weights={weights!r}"
            )
        backbone = load_hub_backbone(preset, load_weights=weights == preset, **config)
        if weights not in (None, preset):
            backbone.load_weights(weights)
        if input_tensor is None:
            return backbone
        return keras.Model(input_tensor, backbone(input_tensor), name=backbone.name)

    return build
