"""White-box attributions of a class score to the input pixels: the methods of the BagNet paper's masking test.

One base class, `BaseAttribution`, does what all share: the class (given or
the top prediction), batches, the gradient of the class score with respect
to the input through `bagnet_keras.core.graph.run_graph` (nested backbones,
any head, logit or probability), and the reduction of (N, H, W, C)
attributions to maps (N, H, W). Each method says what it does with gradients:

- `Saliency` (Simonyan et al. 2014): the absolute gradient, largest over the channels.
- `GradientXInput`: gradient times input, summed over the channels.
- `IntegratedGradients` (Sundararajan et al. 2017): (x - baseline) times the
  mean gradient on the straight path from the baseline, ``steps`` points
  (midpoint rule); its attributions sum to f(x) - f(baseline).
- `SmoothGrad` (Smilkov et al. 2017): any of these averaged over noisy copies.
- `EpsilonLRP` (Bach et al. 2015) and `DeepLIFT` (Rescale rule, Shrikumar et
  al. 2017), in the modified-gradient form of Ancona et al. 2018: the input
  (minus the baseline, for DeepLIFT) times the gradient in which every
  elementwise activation's derivative ``f'(z)`` is replaced, by
  ``f(z) / (z + epsilon sign(z))`` for LRP, by ``(f(z) - f(z0)) / (z - z0)``
  for DeepLIFT (``z0``: the same unit on the baseline); products (gates) and
  layer normalisation have rules of their own (`bagnet_keras.explain.rules`),
  and any layer no rule covers is refused by name. DeepLIFT's attributions
  sum to f(x) - f(baseline); LRP's to f(x) less what the biases and epsilon absorb.
"""

from __future__ import annotations

import keras
import numpy as np

from bagnet_keras.core.backend import value_and_gradients
from bagnet_keras.core.graph import check_target, target_scores, traced
from bagnet_keras.core.inputs import (
    check_images,
    classes_or_predicted,
    in_batches,
    n_classes_of,
    output_index,
    top_class_scores,
)
from bagnet_keras.core.validation import check_number, check_positive_int
from bagnet_keras.explain.methods import get_method, methods_of
from bagnet_keras.explain.rules import ELEMENTWISE as ELEMENTWISE
from bagnet_keras.explain.rules import LINEAR_LAYERS as LINEAR_LAYERS
from bagnet_keras.explain.rules import check_modified_layers, rule_operation

BASELINES = ("zeros", "mean", "blur")


