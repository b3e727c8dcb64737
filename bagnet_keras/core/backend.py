"""The one home of backend-specific code: compiled functions of a model's layers on TensorFlow, JAX and PyTorch.

Keras 3 compiles a model's own ``call`` inside ``predict`` and ``fit``, but
offers nothing backend-neutral for any other function of its layers (a score
read through a replaced activation, a BagNet's dilated evidence pass), and
no gradient API at all (keras-team/keras#20760, #19220). Each backend does it
its own way:

- TensorFlow: `tf.function`, which reads the variables by reference;
- JAX: `jax.jit` of a pure function, so the variables' values are passed
  in at each call through a ``keras.StatelessScope`` (a jitted closure over
  them would keep the values it was traced with, and miss any later
  ``assign``, as the sanity checks' randomised weights);
- PyTorch: eager calls under ``torch.no_grad()``, whose results convert to
  NumPy.

Everything else in the package computes with `keras.ops` and converts results
with ``keras.ops.convert_to_numpy``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import keras


def backend() -> str:
    """The Keras backend in use: "tensorflow", "jax" or "torch".

    Examples
    --------
    >>> backend() in ("tensorflow", "jax", "torch")
    True
    """
    return keras.backend.backend()


def _supported_backend() -> str:
    """The backend, where this module has code for it (Keras also has numpy and openvino backends)."""
    name = backend()
    if name not in ("tensorflow", "jax", "torch"):
        raise ValueError(f"The Keras backend {name!r} is not supported; use tensorflow, jax or torch (KERAS_BACKEND).")
    return name


def compile_function(
    fn: Callable,
    variables: Sequence = (),
    *,
    jit_compile: bool = False,
    signature: Sequence[tuple[tuple, str]] | None = None,
) -> Callable:
    """``fn`` compiled for the backend: same arguments, same results (backend tensors), traced once per shape.

    Parameters
    ----------
    fn : callable
        A function of arrays that computes with Keras layers and `keras.ops`.
    variables : sequence of keras.Variable
        Every variable ``fn`` reads (``model.variables``). JAX passes their current values at each call.
    jit_compile : bool
        XLA on TensorFlow; JAX always compiles with XLA, PyTorch runs eagerly.
    signature : sequence of (shape, dtype), optional
        TensorFlow traces once for these argument shapes (None: any size, such as an open batch axis)
        instead of once per new shape.

    Examples
    --------
    >>> import numpy as np
    >>> layer = keras.layers.Dense(2, kernel_initializer="ones")
    >>> layer.build((None, 3))
    >>> f = compile_function(lambda x: layer(x) * 2.0, layer.variables, signature=[((None, 3), "float32")])
    >>> keras.ops.convert_to_numpy(f(np.ones((1, 3), "float32"))).tolist()
    [[6.0, 6.0]]
    >>> _ = layer.kernel.assign(np.zeros((3, 2), "float32"))
    >>> keras.ops.convert_to_numpy(f(np.ones((1, 3), "float32"))).tolist()  # the weights as they are now
    [[0.0, 0.0]]
    """
    name = _supported_backend()
    if name == "tensorflow":
        return _tensorflow(fn, jit_compile, signature)
    if name == "jax":
        return _jax(fn, list(variables))
    return _torch(fn)


def _tensorflow(fn, jit_compile, signature):
    import tensorflow as tf

    jit = True if jit_compile else None
    # No AutoGraph: these functions have no Python control flow on tensors (they compute with keras.ops, as
    # they must for JAX). Converting them and every Keras call beneath them at each trace was about a tenth
    # of the test suite's time.
    if signature is None:
        return tf.function(fn, reduce_retracing=True, jit_compile=jit, autograph=False)
    specs = [tf.TensorSpec(shape, dtype) for shape, dtype in signature]
    return tf.function(fn, input_signature=specs, jit_compile=jit, autograph=False)


def _jax(fn, variables):
    import jax

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn(*args)

    jitted = jax.jit(pure, compiler_options=_xla_cpu_options())
    return lambda *args: jitted([v.value for v in variables], *args)


# Convolutions and matrix products through Eigen, not YNNPACK, which XLA's CPU backend uses by default
# (jax 0.10) but which runs one image's convolution on one core: a 3x3 stride-2 convolution of 222x222x64
# took 11.2 ms on YNNPACK on 2 cores (11.1 on one) against 6.1 on Eigen. BagNet-33 on 2 cores (same process,
# alternating): predict 4.86 -> 5.37 images/s, the stride-1 evidence map 0.057 -> 0.081.
_XLA_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _xla_cpu_options() -> dict | None:
    """`_XLA_CPU_OPTIONS` on JAX's CPU backend where its XLA knows them (an XLA without YNNPACK does not)."""
    import jax

    if not _on_jax_cpu():
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=_XLA_CPU_OPTIONS).lower(0.0).compile()
    except jax.errors.JaxRuntimeError:
        return None
    return _XLA_CPU_OPTIONS


