"""BagNet class evidence: exact per-patch logits on the native grid or at every pixel.

A BagNet's logit is the mean, over all positions, of the linear class
evidence of one q x q patch, so its heatmap is the model itself, not an
estimate. `evidence_map` returns it on the native grid (stride 8: one value
per output position of the network) or at full resolution (stride 1: the
authors' algorithm, the logit of the patch centred on every pixel with zero
padding). The stride-1 map is computed densely: the network runs once over
the padded image with every stride turned into a dilation of the layers
after it (*algorithme à trous*), so each patch's computation is shared with
its neighbours instead of repeated 50,176 times. `top_patches` finds the
most informative patches of a class across a dataset.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from bagnet_keras.core.backend import compile_function, conv
from bagnet_keras.core.batches import batches
from bagnet_keras.core.geometry import MERGE_LAYERS, Geometry, position_boxes, receptive_field, upsample
from bagnet_keras.core.graph import compiled, run_graph
from bagnet_keras.core.inputs import (
    check_classes,
    check_images,
    classes_per_image,
    in_batches,
    output_index,
)
from bagnet_keras.core.layers import StemConv
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.models.bagnet import bagnet_top

#: Layers that act on each position alone, so they run unchanged on a dilated (dense) map.
_POINTWISE = (
    keras.layers.InputLayer,
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    *MERGE_LAYERS,
    keras.layers.Dropout,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Identity,
)

#: Positions of the dense map computed per call; bounds memory (features are
#: positions x 2048 floats) at a few hundred MB for BagNet-33.
_TILE_POSITIONS = 16384


@dataclass
class EvidenceMap:
    """Class evidence maps of a BagNet with the geometry to place them on the input.

    Attributes
    ----------
    maps : ndarray
        (N, H', W') from `evidence_map` (one class per image) or
        (N, H', W', K) from `evidence_maps` (K classes for every image).
    class_index : ndarray
        (N,) the class of each image's map, or (K,) the classes of the last axis.
    logits : ndarray
        (N, classes) the model's logits for the images (the mean of the
        native-grid evidence).
    patch_size, stride, offset : int
        Position (i, j) of a map is the evidence of the input patch whose top
        left corner is ``(offset + stride * i, offset + stride * j)``, of side
        ``patch_size``. For stride 1 the offset is negative: the patch is
        centred on pixel (i, j) and the image is zero-padded.
    input_size : tuple
        (H, W) of the images.
    """

    maps: np.ndarray
    class_index: np.ndarray
    logits: np.ndarray
    patch_size: int
    stride: int
    offset: int
    input_size: tuple

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.patch_size, self.stride, self.offset)

    def boxes(self) -> np.ndarray:
        """(H', W', 4) integer boxes ``(top, left, bottom, right)`` (bottom/right exclusive) of every position.

        Boxes of a stride-1 map reach beyond the image by up to half a patch
        (that part of the patch was zero padding).
        """
        h, w = self.maps.shape[1:3]
        rows, columns = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        return position_boxes(Geometry(self.patch_size, self.stride, self.offset), rows, columns)

    def upsample(self) -> np.ndarray:
        """The maps placed on the input pixels: (N, H, W[, K]).

        Each position is drawn at the centre of its patch and interpolated
        linearly in between (see `bagnet_keras.core.geometry.placement_matrix`);
        a stride-1 map is returned as it is.
        """
        if self.stride == 1:
            return self.maps
        return upsample(self.maps, self.input_size, self.geometry)


class _BagNetEvidence:
    """The compiled pieces to compute evidence for one BagNet (cached per model)."""

    def __init__(self, model: keras.Model, output: int | str | None):
        pool, logits = bagnet_top(model, output)
        self.features = keras.Model(model.inputs[0], pool.input, name=model.name + "_features")
        self.kernel = logits.kernel
        self.bias = logits.bias
        self.n_classes = int(logits.units)
        self.geometry = receptive_field(self.features)
        self._dense_fn = None

    def native(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return in_batches(self.features.predict_on_batch, batch_size, x)

    def project(self, features, classes: np.ndarray):
        kernel = ops.take(self.kernel, classes, axis=1)
        bias = ops.take(self.bias, classes, axis=0)
        # A mixed policy's float16 features meet its float32 variables, and PyTorch's einsum does not promote.
        # Converted before the cast: Keras 3.15's PyTorch cast of a NumPy bfloat16 array keeps bfloat16.
        features = ops.cast(ops.convert_to_tensor(features), self.kernel.dtype)
        return ops.einsum("nhwc,ck->nhwk", features, kernel) + bias

    def logits(self, features: np.ndarray) -> np.ndarray:
        pooled = features.mean(axis=(1, 2))
        return pooled @ keras.ops.convert_to_numpy(self.kernel) + keras.ops.convert_to_numpy(self.bias)

    def dense(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Stride-1 evidence (N, H, W, K) of ``classes`` for every pixel of ``x``."""
        if self._dense_fn is None:
            self._dense_fn = self._compile_dense()
        q = self.geometry.patch_size
        before = (q - 1) // 2
        padded = np.pad(x, ((0, 0), (before, q - 1 - before), (before, q - 1 - before), (0, 0)))
        n, h, w = x.shape[:3]
        rows = max(1, min(h, _TILE_POSITIONS // w))
        out = np.empty((n, h, w, len(classes)), dtype="float32")
        for i in range(n):
            for top in range(0, h, rows):
                tile = padded[i : i + 1, top : top + rows + q - 1]
                out[i, top : top + rows] = keras.ops.convert_to_numpy(self._dense_fn(tile, classes))[0]
        return out

    def _compile_dense(self):
        dilation = {}
        for layer in self.features.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Cropping2D, StemConv, *_POINTWISE)):
                raise ValueError(
                    f"Cannot compute a dense evidence map through layer {layer.name!r} ({type(layer).__name__}): "
                    "only valid convolutions, crops and position-wise layers can be dilated."
                )
            if isinstance(layer, keras.layers.Conv2D) and (layer.padding != "valid" or layer.groups != 1):
                raise ValueError(
                    f"Cannot compute a dense evidence map through layer {layer.name!r}: it needs valid padding "
                    f"and groups=1 (has padding={layer.padding!r}, groups={layer.groups})."
                )
            tensor = layer.input[0] if isinstance(layer.input, list) else layer.input
            dilation[id(layer)] = receptive_field(self.features, tensor).stride

        def dilated(layer):
            d = dilation.get(id(layer), 1)
            if isinstance(layer, StemConv):
                return lambda x: ops.conv(x, layer.fused_kernel(), strides=1, padding="valid", dilation_rate=d)
            if isinstance(layer, keras.layers.Conv2D):

                def dilated_conv(x):
                    y = conv(x, layer.kernel, strides=1, padding="valid", dilation_rate=d)
                    if layer.use_bias:
                        y = y + layer.bias
                    return layer.activation(y)

                return dilated_conv
            if isinstance(layer, keras.layers.Cropping2D):
                (t, b), (left, r) = layer.cropping
                return lambda x: x[:, d * t : -d * b or None, d * left : -d * r or None]
            return layer

        def dense(tile, classes):
            return self.project(run_graph(self.features, tile, dilated), classes)

        return compile_function(dense, [*self.features.variables, self.kernel, self.bias])