class BaseAttribution:
    """Attributions of a class score to the input pixels, from (modified) gradients.

    Subclasses override `attributions`, which turns images and their classes
    into (N, H, W, C) attributions using `gradients`; the map is their sum
    over the channels (``signed``), or for `Saliency` the largest absolute value.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential; nested sub-models (a backbone inside a
        transfer model) are run layer by layer.
    output : int or str, optional
        Which output to explain, for models with several.
    batch_size : int
        Inputs per gradient pass (interpolated and noisy copies included).
    target : {"logit", "probability"}
        The class score explained (default: the logit, before the model's softmax).
    """

    #: ``None`` (the true gradient), ``"lrp"`` or ``"deeplift"``: which derivative replaces the activations'.
    rule: str | None = None
    signed = True
    name = "gradient"

    def __init__(
        self, model: keras.Model, *, output: int | str | None = None, batch_size: int = 32, target: str = "logit"
    ):
        self.model = model
        self.target = check_target(target)
        self.output = output_index(model, output)
        self.n_classes = n_classes_of(model, self.output)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if self.rule is not None:
            check_modified_layers(model, self.name)

    def _step(self):
        index, target, rule, epsilon = self.output, self.target, self.rule, getattr(self, "epsilon", 0.0)

        def build(model_ref):
            operation = None if rule is None else rule_operation(rule, epsilon)

            def objective(x, classes, reference, watch):
                inputs = x if rule != "deeplift" else keras.ops.concatenate([x, reference], axis=0)
                scores = target_scores(model_ref(), inputs, index, target, operation)
                _, score = top_class_scores(scores[: keras.ops.shape(x)[0]], classes)
                return score, ()

            gradients = value_and_gradients(objective, argnums=(0,))
            return lambda x, classes, reference: gradients(x, classes, reference)[2][0]

        return traced(self.model, ("attribution", rule, epsilon, index, target), build)

    def gradients(self, x: np.ndarray, classes: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The (modified) gradient of the ``classes`` scores at ``x``, (N, H, W, C), in batches.

        ``reference``: DeepLIFT's baseline per image, (N, H, W, C).
        """
        step = self._step()
        reference = x if reference is None else np.asarray(reference, "float32")
        return in_batches(step, self.batch_size, np.asarray(x, "float32"), np.asarray(classes, "int32"), reference)

    def attributions(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(N, H, W, C) attributions for ``classes`` (resolved, no -1); the method's one job."""
        return self.gradients(x, classes)

    def reduce(self, attributions: np.ndarray) -> np.ndarray:
        return attributions.sum(axis=-1)

    def classes(self, x: np.ndarray, class_index) -> np.ndarray:
        """``class_index`` per image, the top prediction where None."""
        return classes_or_predicted(self.model, x, class_index, self.output, self.batch_size)

    def __call__(self, images, class_index=None) -> np.ndarray:
        """Maps (N, H, W) for ``class_index`` (int, N ints, or None: top class); classes left in ``class_index_``."""
        x = check_images(images)
        self.class_index_ = self.classes(x, class_index)
        return self.reduce(self.attributions(x, self.class_index_)).astype("float32")


class Saliency(BaseAttribution):
    """The gradient's absolute value, largest over the channels (Simonyan et al. 2014).

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> Saliency(model)(np.ones((2, 8, 8, 3)), class_index=1).shape
    (2, 8, 8)
    """

    signed = False
    name = "saliency"

    def reduce(self, attributions):
        return np.abs(attributions).max(axis=-1)


class GradientXInput(BaseAttribution):
    """Gradient times input, summed over the channels."""

    name = "gradient_x_input"

    def attributions(self, x, classes):
        return x * self.gradients(x, classes)


def baseline_images(x: np.ndarray, baseline) -> np.ndarray:
    """The baseline per image: ``"zeros"``, ``"mean"`` (each image's mean colour), ``"blur"`` (Gaussian,
    sigma a tenth of the image's side) or an array broadcastable to ``x``.

    Examples
    --------
    >>> baseline_images(np.ones((2, 4, 4, 3)), "zeros").shape
    (2, 4, 4, 3)
    """
    if isinstance(baseline, str):
        if baseline == "zeros":
            return np.zeros_like(x)
        if baseline == "mean":
            return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).astype("float32")
        if baseline == "blur":
            from scipy.ndimage import gaussian_filter

            sigma = max(x.shape[1:3]) / 10
            return gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest").astype("float32")
        raise ValueError(f"`baseline` must be one of {BASELINES} or an array. Received: baseline={baseline!r}")
    try:
        return np.broadcast_to(np.asarray(baseline, "float32"), x.shape).copy()
    except ValueError:
        raise ValueError(
            f"`baseline` must be one of {BASELINES} or an array broadcastable to the images {x.shape}. "
            f"Received an array of shape {np.shape(baseline)}."
        ) from None


