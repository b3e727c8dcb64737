"""Where a feature-map position sits on the input image.

Overlays and masking experiments need every map position placed on the input
to the pixel. `receptive_field` walks a model's graph (nested sub-models
included) from the input to a 4-D tensor and composes the convolution
arithmetic of every layer on the way.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np

from bagnet_keras.core.graph import graph_nodes, inbound_nodes, producer
from bagnet_keras.core.layers import StemConv


class Geometry(NamedTuple):
    """Receptive field of the positions of a 4-D feature map.

    Position ``i`` (along either axis) sees input pixels
    ``offset + stride * i`` to ``offset + stride * i + patch_size - 1``.
    """

    patch_size: int
    stride: int
    offset: int


_IDENTITY = Geometry(1, 1, 0)
#: Layers that combine feature maps position by position.
MERGE_LAYERS = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
)
_WINDOWED = (
    StemConv,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)


def _square(value, layer, what: str) -> int:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if values[0] != values[1]:
        raise ValueError(
            f"Layer {layer.name!r} has a non-square {what} {values}; receptive_field "
            "supports square kernels, strides and paddings only."
        )
    return int(values[0])


def _windowed(layer, g: Geometry) -> Geometry:
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        kernel = _square(layer.pool_size, layer, "pool size")
        dilation = 1
    else:
        kernel = _square(layer.kernel_size, layer, "kernel")
        dilation = _square(layer.dilation_rate, layer, "dilation")
    stride = _square(layer.strides, layer, "stride")
    span = dilation * (kernel - 1) + 1
    # 'same' pads (span - stride) in total, half on top, when the input side
    # is a multiple of the stride (224-style inputs); 'valid' pads nothing.
    pad_top = max(span - stride, 0) // 2 if layer.padding == "same" else 0
    return Geometry(
        g.patch_size + (span - 1) * g.stride,
        g.stride * stride,
        g.offset - pad_top * g.stride,
    )


def _merge(layer, geometries: list[Geometry]) -> Geometry:
    strides = {g.stride for g in geometries}
    if len(strides) != 1:
        raise ValueError(f"Layer {layer.name!r} merges feature maps of different strides {sorted(strides)}.")
    start = min(g.offset for g in geometries)
    end = max(g.offset + g.patch_size for g in geometries)
    return Geometry(end - start, strides.pop(), start)


def _shift(layer, g: Geometry) -> Geometry:
    top = layer.padding[0][0] if isinstance(layer, keras.layers.ZeroPadding2D) else layer.cropping[0][0]
    sign = -1 if isinstance(layer, keras.layers.ZeroPadding2D) else 1
    return Geometry(g.patch_size, g.stride, g.offset + sign * top * g.stride)


def _tensor_geometry(tensor, known: dict) -> Geometry:
    key = id(tensor)
    if key in known:
        return known[key]
    history = producer(tensor)
    if history is None:
        raise ValueError(f"{tensor!r} is not a symbolic tensor of a Keras model.")
    layer, node_index, tensor_index = history
    if isinstance(layer, keras.layers.InputLayer):
        known[key] = _IDENTITY
        return _IDENTITY
    node = inbound_nodes(layer)[node_index]
    inputs = [_tensor_geometry(t, known) for t in node.input_tensors]

    if isinstance(layer, keras.Model):
        inner = dict(known)
        for inner_input, g in zip(layer.inputs, inputs, strict=True):
            inner[id(inner_input)] = g
        result = _tensor_geometry(layer.outputs[tensor_index], inner)
    elif isinstance(layer, _WINDOWED):
        result = _windowed(layer, inputs[0])
    elif isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)):
        result = _shift(layer, inputs[0])
    elif isinstance(layer, MERGE_LAYERS):
        result = _merge(layer, inputs)
    elif len(inputs) == 1 and _keeps_grid(layer, node):
        result = inputs[0]
    else:
        raise ValueError(
            f"Cannot place the outputs of layer {layer.name!r} "
            f"({type(layer).__name__}) on the input: it changes the spatial grid in a "
            "way receptive_field does not know."
        )
    known[key] = result
    return result


def _keeps_grid(layer, node) -> bool:
    (inp,) = node.input_tensors
    out = node.output_tensors[0]
    return len(inp.shape) == 4 and len(out.shape) == 4 and tuple(inp.shape[1:3]) == tuple(out.shape[1:3])


def receptive_field(model: keras.Model, tensor=None, layer: str | None = None) -> Geometry:
    """Receptive field of a 4-D tensor of ``model``, in input pixels.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model (nested sub-models are followed).
    tensor : KerasTensor, optional
        A 4-D symbolic tensor of the model; defaults to the output of
        ``layer`` or, without it, the model's first output.
    layer : str, optional
        Name of a layer whose output to place.

    Returns
    -------
    Geometry
        ``(patch_size, stride, offset)``. Exact for valid padding; for
        'same' padding with stride > 1 it assumes input sides that are
        multiples of the stride.

    Examples
    --------
    >>> import keras
    >>> from bagnet_keras.core.geometry import receptive_field
    >>> inp = keras.Input((None, None, 3))
    >>> out = keras.layers.Conv2D(4, 3, strides=2)(keras.layers.Conv2D(4, 3)(inp))
    >>> receptive_field(keras.Model(inp, out))
    Geometry(patch_size=5, stride=2, offset=0)
    """
    if tensor is None:
        tensor = model.get_layer(layer).output if layer is not None else model.outputs[0]
    if len(tensor.shape) != 4:
        raise ValueError(
            f"receptive_field needs a 4-D feature map (N, H, W, C); received a tensor of shape {tensor.shape}."
        )
    known = {id(t): _IDENTITY for t in model.inputs}
    return _tensor_geometry(tensor, known)


def compose(outer: Geometry, inner: Geometry) -> Geometry:
    """Geometry of ``inner`` (measured on a feature map) placed on the input of ``outer``'s map.

    Examples
    --------
    >>> compose(Geometry(3, 2, 0), Geometry(3, 1, 0))
    Geometry(patch_size=7, stride=2, offset=0)
    """
    return Geometry(
        outer.patch_size + (inner.patch_size - 1) * outer.stride,
        outer.stride * inner.stride,
        outer.offset + inner.offset * outer.stride,
    )


def layer_geometry(model: keras.Model, path: str) -> Geometry:
    """Receptive field of the output of the layer at ``path`` (``"backbone/conv5_block3_out"``).

    Nested models are entered: the geometry of the sub-model's input inside
    the outer model is composed with that of the layer inside the sub-model.

    Examples
    --------
    >>> import keras
    >>> inner = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3, name="c")], name="inner")
    >>> outer = keras.Sequential([keras.Input((None, None, 3)), keras.layers.MaxPooling2D(2), inner])
    >>> layer_geometry(outer, "inner/c")
    Geometry(patch_size=6, stride=2, offset=0)
    """
    *models, name = path.split("/")
    geometry = _IDENTITY
    current = model
    for sub_name in models:
        sub = current.get_layer(sub_name)
        calls = [node for node in graph_nodes(current) if node.operation is sub]
        if len(calls) != 1:
            raise ValueError(
                f"Sub-model {sub_name!r} is called {len(calls)} times in {current.name!r}; cannot place its layers."
            )
        geometry = compose(geometry, receptive_field(current, calls[0].input_tensors[0]))
        current = sub
    return compose(geometry, receptive_field(current, layer=name))


def position_boxes(geometry: Geometry, rows, columns) -> np.ndarray:
    """``(..., 4)`` integer boxes ``(top, left, bottom, right)`` (bottom/right exclusive) of the receptive
    fields of positions ``(rows, columns)`` (arrays of any shape) on the input; they may pass its edges.

    Examples
    --------
    >>> position_boxes(Geometry(3, 2, -1), np.array([0, 2]), np.array([1, 1])).tolist()
    [[-1, 1, 2, 4], [3, 1, 6, 4]]
    """
    top = geometry.offset + geometry.stride * np.asarray(rows)
    left = geometry.offset + geometry.stride * np.asarray(columns)
    return np.stack([top, left, top + geometry.patch_size, left + geometry.patch_size], axis=-1)


def placement_matrix(n_in: int, n_out: int, geometry: Geometry | None) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights that put map positions on input pixels.

    Position ``i`` of the map is placed at the centre of its receptive field,
    ``offset + stride * i + (patch_size - 1) / 2``; pixels between centres are
    interpolated linearly, pixels beyond the first or last centre take its
    value. Without a geometry the map is assumed to cover the input evenly
    (the half-pixel convention of ``cv2.resize``).

    Examples
    --------
    >>> placement_matrix(2, 4, Geometry(2, 2, 0))
    array([[1.  , 0.  ],
           [0.75, 0.25],
           [0.25, 0.75],
           [0.  , 1.  ]])
    """
    if geometry is None:
        stride = n_out / n_in
        first = (stride - 1) / 2
    else:
        stride = geometry.stride
        first = geometry.offset + (geometry.patch_size - 1) / 2
    u = np.clip((np.arange(n_out) - first) / stride, 0, n_in - 1)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = u - lo
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), lo), 1 - frac)
    np.add.at(matrix, (np.arange(n_out), hi), frac)
    return matrix


def upsample(maps, size: tuple[int, int], geometry: Geometry | None = None) -> np.ndarray:
    """Place maps (N, h, w, ...) on an input of ``size`` (H, W): returns (N, H, W, ...).

    See `placement_matrix` for where each map position lands.

    Examples
    --------
    >>> import numpy as np
    >>> upsample(np.ones((1, 3, 3)), (24, 24), Geometry(9, 8, 0)).shape
    (1, 24, 24)
    """
    maps = np.asarray(maps)
    rows = placement_matrix(maps.shape[1], size[0], geometry)
    cols = placement_matrix(maps.shape[2], size[1], geometry)
    out = np.einsum("Yh,nhw...,Xw->nYX...", rows, maps, cols)
    return out.astype(maps.dtype if np.issubdtype(maps.dtype, np.floating) else np.float32)