def _torch(fn):
    import torch

    def call(*args):
        with torch.no_grad():
            return fn(*_tensors(args))

    return call


def _tensors(args) -> list:
    """NumPy arguments as tensors: PyTorch's operators would take a tensor times an array for NumPy's."""
    import numpy as np

    return [keras.ops.convert_to_tensor(a) if isinstance(a, np.ndarray | np.generic) else a for a in args]


def value_and_gradients(fn: Callable, argnums: Sequence[int] = ()) -> Callable:
    """``g(*args) -> (objective, aux, input gradients, watched gradients)``: ``fn`` and its gradients.

    ``fn(*args, watch)`` returns ``(objective, aux)``: ``objective`` per image (B,) or a scalar, and any
    structure of tensors. Its gradient is taken with respect to ``args[i]`` for each ``i`` in ``argnums``
    (a tuple in that order), and with respect to every tensor ``fn`` passes through ``watch(key, tensor)``,
    which returns the tensor to compute on (``{key: gradient}``). A gradient is the gradient of the
    objective's sum: per image when the images are independent. A source the objective does not reach
    gets zeros. On JAX a watched tensor is a zero "probe" added to it, whose gradient is the tensor's. A key
    watched more than once (a shared layer's output) gives the gradient of its last tensor, on every backend.

    Examples
    --------
    >>> import numpy as np
    >>> def fn(x, watch):
    ...     h = watch("h", 2.0 * x)
    ...     return keras.ops.sum(h * h, axis=1), h
    >>> _, h, (dx,), watched = value_and_gradients(fn, argnums=(0,))(np.ones((1, 2), "float32"))
    >>> keras.ops.convert_to_numpy(dx).tolist(), keras.ops.convert_to_numpy(watched["h"]).tolist()
    ([[8.0, 8.0]], [[4.0, 4.0]])
    """
    argnums = tuple(argnums)
    name = _supported_backend()
    if name == "tensorflow":
        return _tensorflow_gradients(fn, argnums)
    if name == "jax":
        return _jax_gradients(fn, argnums)
    return _torch_gradients(fn, argnums)


def _tensorflow_gradients(fn, argnums):
    import tensorflow as tf

    def call(*args):
        args = [tf.convert_to_tensor(a) if i in argnums else a for i, a in enumerate(args)]
        watched = {}
        with tf.GradientTape() as tape:
            for i in argnums:
                tape.watch(args[i])

            def watch(key, tensor):
                tape.watch(tensor)
                watched[key] = tensor
                return tensor

            objective, aux = fn(*args, watch)
            total = tf.reduce_sum(objective)
        sources = [args[i] for i in argnums] + list(watched.values())
        grads = tape.gradient(total, sources)
        grads = [tf.zeros_like(s) if g is None else g for s, g in zip(sources, grads, strict=True)]
        return objective, aux, *_split(grads, len(argnums), watched)

    return call


