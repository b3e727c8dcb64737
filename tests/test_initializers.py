import keras
import numpy as np
import pytest
from scipy.stats import ks_2samp

from bagnet_keras.core.initializers import compute_fans, initial_values

INITIALIZERS = [
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "orthogonal",
    keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
    keras.initializers.RandomNormal(0.1, 0.3),
    keras.initializers.RandomUniform(-2.0, 1.0),
    keras.initializers.TruncatedNormal(0.0, 0.5),
]


@pytest.mark.backends
@pytest.mark.parametrize("initializer", INITIALIZERS, ids=lambda i: i if isinstance(i, str) else type(i).__name__)
def test_numpy_draws_have_keras_distribution(initializer):
    """Two samples of 36,864 numbers, ours and Keras' own: the same distribution (Kolmogorov-Smirnov)."""
    shape = (3, 3, 64, 64)
    ours = initial_values(initializer, shape, "float32", np.random.default_rng(0))
    theirs = keras.ops.convert_to_numpy(keras.initializers.get(initializer)(shape))
    assert ours.shape == shape and ours.dtype == np.float32
    assert ks_2samp(ours.ravel(), theirs.ravel()).statistic < 0.02
    np.testing.assert_array_equal(ours, initial_values(initializer, shape, "float32", np.random.default_rng(0)))


def test_orthogonal_columns_and_constant_initializers():
    q = initial_values("orthogonal", (8, 5), "float64", np.random.default_rng(1))
    np.testing.assert_allclose(q.T @ q, np.eye(5), atol=1e-12)
    assert (initial_values(keras.initializers.Constant(3.0), (2, 2), "float32", None) == 3).all()
    assert compute_fans((5, 4, 3), input_axes=[0, 1], output_axes=[2]) == (20, 3)
