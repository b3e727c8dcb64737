"""The Grad-CAM family for any functional or Sequential Keras model, nested backbones included.

One base class, `BaseCAM`, does the work every method shares: it finds the
target layer (by name anywhere in nested sub-models, or the last layer with a
4-D output of more than one position), runs the model layer by layer so that layer's activations and
the gradient of the class score with respect to them come out of one pass
(`bagnet_keras.core.graph.run_graph`), picks the class (given or the top
prediction), batches, and places the map on the input pixels with the layer's
receptive field. Each method only says how to weight the activations:

- `GradCAM` (Selvaraju et al. 2017): channel weights are the mean gradient.
- `GradCAMPlusPlus` (Chattopadhay et al. 2018): gradients re-weighted by
  their second and third powers.
- `ScoreCAM` (Wang et al. 2020): no gradients; each channel, upsampled and
  scaled to [0, 1], masks the input, and the class score of that masked
  input (softmax over channels) is its weight.
- `LayerCAM` (Jiang et al. 2021): a weight per position, the positive gradient.
"""

from __future__ import annotations

import keras
import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.backend import value_and_gradients
from bagnet_keras.core.geometry import Geometry, layer_geometry, upsample
from bagnet_keras.core.graph import (
    check_target,
    find_layer,
    last_spatial_layer,
    layer_tap,
    output_shape,
    producing_layer,
    score_function,
    target_scores,
    traced,
)
from bagnet_keras.core.inputs import (
    check_images,
    classes_or_top,
    in_batches,
    n_classes_of,
    output_index,
    top_class_scores,
)
from bagnet_keras.core.scaling import minmax_scale
from bagnet_keras.core.tokens import TokenGrid, last_token_layer, sequence_length, token_grid, watch_patches
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.methods import get_method, methods_of


def _resolve_layer(model: keras.Model, layer: str | None) -> tuple[str, keras.layers.Layer, TokenGrid | None]:
    if layer is not None:
        path, found = find_layer(model, layer)
    else:
        path, found = last_token_layer(model) or last_spatial_layer(model)
    # A nested model as target means its output: tap the layer that computes it.
    while isinstance(found, keras.Model):
        inner = producing_layer(found.outputs[0])
        path, found = f"{path}/{inner.name}", inner
    shape = output_shape(model, found)
    if sequence_length(shape):
        return path, found, token_grid(model, sequence_length(shape))
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"Layer {path!r} has output shape {shape}; CAM methods need a layer with a 4-D (batch, height, "
            "width, channels) output, or a transformer layer's (batch, tokens, channels) sequence."
        )
    return path, found, None


def cam_layer(model: keras.Model, layer: str | None = None) -> str:
    """The path of the layer the CAM family explains ``model`` at: ``layer`` found, or the default one.

    Examples
    --------
    >>> import keras
    >>> model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> cam_layer(model)
    'conv'
    """
    return _resolve_layer(model, layer)[0]


