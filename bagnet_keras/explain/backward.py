"""Modified backward passes: each elementwise activation runs as usual, its derivative is replaced.

Guided backpropagation and the deconvnet (`bagnet_keras.explain.guided`),
epsilon-LRP and DeepLIFT (`bagnet_keras.explain.attribution`) are all the
ordinary gradient of a score with the derivative of the network's
activations changed (Ancona et al. 2018, "Towards better understanding of
gradient-based attribution methods"). `replace_activations` gives
`bagnet_keras.core.graph.run_graph` the layers with their activation swapped
for such a function: activation layers (``ReLU``, ``Activation("relu")``, ...)
and the activation that a ``Conv2D`` or ``Dense`` applies after its linear
part (``activation="relu"``), inside nested models too.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

#: Layers that are one elementwise function of their input (no linear part of their own).
ACTIVATION_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)


def activation_of(layer) -> Callable | None:
    """The elementwise function ``layer`` applies last (the layer itself for activation layers); None for none.

    Examples
    --------
    >>> activation_of(keras.layers.Dense(2, activation="relu")) is keras.activations.relu
    True
    >>> activation_of(keras.layers.Dense(2)) is None
    True
    """
    if isinstance(layer, ACTIVATION_LAYERS):
        return layer
    fn = getattr(layer, "activation", None)
    if fn is None or fn is keras.activations.linear:
        return None
    return fn


def is_plain_relu(layer) -> bool:
    """Whether ``layer`` ends in max(x, 0): a plain ``ReLU`` layer (no cap, slope or threshold), or a layer whose
    activation is ``relu`` (``Activation("relu")``, ``Conv2D(..., activation="relu")``).

    Examples
    --------
    >>> is_plain_relu(keras.layers.ReLU()), is_plain_relu(keras.layers.ReLU(max_value=6.0))
    (True, False)
    """
    if isinstance(layer, keras.layers.ReLU):
        return (layer.max_value is None) and not layer.negative_slope and not layer.threshold
    return getattr(layer, "activation", None) is keras.activations.relu


def replace_activations(select: Callable, modify: Callable) -> Callable:
    """``operation_fn`` for `run_graph`: where ``select(layer)``, compute ``modify(f)(z)`` in place of ``f(z)``.

    ``f`` is the layer's activation (`activation_of`) and ``z`` the output
    of its linear part (its input, for activation layers); ``modify(f)``
    returns a function with the same forward value and another gradient
    (`bagnet_keras.core.backend.custom_derivative`).

    Examples
    --------
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="relu")])
    >>> from bagnet_keras.core.graph import run_graph
    >>> double = replace_activations(lambda layer: True, lambda f: lambda z: 2 * f(z))
    >>> x = np.ones((1, 2), "float32")
    >>> bool(np.allclose(run_graph(model, x, double), 2 * model(x)))
    True
    """

    def operation_fn(layer):
        fn = activation_of(layer)
        if fn is None or not select(layer):
            return layer
        replaced = modify(fn)
        if isinstance(layer, (*ACTIVATION_LAYERS, keras.layers.Activation)):
            return lambda inputs, **kwargs: replaced(inputs)

        def call(*args, **kwargs):
            # Runs while the function is traced (on PyTorch, at each eager call), so the computation holds
            # the linear part and the replacement.
            activation = layer.activation
            layer.activation = keras.activations.linear
            try:
                return replaced(layer(*args, **kwargs))
            finally:
                layer.activation = activation

        return call

    return operation_fn