def _jax_gradients(fn, argnums):
    import jax
    import jax.numpy as jnp

    def call(*args):
        shapes, calls = {}, {}

        def record(key, tensor):
            shapes[key] = jax.ShapeDtypeStruct(tensor.shape, tensor.dtype)
            calls[key] = calls.get(key, 0) + 1
            return tensor

        jax.eval_shape(lambda *a: fn(*a, record)[0], *args)  # where the watched tensors are: no computation

        def inner(wrt, probes):
            full = list(args)
            for i, value in zip(argnums, wrt, strict=True):
                full[i] = value
            seen = dict.fromkeys(calls, 0)

            def watch(key, tensor):
                # a key watched twice (a shared layer) is its last call's, as on TensorFlow and PyTorch
                seen[key] += 1
                return tensor + probes[key] if seen[key] == calls[key] else tensor

            objective, aux = fn(*full, watch)
            return jnp.sum(objective), (objective, aux)

        probes = {key: jnp.zeros(s.shape, s.dtype) for key, s in shapes.items()}
        wrt = [jnp.asarray(args[i]) for i in argnums]
        (_, (objective, aux)), (grads, watched) = jax.value_and_grad(inner, argnums=(0, 1), has_aux=True)(wrt, probes)
        return objective, aux, tuple(grads), watched

    return call


def _torch_gradients(fn, argnums):
    import torch

    def call(*args):
        with torch.enable_grad():
            args = [keras.ops.convert_to_tensor(a) if i in argnums else a for i, a in enumerate(_tensors(args))]
            for i in argnums:
                args[i] = args[i].detach().requires_grad_(True)
            probes = {}

            def watch(key, tensor):
                probes[key] = torch.zeros_like(tensor, requires_grad=True)
                return tensor + probes[key]

            objective, aux = fn(*args, watch)
            sources = [args[i] for i in argnums] + list(probes.values())
            grads = torch.autograd.grad(torch.sum(objective), sources, allow_unused=True)
        grads = [torch.zeros_like(s) if g is None else g.detach() for s, g in zip(sources, grads, strict=True)]
        aux = keras.tree.map_structure(_detached, aux)
        return _detached(objective), aux, *_split(grads, len(argnums), probes)

    return call


def _split(grads: list, n_inputs: int, keys) -> tuple[tuple, dict]:
    """The gradients of the inputs (a tuple) and of the watched tensors (by key), from one list."""
    return tuple(grads[:n_inputs]), dict(zip(keys, grads[n_inputs:], strict=True))


def _detached(value):
    import torch

    return value.detach() if isinstance(value, torch.Tensor) else value


def custom_derivative(forward: Callable, backward: Callable) -> Callable:
    """``f(z)`` with the value ``forward(z)[0]`` and the derivative ``backward`` gives: a replaced derivative.

    ``forward(z) -> (y, residuals)`` (a tuple of tensors), ``backward(residuals, upstream) -> dz``, both in
    `keras.ops`. The rules of guided backprop, deconvnet, epsilon-LRP and DeepLIFT are of this kind.
    (``keras.ops.custom_gradient`` has another signature on PyTorch and cannot hold a derivative that
    is itself computed by differentiation, as DeepLIFT's is.)

    Examples
    --------
    >>> import numpy as np
    >>> relu = custom_derivative(lambda z: (keras.ops.relu(z), (z,)), lambda saved, dy: dy * 3.0)
    >>> _, _, (dx,), _ = value_and_gradients(lambda x, watch: (relu(x), ()), (0,))(np.array([-1.0, 2.0]))
    >>> keras.ops.convert_to_numpy(dx).tolist()  # 3 everywhere, where ReLU's derivative is 0 and 1
    [3.0, 3.0]
    """
    name = _supported_backend()
    if name == "tensorflow":
        import tensorflow as tf

        @tf.custom_gradient
        def function(z):
            y, saved = forward(z)
            return y, lambda upstream: backward(saved, upstream)

        return function
    if name == "jax":
        import jax

        function = jax.custom_vjp(lambda z: forward(z)[0])
        function.defvjp(forward, lambda saved, upstream: (backward(saved, upstream),))
        return function
    import torch

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            y, saved = forward(z)
            ctx.save_for_backward(*saved)
            return y

        @staticmethod
        def backward(ctx, upstream):
            return backward(ctx.saved_tensors, upstream)

    return Function.apply


