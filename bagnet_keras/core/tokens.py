"""Vision transformers' patch tokens laid on their image grid, and where a transformer's blocks are.

A ViT layer's output is a sequence (N, T, D): first the class token (and DeiT's distillation token,
DINOv2's register tokens), then one token per patch, row by row. `TokenGrid` takes the patch tokens
out as a feature map (N, rows, columns, D) and puts an edited map back, so every method written for
CNN feature maps (the CAM family) runs on a transformer unchanged, and the map is placed on the input
by the patch grid (`TokenGrid.geometry`). The grid comes from the model's input size and its patch
size: no reshape function is written by the user (pytorch-grad-cam's ``reshape_transform``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras

from bagnet_keras.core.geometry import Geometry
from bagnet_keras.core.graph import iter_layers, output_shape

#: Where keras-hub's transformer encoders keep their blocks: ViT's and DeiT's ``encoder_layers``,
#: DINOv2's ``layers``.
_BLOCK_LISTS = ("encoder_layers", "layers")
#: Most leading (class, distillation, register) tokens tried when no layer states the patch size.
_MAX_PREFIX = 16


class TokenGrid(NamedTuple):
    """Where a transformer layer's patch tokens lie: ``prefix`` leading tokens, then ``rows`` x ``columns``
    patches of ``patch`` pixels, row by row.

    Examples
    --------
    >>> import numpy as np
    >>> grid = TokenGrid(prefix=1, rows=2, columns=3, patch=8)
    >>> tokens = np.arange(7 * 2, dtype="float32").reshape(1, 7, 2)
    >>> tuple(grid.to_grid(tokens).shape)
    (1, 2, 3, 2)
    >>> bool((keras.ops.convert_to_numpy(grid.from_grid(tokens, grid.to_grid(tokens))) == tokens).all())
    True
    """

    prefix: int
    rows: int
    columns: int
    patch: int

    def to_grid(self, tokens):
        """The patch tokens of (N, T, D) as a feature map (N, rows, columns, D)."""
        patches = tokens[:, self.prefix :]
        return keras.ops.reshape(patches, (-1, self.rows, self.columns, patches.shape[-1]))

    def from_grid(self, tokens, grid):
        """``tokens`` with its patch tokens replaced by ``grid`` (N, rows, columns, D)."""
        patches = keras.ops.reshape(grid, (-1, self.rows * self.columns, grid.shape[-1]))
        return keras.ops.concatenate([tokens[:, : self.prefix], patches], axis=1) if self.prefix else patches

    @property
    def geometry(self) -> Geometry:
        """Each position's receptive field on the input: its own patch."""
        return Geometry(self.patch, self.patch, 0)


def token_grid(model: keras.Model, tokens: int) -> TokenGrid:
    """The grid of a layer of ``model`` whose output has ``tokens`` tokens.

    The patch size is the ``patch_size`` a keras-hub backbone or embedding layer states; without one,
    the fewest leading tokens that leave a grid of square patches tiling the input.

    Examples
    --------
    >>> model = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.Identity()])
    >>> token_grid(model, 197)
    TokenGrid(prefix=1, rows=14, columns=14, patch=16)
    """
    height, width = model.input_shape[1:3]
    stated = _stated_patch(model)
    candidates = [stated] if stated else _patch_sizes(height, width, tokens)
    for patch in candidates:
        rows, columns = height // patch, width // patch
        if 0 <= tokens - rows * columns <= (tokens if stated else _MAX_PREFIX):
            return TokenGrid(tokens - rows * columns, rows, columns, patch)
    raise ValueError(
        f"A sequence of {tokens} tokens does not lay out on {height}x{width} input images of model {model.name!r}"
        f"{f' with patches of {stated} pixels' if stated else ''}; pass a layer whose tokens are the image's "
        "patches (a transformer block), or a 4-D feature map."
    )


def _stated_patch(model: keras.Model) -> int | None:
    for _, layer in iter_layers(model):
        size = getattr(layer, "patch_size", None)
        if isinstance(size, (tuple, list)) and len(set(size)) == 1:
            size = size[0]
        if isinstance(size, int):
            return size
    return None


def _patch_sizes(height: int, width: int, tokens: int) -> list[int]:
    # Largest grid first: the fewest leading tokens.
    sizes = [p for p in range(1, math.gcd(height, width) + 1) if height % p == 0 and width % p == 0]
    return [p for p in sizes if (height // p) * (width // p) <= tokens]


def attends(model: keras.Model) -> bool:
    """Whether ``model`` holds a ``MultiHeadAttention`` layer (what the rollouts explain).

    Examples
    --------
    >>> attends(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    False
    """
    return any(isinstance(layer, keras.layers.MultiHeadAttention) for _, layer in iter_layers(model))


def transformer_blocks(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """``(path, block)`` of every transformer block of ``model``'s keras-hub encoders, in order.

    Examples
    --------
    >>> transformer_blocks(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    []
    """
    return [(f"{path}/{block.name}", block) for path, layer in iter_layers(model) for block in _blocks_of(layer)]


def holds_blocks(layer) -> bool:
    """Whether ``layer`` is a keras-hub transformer encoder (it holds the blocks).

    Examples
    --------
    >>> holds_blocks(keras.layers.Dense(2))
    False
    """
    return bool(_blocks_of(layer))


def _blocks_of(layer) -> list:
    """The blocks a keras-hub encoder holds, in order; [] for any other layer."""
    if isinstance(layer, keras.Model) or not type(layer).__module__.startswith("keras_hub."):
        return []
    for name in _BLOCK_LISTS:
        held = getattr(layer, name, None)
        if isinstance(held, (list, tuple)) and held and all(isinstance(b, keras.layers.Layer) for b in held):
            return list(held)
    return []


def last_token_layer(model: keras.Model) -> tuple[str, keras.layers.Layer] | None:
    """The default layer to explain a transformer at: the input of its last block, or None for other models.

    The last block's own patch tokens never reach the class token the classifier reads (the final
    normalisation works token by token), so their gradient is 0; its input is the last layer that counts.

    Examples
    --------
    >>> last_token_layer(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) is None
    True
    """
    blocks = transformer_blocks(model)
    if len(blocks) >= 2:
        return blocks[-2]
    for path, layer in iter_layers(model):
        if blocks and "embedding" in type(layer).__name__.lower() and layer_tokens(model, layer):
            return path, layer
    return None


def layer_tokens(model: keras.Model, layer: keras.layers.Layer) -> int | None:
    """The number of tokens of ``layer``'s output when it is a sequence (N, T, D), else None."""
    return sequence_length(output_shape(model, layer))


def sequence_length(shape: tuple | None) -> int | None:
    """T of a sequence's shape (N, T, D), else None.

    Examples
    --------
    >>> sequence_length((None, 197, 768)), sequence_length((None, 7, 7, 512))
    (197, None)
    """
    return shape[1] if shape is not None and len(shape) == 3 and shape[1] is not None else None


def watch_patches(grid: TokenGrid, output, watch):
    """``output`` (a sequence, or a tuple that starts with one) with its patch grid passed through ``watch``
    (which returns the grid to use, e.g. watched for its gradient); returns ``(new output, watched grid)``."""
    tokens = output[0] if isinstance(output, (tuple, list)) else output
    patches = watch(grid.to_grid(tokens))
    tokens = grid.from_grid(tokens, patches)
    return ((tokens, *output[1:]) if isinstance(output, (tuple, list)) else tokens), patches