def evidence_for(model: keras.Model, output: int | str | None) -> _BagNetEvidence:
    """The cached evidence computation of a BagNet's ``output`` (its feature extractor and linear head)."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model (a BagNet). Received: {type(model).__name__}")
    index = output_index(model, output)
    return compiled(model, ("evidence", index), lambda model_ref: _BagNetEvidence(model_ref(), index))


def _compute(model, images, stride, batch_size, choose, output):
    """Maps (N, H', W', K) for the classes ``choose(n_classes, logits, n)`` returns, and their context."""
    ev = evidence_for(model, output)
    q, native = ev.geometry.patch_size, ev.geometry.stride
    if isinstance(stride, bool) or stride not in (1, native):
        raise ValueError(
            f"`stride` must be {native} (the model's native grid) or 1 (every pixel). Received: stride={stride!r}"
        )
    check_positive_int(batch_size, "batch_size")
    x = check_images(images, q, channels=3)
    features = ev.native(x, batch_size)
    logits = ev.logits(features)
    classes = choose(ev.n_classes, logits, len(x))
    if stride == 1:
        maps = ev.dense(x, classes)
        geometry = Geometry(q, 1, -((q - 1) // 2))
    else:
        maps = keras.ops.convert_to_numpy(ev.project(features, classes))
        geometry = ev.geometry
    return maps, classes, logits, geometry, tuple(x.shape[1:3])


def evidence_map(
    model: keras.Model,
    images,
    class_index: int | Sequence[int] | None = None,
    *,
    stride: int = 8,
    batch_size: int = 16,
    output: int | str | None = None,
) -> EvidenceMap:
    """The class evidence of every patch of each image, for one class per image.

    Parameters
    ----------
    model : keras.Model
        A BagNet with its top (``include_top=True``), e.g. ``BagNet33()``.
    images : array (N, H, W, 3)
        Preprocessed as the model expects (`bagnet_keras.preprocess_input`),
        at least as large as the patch.
    class_index : int, sequence of N ints, or None
        The class of each image's map; ``None`` takes each image's top
        prediction; one int is used for every image.
    stride : 8 or 1
        8: the native grid, position (i, j) is the patch at (8i, 8j), its
        mean is the logit. 1: one value per pixel, the logit of the patch
        centred on that pixel, zero-padded at the borders (the authors'
        full-resolution heatmap), computed densely.
    batch_size : int
        Images per forward pass of the native grid.
    output : int or str, optional
        Which head, for models with several (``"city"``; see
        `bagnet_keras.transfer.heads.build_classifier`).

    Returns
    -------
    EvidenceMap
        ``.maps`` (N, H', W') and the geometry (``patch_size``, ``stride``,
        ``offset``); for stride 1, (H', W') = (H, W).

    Examples
    --------
    >>> import numpy as np
    >>> from bagnet_keras import BagNet, evidence_map
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=8, classes=10, classifier_activation=None)
    >>> images = np.random.default_rng(0).normal(size=(2, 64, 64, 3))
    >>> result = evidence_map(model, images, class_index=3)
    >>> result.maps.shape, result.geometry
    ((2, 4, 4), Geometry(patch_size=33, stride=8, offset=0))
    >>> bool(np.allclose(result.maps.mean(axis=(1, 2)), result.logits[:, 3], atol=1e-5))
    True
    >>> evidence_map(model, images[:1], stride=1).maps.shape
    (1, 64, 64)
    """
    per_image = None

    def choose(n_classes, logits, n):
        nonlocal per_image
        per_image = classes_per_image(class_index, n, n_classes)
        if per_image is None:
            per_image = logits.argmax(axis=1)
        return np.unique(per_image)

    maps, classes, logits, geometry, size = _compute(model, images, stride, batch_size, choose, output)
    column = np.searchsorted(classes, per_image)
    maps = np.take_along_axis(maps, column[:, None, None, None], axis=3)[..., 0]
    return EvidenceMap(maps, per_image, logits, *geometry, input_size=size)


def evidence_maps(
    model: keras.Model,
    images,
    classes: Sequence[int] | None = None,
    *,
    stride: int = 8,
    batch_size: int = 16,
    output: int | str | None = None,
) -> EvidenceMap:
    """The class evidence of every patch for several classes: maps (N, H', W', K).

    Parameters
    ----------
    model : keras.Model
        A BagNet with its top.
    images : array (N, H, W, 3)
        Preprocessed as the model expects.
    classes : sequence of K ints, or None
        The classes of the last axis; ``None`` takes all of them.
    stride : 8 or 1
        As in `evidence_map`.
    batch_size : int
        Images per forward pass of the native grid.
    output : int or str, optional
        Which head, for models with several.

    Returns
    -------
    EvidenceMap
        ``.maps`` (N, H', W', K), ``.class_index`` the K classes.

    Examples
    --------
    >>> import numpy as np
    >>> from bagnet_keras import BagNet
    >>> from bagnet_keras.explain import evidence_maps
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=8, classes=10, classifier_activation=None)
    >>> evidence_maps(model, np.zeros((1, 64, 64, 3)), classes=[2, 7]).maps.shape
    (1, 4, 4, 2)
    """

    def choose(n_classes, logits, n):
        if classes is None:
            return np.arange(n_classes)
        return check_classes(classes, n_classes, "classes")

    maps, chosen, logits, geometry, size = _compute(model, images, stride, batch_size, choose, output)
    return EvidenceMap(maps, chosen, logits, *geometry, input_size=size)


@dataclass
class TopPatches:
    """The most informative patches of a class across many images, best first.

    Attributes
    ----------
    scores : ndarray (k,)
        Class evidence (logit) of each patch alone.
    image_index : ndarray (k,)
        Position of the source image in the input (counted across batches).
    boxes : ndarray (k, 4)
        ``(top, left, bottom, right)`` of each patch in its image, bottom and
        right exclusive.
    patches : ndarray (k, q, q, 3)
        The patches as the model saw them (preprocessed).
    class_index : int
    """

    scores: np.ndarray
    image_index: np.ndarray
    boxes: np.ndarray
    patches: np.ndarray
    class_index: int


def top_patches(
    model: keras.Model,
    images,
    class_index: int,
    *,
    k: int = 16,
    max_per_image: int | None = 1,
    batch_size: int = 16,
    output: int | str | None = None,
) -> TopPatches:
    """The k patches with the most evidence for a class, across a whole dataset.

    The dataset-level view of what a BagNet has learned for a class, which
    per-image heatmaps cannot give (the paper's figures of the most
    informative patches). Patches lie on the native grid, so each score is
    exactly the logit of that patch run alone.

    Parameters
    ----------
    model : keras.Model
        A BagNet with its top.
    images : array (N, H, W, 3), memory map, ImageFiles, tf.data.Dataset or iterable of batches
        Preprocessed images, read a batch at a time (`bagnet_keras.core.batches`); dataset elements may
        be ``(images, labels)``.
    class_index : int
    k : int
        Number of patches.
    max_per_image : int or None
        At most this many patches from one image (``None``: no limit; the
        overlapping neighbours of one strong patch then fill the list).
    batch_size : int
        Images per forward pass when ``images`` is an array (a dataset's batches are taken as they come).
    output : int or str, optional
        Which head, for models with several.

    Returns
    -------
    TopPatches

    Examples
    --------
    >>> import numpy as np
    >>> from bagnet_keras import BagNet
    >>> from bagnet_keras.explain import top_patches
    >>> model = BagNet(blocks=(1, 1, 1, 1), base_width=8, classes=10, classifier_activation=None)
    >>> images = np.random.default_rng(0).normal(size=(6, 48, 48, 3))
    >>> best = top_patches(model, images, class_index=3, k=4)
    >>> best.patches.shape, sorted(set(best.image_index)) == sorted(best.image_index)
    ((4, 33, 33, 3), True)
    """
    check_positive_int(k, "k")
    check_positive_int(batch_size, "batch_size")
    if max_per_image is not None:
        check_positive_int(max_per_image, "max_per_image")
    class_index = int(check_classes(class_index, evidence_for(model, output).n_classes, "class_index")[0])
    per_image = k if max_per_image is None else min(k, max_per_image)
    best: list = []  # (score, -order, image, box, patch): a min-heap of the k best so far
    seen = order = 0
    for _, batch, _ in batches(images, batch_size):
        result = evidence_map(model, batch, class_index=class_index, batch_size=batch_size, output=output)
        boxes = result.boxes().reshape(-1, 4)
        for n, flat in enumerate(result.maps.reshape(len(batch), -1)):
            for position in np.argsort(flat)[::-1][:per_image]:
                top, left, bottom, right = boxes[position]
                order += 1  # ties keep the earlier patch, and never compare arrays
                item = (float(flat[position]), -order, seen + n, boxes[position], batch[n, top:bottom, left:right])
                if len(best) < k:
                    heapq.heappush(best, item)
                elif item[0] > best[0][0]:
                    heapq.heapreplace(best, item)
        seen += len(batch)
    if not best:
        raise ValueError("`images` is empty: no patches to rank.")
    ranked = sorted(best, key=lambda item: (-item[0], -item[1]))
    return TopPatches(
        scores=np.array([item[0] for item in ranked], dtype="float32"),
        image_index=np.array([item[2] for item in ranked]),
        boxes=np.stack([item[3] for item in ranked]),
        patches=np.stack([item[4] for item in ranked]).astype("float32"),
        class_index=class_index,
    )