def elementwise_derivative(fn: Callable, z):
    """The derivative of an elementwise ``fn`` at every element of ``z`` (usable inside `custom_derivative`).

    Examples
    --------
    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(elementwise_derivative(lambda z: z * z, np.array([1.0, -2.0]))).tolist()
    [2.0, -4.0]
    """
    name = _supported_backend()
    if name == "tensorflow":
        import tensorflow as tf

        z = tf.convert_to_tensor(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = fn(z)
        return tape.gradient(y, z)
    if name == "jax":
        import jax
        import jax.numpy as jnp

        return jax.grad(lambda v: jnp.sum(fn(v)))(jnp.asarray(z))
    import torch

    with torch.enable_grad():  # a custom derivative's forward runs with gradients off
        v = keras.ops.convert_to_tensor(z).detach().requires_grad_(True)
        return torch.autograd.grad(torch.sum(fn(v)), v)[0]


def top_k(x, k: int):
    """The ``k`` largest values along the last axis (all, where fewer) and their int32 indices, largest first;
    equal values in index order, as an exact top-k over a stream needs (``torch.topk`` does not promise it).

    Examples
    --------
    >>> import numpy as np
    >>> values, indices = top_k(np.array([[1.0, 3.0, 3.0, 0.0]], "float32"), 5)
    >>> keras.ops.convert_to_numpy(indices).tolist()
    [[1, 2, 0, 3]]
    """
    name = _supported_backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.math.top_k(x, tf.minimum(k, tf.shape(x)[-1]))
    if name == "jax":
        import jax

        values, indices = jax.lax.top_k(x, min(k, x.shape[-1]))
        return values, keras.ops.cast(indices, "int32")
    import torch

    values, indices = torch.sort(keras.ops.convert_to_tensor(x), dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k].to(torch.int32)


def conv(x, kernel, strides=1, padding: str = "valid", dilation_rate=1):
    """``keras.ops.conv`` (channels last), computed where each backend's CPU convolution is fastest.

    XLA's CPU convolutions are slow (openxla/xla#34273), and PyTorch's lose to
    its matmul too; a 1x1 convolution is a matmul over the channels (after striding). BagNet-33's
    ``predict`` on a 2-core CPU: JAX 1.49 -> 2.48 images/s, PyTorch 0.90 -> 1.09; TensorFlow's oneDNN
    convolution is faster than its matmul there (2.54 against 2.26), so TensorFlow keeps ``ops.conv``.
    On JAX's CPU backend a larger kernel convolves one image at a time (`each_image`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, k = rng.normal(size=(1, 5, 5, 3)).astype("float32"), rng.normal(size=(1, 1, 3, 2)).astype("float32")
    >>> y = conv(x, k, strides=2)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(keras.ops.conv(x, k, 2)), atol=1e-5))
    True
    """
    if backend() != "tensorflow" and tuple(kernel.shape[:2]) == (1, 1):
        rows, cols = (strides, strides) if isinstance(strides, int) else tuple(strides)
        if (rows, cols) != (1, 1):
            x = x[:, ::rows, ::cols, :]  # a 1x1 window: "valid" and "same" give ceil(size / stride) positions
        return keras.ops.matmul(x, kernel[0, 0])

    def convolve(images):
        return keras.ops.conv(images, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate)

    return each_image(convolve, x)


def each_image(fn: Callable, x):
    """``fn(x)`` for a batch ``x``, computed one image at a time on JAX's CPU backend; elsewhere in one call.

    ``fn`` maps a batch to a batch (or a structure of them) and treats its
    images independently, as a model in inference does. XLA's CPU
    convolutions are slower on a batch than on its images one by one: a 3x3
    64->64 convolution of 16 images of 55x55 takes 113 ms in one call and
    45 ms image by image. Mapping BagNet-33's whole forward pass
    (`bagnet_keras.models.inference.folded_forward`) over the images, rather
    than each of its convolutions alone, ran its ``predict`` 1.2x to 1.3x
    faster again (2 cores, same process, alternating rounds). A loop
    (`jax.lax.map`), not one call per image unrolled, keeps the compiled
    graph's size independent of the batch size. TensorFlow's oneDNN and
    PyTorch are faster on the batch, as are JAX's accelerators.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(6, dtype="float32").reshape(3, 2)
    >>> keras.ops.convert_to_numpy(each_image(lambda batch: batch * 2, x)).tolist()
    [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]
    """
    if not isinstance(x.shape[0], int) or x.shape[0] < 2 or not _on_jax_cpu():
        return fn(x)
    import jax

    return jax.lax.map(lambda image: keras.tree.map_structure(lambda t: t[0], fn(image[None])), x)


def spatial_mean(x, keepdims: bool = False):
    """The mean of ``x`` (N, H, W, C) over H and W, as ``GlobalAveragePooling2D``; on JAX's CPU, a matrix product.

    XLA's CPU backend fuses the additions and ReLUs that produce a feature map
    into the reduction that averages it, and that fusion runs slowly: the
    last three residual blocks of BagNet-33 and its average pooling took 13 ms
    an image as one (7 % of its ``predict``). As a product with a vector of
    ones, the blocks' additions stay loops of their own and the pooling is a
    matrix-vector product. Summed in float32 whatever the input's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(2, 2, 2, 2)
    >>> keras.ops.convert_to_numpy(spatial_mean(x)).tolist()
    [[3.0, 4.0], [11.0, 12.0]]
    """
    if not _on_jax_cpu():
        return keras.ops.mean(x, axis=(1, 2), keepdims=keepdims)
    _, h, w, c = x.shape
    ones = keras.ops.ones((1, h * w), dtype="float32")
    total = keras.ops.matmul(ones, keras.ops.reshape(keras.ops.cast(x, "float32"), (-1, h * w, c)))
    mean = keras.ops.cast(total / (h * w), x.dtype)
    return keras.ops.reshape(mean, (-1, 1, 1, c) if keepdims else (-1, c))


def _on_jax_cpu() -> bool:
    if backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def wide_float() -> str:
    """The widest float the backend computes in: "float64", or "float32" on JAX without ``jax_enable_x64``."""
    if backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def has_accelerator() -> bool:
    """Whether the backend sees a GPU (or another accelerator) to compute on.

    ``keras.distribution.list_devices`` would answer, but not on PyTorch.

    Examples
    --------
    >>> isinstance(has_accelerator(), bool)
    True
    """
    name = _supported_backend()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return any(device.platform != "cpu" for device in jax.devices())
    import torch

    return bool(torch.cuda.is_available())


def require_tensorflow(argument: str, value) -> None:
    """Raise ValueError where ``value``, the argument named ``argument`` (a `tf.distribute` strategy), is
    given (not None) on another backend than TensorFlow.

    Examples
    --------
    >>> import tensorflow as tf
    >>> require_tensorflow("strategy", tf.distribute.get_strategy())  # on TensorFlow: nothing to say
    >>> require_tensorflow("strategy", None)  # not given: nothing to say on any backend
    """
    name = backend()
    if value is not None and name != "tensorflow":
        raise ValueError(
            f"`{argument}` takes a tf.distribute strategy, which needs the TensorFlow backend; Keras runs on "
            f"{name!r} here. Set KERAS_BACKEND=tensorflow, or leave `{argument}` out (on JAX, "
            "keras.distribution.DataParallel spreads a model over devices)."
        )
