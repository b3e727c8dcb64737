"""Feature visualisation by optimisation: the image a unit, a group or a class wants to see (Olah et al. 2017).

`feature_visualization` optimises images so that they maximise
`bagnet_keras.explain.objectives` (a channel, a unit, a direction such as an
NMF group, a class logit, their weighted sums, Lucid's diversity), with
Lucid's defaults, the three small pieces of lucent's ``optvis``:

- the parametrisation: the image's Fourier spectrum scaled by 1/f (so that
  all frequencies learn at the same pace) in decorrelated colour (ImageNet's
  colour correlation), squashed into [0, 1] by a sigmoid; or plain pixels;
- transformation robustness: at each step every image is jittered, scaled
  and rotated at random before the model sees it (one affine map,
  `warp`), so the result is a pattern the model
  responds to wherever it sits, not adversarial noise;
- Adam on the parameters, all objectives as one batch.

Images are made in pixel space (0-255, as the data) and pass through the
model's own ``preprocess`` (which must take tensors, as keras.applications'
``preprocess_input`` does). An objective on a ReLU layer is optimised through
the ReLU's input, as Lucid's ``_pre_relu`` layers are, so a unit that is
silent on the starting image still has a gradient; values are reported
after the ReLU. Each image draws its start and its random
transformations from its own stream of the seed, so a run is repeatable on
a CPU and an image does not depend on which others share its batch.

On a BagNet every unit of its last layer, and every class logit, sees one
q x q patch and nothing else, so `feature_visualization` optimises that patch
alone (``patch=None`` decides): the objective is the same function of the
same pixels, exactly, at a fraction of a full image's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.backend import value_and_gradients
from bagnet_keras.core.graph import find_layer, layer_tap, run_graph, target_scores, traced
from bagnet_keras.core.inputs import n_classes_of, output_index
from bagnet_keras.core.validation import check_int, check_number, check_positive_int
from bagnet_keras.explain.backward import is_plain_relu, replace_activations
from bagnet_keras.explain.objectives import Objective, Term, linear_weights

# ImageNet's colour correlation, square root of its covariance (Lucid's ``color_correlation_svd_sqrt``)
_COLOUR_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype="float32")
_COLOUR = _COLOUR_SQRT / np.max(np.linalg.norm(_COLOUR_SQRT, axis=0))

PARAMETRIZATIONS = ("fourier", "pixel")


@dataclass
class Visualization:
    """The images `feature_visualization` made.

    Attributes
    ----------
    images : ndarray (N * copies, H, W, 3) float32
        In pixel values 0..255, the data's scale (feed them to the model through the same ``preprocess``);
        objective ``i``'s copies are images ``i * copies`` to ``i * copies + copies - 1``.
    values : ndarray (N * copies,)
        The objective each image reached, measured on the image itself (no transformation).
    objectives : list of Objective
    patch : bool
        Whether a BagNet's patch was optimised instead of a whole image.
    """

    images: np.ndarray
    values: np.ndarray
    objectives: list
    patch: bool = False


def fourier_basis(height: int, width: int) -> tuple[np.ndarray, ...]:
    """Real matrices of the orthonormal inverse 2-D real DFT: ``(Er, Ei)`` along the rows, ``(Cr, Ci)`` along
    the columns. Matrix products instead of an FFT: exact, and plain ``keras.ops`` on every backend.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> spectrum = rng.normal(size=(5, 4)) + 1j * rng.normal(size=(5, 4))
    >>> er, ei, cr, ci = fourier_basis(5, 6)
    >>> rows = (er + 1j * ei) @ spectrum
    >>> image = rows.real @ cr + rows.imag @ ci
    >>> bool(np.allclose(image, np.fft.irfft2(spectrum, s=(5, 6), norm="ortho")))
    True
    """
    rows = np.fft.ifft(np.eye(height), axis=0, norm="ortho")
    half = width // 2 + 1
    cr = np.fft.irfft(np.eye(half), n=width, axis=1, norm="ortho")
    ci = np.fft.irfft(1j * np.eye(half), n=width, axis=1, norm="ortho")
    return tuple(a.astype("float32") for a in (rows.real, rows.imag, cr, ci))


def frequency_scale(height: int, width: int, decay: float = 1.0) -> np.ndarray:
    """(height, width // 2 + 1): 1 / f ** decay, f the spatial frequency (floored at 1 / size), as Lucid scales."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[: width // 2 + 1][None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    return (1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay).astype("float32")


class _Image:
    """The parametrisation: parameters -> images (B, H, W, 3) in [0, 1], in ``keras.ops``."""

    def __init__(self, kind: str, size: tuple[int, int], decorrelate: bool):
        self.kind, self.size, self.decorrelate = kind, size, decorrelate
        if kind == "fourier":
            self.basis = fourier_basis(*size)
            self.scale = frequency_scale(*size)

    def initial(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.size
        shape = (3, h, w // 2 + 1, 2) if self.kind == "fourier" else (h, w, 3)
        return (rng.normal(size=shape) * 0.01).astype("float32")

    def __call__(self, params):
        ops = keras.ops
        params = ops.convert_to_tensor(params)
        if self.kind == "fourier":
            er, ei, cr, ci = self.basis
            scale = ops.convert_to_tensor(self.scale)
            real, imag = params[..., 0] * scale, params[..., 1] * scale  # (B, 3, H, W/2+1)
            rows_r = ops.einsum("hu,bcuv->bchv", er, real) - ops.einsum("hu,bcuv->bchv", ei, imag)
            rows_i = ops.einsum("hu,bcuv->bchv", er, imag) + ops.einsum("hu,bcuv->bchv", ei, real)
            image = ops.einsum("bchv,vw->bhwc", rows_r, cr) + ops.einsum("bchv,vw->bhwc", rows_i, ci)
            image = image / 4.0  # Lucid's constant: the spectrum's scale gives pixels of about 4 sigma
        else:
            image = params
        if self.decorrelate:
            image = ops.einsum("bhwc,dc->bhwd", image, _COLOUR)
        return ops.sigmoid(image)


def random_transforms(rng: np.random.Generator, size: tuple[int, int], jitter: float = 0.04) -> np.ndarray:
    """One random affine map (8 values, `keras.ops.image.affine_transform`'s) about the image's centre: a shift
    of up to ``jitter`` of the side, a scale in 0.9..1.1 and a rotation in -10..10 degrees (Lucid's ranges;
    no rotation a quarter of the time)."""
    h, w = size
    shift = np.round(rng.uniform(-1, 1, 2) * jitter * np.array([h, w]))
    scale = 1 + (rng.integers(0, 11) - 5) / 50
    angle = np.deg2rad(rng.choice(np.concatenate([np.arange(-10, 11), np.zeros(5)])))
    return affine_matrix(size, scale, angle, shift)


def random_shift(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One random shift by -1, 0 or 1 pixel along each axis: the transformation robustness of a patch.

    A patch is all its unit sees: larger shifts, scaling or rotation would move the pattern out of it.
    """
    return affine_matrix(size, 1.0, 0.0, np.round(rng.uniform(-1, 1, 2)))


def affine_matrix(size: tuple[int, int], scale: float, angle: float, shift) -> np.ndarray:
    """The 8 values mapping an output pixel to the input pixel it reads: scaled by ``scale`` and rotated by
    ``angle`` (radians) about the centre, then shifted by ``shift`` (rows, columns).

    Examples
    --------
    >>> affine_matrix((5, 5), 1.0, 0.0, (0, 0)).tolist()
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    """
    h, w = size
    cy, cx = (h - 1) / 2, (w - 1) / 2
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # input = R^-1 / s (output - centre - shift) + centre, with (x, y) = (column, row)
    a0, a1, b0, b1 = cos, sin, -sin, cos
    tx, ty = cx + shift[1], cy + shift[0]
    a2 = cx - a0 * tx - a1 * ty
    b2 = cy - b0 * tx - b1 * ty
    return np.array([a0, a1, a2, b0, b1, b2, 0.0, 0.0], dtype="float32") + 0.0  # no -0.0


def warp(images, matrices, fill: float = 0.5):
    """``images`` (B, H, W, C) moved by affine maps (B, 8), bilinear, ``fill`` outside: differentiable ``keras.ops``.

    ``keras.ops.image.affine_transform`` computes the same map but has no gradient on TensorFlow.

    Examples
    --------
    >>> x = np.arange(9.0, dtype="float32").reshape(1, 3, 3, 1)
    >>> shifted = warp(x, affine_matrix((3, 3), 1.0, 0.0, (0, 1))[None])
    >>> keras.ops.convert_to_numpy(shifted)[0, :, :, 0].tolist()
    [[0.5, 0.0, 1.0], [0.5, 3.0, 4.0], [0.5, 6.0, 7.0]]
    """
    ops = keras.ops
    b = ops.shape(images)[0]
    h, w, c = (int(d) for d in images.shape[1:])
    rows, columns = (ops.convert_to_tensor(grid) for grid in np.mgrid[:h, :w].astype("float32"))
    m = [matrices[:, i][:, None, None] for i in range(6)]
    source_x = m[0] * columns + m[1] * rows + m[2]
    source_y = m[3] * columns + m[4] * rows + m[5]
    # One pixel of fill around the image: every source outside it reads the fill.
    padded = ops.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
    flat = ops.reshape(padded, (-1, c))
    base = ops.reshape(ops.arange(b, dtype="int32") * ((h + 2) * (w + 2)), (-1, 1, 1))
    x0, y0 = ops.floor(source_x), ops.floor(source_y)
    out = 0.0
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi = ops.cast(ops.clip(x0 + dx, -1, w), "int32") + 1
        yi = ops.cast(ops.clip(y0 + dy, -1, h), "int32") + 1
        weight = (1 - ops.abs(source_x - x0 - dx)) * (1 - ops.abs(source_y - y0 - dy))
        out = out + ops.take(flat, base + yi * (w + 2) + xi, axis=0) * weight[..., None]
    return out


def _gram_similarity(acts, groups):
    """Per image: the mean cosine similarity of its Gram matrix with those of the other images of its group."""
    ops = keras.ops
    b, c = ops.shape(acts)[0], ops.shape(acts)[-1]
    flat = ops.reshape(acts, (b, -1, c))
    grams = ops.einsum("bpc,bpd->bcd", flat, flat)
    grams = ops.reshape(grams, (b, -1))
    grams = grams / ops.maximum(ops.norm(grams, axis=1, keepdims=True), 1e-10)
    similarity = ops.matmul(grams, ops.transpose(grams))
    same = ops.cast(ops.equal(groups[:, None], groups[None, :]), similarity.dtype)
    same = same * (1.0 - ops.eye(b, dtype=similarity.dtype))
    return ops.sum(similarity * same, axis=1) / ops.maximum(ops.sum(same, axis=1), 1.0)


class _Problem:
    """The objectives as arrays for one traced pass: the layers read, and each image's weights."""

    def __init__(self, model, objectives: list[Objective], copies: int, shapes: dict, patch: bool, preprocess, index):
        self.preprocess, self.index = preprocess, index
        self.objectives = [_at_centre(o) for o in objectives] if patch else list(objectives)
        self.paths = _layer_paths(self.objectives)
        self.layers = [find_layer(model, p)[1] for p in self.paths]
        self.uses_logits = _reads_logits(self.objectives)
        # a model without class scores (a feature extractor) is visualised by its layers alone
        n_classes = n_classes_of(model, index) if self.uses_logits else 1
        per_image = [linear_weights(o, shapes, n_classes) for o in self.objectives for _ in range(copies)]
        self.weights = [np.stack([w[0].get(p, np.zeros(shapes[p], "float32")) for w in per_image]) for p in self.paths]
        self.logits = np.stack([w[1] if w[1] is not None else np.zeros(n_classes, "float32") for w in per_image])
        self.spread = np.array([[w[2].get(p, 0.0) for p in self.paths] for w in per_image], "float32")
        self.spread = self.spread.reshape(len(per_image), len(self.paths))
        self.groups = np.repeat(np.arange(len(self.objectives)), copies).astype("float32")

    def arrays(self) -> tuple:
        """The traced pass's per-image arguments after the images and their transformations."""
        return (self.logits, self.spread, self.groups, *self.weights)

    def key(self) -> tuple:
        """What the traced pass depends on beyond its arguments' shapes."""
        diverse = tuple(bool(np.any(self.spread[:, i])) for i in range(len(self.paths)))
        return (self.index, self.uses_logits, id(self.preprocess), *(id(layer) for layer in self.layers), diverse)

    def values(self, model, x, logits, spread, groups, weights):
        """Each image's objective (B,) for model inputs ``x`` (pixels 0..255), and the same with every ReLU layer
        read before its ReLU (what is optimised: Lucid's ``pre_relu`` layers, so that a unit silent on the
        starting image still has a gradient)."""
        ops = keras.ops
        inner, before = _pre_relu(self.layers)
        tap, taps = layer_tap(self.layers, inner=inner)
        if self.preprocess is not None:
            x = self.preprocess(x)
        total = 0.0
        if self.uses_logits:
            scores = target_scores(model, x, self.index, "logit", tap)
            total = ops.sum(ops.cast(scores, "float32") * logits, axis=1)
        else:
            run_graph(model, x, tap)
        optimised = total
        for i, layer in enumerate(self.layers):
            acts = ops.cast(taps[layer], "float32")
            total = total + ops.sum(acts * weights[i], axis=(1, 2, 3))
            optimised = optimised + ops.sum(ops.cast(before.get(layer, acts), "float32") * weights[i], axis=(1, 2, 3))
            if np.any(self.spread[:, i]):
                similarity = spread[:, i] * _gram_similarity(acts, groups)
                total, optimised = total + similarity, optimised + similarity
        return total, optimised


def _layer_paths(objectives: list[Objective]) -> list[str]:
    return list(dict.fromkeys(p for o in objectives for p in o.layers()))


def _reads_logits(objectives: list[Objective]) -> bool:
    return any(o.outputs() for o in objectives)


def _layer_shapes(model, paths: list[str], size, preprocess) -> dict:
    """Each layer's activation shape (h, w, C) at the optimised image's size, from one pass on a grey image."""
    if not paths:
        return {}
    layers = [find_layer(model, p)[1] for p in paths]
    tap, taps = layer_tap(layers)
    x = np.full((1, *size, 3), 127.5, "float32")
    run_graph(model, preprocess(x) if preprocess else x, tap)
    shapes = {}
    for path, layer in zip(paths, layers, strict=True):
        shape = tuple(int(d) for d in taps[layer].shape[1:])
        if len(shape) != 3:
            raise ValueError(
                f"Layer {path!r} has output shape {shape}; objectives need a (height, width, channels) layer."
            )
        shapes[path] = shape
    return shapes


def _pre_relu(layers) -> tuple[Callable, dict]:
    """An ``inner`` operation_fn for `layer_tap` that keeps the input of each ReLU layer among ``layers`` (through
    `replace_activations`, the one place activations are intercepted), and where it keeps them."""
    before = {}

    def inner(op):
        # a ReLU layer, Activation("relu"), or a layer with activation="relu" (VGG16's convolutions)
        if not is_plain_relu(op) or not any(op is layer for layer in layers):
            return op

        def keep(relu):
            def call(z):
                before[op] = z
                return relu(z)

            return call

        return replace_activations(lambda layer: layer is op, keep)(op)

    return inner, before


def _at_centre(objective: Objective) -> Objective:
    """In a BagNet's patch every position is the same patch: units and directions are taken at the centre."""
    return Objective(
        tuple(
            (w, Term(t.kind, t.layer, t.index, t.vector, None, t.output) if t.kind in ("unit", "direction") else t)
            for w, t in objective.terms
        )
    )


def _step_function(model: keras.Model, problem: _Problem, image: _Image, transforms: bool) -> Callable:
    """``f(params, matrices, *arrays) -> (values, gradient of their sum with respect to params)``, traced."""

    def build(model_ref):
        def objective(params, matrices, logits, spread, groups, *rest):
            weights, _ = rest[:-1], rest[-1]  # the last is `watch`: nothing inside is differentiated
            images = image(params)
            if transforms:
                images = warp(images, matrices)
            values, optimised = problem.values(model_ref(), images * 255.0, logits, spread, groups, weights)
            return optimised, values

        gradients = value_and_gradients(objective, argnums=(0,))

        def step(*args):
            _, values, (grad,), _ = gradients(*args)
            return values, grad

        return step

    key = ("feature-visualization", image.kind, image.size, image.decorrelate, transforms, *problem.key())
    return traced(model, key, build)


def feature_visualization(
    model: keras.Model,
    objectives: Objective | Sequence[Objective],
    *,
    steps: int = 256,
    learning_rate: float = 0.05,
    size: tuple[int, int] | None = None,
    parametrization: str = "fourier",
    decorrelate: bool = True,
    transforms: bool | None = None,
    copies: int = 1,
    patch: bool | None = None,
    preprocess: Callable | None = None,
    output: int | str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> Visualization:
    """Images that maximise each objective: what a unit, a group or a class responds to most.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model (nested backbones are entered).
    objectives : Objective or sequence of Objective
        From `bagnet_keras.explain.objectives`: `channel`, `unit`, `direction`, `class_logit`,
        `diversity`, and their weighted sums.
    steps, learning_rate
        Adam steps (gradient ascent) and their step size.
    size : (height, width), optional
        The image's size; default the model's input size.
    parametrization : "fourier" or "pixel"
        Lucid's default, the 1/f-scaled Fourier spectrum, or the pixels themselves.
    decorrelate : bool
        Optimise in decorrelated colour (ImageNet's colour correlation), as Lucid does.
    transforms : bool, optional
        Random jitter, scale and rotation at each step (transformation robustness). None: these for
        whole images, and a patch shifted by at most one pixel (`random_shift`). A patch is all its unit
        sees: the full transformations move part of the pattern out of it and fill its corners with grey
        (the demo BagNet's 8 units reached 0.6 to 3.7 times their best dataset activation, 3 below 1),
        none leave pixel noise (1.4 to 10.5), one pixel gives smooth patterns (0.9 to 4.9 at 256 steps,
        1.2 to 6.2 at 512).
    copies : int
        Images per objective (Lucid's batch); `diversity` pushes them apart.
    patch : bool, optional
        Optimise one receptive field instead of an image: possible on a BagNet, where each unit of a
        layer and each class logit sees one patch alone. None: wherever possible.
    preprocess : callable, optional
        The model's input preprocessing, applied to the images (pixels 0..255) inside the optimisation.
    output : int or str, optional
        The head whose logits `class_logit` reads.
    batch_size : int
        Images optimised together (objectives are split into batches of whole copies).
    seed : int
        The images' start and their random transformations: the same seed gives the same images.
    progress : bool

    Returns
    -------
    Visualization
        ``.images`` (N * copies, H, W, 3) in 0..255 and ``.values`` the objectives reached.

    Examples
    --------
    >>> import keras, numpy as np
    >>> from bagnet_keras.explain.objectives import channel, class_logit
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, padding="same", name="c"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> found = feature_visualization(model, [channel("c", 1), class_logit(0)], steps=8, progress=False)
    >>> found.images.shape, bool(found.images.min() >= 0 and found.images.max() <= 255)
    ((2, 16, 16, 3), True)
    """
    objectives = _check_objectives(objectives)
    options = _Options(steps, learning_rate, parametrization, decorrelate, transforms, copies, batch_size, seed)
    index = _head(model, objectives, output)
    patch_size = _patch_size(model, objectives, index, patch)
    options.transforms = ("shift" if patch_size else "full") if transforms is None else ("full" if transforms else "")
    size = (patch_size, patch_size) if patch_size else _image_size(model, size)
    image = _Image(parametrization, size, bool(decorrelate))
    per_batch = max(1, options.batch_size // options.copies)
    chunks = [objectives[i : i + per_batch] for i in range(0, len(objectives), per_batch)]
    shapes = _layer_shapes(model, _layer_paths(objectives), size, preprocess)  # one pass serves every batch
    bar = tqdm(total=len(chunks) * options.steps, desc="feature visualisation", disable=not progress)
    images, values = [], []
    for number, chunk in enumerate(chunks):
        problem = _Problem(model, chunk, options.copies, shapes, bool(patch_size), preprocess, index)
        first = number * per_batch * options.copies
        made, reached = _optimise(model, problem, image, options, first, bar)
        images.append(made)
        values.append(reached)
    bar.close()
    return Visualization(np.concatenate(images), np.concatenate(values), objectives, bool(patch_size))


@dataclass
class _Options:
    steps: int
    learning_rate: float
    parametrization: str
    decorrelate: bool
    transforms: bool | str | None  # after the call: "full", "shift" (a patch's) or "" (none)
    copies: int
    batch_size: int
    seed: int

    def __post_init__(self):
        self.steps = check_positive_int(self.steps, "steps")
        self.learning_rate = check_number(self.learning_rate, "learning_rate", low=0, low_open=True)
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"`parametrization` must be one of {PARAMETRIZATIONS}. Received: {self.parametrization!r}")
        if self.transforms not in (None, True, False):
            raise ValueError(f"`transforms` must be True, False or None (automatic). Received: {self.transforms!r}")
        self.copies = check_positive_int(self.copies, "copies")
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.seed = check_int(self.seed, "seed", low=0)


def _optimise(model, problem: _Problem, image: _Image, options: _Options, first: int, bar) -> tuple:
    """Adam ascent on one batch's parameters; the images (0..255) and their objectives, untransformed."""
    n = len(problem.groups)
    streams = [np.random.default_rng([options.seed, first + i]) for i in range(n)]
    params = np.stack([image.initial(rng) for rng in streams])
    step = _step_function(model, problem, image, bool(options.transforms))
    moment, square = np.zeros_like(params), np.zeros_like(params)
    identity = np.tile(affine_matrix(image.size, 1.0, 0.0, (0, 0)), (n, 1))
    beta1, beta2 = 0.9, 0.999
    for t in range(1, options.steps + 1):
        matrices = identity
        if options.transforms:
            draw = random_shift if options.transforms == "shift" else random_transforms
            matrices = np.stack([draw(rng, image.size) for rng in streams])
        _, grad = step(params, matrices, *problem.arrays())
        grad = keras.ops.convert_to_numpy(grad)
        moment = beta1 * moment + (1 - beta1) * grad
        square = beta2 * square + (1 - beta2) * grad * grad
        corrected = moment / (1 - beta1**t), square / (1 - beta2**t)
        params = (params + options.learning_rate * corrected[0] / (np.sqrt(corrected[1]) + 1e-8)).astype("float32")
        bar.update(1)
    # The identity map reads every pixel with weights 1 and 0, exactly: the images as they are, no second trace.
    values, _ = step(params, identity, *problem.arrays())
    pixels = keras.ops.convert_to_numpy(image(params)) * 255.0
    return pixels.astype("float32"), keras.ops.convert_to_numpy(values).astype("float64")


def _check_objectives(objectives) -> list[Objective]:
    if isinstance(objectives, Objective):
        objectives = [objectives]
    objectives = list(objectives) if isinstance(objectives, (list, tuple)) else objectives
    if not isinstance(objectives, list) or not objectives or not all(isinstance(o, Objective) for o in objectives):
        raise ValueError(
            "`objectives` must be an Objective or a non-empty list of them (channel, unit, direction, class_logit, "
            f"diversity from bagnet_keras.explain.objectives). Received: {objectives!r}"
        )
    return objectives


def _head(model: keras.Model, objectives: list[Objective], output) -> int:
    """The one output whose logits the objectives read."""
    named = {o for objective in objectives for o in objective.outputs() if o is not None}
    if output is not None:
        named.add(output)
    indices = {output_index(model, o) for o in named} or {output_index(model, None)}
    if len(indices) > 1:
        raise ValueError(
            f"The objectives read the logits of several outputs ({sorted(map(str, named))}); visualise one head "
            "per call."
        )
    return indices.pop()


def _patch_size(model: keras.Model, objectives: list[Objective], index: int, patch: bool | None) -> int | None:
    """The receptive field to optimise alone (a BagNet's), or None for a whole image."""
    from bagnet_keras.core.geometry import layer_geometry
    from bagnet_keras.explain.evidence import evidence_for

    if patch is not None and not isinstance(patch, bool):
        raise ValueError(f"`patch` must be True, False or None (decide). Received: patch={patch!r}")
    if patch is False:
        return None
    try:
        evidence = evidence_for(model, index)
        _check_unpadded(evidence.features)
        sizes = [layer_geometry(model, p).patch_size for o in objectives for p in o.layers()]
    except ValueError as error:
        if patch:
            raise ValueError(f"patch=True needs a BagNet, whose units see one patch alone: {error}") from None
        return None
    return max(sizes + [evidence.geometry.patch_size] * _reads_logits(objectives))


def _check_unpadded(features: keras.Model) -> None:
    """A patch alone gives the activations it gives inside an image only where no layer pads."""
    from bagnet_keras.core.graph import iter_layers

    for path, layer in iter_layers(features):
        if getattr(layer, "padding", "valid") != "valid" or isinstance(layer, keras.layers.ZeroPadding2D):
            raise ValueError(f"layer {path!r} pads its input, so a patch alone is not what it sees in an image")


def _image_size(model: keras.Model, size) -> tuple[int, int]:
    if size is None:
        shape = tuple(model.inputs[0].shape[1:3])
        if len(shape) != 2 or None in shape:
            raise ValueError(f"Model {model.name!r} takes images of any size; pass size=(height, width).")
        return int(shape[0]), int(shape[1])
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ValueError(f"`size` must be (height, width). Received: size={size!r}") from None
    return check_int(height, "height", low=1), check_int(width, "width", low=1)
