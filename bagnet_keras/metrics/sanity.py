"""Sanity checks for explanation maps: do they depend on the model, and only on what the model computes?

- `model_randomization` (Adebayo et al. 2018, "Sanity checks for saliency
  maps"): re-initialise the model's layers from the top down, one more at a
  time (cascading) or one at a time, recompute every method's maps for the
  same classes, and measure how far they stay from the original maps
  (Spearman rank correlation of the absolute maps, SSIM of the maps scaled
  to [0, 1]). A map that explains the model must change when the weights it
  explains are gone; one that stays is an edge detector of the image.
- `input_invariance` (Kindermans et al. 2017, "The (un)reliability of
  saliency methods"): a second model takes the images shifted by a constant
  and absorbs the shift in its first layer's bias, so both models compute
  the same function of the image (checked). A method passes when its maps
  of the two are the same; methods that multiply by the input (gradient x
  input, integrated gradients from a zero baseline) fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from bagnet_keras.core.graph import input_reader, iter_layers, producing_layer, sublayers
from bagnet_keras.core.initializers import initial_values
from bagnet_keras.core.inputs import (
    check_images,
    classes_or_predicted,
    output_index,
)
from bagnet_keras.core.layers import PixelAffine, StemConv
from bagnet_keras.core.scaling import minmax_scale
from bagnet_keras.core.validation import check_number, check_positive_int
from bagnet_keras.explain.registry import explain, parse_method

#: Below this mean rank correlation with the original maps, with every layer re-initialised, a method passes
#: the randomisation test. 0.5 is half-way between the same ranking (1) and an unrelated one (0): maps that
#: still agree more than that with all of the model's weights random show the image more than the model
#: (Adebayo et al.'s guided backpropagation stays near 1 on Inception v3; the gradient falls below 0.2).
RANDOMIZATION_THRESHOLD = 0.5
#: Largest change of the maps between the two models (mean absolute difference over the mean absolute value
#: of the original maps) that `input_invariance` counts as the same map: float32 rounding of two computations.
#: A mean, not a largest difference: rounding can flip a ReLU that sits at zero, which moves a piecewise
#: linear network's gradient at a few pixels by a finite step (SmoothGrad's noisy copies meet such kinks).
INVARIANCE_TOLERANCE = 1e-3


def _methods(methods) -> dict[str, dict]:
    if isinstance(methods, str):
        methods = [methods]
    methods = dict(methods) if isinstance(methods, Mapping) else {name: {} for name in methods}
    if not methods:
        raise ValueError("`methods` names no explanation method; give e.g. ['gradcam', 'saliency'].")
    for name in methods:
        parse_method(name)
    return methods


def _similarity(original: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: Spearman correlation of the absolute maps (NaN where a map is constant: no ranking to
    compare), SSIM of the maps scaled to [0, 1]."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rho, ssim = [], []
    for a, b in zip(original, maps, strict=True):
        a_abs, b_abs = np.abs(a).ravel(), np.abs(b).ravel()
        constant = a_abs.min() == a_abs.max() or b_abs.min() == b_abs.max()
        rho.append(float("nan") if constant else float(spearmanr(a_abs, b_abs).statistic))
        pair = minmax_scale(np.stack([a, b]))
        ssim.append(float(structural_similarity(pair[0], pair[1], data_range=1.0)))
    return np.asarray(rho), np.asarray(ssim)


def _initializer(layer, variable):
    name = variable.name.split("/")[-1].split(":")[0]
    for attribute in (f"{name}_initializer", name.replace("kernel", "initializer")):
        init = getattr(layer, attribute, None)
        if init is not None:
            return keras.initializers.get(init)
    return None


def _reinitialised(layer, rng: np.random.Generator) -> list[np.ndarray]:
    """New values of ``layer``'s weights from its own initializers' distributions, drawn from ``rng`` (the same
    numbers on every backend: `bagnet_keras.core.initializers`)."""
    values = []
    for variable in layer.weights:
        init = _initializer(layer, variable)
        if init is None:  # a layer without initializer attributes: Glorot-like noise of the same shape
            fan = max(1, int(np.prod(variable.shape[:-1])))
            values.append(rng.normal(0, 1 / np.sqrt(fan), variable.shape).astype(variable.dtype))
            continue
        values.append(initial_values(init, variable.shape, variable.dtype, rng))
    return values


@dataclass
class Randomization:
    """What `model_randomization` measured.

    Attributes
    ----------
    layers : list of str
        Per step, the deepest layer it re-initialised (top down); step k
        re-initialised the layers of ``groups[k]`` (and, cascading, all before them).
    groups : list of list of str
        The layers of each step.
    cascade : bool
    spearman, ssim : dict method -> ndarray (steps, N)
        Per step and image: rank correlation of the absolute maps with the
        original ones, and SSIM of the maps scaled to [0, 1].
    threshold : float
        `RANDOMIZATION_THRESHOLD`.
    """

    layers: list
    cascade: bool
    groups: list = field(default_factory=list)
    spearman: dict = field(default_factory=dict)
    ssim: dict = field(default_factory=dict)
    threshold: float = RANDOMIZATION_THRESHOLD

    def mean_spearman(self, method: str) -> np.ndarray:
        """(steps,) the mean correlation over the images whose maps have a ranking (NaN where none has)."""
        values = self.spearman[method]
        counted = (~np.isnan(values)).sum(axis=1)
        return np.where(counted > 0, np.nansum(values, axis=1) / np.maximum(counted, 1), np.nan)

    def passed(self, method: str) -> bool | None:
        """Whether the maps decorrelated: the mean correlation after the last cascading step below the threshold.

        None for one-layer-at-a-time runs (no step removes the whole model) and where no map had a
        ranking (constant maps, e.g. an all-zero Grad-CAM): the test says nothing there.
        """
        final = self.mean_spearman(method)[-1]
        if not self.cascade or np.isnan(final):
            return None
        return bool(final < self.threshold)

    def rows(self) -> list[dict]:
        """One row per method and step: the mean Spearman correlation and SSIM over the images."""
        return [
            {
                "method": method,
                "step": k + 1,
                "layer": layer,
                "spearman": float(self.mean_spearman(method)[k]),
                "ssim": float(self.ssim[method][k].mean()),
            }
            for method in self.spearman
            for k, layer in enumerate(self.layers)
        ]


def model_randomization(
    model: keras.Model,
    images,
    methods: Sequence[str] | Mapping[str, dict],
    class_index=None,
    *,
    cascade: bool = True,
    layers: Sequence[str] | None = None,
    output: int | str | None = None,
    target: str = "logit",
    seed: int = 0,
    max_steps: int | None = 12,
) -> Randomization:
    """Adebayo et al.'s model parameter randomisation test for explanation ``methods``.

    Parameters
    ----------
    model : keras.Model
        Left as it was: its weights are restored at the end, also after an error.
    images : array (N, H, W, C)
        Preprocessed as the model expects; a few images are enough.
    methods : sequence of names, or mapping name -> options
        Methods of `bagnet_keras.explain.methods.METHODS` (``"gradcam"``, ``"evidence"``, ``"saliency"``, ...).
    class_index : int, sequence of N ints, or None
        The class explained per image (None: the original model's top prediction), the same at every step.
    cascade : bool
        Re-initialise one more layer at each step, from the top down (True), or one layer at a time
        with the others original (False).
    layers : sequence of str, optional
        The layers to re-initialise, top first; default: every layer with weights that the explained
        output depends on, from the output down.
    output : int or str, optional
        The head, for multi-output models.
    target : {"logit", "probability"}
    seed : int
        Seeds the new weights.
    max_steps : int or None
        With more layers than this, consecutive layers are re-initialised together in this many steps
        of about equal size (as Adebayo et al. cascade by block); each step recomputes every map once.
        None: one step per layer.

    Returns
    -------
    Randomization

    Examples
    --------
    >>> import keras, numpy as np
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
    ...                           keras.layers.Conv2D(4, 3, activation="relu", name="c2"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="out")])
    >>> x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    >>> result = model_randomization(model, x, ["saliency"])
    >>> result.layers, result.spearman["saliency"].shape
    (['out', 'c2', 'c1'], (3, 2))
    """
    x = check_images(images)
    methods = _methods(methods)
    index = output_index(model, output)
    classes = classes_or_predicted(model, x, class_index, index)
    weighted, layers = _weighted_layers(model, index, layers)

    def maps_of(name):
        return explain(model, x, name, class_index=classes, output=output, target=target, **methods[name])

    steps = len(layers) if max_steps is None else min(len(layers), check_positive_int(max_steps, "max_steps"))
    groups = [list(group) for group in np.array_split(np.array(layers, dtype=object), steps)]
    original = {name: maps_of(name) for name in methods}
    result = Randomization(layers=[group[-1] for group in groups], cascade=bool(cascade), groups=groups)
    saved = model.get_weights()
    rng = np.random.default_rng(seed)
    spearman = {name: [] for name in methods}
    ssim = {name: [] for name in methods}
    try:
        for group in groups:
            if not cascade:
                model.set_weights(saved)
            for path in group:
                weighted[path].set_weights(_reinitialised(weighted[path], rng))
            for name in methods:
                rho, s = _similarity(original[name], maps_of(name))
                spearman[name].append(rho)
                ssim[name].append(s)
    finally:
        model.set_weights(saved)
    result.spearman = {name: np.stack(values) for name, values in spearman.items()}
    result.ssim = {name: np.stack(values) for name, values in ssim.items()}
    return result


def _weighted_layers(model: keras.Model, index: int, layers: Sequence[str] | None) -> tuple[dict, list]:
    """``{path: layer}`` of the layers with weights that output ``index`` depends on, and the ones to
    re-initialise, top first (``layers``, checked; default all of them from the output down)."""
    # Another head's layers are not part of the test.
    explained = model if len(model.outputs) == 1 else keras.Model(model.inputs, model.outputs[index])
    # Leaves only: a keras-hub container (a transformer block) holds the layers below it, which come one by one.
    weighted = {
        path: layer
        for path, layer in iter_layers(explained)
        if layer.weights and not isinstance(layer, keras.Model) and not sublayers(layer)
    }
    if layers is None:
        layers = list(reversed(weighted))
    else:
        layers = list(layers)
        unknown = [name for name in layers if name not in weighted]
        if unknown:
            raise ValueError(
                f"`layers` {unknown} are not layers with weights of {model.name!r}; choose from {list(weighted)}."
            )
    if not layers:
        raise ValueError(f"Model {model.name!r} has no layer with weights to re-initialise.")
    return weighted, layers


def shifted_model(model: keras.Model, shift) -> keras.Model:
    """A copy of ``model`` that takes ``images + shift`` and gives the outputs ``model`` gives for ``images``.

    The shift is absorbed in the bias of the first layer: the offset of a
    `bagnet_keras.core.layers.PixelAffine` (a model's own preprocessing), a Conv2D with
    ``padding="valid"`` (or the BagNet stem) that reads the input, through
    its own bias or, when it has none, the moving mean of the BatchNormalization
    that follows it alone (Kindermans et al.'s construction). Any other model
    gets a ``Rescaling(1, offset=-shift)`` layer in front instead: the same
    function, one layer more.

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()])
    >>> x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(shifted_model(model, 1.0)(x + 1.0), model(x), atol=1e-5))
    True
    """
    channels = model.inputs[0].shape[-1]
    shift = np.broadcast_to(np.asarray(shift, "float32"), (channels,))
    first = input_reader(model)
    if isinstance(first, PixelAffine):  # a model that preprocesses: its offset takes the shift

        def shifted(layer):
            if layer is not first:
                return layer.__class__.from_config(layer.get_config())
            return PixelAffine(first.matrix, first.offset - shift @ first.matrix, name=first.name)

        copy = keras.models.clone_model(model, clone_function=shifted)
        copy.set_weights(model.get_weights())
        return copy
    kernel = None
    if isinstance(first, StemConv):
        kernel = keras.ops.convert_to_numpy(first.fused_kernel())
    elif isinstance(first, keras.layers.Conv2D) and first.padding == "valid" and first.groups == 1:
        kernel = keras.ops.convert_to_numpy(first.kernel)
    followers = [
        layer
        for layer in model.layers
        if layer is not first and any(producing_layer(t) is first for t in keras.tree.flatten(layer.input))
    ]
    absorbs = getattr(first, "use_bias", False) or (
        len(followers) == 1 and isinstance(followers[0], keras.layers.BatchNormalization)
    )
    if kernel is not None and absorbs:
        offset = np.einsum("hwio,i->o", kernel, shift)  # what the shift adds to every output position
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        if getattr(first, "use_bias", False):
            bias = copy.get_layer(first.name).bias
            bias.assign(keras.ops.convert_to_numpy(bias) - offset)
        else:
            mean = copy.get_layer(followers[0].name).moving_mean
            mean.assign(keras.ops.convert_to_numpy(mean) + offset)
        return copy
    inputs = keras.Input(model.inputs[0].shape[1:])
    return keras.Model(inputs, model(keras.layers.Rescaling(1.0, offset=-shift)(inputs)), name=f"{model.name}_shifted")


@dataclass
class Invariance:
    """What `input_invariance` measured: per method, how much the maps changed and whether it passed.

    ``difference[method]`` is mean |maps of the shifted model - maps of the model| over the mean absolute
    value of the model's maps; ``output_difference`` the largest difference of the two models' outputs
    relative to their largest value.
    """

    shift: np.ndarray
    output_difference: float
    difference: dict = field(default_factory=dict)
    tolerance: float = INVARIANCE_TOLERANCE

    def passed(self, method: str) -> bool:
        return bool(self.difference[method] <= self.tolerance)


def input_invariance(
    model: keras.Model,
    images,
    methods: Sequence[str] | Mapping[str, dict],
    *,
    shift=1.0,
    class_index=None,
    output: int | str | None = None,
    target: str = "logit",
) -> Invariance:
    """Kindermans et al.'s input invariance test: the same maps for a model and its input-shifted twin?

    Parameters
    ----------
    model : keras.Model
    images : array (N, H, W, C)
    methods : sequence of names, or mapping name -> options
    shift : float or array (C,)
        Added to the images of the twin (`shifted_model`), e.g. the mean of the data.
    class_index, output, target
        As for `bagnet_keras.explain.registry.explain`; the classes are the model's top prediction by default.

    Returns
    -------
    Invariance

    Raises
    ------
    RuntimeError
        When the twin's outputs differ from the model's (it would not be a test of the method).

    Examples
    --------
    >>> import keras, numpy as np
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> result = input_invariance(model, x, ["saliency", "gradient_x_input"], shift=1.0)
    >>> result.passed("saliency"), result.passed("gradient_x_input")
    (True, False)
    """
    x = check_images(images)
    methods = _methods(methods)
    index = output_index(model, output)
    classes = classes_or_predicted(model, x, class_index, index)
    for value in np.ravel(np.asarray(shift, dtype=object)):
        check_number(value, "shift")
    twin = shifted_model(model, shift)
    moved = (x + np.broadcast_to(np.asarray(shift, "float32"), (x.shape[-1],))).astype("float32")
    # Called directly: `predict` would trace a function for the one call on the fresh twin (and the model).
    a = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(model(x, training=False))]
    b = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(twin(moved, training=False))]
    gap = max(float(np.abs(p - q).max() / max(np.abs(p).max(), 1e-12)) for p, q in zip(a, b, strict=True))
    if gap > INVARIANCE_TOLERANCE:
        raise RuntimeError(
            f"The input-shifted copy of {model.name!r} differs from it by {gap:.3g} (relative); "
            "the shift was not absorbed exactly."
        )
    result = Invariance(shift=np.asarray(shift, "float32"), output_difference=gap)
    for name, options in methods.items():
        kwargs = dict(class_index=classes, output=output, target=target, **options)
        original, shifted = explain(model, x, name, **kwargs), explain(twin, moved, name, **kwargs)
        result.difference[name] = float(np.abs(shifted - original).mean() / max(np.abs(original).mean(), 1e-12))
    return result


def sanity_checks(
    models: Mapping[str, keras.Model],
    methods: Mapping[str, Sequence[str]],
    images,
    labels,
    *,
    output: int | str | None = None,
    target: str = "logit",
    shift: float = 1.0,
) -> dict:
    """Both checks for every model and method, as plain JSON: what `compare(..., sanity=n)` records.

    Returns ``{"images", "shift", "threshold", "tolerance", "randomization": [...], "invariance": [...]}``;
    each randomization entry holds ``model``, ``method``, ``layers``, the mean ``spearman`` and ``ssim`` per
    cascading step and ``passed``; each invariance entry ``model``, ``method``, ``difference``, ``passed``.
    """
    randomization, invariance = [], []
    for name, model in models.items():
        wanted = list(methods.get(name, []))
        if not wanted:
            continue
        cascade = model_randomization(model, images, wanted, class_index=labels, output=output, target=target)
        shifted = input_invariance(model, images, wanted, shift=shift, class_index=labels, output=output, target=target)
        for method in wanted:
            randomization.append(
                {
                    "model": name,
                    "method": method,
                    "layers": cascade.layers,
                    "spearman": cascade.mean_spearman(method).tolist(),
                    "ssim": cascade.ssim[method].mean(axis=1).tolist(),
                    "passed": cascade.passed(method),
                }
            )
            invariance.append(
                {
                    "model": name,
                    "method": method,
                    "difference": shifted.difference[method],
                    "passed": shifted.passed(method),
                }
            )
    return {
        "images": len(images),
        "shift": float(shift),
        "threshold": RANDOMIZATION_THRESHOLD,
        "tolerance": INVARIANCE_TOLERANCE,
        "randomization": randomization,
        "invariance": invariance,
    }