class BaseCAM:
    """Class activation maps of one layer of a Keras model.

    Subclasses override `channel_weights`, which turns the layer's activations (and
    the gradients of the class score, when ``uses_gradients``) into weights
    broadcastable to the activations; the map is the ReLU of the
    channel-sum of weights x activations.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential; nested sub-models (a backbone inside a
        transfer model) are searched and run layer by layer.
    layer : str, optional
        Name of the target layer, or a path ``"backbone/conv5_block3_out"``
        when the name is ambiguous. Default: the last layer with a 4-D output of more
        than one position (`bagnet_keras.core.graph.last_spatial_layer`); for a vision transformer, the
        input of its last block (`bagnet_keras.core.tokens.last_token_layer`). `layer_path` says which.
        A transformer layer's patch tokens are laid on their grid (`bagnet_keras.core.tokens.TokenGrid`).
    output : int or str, optional
        Which output to explain, for models with several.
    batch_size : int
        Images per pass.
    normalize : bool
        Scale each map to [0, 1] (the usual display convention); ``False``
        keeps the raw values.
    target : {"logit", "probability"}
        The class score explained: the logit (default, as Grad-CAM's paper
        defines it; the model's final softmax is left out) or the probability.

    Attributes
    ----------
    layer_path : str
        Where the target layer was found.
    geometry : Geometry or None
        Receptive field of the target layer's positions; None when a layer
        on the way is not understood (the map is then stretched evenly).
    """

    uses_gradients = True

    def __init__(
        self,
        model: keras.Model,
        *,
        layer: str | None = None,
        output: int | str | None = None,
        batch_size: int = 32,
        normalize: bool = True,
        target: str = "logit",
    ):
        self.model = model
        self.target = check_target(target)
        self.layer_path, self.layer, self.tokens = _resolve_layer(model, layer)
        self.output = output_index(model, output)
        self.n_classes = n_classes_of(model, self.output)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if not isinstance(normalize, (bool, np.bool_)):
            raise ValueError(f"`normalize` must be True or False. Received: normalize={normalize!r}")
        self.normalize = bool(normalize)
        try:
            self.geometry: Geometry | None = (
                self.tokens.geometry if self.tokens else layer_geometry(model, self.layer_path)
            )
        except ValueError:
            self.geometry = None
        key = ("cam", id(self.layer), self.output, self.uses_gradients, self.target, self.tokens)
        self._step = traced(model, key, self._build_step)

    def _build_step(self, model_ref):
        layer, index, uses_gradients, target, tokens = (
            self.layer,
            self.output,
            self.uses_gradients,
            self.target,
            self.tokens,
        )

        def objective(x, classes, watch):
            seen = {}

            def on_output(op, out):
                if tokens is None:
                    seen["map"] = watch("activations", out)
                    return seen["map"]
                out, seen["map"] = watch_patches(tokens, out, lambda grid: watch("activations", grid))
                return out

            tap, _ = layer_tap([layer], on_output=on_output)
            scores = target_scores(model_ref(), x, index, target, tap)
            classes, score = top_class_scores(scores, classes)
            return score, (seen["map"], classes)

        if not uses_gradients:

            def forward(x, classes):
                _, (activations, classes) = objective(x, classes, lambda key, out: out)
                return activations, keras.ops.zeros_like(activations), classes

            return forward
        gradients = value_and_gradients(objective)

        def step(x, classes):
            _, (activations, classes), _, watched = gradients(x, classes)
            return activations, watched["activations"], classes

        return step

    def class_scores(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Score of ``classes[i]`` for ``x[i]`` (the ``target`` score, batched)."""
        forward = score_function(self.model, self.output, self.target)
        scores = in_batches(forward, self.batch_size, x)
        return np.take_along_axis(scores, np.asarray(classes)[:, None], axis=1)[:, 0]

    def channel_weights(
        self, x: np.ndarray, activations: np.ndarray, grads: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        """Weights of the activations (N, 1, 1, C) or (N, h, w, C); the method's one job."""
        raise NotImplementedError

    def __call__(self, images, class_index=None) -> np.ndarray:
        """Maps (N, H, W) at the input's resolution for ``class_index`` (int, N ints, or None: top class).

        The classes used are left in ``self.class_index_``.
        """
        x = check_images(images)
        wanted = classes_or_top(class_index, len(x), self.n_classes)

        def batch_maps(xb, wanted_b):
            activations, grads, classes = (keras.ops.convert_to_numpy(t) for t in self._step(xb, wanted_b))
            weights = self.channel_weights(xb, activations, grads, classes)
            return np.maximum((weights * activations).sum(axis=-1), 0), classes

        maps, self.class_index_ = in_batches(batch_maps, self.batch_size, x, wanted)
        cams = upsample(maps, x.shape[1:3], self.geometry)
        if self.normalize:
            cams = minmax_scale(cams)
        return cams.astype("float32")


class GradCAM(BaseCAM):
    """Grad-CAM: each channel weighted by its mean gradient.

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> GradCAM(model)(np.ones((1, 16, 16, 3)), class_index=1).shape
    (1, 16, 16)
    """

    def channel_weights(self, x, activations, grads, classes):
        return grads.mean(axis=(1, 2), keepdims=True)


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: positive gradients weighted by alpha = g^2 / (2 g^2 + sum(A) g^3)."""

    def channel_weights(self, x, activations, grads, classes):
        g2 = grads**2
        g3 = grads**3
        total = activations.sum(axis=(1, 2), keepdims=True)
        denominator = 2 * g2 + total * g3
        alpha = np.where(grads != 0, g2 / np.where(denominator != 0, denominator, 1e-7), 0)
        return (alpha * np.maximum(grads, 0)).sum(axis=(1, 2), keepdims=True)


class LayerCAM(BaseCAM):
    """Layer-CAM: every position weighted by its own positive gradient."""

    def channel_weights(self, x, activations, grads, classes):
        return np.maximum(grads, 0)


class ScoreCAM(BaseCAM):
    """Score-CAM: each channel's weight is the class score of the input masked by that channel.

    Costs one forward pass per channel and image (batched); a progress bar
    shows them when ``progress`` is True and the output is a terminal.
    """

    uses_gradients = False

    def __init__(self, model: keras.Model, *, layer: str | None = None, progress: bool = False, **kwargs):
        super().__init__(model, layer=layer, **kwargs)
        self.progress = progress

    def channel_weights(self, x, activations, grads, classes):
        n, h, w, c = activations.shape
        scaled = minmax_scale(activations)
        weights = np.empty((n, 1, 1, c), dtype="float32")
        for i in tqdm(range(n), desc="Score-CAM", unit="image", disable=None if self.progress else True):
            masks = upsample(scaled[i : i + 1], x.shape[1:3], self.geometry)[0]  # (H, W, C)
            masked = x[i][None] * np.moveaxis(masks, -1, 0)[..., None]
            scores = self.class_scores(masked.astype("float32"), np.full(c, classes[i], dtype="int32"))
            scores = np.exp(scores - scores.max())
            weights[i, 0, 0] = scores / scores.sum()
        return weights


def layer_gradients(
    model: keras.Model,
    images,
    class_index=None,
    layer: str | None = None,
    output: int | str | None = None,
    target: str = "logit",
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A layer's activations, the gradient of the class score with respect to them, and the classes, batched.

    The pass every CAM method makes (one forward and backward per batch, nested models entered).

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> a, g, classes = layer_gradients(model, np.ones((2, 8, 8, 3)), class_index=1)
    >>> a.shape, g.shape, classes.tolist()
    ((2, 6, 6, 4), (2, 6, 6, 4), [1, 1])
    """
    explainer = GradCAM(model, layer=layer, output=output, batch_size=batch_size, target=target)
    x = check_images(images)
    wanted = classes_or_top(class_index, len(x), explainer.n_classes)

    def step(xb, cb):
        return tuple(keras.ops.convert_to_numpy(t) for t in explainer._step(xb, cb))

    return in_batches(step, explainer.batch_size, x, wanted)


def cam(
    model: keras.Model,
    images,
    class_index=None,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    output: int | str | None = None,
    batch_size: int = 32,
    normalize: bool = True,
    target: str = "logit",
) -> np.ndarray:
    """Class activation maps of a Keras model, at the input's resolution.

    Parameters
    ----------
    model : keras.Model
        Any functional or Sequential model, e.g. ``Sequential([backbone, head])``.
    images : array (N, H, W, C)
        Preprocessed as the model expects.
    class_index : int, sequence of N ints, or None
        The class to explain per image; None: the top prediction.
    method : str
        A method of the ``"cam"`` family of `bagnet_keras.explain.methods.METHODS`: ``"gradcam"``,
        ``"gradcam++"``, ``"scorecam"`` or ``"layercam"``.
    layer : str, optional
        Target layer name (searched in nested models too); default the last
        layer with a 4-D output of more than one position.
    output : int or str, optional
        Which output of a multi-output model.
    batch_size : int
    normalize : bool
        Scale each map to [0, 1].
    target : {"logit", "probability"}
        The class score explained (default: the logit, before the model's softmax).

    Returns
    -------
    ndarray (N, H, W), float32

    Examples
    --------
    >>> import keras, numpy as np
    >>> from bagnet_keras.explain import cam
    >>> backbone = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv")])
    >>> model = keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> cam(model, np.ones((2, 16, 16, 3)), method="layercam", layer="conv").shape
    (2, 16, 16)
    """
    explainer_class = get_method(method, family="cam").load()
    explainer = explainer_class(
        model, layer=layer, output=output, batch_size=batch_size, normalize=normalize, target=target
    )
    return explainer(images, class_index)


def __getattr__(name: str):
    # CAM_METHODS (name -> class) was a table of its own; it is read from the one table now.
    if name == "CAM_METHODS":
        return {row.name: row.load() for row in methods_of("cam")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
