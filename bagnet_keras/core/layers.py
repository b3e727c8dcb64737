"""The package's custom layers (registered for ``.keras`` save and load)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="bagnet_keras")
class StemConv(keras.layers.Layer):
    """The authors' stem, a 1x1 then a 3x3 convolution (no bias, valid), run as one 3x3 convolution.

    Nothing lies between the two convolutions, so they compose into a single
    3x3 kernel from the 3 input channels: the same function, with ~20x fewer
    multiply-adds on the largest feature map of the network. Both factors
    stay the trainable weights, so training sees the authors' parameters.

    Parameters
    ----------
    filters : int
        Output channels of both convolutions.

    Examples
    --------
    >>> import numpy as np
    >>> tuple(StemConv(8)(np.zeros((1, 5, 5, 3), "float32")).shape)
    (1, 3, 3, 8)
    """

    kernel_size = (3, 3)
    strides = (1, 1)
    dilation_rate = (1, 1)
    padding = "valid"

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        channels = input_shape[-1]
        self.pointwise_kernel = self.add_weight(
            name="pointwise_kernel", shape=(1, 1, channels, self.filters), initializer="glorot_uniform"
        )
        self.kernel = self.add_weight(
            name="kernel", shape=(3, 3, self.filters, self.filters), initializer="glorot_uniform"
        )

    def fused_kernel(self):
        """The single (3, 3, in, filters) kernel equal to the 1x1 then the 3x3 convolution."""
        return ops.einsum("ic,hwco->hwio", self.pointwise_kernel[0, 0], self.kernel)

    def call(self, inputs):
        return ops.conv(inputs, self.fused_kernel(), strides=1, padding="valid")

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else h - 2, None if w is None else w - 2, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="bagnet_keras")
class ClassToken(keras.layers.Layer):
    """The class token (the first) of a vision transformer's sequence (N, T, D): (N, D).

    Examples
    --------
    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(ClassToken()(np.arange(6, dtype="float32").reshape(1, 3, 2))).tolist()
    [[0.0, 1.0]]
    """

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="bagnet_keras")
class PixelAffine(keras.layers.Layer):
    """A fixed affine map of each pixel's channels, ``x @ matrix + offset``: a preprocessing as a layer.

    Every backbone's ``preprocess_input`` (scaling, a per-channel mean and
    standard deviation, RGB to BGR) is such a map, so a model can take RGB
    pixels in [0, 255] as keras.applications' ``include_preprocessing``
    models do. Then one set of images serves models trained with different
    preprocessings, and their maps are of the pixels a person sees.
    `from_function` finds the map of a preprocessing function.

    Parameters
    ----------
    matrix : (C, C') array-like
    offset : (C',) array-like

    Examples
    --------
    >>> import numpy as np
    >>> layer = PixelAffine.from_function(lambda x: (x - 100.0)[..., ::-1])  # mean, then RGB to BGR
    >>> keras.ops.convert_to_numpy(layer(np.array([[[[1.0, 2.0, 3.0]]]], "float32"))).ravel().tolist()
    [-97.0, -98.0, -99.0]
    """

    def __init__(self, matrix, offset, **kwargs):
        super().__init__(**kwargs)
        self.matrix = np.asarray(matrix, dtype="float32")
        self.offset = np.asarray(offset, dtype="float32")
        if self.matrix.ndim != 2 or self.offset.shape != self.matrix.shape[1:]:
            raise ValueError(
                f"`matrix` must be (C, C') and `offset` (C',). Received: {self.matrix.shape}, {self.offset.shape}"
            )

    @classmethod
    def from_function(cls, preprocess, channels: int = 3, **kwargs) -> PixelAffine:
        """The layer equal to ``preprocess`` on images in [0, 255], or a ValueError if it is not such a map.

        The map is read from the function's values at black and at each
        primary colour, then checked on random images: a preprocessing that
        depends on the image as a whole (standardising each image) is not
        one map for every pixel.
        """
        probes = np.zeros((channels + 1, 1, 1, channels), dtype="float32")
        probes[1:, 0, 0] = 255.0 * np.eye(channels, dtype="float32")
        values = np.asarray(preprocess(probes.copy()), dtype="float64").reshape(channels + 1, -1)
        offset = values[0]
        matrix = (values[1:] - offset) / 255.0
        x = np.random.default_rng(0).uniform(0, 255, (2, 3, 3, channels)).astype("float32")
        expected = np.asarray(preprocess(x.copy()), dtype="float64")
        if expected.shape[:-1] != x.shape[:-1] or not np.allclose(
            x @ matrix + offset, expected, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(expected).max()))
        ):
            name = getattr(preprocess, "__name__", repr(preprocess))
            raise ValueError(
                f"The preprocessing {name} is not one affine map of each pixel's channels, so it cannot be a "
                "layer of the model; apply it to the images instead (include_preprocessing=False)."
            )
        return cls(matrix, offset, **kwargs)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return ops.matmul(x, ops.cast(self.matrix, self.compute_dtype)) + ops.cast(self.offset, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.matrix.shape[1])

    def get_config(self):
        return {**super().get_config(), "matrix": self.matrix.tolist(), "offset": self.offset.tolist()}
