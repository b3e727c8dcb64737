"""Run a Keras model layer by layer, nested sub-models included; the one home of private Keras internals.

Explanations need what a plain ``model(x)`` hides: the output of a layer deep
inside a backbone that was wrapped as one layer of a transfer model, or a
layer computed differently (a ReLU with a guided gradient, a convolution with
its stride turned into a dilation). `run_graph` executes a functional or
Sequential model node by node and lets the caller replace the computation of
any layer; `find_layer` and `last_spatial_layer` locate a layer wherever it
sits.

Keras 3 has no public API for a functional graph's nodes, so this module
reads its private attributes (``_keras_history``, ``_inbound_nodes``,
``_outbound_nodes``, ``_nodes_by_depth``, ``_run_through_graph``,
``Sequential._functional``, and a trainer's ``_symbolic_build`` and
``_distribute_strategy``), and no other module does (tests/test_layout.py
checks it): a Keras release that renames them breaks this file alone, and
`graph_walk_available` lets callers with another way (``BagNetModel.predict``)
take it. pyproject.toml bounds Keras at the newest minor version tested;
``make test-latest-keras`` runs the suite against the newest release.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import keras
import numpy as np
from keras.src.backend import compute_output_spec  # Keras has no public way to trace a pass symbolically

# TARGETS and check_target live in a light module (the command line offers them); they are this module's too.
from bagnet_keras.core.backend import compile_function
from bagnet_keras.core.targets import TARGETS as TARGETS
from bagnet_keras.core.targets import check_target

OperationFn = Callable[[keras.layers.Layer], Callable]
T = TypeVar("T")


def producer(tensor) -> tuple[keras.layers.Layer, int, int] | None:
    """``(layer, node_index, tensor_index)`` that made a symbolic Keras tensor, or None for other values.

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((4,))
    >>> producer(keras.layers.Dense(2, name="d")(x))[0].name
    'd'
    """
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else tuple(history)


def producing_layer(tensor) -> keras.layers.Layer | None:
    """The layer that made a symbolic Keras tensor, or None."""
    history = producer(tensor)
    return None if history is None else history[0]


def input_reader(model: keras.Model) -> keras.layers.Layer | None:
    """The layer that reads the model's input directly, when it is the only one; else None.

    Examples
    --------
    >>> model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Rescaling(2.0, name="scale")])
    >>> input_reader(model).name
    'scale'
    """
    readers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and any(
            producing_layer(t) is None or isinstance(producing_layer(t), keras.layers.InputLayer)
            for t in keras.tree.flatten(layer.input)
        )
    ]
    return readers[0] if len(readers) == 1 else None


def inbound_nodes(layer: keras.layers.Layer) -> list:
    """The nodes (calls) of ``layer`` in the graphs it belongs to; ``node.input_tensors`` are their inputs."""
    return list(layer._inbound_nodes)


def outbound_count(layer: keras.layers.Layer) -> int:
    """How many calls of other layers consume ``layer``'s outputs."""
    return len(layer._outbound_nodes)


