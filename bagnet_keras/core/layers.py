"""The custom layers of the BagNet models (registered for ``.keras`` save and load)."""

from __future__ import annotations

import keras
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
