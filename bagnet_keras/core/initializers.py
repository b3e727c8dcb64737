"""Keras initializers drawn with NumPy: new weights that are the same numbers on every backend.

A seeded Keras initializer draws from the backend's own random generator, so the same seed gives other
weights on TensorFlow, JAX and PyTorch. The sanity checks re-initialise a model's layers and must compute the
same figures on every backend; they draw here, from a NumPy generator, the same distributions as Keras:
the variance-scaling family (Glorot, He, LeCun), normal, uniform, truncated normal and orthogonal. An
initializer without randomness (zeros, ones, constant, identity) is called as it is. Any other seeded
initializer is called with a seed from the generator: its numbers are then the backend's own.
"""

from __future__ import annotations

import math

import keras
import numpy as np

# Keras' truncated normal keeps values within two standard deviations; this is the standard deviation of a
# unit normal truncated there, which VarianceScaling divides out so that the truncated draw has the variance.
_TRUNCATED_STD = 0.87962566103423978


def compute_fans(shape: tuple[int, ...], input_axes=None, output_axes=None) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of ``shape``, as Keras computes them (kernels: receptive field x channels;
    ``input_axes`` and ``output_axes`` name the axes when both are given).

    Examples
    --------
    >>> compute_fans((3, 3, 16, 32)), compute_fans((10, 4)), compute_fans((7,))
    ((144, 288), (10, 4), (7, 7))
    """
    if input_axes is not None and output_axes is not None:
        return int(np.prod([shape[a] for a in input_axes])), int(np.prod([shape[a] for a in output_axes]))
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = int(np.prod(shape[:-2], dtype=np.int64))
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def _truncated_normal(rng: np.random.Generator, shape, mean: float, stddev: float) -> np.ndarray:
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2
    while outside.any():  # redraw the few beyond two standard deviations (about 4.6 %)
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2
    return mean + stddev * values


def _variance_scaling(init, shape, rng: np.random.Generator) -> np.ndarray:
    fan_in, fan_out = compute_fans(shape, getattr(init, "input_axes", None), getattr(init, "output_axes", None))
    denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[init.mode]
    scale = init.scale / max(1.0, denominator)
    distribution = init.distribution
    if distribution == "truncated_normal":
        return _truncated_normal(rng, shape, 0.0, math.sqrt(scale) / _TRUNCATED_STD)
    if distribution == "untruncated_normal":
        return rng.normal(0.0, math.sqrt(scale), shape)
    limit = math.sqrt(3.0 * scale)
    return rng.uniform(-limit, limit, shape)


def _orthogonal(init, shape, rng: np.random.Generator) -> np.ndarray:
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    columns = int(shape[-1])
    q, r = np.linalg.qr(rng.standard_normal((max(rows, columns), min(rows, columns))))
    q = q * np.sign(np.diag(r))
    if rows < columns:
        q = q.T
    return init.gain * q.reshape(shape)


def initial_values(initializer, shape, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """New values of ``shape`` from ``initializer``'s distribution, drawn from ``rng``.

    Parameters
    ----------
    initializer : keras.initializers.Initializer, str or dict
        Anything `keras.initializers.get` takes.
    shape : tuple of int
    dtype : str
    rng : numpy.random.Generator
        The only source of randomness for the initializers listed in the module docstring.

    Examples
    --------
    >>> import keras, numpy as np
    >>> w = initial_values(keras.initializers.HeNormal(), (3, 3, 64, 64), "float32", np.random.default_rng(0))
    >>> w.dtype, round(float(w.std() * np.sqrt(3 * 3 * 64 / 2)), 1)
    (dtype('float32'), 1.0)
    """
    # the subclasses (GlorotUniform, HeNormal, ...) configure only their seed: read the attributes
    init = keras.initializers.get(initializer)
    shape = tuple(int(n) for n in shape)
    if isinstance(init, keras.initializers.VarianceScaling):
        values = _variance_scaling(init, shape, rng)
    elif isinstance(init, keras.initializers.RandomNormal):
        values = rng.normal(init.mean, init.stddev, shape)
    elif isinstance(init, keras.initializers.RandomUniform):
        values = rng.uniform(init.minval, init.maxval, shape)
    elif isinstance(init, keras.initializers.TruncatedNormal):
        values = _truncated_normal(rng, shape, init.mean, init.stddev)
    elif isinstance(init, keras.initializers.Orthogonal):
        values = _orthogonal(init, shape, rng)
    else:
        config = init.get_config()
        if "seed" in config:
            config["seed"] = int(rng.integers(2**31 - 1))
            init = init.__class__.from_config(config)
        values = keras.ops.convert_to_numpy(init(shape, dtype=dtype))
    return np.asarray(values).astype(dtype)