def graph_nodes(model: keras.Model) -> list:
    """Every node of a functional or Sequential model's own graph (``node.operation``, ``node.input_tensors``)."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    return [node for nodes in graph._nodes_by_depth.values() for node in nodes]


def output_names(model: keras.Model) -> list[str]:
    """Names of the layers that compute the model's outputs, in output order (the heads' names).

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((4,))
    >>> output_names(keras.Model(x, [keras.layers.Dense(2, name="city")(x), keras.layers.Dense(3, name="region")(x)]))
    ['city', 'region']
    """
    names = getattr(model, "output_names", None)
    return list(names) if names else [producing_layer(t).name for t in model.outputs]


def graph_walk_available(model: keras.Model) -> bool:
    """Whether this Keras version lets `run_graph` walk ``model`` (the private API it relies on is there)."""
    return _is_graph_model(model)


def _is_graph_model(layer) -> bool:
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph") and hasattr(layer, "_nodes_by_depth")
    )


def _check_graph_model(model) -> None:
    if not _is_graph_model(model):
        raise ValueError(
            f"{getattr(model, 'name', model)!r} ({type(model).__name__}) is not a functional or Sequential "
            "Keras model, so its layers cannot be reached one by one. Build it with the functional API "
            "(keras.Model(inputs, outputs)) or keras.Sequential."
        )


def run_graph(model: keras.Model, inputs, operation_fn: OperationFn | None = None):
    """Compute ``model(inputs)`` one layer at a time, entering nested models.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model; its nested functional or Sequential
        sub-models are run layer by layer too.
    inputs : tensor or structure of tensors
        As the model takes them.
    operation_fn : callable, optional
        ``operation_fn(layer)`` returns the callable that computes ``layer``
        (return ``layer`` itself to keep it). Never called for nested models.

    Returns
    -------
    The model's outputs.

    Examples
    --------
    >>> import keras, numpy as np
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(1)])
    >>> seen = []
    >>> def record(layer):
    ...     seen.append(layer.name)
    ...     return layer
    >>> y = run_graph(outer, np.ones((1, 4), "float32"), record)
    >>> seen[0]
    'd'
    """
    _check_graph_model(model)

    def fn(op):
        if _is_graph_model(op):
            return lambda *args, **kwargs: run_graph(op, args[0] if len(args) == 1 else list(args), operation_fn)
        computed = operation_fn(op) if operation_fn is not None else op
        return _entering(op, computed, operation_fn) if operation_fn is not None else computed

    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = fn(layer)(x)
        return x
    return model._run_through_graph(inputs, operation_fn=fn)


def sublayers(layer) -> list:
    """The layers ``layer`` holds and calls itself, where the package enters them: keras-hub's layers.

    keras-hub builds its backbones as functional models of a few large layers (a ViT is ``images`` →
    ``vit_patching_and_embedding`` → ``vit_encoder``), whose transformer blocks are attributes called
    inside ``call``, not nodes of the graph. `iter_layers`, `find_layer` and `run_graph` reach them
    through this. Other layers are atomic, as before (keras' own, and the package's).

    Examples
    --------
    >>> import keras
    >>> sublayers(keras.layers.Dense(2))
    []
    """
    if _is_graph_model(layer) or not type(layer).__module__.startswith("keras_hub."):
        return []
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _entering(layer, computed: Callable, operation_fn: OperationFn) -> Callable:
    # operation_fn may compute a nested layer differently (a tap, a rule): install it for this call.
    patches = _nested_replacements(layer, operation_fn)
    if not patches:
        return computed

    def call(*args, **kwargs):
        with _replaced_calls(patches):
            return computed(*args, **kwargs)

    return call


def _nested_replacements(layer, operation_fn: OperationFn, seen: set | None = None) -> list:
    # A layer held twice (shared weights) is replaced once: a second patch would restore the first.
    seen = set() if seen is None else seen
    found = []
    for sub in sublayers(layer):
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        replacement = operation_fn(sub)
        if replacement is not sub:
            found.append((sub, replacement))
        found.extend(_nested_replacements(sub, operation_fn, seen))
    return found


class _ReplacedCall:
    """A nested layer's ``call`` that runs ``replacement`` instead; the replacement calls the layer itself
    (``layer(x)``), so the layer's own ``call`` is back in place while it runs."""

    def __init__(self, layer, replacement: Callable):
        self.layer, self.replacement, self.saved = layer, replacement, vars(layer).get("call")

    def __call__(self, *args, **kwargs):
        self.restore()
        try:
            return self.replacement(*args, **kwargs)
        finally:
            object.__setattr__(self.layer, "call", self)

    def restore(self) -> None:
        _put_back(self.layer, "call", self.saved)


def _put_back(layer, name: str, saved) -> None:
    """Undo a replacement on the instance: its earlier instance value, or none (the class's method again)."""
    if saved is None:
        object.__delattr__(layer, name)
    else:
        object.__setattr__(layer, name, saved)


@contextmanager
def _replaced_calls(patches: list):
    # object.__setattr__: Keras' own __setattr__ would track the callable as a layer attribute.
    # Not thread-safe: the replacement lives on the layer while the call (a trace, on TensorFlow and JAX) runs.
    installed = [_ReplacedCall(layer, replacement) for layer, replacement in patches]
    for patch in installed:
        object.__setattr__(patch.layer, "call", patch)
    try:
        yield
    finally:
        for patch in reversed(installed):
            patch.restore()


