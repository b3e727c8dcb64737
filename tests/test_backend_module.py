"""The backend module's gradients, here on TensorFlow and under `make test-backends` on JAX and PyTorch."""

import keras
import numpy as np
import pytest

from bagnet_keras.core.backend import conv, value_and_gradients


@pytest.mark.backends
def test_a_key_watched_twice_gives_its_last_tensors_gradient():
    """A shared layer's output is watched once per call: the gradient is the last call's on every backend."""

    def fn(x, watch):
        first = watch("h", 2.0 * x)
        last = watch("h", 3.0 * first)
        return keras.ops.sum(last * first, axis=1), None

    x = np.array([[1.0, -2.0]], "float32")
    objective, _, (dx,), watched = value_and_gradients(fn, argnums=(0,))(x)
    as_numpy = keras.ops.convert_to_numpy
    np.testing.assert_allclose(as_numpy(objective), [12.0 * (1 + 4)])  # (6 x)(2 x) summed
    np.testing.assert_allclose(as_numpy(watched["h"]), 2.0 * x)  # d(last * first) / d(last) = first
    np.testing.assert_allclose(as_numpy(dx), 24.0 * x)


@pytest.mark.backends
@pytest.mark.parametrize("kernel_size, strides, padding", [(3, 1, "valid"), (3, 2, "same"), (1, 2, "valid")])
def test_conv_equals_keras_conv_on_a_batch(kernel_size, strides, padding):
    """`conv` takes other routes per backend (a matmul, one image at a time); the answer is keras.ops.conv's."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 9, 4)).astype("float32")
    kernel = rng.normal(size=(kernel_size, kernel_size, 4, 5)).astype("float32")
    ours = keras.ops.convert_to_numpy(conv(x, kernel, strides=strides, padding=padding))
    expected = keras.ops.convert_to_numpy(keras.ops.conv(x, kernel, strides=strides, padding=padding))
    np.testing.assert_allclose(ours, expected, atol=1e-5)
