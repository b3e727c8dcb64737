"""The backend module's gradients, here on TensorFlow and under `make test-backends` on JAX and PyTorch."""

import keras
import numpy as np
import pytest

from bagnet_keras.core.backend import backend, compile_function, conv, each_image, spatial_mean, value_and_gradients


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


@pytest.mark.backends
def test_each_image_equals_the_batch_call_and_maps_on_jax():
    """JAX's CPU backend calls the function on one image at a time; every backend gives the batch call's answer."""
    seen = []

    def fn(batch):
        seen.append(batch.shape[0])
        return batch * 2.0, keras.ops.sum(batch, axis=(1, 2))

    x = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype("float32")
    doubled, sums = compile_function(lambda images: each_image(fn, images))(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(doubled), 2.0 * x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sums), x.sum(axis=(1, 2)), rtol=1e-6)
    assert set(seen) == ({1} if backend() == "jax" else {3})


@pytest.mark.backends
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-6), ("float16", 1e-3)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_spatial_mean_equals_global_average_pooling(dtype, tolerance, keepdims):
    """A matrix product on JAX's CPU backend, ops.mean elsewhere: GlobalAveragePooling2D's answer and shape."""
    x = np.random.default_rng(0).normal(size=(3, 5, 7, 4)).astype(dtype)
    ours = compile_function(lambda images: spatial_mean(images, keepdims))(x)
    expected = keras.layers.GlobalAveragePooling2D(keepdims=keepdims)(x.astype("float32"))
    assert keras.ops.convert_to_numpy(ours).dtype == dtype
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(expected), atol=tolerance)