def layer_tap(targets, inner: OperationFn | None = None, on_output: Callable | None = None) -> tuple[OperationFn, dict]:
    """An ``operation_fn`` for `run_graph` that records what ``targets`` output during the pass, and where.

    Parameters
    ----------
    targets : sequence of layers
        The layers whose outputs are kept.
    inner : operation_fn, optional
        Computes every layer (a guided ReLU, a modified activation); the tap records what it returns.
    on_output : callable, optional
        ``on_output(layer, output)`` returns what the layer passes on and the tap records, e.g. the output
        watched for its gradient (`bagnet_keras.core.backend.value_and_gradients`).

    Returns
    -------
    (operation_fn, taps)
        ``taps[layer]`` is the layer's output once the pass has run (its last call's, for a shared layer).

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"), keras.layers.Dense(1)])
    >>> operation_fn, taps = layer_tap([model.get_layer("d")])
    >>> _ = run_graph(model, np.ones((2, 4), "float32"), operation_fn)
    >>> tuple(taps[model.get_layer("d")].shape)
    (2, 3)
    """
    wanted = list(targets)
    taps = {}

    def operation_fn(op):
        computed = inner(op) if inner is not None else op
        if not any(op is target for target in wanted):
            return computed

        def call(*args, **kwargs):
            out = computed(*args, **kwargs)
            taps[op] = out = on_output(op, out) if on_output is not None else out
            return out

        return call

    return operation_fn, taps


def output_shape(model: keras.Model, layer: keras.layers.Layer) -> tuple | None:
    """The shape of ``layer``'s output inside ``model``, batch axis included; None where it has no single one.

    A layer nested in a keras-hub layer (a transformer block) was never called on the graph's symbolic
    tensors, so its shape comes from a symbolic pass of the model (no numbers are computed).

    Examples
    --------
    >>> import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    >>> output_shape(m, m.get_layer("d"))
    (None, 3)
    """
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        pass
    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or any(size is None for size in shape[1:]):
        return None
    operation_fn, taps = layer_tap([layer])
    try:
        compute_output_spec(lambda x: run_graph(model, x, operation_fn), keras.KerasTensor((1, *shape[1:])))
    except Exception:  # noqa: BLE001 - a model this pass cannot trace has no shape to report
        return None
    out = taps.get(layer)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return None if out is None else (None, *tuple(out.shape)[1:])


def iter_layers(model: keras.Model, prefix: str = ""):
    """Yield ``(path, layer)`` for every layer, nested models' layers after the model itself, in graph order.

    ``path`` joins the names of the enclosing models with ``/``.

    Examples
    --------
    >>> import keras
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="inner")
    >>> outer = keras.Sequential([keras.Input((4,)), inner], name="outer")
    >>> [path for path, _ in iter_layers(outer)]
    ['inner', 'inner/d']
    """
    for layer in model.layers if isinstance(model, keras.Model) else sublayers(model):
        path = prefix + layer.name
        yield path, layer
        if isinstance(layer, keras.Model) or sublayers(layer):
            yield from iter_layers(layer, path + "/")


def iter_operations(model: keras.Model, prefix: str = ""):
    """Yield ``(path, node)`` for every call of an operation that is not a layer (``x + 3.0``, ``keras.ops.*``
    applied to symbolic tensors), nested models' included; ``node.operation`` is the operation.

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((4,))
    >>> [type(node.operation).__name__ for _, node in iter_operations(keras.Model(x, keras.layers.Dense(2)(x) * 2.0))]
    ['Multiply']
    """
    for layer in model.layers:
        if _is_graph_model(layer):
            yield from iter_operations(layer, prefix + layer.name + "/")
    for node in graph_nodes(model):
        if not isinstance(node.operation, keras.layers.Layer):
            yield prefix + node.operation.name, node


#: Operations linear in their tensor arguments, whatever their constants.
_LINEAR_OPERATIONS = {
    "Add",
    "Subtract",
    "Negative",
    "Reshape",
    "Transpose",
    "Concatenate",
    "ExpandDims",
    "Squeeze",
    "GetItem",
}
#: Operations linear where all but one argument is a constant.
_SCALING_OPERATIONS = {"Multiply", "Divide", "TrueDivide"}


def linear_operation(node) -> bool:
    """Whether a call of an operation (from `iter_operations`) is linear (affine) in its tensor arguments.

    Sums, reshapes and transposes are; a product or quotient is where only one of its arguments is a
    tensor (``x * (1 / 6)``), not where two are (a gate).

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((4,))
    >>> [linear_operation(node) for _, node in iter_operations(keras.Model(x, x * (1.0 / 6.0)))]
    [True]
    >>> [linear_operation(node) for _, node in iter_operations(keras.Model(x, x * x))]
    [False]
    """
    name, tensors = type(node.operation).__name__, len(node.arguments.keras_tensors)
    if name in _SCALING_OPERATIONS and tensors == 1:
        # x / c is linear in x, c / x is not
        return name == "Multiply" or node.arguments.args[0] is node.arguments.keras_tensors[0]
    return name in _LINEAR_OPERATIONS