class IntegratedGradients(BaseAttribution):
    """(x - baseline) times the mean gradient at ``steps`` points of the straight path (midpoint rule).

    About ``steps`` gradient passes per image; the attributions sum to
    f(x) - f(baseline) up to the quadrature error (tests/test_attribution.py: within 1 % at 64 steps).
    """

    name = "integrated_gradients"

    def __init__(self, model, *, steps: int = 32, baseline="zeros", **kwargs):
        super().__init__(model, **kwargs)
        self.steps = check_positive_int(steps, "steps")
        self.baseline = baseline

    def attributions(self, x, classes):
        reference = baseline_images(x, self.baseline)
        alphas = ((np.arange(self.steps) + 0.5) / self.steps).astype("float32")
        group = max(1, self.batch_size // self.steps)  # images whose path points share the gradient batches
        out = np.empty_like(x)
        for start in range(0, len(x), group):
            xs, rs = x[start : start + group], reference[start : start + group]
            path = rs[:, None] + alphas[None, :, None, None, None] * (xs - rs)[:, None]
            path_classes = np.repeat(classes[start : start + group], self.steps)
            grads = self.gradients(path.reshape(-1, *x.shape[1:]), path_classes)
            out[start : start + group] = (xs - rs) * grads.reshape(len(xs), self.steps, *x.shape[1:]).mean(axis=1)
        return out


class EpsilonLRP(BaseAttribution):
    """Epsilon-LRP: input times the gradient with each activation's derivative replaced by f(z) / (z + eps sign z)."""

    rule = "lrp"
    name = "epsilon_lrp"

    def __init__(self, model, *, epsilon: float = 1e-4, **kwargs):
        self.epsilon = check_number(epsilon, "epsilon", low=0, low_open=True)
        super().__init__(model, **kwargs)

    def attributions(self, x, classes):
        return x * self.gradients(x, classes)


class DeepLIFT(BaseAttribution):
    """DeepLIFT (Rescale): (x - baseline) times the gradient with each derivative replaced by Δf / Δz."""

    rule = "deeplift"
    name = "deeplift"

    def __init__(self, model, *, baseline="zeros", **kwargs):
        super().__init__(model, **kwargs)
        self.baseline = baseline

    def attributions(self, x, classes):
        reference = baseline_images(x, self.baseline)
        return (x - reference) * self.gradients(x, classes, reference)


class SmoothGrad(BaseAttribution):
    """A base method's attributions averaged over ``samples`` copies with Gaussian noise (Smilkov et al. 2017).

    ``noise`` is the noise's standard deviation as a fraction of each image's
    value range (max - min); ``base`` any method of the ``"attribution"`` family of
    `bagnet_keras.explain.methods.METHODS` or ``"gradient"`` (the default: the plain gradient, summed over the
    channels); ``base_options`` go to it (``steps=`` for integrated gradients).
    """

    name = "smoothgrad"

    def __init__(
        self,
        model,
        *,
        noise: float = 0.15,
        samples: int = 25,
        base: str = "gradient",
        seed: int | None = 0,
        base_options: dict | None = None,
        **kwargs,
    ):
        noise = check_number(noise, "noise", low=0)  # a fraction of each image's value range
        names = [row.name for row in methods_of("attribution")]
        if base != "gradient" and base not in names:
            raise ValueError(f"`base` must be 'gradient' or one of {names}. Received: base={base!r}")
        super().__init__(model, **kwargs)
        self.noise, self.samples, self.seed = float(noise), check_positive_int(samples, "samples"), seed
        base_class = BaseAttribution if base == "gradient" else get_method(base).load()
        self.base = base_class(model, **(base_options or {}), **kwargs)
        self.signed = self.base.signed
        self.name = f"smoothgrad of {self.base.name}"

    def attributions(self, x, classes):
        rng = np.random.default_rng(self.seed)
        scale = self.noise * (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True))
        total = np.zeros_like(x)
        for _ in range(self.samples):
            noisy = (x + rng.normal(size=x.shape).astype("float32") * scale).astype("float32")
            total += self.base.attributions(noisy, classes)
        # Averaged per channel, then reduced as the base reduces (Saliency: the largest absolute value).
        return total / self.samples

    def reduce(self, attributions):
        return self.base.reduce(attributions)


def attribution(
    model: keras.Model,
    images,
    class_index=None,
    *,
    method: str = "saliency",
    output: int | str | None = None,
    batch_size: int = 32,
    target: str = "logit",
    **options,
) -> np.ndarray:
    """Gradient attributions of a class score to the input pixels, as maps (N, H, W) at the input's resolution.

    Parameters
    ----------
    model : keras.Model
        Any functional or Sequential model, nested backbones and several heads included.
    images : array (N, H, W, C)
        Preprocessed as the model expects.
    class_index : int, sequence of N ints, or None
        The class to explain per image; None: the top prediction.
    method : str
        A method of the ``"attribution"`` family of `bagnet_keras.explain.methods.METHODS`:
        ``"saliency"`` (the largest absolute gradient over the channels),
        ``"gradient_x_input"``, ``"integrated_gradients"``, ``"smoothgrad"``,
        ``"epsilon_lrp"`` or ``"deeplift"`` (signed, summed over the channels).
    output : int or str, optional
        Which output of a multi-output model.
    batch_size : int
        Inputs per gradient pass.
    target : {"logit", "probability"}
        The class score explained.
    **options
        The method's own: ``steps``, ``baseline`` (integrated gradients: "zeros", "mean", "blur" or an
        array; DeepLIFT too), ``noise``, ``samples``, ``base``, ``seed`` (SmoothGrad), ``epsilon`` (LRP).

    Returns
    -------
    ndarray (N, H, W), float32

    Examples
    --------
    >>> import keras, numpy as np
    >>> from bagnet_keras.explain import attribution
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> ig = attribution(model, x, class_index=0, method="integrated_gradients", steps=64)
    >>> logits = model.predict(x, verbose=0)[:, 0] - model.predict(0 * x, verbose=0)[:, 0]
    >>> bool(np.allclose(ig.sum(axis=(1, 2)), logits, rtol=1e-2, atol=1e-4))
    True
    """
    explainer_class = get_method(method, family="attribution").load()
    explainer = explainer_class(model, output=output, batch_size=batch_size, target=target, **options)
    return explainer(images, class_index)


def __getattr__(name: str):
    # ATTRIBUTIONS (name -> class) was a table of its own; it is read from the one table now.
    if name == "ATTRIBUTIONS":
        return {row.name: row.load() for row in methods_of("attribution")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