def application_layer(layer, name: str) -> bool:
    """Whether ``layer`` is keras.applications' own (unexported) layer class ``name``, such as InceptionResNetV2's
    ``"CustomScaleLayer"`` or ConvNeXt's ``"LayerScale"``.

    Examples
    --------
    >>> import keras
    >>> application_layer(keras.layers.Dense(2), "LayerScale")
    False
    """
    cls = type(layer)
    return cls.__name__ == name and cls.__module__.startswith("keras.src.applications.")


def hub_layer(layer, names) -> bool:
    """Whether ``layer`` is one of keras-hub's layer classes ``names``, each its module's path below
    ``keras_hub.src.models`` and its name (``"vit.vit_layers.MLP"``: keras-hub has several ``MLP``).

    Examples
    --------
    >>> import keras
    >>> hub_layer(keras.layers.Dense(2), ("vit.vit_layers.MLP",))
    False
    """
    cls = type(layer)
    return cls.__module__.startswith("keras_hub.") and f"{cls.__module__}.{cls.__name__}".endswith(
        tuple("." + name for name in names)
    )


def gated_attention(layer) -> bool:
    """Whether a ``MultiHeadAttention`` layer multiplies its output by a gate (``use_gate=True``)."""
    return bool(getattr(layer, "_use_gate", False))


def own_attention(layer) -> bool:
    """Whether a ``MultiHeadAttention`` subclass computes its attention its own way (`with_attention` refuses it)."""
    return type(layer)._compute_attention is not keras.layers.MultiHeadAttention._compute_attention


def with_attention(layer: keras.layers.MultiHeadAttention, attention: Callable) -> Callable:
    """``layer`` as a callable whose attention step is the caller's; its projections stay the layer's own.

    ``attention(query, key, value, scores_equation, combine_equation, axes)`` gets the projected query
    (already scaled by the inverse square root of the key size), key and value, the layer's two einsum
    equations and the softmax's axes, and returns ``(output, probabilities)``. Keras documents
    ``_compute_attention`` as the method to override for a custom attention; it is replaced on the
    instance for the call. Masks are refused: the vision transformers explained here use none.

    Examples
    --------
    >>> import keras, numpy as np
    >>> mha = keras.layers.MultiHeadAttention(2, 4)
    >>> def plain(q, k, v, scores, combine, axes):
    ...     p = keras.ops.softmax(keras.ops.einsum(scores, k, q), axis=axes[-1])
    ...     return keras.ops.einsum(combine, p, v), p
    >>> x = np.random.default_rng(0).random((1, 3, 4)).astype("float32")
    >>> bool(np.allclose(with_attention(mha, plain)(x, x), mha(x, x), atol=1e-6))
    True
    """

    def compute(query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs):
        if attention_mask is not None or kwargs.get("use_causal_mask"):
            raise ValueError(f"Layer {layer.name!r} attends with a mask; only unmasked attention is supported here.")
        query = keras.ops.multiply(query, keras.ops.cast(layer._inverse_sqrt_key_dim, query.dtype))
        axes = tuple(layer._softmax.axis) if isinstance(layer._softmax.axis, (list, tuple)) else (layer._softmax.axis,)
        output, probabilities = attention(query, key, value, layer._dot_product_equation, layer._combine_equation, axes)
        return output, (probabilities if return_attention_scores else None)

    if own_attention(layer):
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) computes its attention its own way "
            "(_compute_attention is overridden); only keras.layers.MultiHeadAttention's own is explained."
        )

    def call(*args, **kwargs):
        saved = vars(layer).get("_compute_attention")
        object.__setattr__(layer, "_compute_attention", compute)
        try:
            return layer(*args, **kwargs)
        finally:
            _put_back(layer, "_compute_attention", saved)

    return call


def find_layer(model: keras.Model, name: str) -> tuple[str, keras.layers.Layer]:
    """Find a layer by name anywhere in ``model``, nested sub-models included.

    Parameters
    ----------
    model : keras.Model
    name : str
        A layer name (``"conv5_block3_out"``) or a path through nested models
        (``"resnet50/conv5_block3_out"``) when the name alone is ambiguous.

    Returns
    -------
    (path, layer)

    Examples
    --------
    >>> import keras
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="inner")
    >>> outer = keras.Sequential([keras.Input((4,)), inner], name="outer")
    >>> find_layer(outer, "d")[0]
    'inner/d'
    """
    if not isinstance(name, str):
        raise ValueError(f"`layer` must be a layer name (str). Received: layer={name!r}")
    matches = [(path, layer) for path, layer in iter_layers(model) if path == name or path.split("/")[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        names = [path for path, layer in iter_layers(model) if _is_spatial(layer)]
        raise ValueError(
            f"No layer named {name!r} in model {model.name!r} or its nested models. Layers with 4-D outputs: "
            f"{', '.join(names[-8:]) or 'none'}{' (last 8 shown)' if len(names) > 8 else ''}."
        )
    raise ValueError(
        f"Layer name {name!r} occurs more than once in model {model.name!r}: "
        f"{', '.join(path for path, _ in matches)}. Pass the full path."
    )


def _is_spatial(layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 4


def last_spatial_layer(model: keras.Model) -> tuple[str, keras.layers.Layer]:
    """The last layer with a 4-D (N, H, W, C) output of more than one position, searching nested models.

    A 1x1 output is left out: MobileNet's classifier is a 1x1 convolution after
    ``GlobalAveragePooling2D(keepdims=True)``, and a map of one position is constant.
    A size unknown until the model is called (``input_shape=(None, None, 3)``) counts as spatial.

    Examples
    --------
    >>> import keras
    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c"),
    ...                       keras.layers.GlobalAveragePooling2D(keepdims=True), keras.layers.Conv2D(2, 1)])
    >>> last_spatial_layer(m)[0]
    'c'
    """
    found = None
    for path, layer in iter_layers(model):
        if not isinstance(layer, keras.Model) and _is_spatial(layer) and tuple(layer.output.shape[1:3]) != (1, 1):
            found = (path, layer)
    if found is None:
        raise ValueError(
            f"Model {model.name!r} has no layer with a 4-D (batch, height, width, channels) output of more than "
            "one position to explain."
        )
    return found


_SQUASHING = ("softmax", "sigmoid")


def squashing_layer(model: keras.Model, index: int = 0) -> tuple[keras.layers.Layer | None, str | None]:
    """The layer whose softmax (or sigmoid) ends output ``index``, and which of the two; (None, None) for logits.

    The layer is a ``Softmax``, an ``Activation``, or any layer built with
    ``activation="softmax"``; outputs of nested models are followed inside.

    Examples
    --------
    >>> import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax", name="p")])
    >>> layer, kind = squashing_layer(m)
    >>> layer.name, kind
    ('p', 'softmax')
    """
    history = producer(model.outputs[index])
    while history is not None and isinstance(history[0], keras.Model):
        history = producer(history[0].outputs[history[2]])
    layer = None if history is None else history[0]
    if isinstance(layer, keras.layers.Softmax):
        return layer, "softmax"
    kind = getattr(getattr(layer, "activation", None), "__name__", None)
    return (layer, kind) if kind in _SQUASHING else (None, None)


def _without_squashing(layer: keras.layers.Layer) -> Callable:
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return lambda *args, **kwargs: args[0]

    def call(*args, **kwargs):
        # Traced once inside a compiled function: the layer's own weights, without its last activation.
        saved = layer.activation
        layer.activation = keras.activations.linear
        try:
            return layer(*args, **kwargs)
        finally:
            layer.activation = saved

    return call


def target_scores(model: keras.Model, inputs, index: int, target: str, operation_fn: OperationFn | None = None):
    """The class scores of output ``index`` that ``target`` names, computed by `run_graph`.

    ``"logit"`` runs the model without the softmax (or sigmoid) that ends the
    output, so a softmax-headed classifier is explained by its logits; an
    output without one already is the logit. ``"probability"`` is the
    model's own output, or the softmax of it where the model returns logits.
    ``operation_fn`` is passed on to `run_graph` for every other layer.

    Examples
    --------
    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    >>> x = np.ones((1, 2), "float32")
    >>> bool(np.allclose(keras.ops.softmax(target_scores(m, x, 0, "logit")), m(x)))
    True
    """
    layer, kind = squashing_layer(model, index)
    if check_target(target) == "logit" and layer is not None:
        plain = operation_fn

        def operation_fn(op):
            if op is layer:
                return _without_squashing(op)
            return plain(op) if plain is not None else op

    scores = keras.tree.flatten(run_graph(model, inputs, operation_fn))[index]
    if target == "probability" and layer is None:
        scores = keras.ops.softmax(scores, axis=-1)
    return scores


def score_function(model: keras.Model, index: int, target: str, jit_compile: bool = False) -> Callable:
    """A compiled ``f(images) -> scores`` of output ``index`` as ``target`` names (`target_scores`), one per model.

    ``jit_compile`` compiles it with XLA (one compilation per batch shape): faster on GPUs, results equal
    up to float rounding.

    Examples
    --------
    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    >>> tuple(score_function(m, 0, "logit")(np.ones((4, 2), "float32")).shape)
    (4, 3)
    """
    check_target(target)

    def build(model_ref):
        return compile_function(
            lambda x: target_scores(model_ref(), x, index, target), model_ref().variables, jit_compile=jit_compile
        )

    return compiled(model, ("scores", index, target, bool(jit_compile)), build)


def traced(model: keras.Model, key: tuple, build: Callable[[Callable[[], keras.Model]], Callable]) -> Callable:
    """``f(*arrays)``: the function ``build(model_ref)`` returns, compiled (`compile_function`) once per signature.

    The signature is each argument's dtype and shape with the first (batch) axis left open; the compiled
    function is `compiled` per model, ``key`` and signature. So on TensorFlow every batch size, the last
    smaller batch included, runs one trace, a second call of an explanation traces nothing, and a scalar
    argument (a unit's index) is a tensor rather than a constant traced into the graph. Arguments are
    arrays or tensors with a batch axis, or scalars.

    Examples
    --------
    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> f = traced(m, ("double",), lambda ref: lambda x, k: k * ref()(x))
    >>> [tuple(f(np.ones((n, 2), "float32"), np.float32(2)).shape) for n in (4, 3)]
    [(4, 1), (3, 1)]
    >>> [key for key in _COMPILED[m] if key[0] == "double"]  # one function for both batch sizes
    [('double', (((None, 2), 'float32'), ((), 'float32')))]
    """

    def call(*arrays):
        arrays = tuple(a if hasattr(a, "shape") and hasattr(a, "dtype") else np.asarray(a) for a in arrays)
        signature = tuple(
            ((None, *a.shape[1:]) if len(a.shape) else (), keras.backend.standardize_dtype(a.dtype)) for a in arrays
        )
        function = compiled(
            model,
            (*key, signature),
            lambda model_ref: compile_function(build(model_ref), model_ref().variables, signature=signature),
        )
        return function(*arrays)

    return call


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled(model: keras.Model, key: tuple, build: Callable[[Callable[[], keras.Model]], T]) -> T:
    """What ``build`` makes (a traced function, a prepared helper), made once per model and ``key``.

    Repeated calls then skip tracing and model surgery.

    ``build(model_ref)`` receives a weak reference to the model (call it to
    get the model): the cache must not keep a model alive that the user has
    dropped.

    Examples
    --------
    >>> import keras
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> f = compiled(m, ("double",), lambda ref: lambda x: 2 * ref()(x))
    >>> f is compiled(m, ("double",), lambda ref: None)
    True
    """
    per_model = _COMPILED.setdefault(model, {})
    if key not in per_model:
        per_model[key] = build(weakref.ref(model))
    return per_model[key]


def build_training_state(model: keras.Model, batch) -> None:
    """Create the optimizer's and the metrics' variables from one batch's shapes, as ``fit`` does first.

    A training loop of one's own (the multi-worker one of
    `bagnet_keras.transfer.training`) needs them before its first step, and
    ``fit`` on TensorFlow then traces its step once rather than twice (it
    retraces a step that created variables). ``batch`` is a batch or its
    shapes (a ``tf.data`` pipeline's ``element_spec``). Keras does it in the
    private ``_symbolic_build``, so the call lives here.

    Examples
    --------
    >>> import numpy as np
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> m.compile(optimizer="sgd", loss="mse")
    >>> build_training_state(m, (np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32")))
    >>> m.optimizer.built
    True
    """
    # A model built under a tf.distribute strategy creates its variables in that strategy's scope.
    strategy = getattr(model, "_distribute_strategy", None)
    with strategy.scope() if strategy is not None else nullcontext():
        model._symbolic_build(data_batch=batch)
