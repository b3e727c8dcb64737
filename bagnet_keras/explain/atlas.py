"""What each unit of a layer responds to across a whole dataset: its strongest activations (Zeiler & Fergus 2014).

`feature_atlas` reads the data once, batch by batch, computes the chosen
layers' activations in one forward pass per batch, and keeps for every
channel ("unit") of every layer its ``k`` strongest activations over all
images and positions: a bounded top-k, so memory depends on the batch size
and the number of units, never on the number of images. Ties are broken by
position (image, then row, then column), so the result is exactly the top-k
of a brute-force sort of all positions. The `FeatureAtlas` it returns places
each activation on the input with the layer's receptive field
(`bagnet_keras.core.geometry`) and, given the data again, cuts the crops and
computes the deconvnet / guided-backprop projection of each single
activation (Zeiler & Fergus Fig. 2: the projection beside the crop).

Each channel's top-k over a batch is taken inside the traced forward pass, so
only ``k`` values per channel leave the model, and merged into the running
top-k (`bagnet_keras.core.topk`). With a ``folder`` the pass commits each
batch's increment (`bagnet_keras.core.stream.stream_state`): a killed run
resumes to exactly the uninterrupted result, and shards of the data
(``shard=(i, n)``) are joined by `merge_atlas`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from bagnet_keras.core.backend import top_k, wide_float
from bagnet_keras.core.geometry import layer_geometry, position_boxes
from bagnet_keras.core.graph import find_layer, layer_tap, run_graph, traced
from bagnet_keras.core.inputs import check_images
from bagnet_keras.core.stream import merged_pass, model_arguments, numbered_batches, stream_state
from bagnet_keras.core.topk import LayerTops, entries
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.guided import guided_backprop


def spatial_layers(model: keras.Model, layers, spatial: bool = True) -> dict[str, keras.layers.Layer]:
    """``{path: layer}`` of layers named or pathed in ``model``; with ``spatial``, only 4-D outputs are allowed.

    Examples
    --------
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")])
    >>> list(spatial_layers(model, "conv"))
    ['conv']
    """
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ValueError("`layers` names no layer; give e.g. layers=['conv5_block3_out'].")
    found = {}
    for name in layers:
        path, layer = find_layer(model, name)
        if isinstance(layer, keras.Model):
            raise ValueError(f"{name!r} is a nested model, not a layer; name one of its layers.")
        shape = tuple(layer.output.shape)
        if spatial and len(shape) != 4:
            raise ValueError(
                f"Layer {path!r} has output shape {shape}; the atlas needs a spatial (batch, height, "
                "width, channels) output, e.g. a convolution's."
            )
        found[path] = layer
    return found


def _layer_function(
    model: keras.Model, layers: Mapping[str, keras.layers.Layer], key: tuple, reduce: Callable | None = None
) -> Callable:
    """``f(x) -> [reduce(activations) of each layer]``, one traced pass through the model (nested models entered)."""
    targets = list(layers.values())

    def build(model_ref):
        def forward(x):
            tap, taps = layer_tap(targets)
            run_graph(model_ref(), x, tap)
            return [taps[t] if reduce is None else reduce(taps[t]) for t in targets]

        return forward

    return traced(model, (*key, *(id(t) for t in targets)), build)


def activation_function(model: keras.Model, layers: Mapping[str, keras.layers.Layer]) -> Callable:
    """``f(x) -> [activations of each layer]``, one pass through the model (``layers``: `spatial_layers`).

    Examples
    --------
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")])
    >>> forward = activation_function(model, spatial_layers(model, ["conv"]))
    >>> [tuple(a.shape) for a in forward(np.zeros((3, 8, 8, 1), "float32"))]
    [(3, 6, 6, 2)]
    """
    return _layer_function(model, layers, ("atlas",))


def _candidate_function(model: keras.Model, layers: Mapping[str, keras.layers.Layer], k: int) -> Callable:
    """``f(x) -> [(values, positions, sums, grid) of each layer]``: each channel's top-k over the batch, in the graph.

    The batch's activations never leave the device: per channel the ``k`` largest values and their
    positions in the batch's flat order (ties go to the earlier position, as the exact top-k needs), the
    channel's sum (float64 where the backend has it) and the layer's grid (h, w).
    """
    ops = keras.ops

    def reduce(acts):
        acts = ops.cast(acts, "float32")
        per_channel = ops.transpose(ops.reshape(acts, (-1, acts.shape[-1])))  # (C, positions in the batch)
        values, position = top_k(per_channel, k)
        sums = ops.sum(ops.cast(acts, wide_float()), axis=(0, 1, 2))
        return values, position, sums, ops.convert_to_tensor(ops.shape(acts)[1:3])

    return _layer_function(model, layers, ("atlas-top", k), reduce)


def image_batches(data, batch_size: int, preprocess: Callable | None = None) -> Iterable[np.ndarray]:
    """Images (B, H, W, C) in the data's order, preprocessed: `numbered_batches`, the one batching path.

    Examples
    --------
    >>> [len(x) for x in image_batches(np.zeros((5, 2, 2, 1)), 2, preprocess=lambda x: x + 1)]
    [2, 2, 1]
    """
    for _, x, _ in numbered_batches(data, batch_size, lambda index: True):
        yield np.asarray(preprocess(x), dtype="float32") if preprocess is not None else x


def geometry_or_none(model: keras.Model, path: str):
    """The layer's receptive field, or None where a layer on the way is not understood.

    Examples
    --------
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")])
    >>> geometry_or_none(model, "conv")
    Geometry(patch_size=3, stride=1, offset=0)
    """
    try:
        return layer_geometry(model, path)
    except ValueError:
        return None


@dataclass
class FeatureAtlas:
    """The strongest activations of every unit of some layers over a dataset (`feature_atlas`).

    Attributes
    ----------
    layers : list of str
        Layer paths, in the order given.
    units : dict layer -> ndarray
        The channels shown per layer (all, the ones asked for, or the strongest by mean activation).
    values : dict layer -> ndarray (U, k)
        Their strongest activations, strongest first (-inf where the data had fewer than k positions).
    image_index, row, column : dict layer -> ndarray (U, k)
        Where each was: the image (counted in the order the data yields them) and the position on the
        layer's output grid.
    mean : dict layer -> ndarray (C,)
        Every channel's mean activation over all images and positions.
    geometry : dict layer -> Geometry
        The layer's receptive field on the input (None where a layer on the way is not understood).
    n_images : int
    k : int
    """

    layers: list
    units: dict
    values: dict
    image_index: dict
    row: dict
    column: dict
    mean: dict
    geometry: dict
    n_images: int
    k: int
    image_shape: tuple = ()
    _model: keras.Model | None = field(default=None, repr=False)

    def path(self, layer: str) -> str:
        """The atlas's name of ``layer``: its path, also found from the name alone."""
        matches = [p for p in self.layers if p == layer or p.split("/")[-1] == layer]
        if len(matches) != 1:
            raise ValueError(f"The atlas has no layer {layer!r}; it has {self.layers}.")
        return matches[0]

    def _unit(self, layer: str, unit: int) -> int:
        where = np.flatnonzero(self.units[layer] == unit)
        if not len(where):
            held = self.units[layer].tolist()
            raise ValueError(
                f"Unit {unit!r} of layer {layer!r} is not in the atlas; it holds units "
                f"{held[:20]}{' ...' if len(held) > 20 else ''}."
            )
        return int(where[0])

    def top(self, layer: str, unit: int) -> list[tuple[int, int, int, float]]:
        """The ``(image_index, row, column, activation)`` of the unit's strongest activations, strongest first.

        Examples
        --------
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv")])
        >>> x = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype("float32")
        >>> atlas = feature_atlas(model, x, ["conv"], k=3, progress=False)
        >>> len(atlas.top("conv", 1)), atlas.top("conv", 1)[0][3] >= atlas.top("conv", 1)[1][3]
        (3, True)
        """
        layer = self.path(layer)
        u = self._unit(layer, unit)
        return entries(self.values[layer][u], self.image_index[layer][u], self.row[layer][u], self.column[layer][u])

    def boxes(self, layer: str, unit: int) -> np.ndarray:
        """(k, 4) ``top, left, bottom, right`` of each activation's receptive field on the input (may pass its edge)."""
        layer = self.path(layer)
        g = self.geometry[layer]
        if g is None:
            raise ValueError(f"The receptive field of layer {layer!r} is not known; its crops cannot be placed.")
        u = self._unit(layer, unit)
        return position_boxes(g, self.row[layer][u], self.column[layer][u])

    def examples(
        self,
        data,
        layer: str,
        unit: int,
        mode: str = "guided",
        preprocess: Callable | None = None,
        batch_size: int = 32,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crops of the input and projections of the single activations, both (k, p, p, C), zero outside the image.

        ``data`` is the atlas's data again (it is read up to the last image needed); the projection is
        the gradient of that one activation with respect to the input through modified ReLUs (``mode``:
        ``"guided"`` backpropagation or the ``"deconvnet"``, `bagnet_keras.explain.guided.guided_backprop`).
        """
        layer = self.path(layer)
        hits = self.top(layer, unit)
        wanted = sorted({h[0] for h in hits})
        images = gather(data, wanted, batch_size, preprocess)
        x = np.stack([images[h[0]] for h in hits])
        position = np.array([(h[1], h[2]) for h in hits])
        projection = guided_backprop(
            self._model, x, mode=mode, layer=layer, unit=int(unit), position=position, batch_size=batch_size
        )
        boxes = self.boxes(layer, unit)[: len(hits)]
        return crop_boxes(x, boxes), crop_boxes(projection, boxes)


def gather(data, indices: Sequence[int], batch_size: int = 32, preprocess: Callable | None = None) -> dict:
    """``{index: image}`` of the images at ``indices`` (in the data's order).

    An array-like (an array, a memory map, `data_tools.loader.ImageFiles`) is read at those indices alone,
    so showing a unit's top images costs ``k`` reads whatever the dataset's size; an iterable of batches
    is read up to the last image needed.

    Examples
    --------
    >>> x = np.arange(5.0).reshape(5, 1, 1, 1)
    >>> {i: float(image[0, 0, 0]) for i, image in gather(x, [3, 1]).items()}
    {1: 1.0, 3: 3.0}
    """
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return {}
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        outside = [i for i in wanted if not 0 <= i < len(data)]
        if outside:
            raise ValueError(
                f"The data holds {len(data)} images; images {outside[:5]} are not in it. Give the atlas's data."
            )
        found = {}
        for start in range(0, len(wanted), batch_size):
            chosen = wanted[start : start + batch_size]
            x = np.stack([np.asarray(data[i : i + 1], dtype="float32")[0] for i in chosen])
            if preprocess is not None:
                x = np.asarray(preprocess(x), dtype="float32")
            found.update(zip(chosen, x, strict=True))
        return found
    found, start = {}, 0
    for x in image_batches(data, batch_size, preprocess):
        for i in set(wanted).intersection(range(start, start + len(x))):
            found[i] = x[i - start]
        start += len(x)
        if len(found) == len(wanted):
            break
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"The data holds {start} images; images {missing[:5]} are not in it. Give the atlas's data.")
    return found


def example_crops(
    data, geometry, examples: Sequence[tuple], preprocess: Callable | None = None, batch_size: int = 32
) -> np.ndarray:
    """The input pixels of each ``(image_index, row, column, ...)`` position's receptive field, (n, p, p, C).

    ``data`` is read again at those images alone (`gather`); ``geometry`` places the layer's positions.

    Examples
    --------
    >>> from bagnet_keras.core.geometry import Geometry
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> example_crops(x, Geometry(2, 2, 0), [(0, 1, 0, 9.0)])[0, ..., 0].tolist()
    [[8.0, 9.0], [12.0, 13.0]]
    """
    images = gather(data, sorted({e[0] for e in examples}), batch_size, preprocess)
    return crop_boxes(np.stack([images[e[0]] for e in examples]), example_boxes(geometry, examples))


def example_boxes(geometry, examples: Sequence[tuple]) -> np.ndarray:
    """(n, 4) ``top, left, bottom, right`` on the input of each ``(image_index, row, column, ...)`` position."""
    rows, columns = np.array([e[1] for e in examples], dtype=int), np.array([e[2] for e in examples], dtype=int)
    return position_boxes(geometry, rows, columns).reshape(-1, 4)


def crop_boxes(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Each image's box (``top, left, bottom, right``, all of one size), zero-padded where it passes the image's edge.

    Examples
    --------
    >>> crop_boxes(np.ones((1, 4, 4, 1)), np.array([[-1, 2, 2, 5]]))[0, ..., 0].tolist()
    [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    """
    n, h, w, c = images.shape
    size = int(boxes[0, 2] - boxes[0, 0]) if len(boxes) else 0
    out = np.zeros((n, size, size, c), dtype=images.dtype)
    for i, (top, left, bottom, right) in enumerate(boxes):
        t, lft, b, r = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
        if t < b and lft < r:
            out[i, t - top : b - top, lft - left : r - left] = images[i, t:b, lft:r]
    return out


def _atlas_of(state: LayerTops, model: keras.Model, layers: Mapping, wanted: dict, k: int) -> FeatureAtlas:
    """The `FeatureAtlas` of a finished pass: the units chosen, their top-k placed on the layers' grids."""
    atlas = FeatureAtlas(
        layers=list(layers),
        units={},
        values={},
        image_index={},
        row={},
        column={},
        mean={},
        geometry={},
        n_images=state.n_images,
        k=k,
        image_shape=state.image_shape,
        _model=model,
    )
    for path in layers:
        counted = state.counted[path] or np.nan  # NaN means in a shard without batches
        atlas.mean[path] = state.sums[path] / counted
        picked = wanted[path]
        if isinstance(picked, int):  # the strongest N by mean activation
            picked = np.argsort(-atlas.mean[path], kind="stable")[:picked]
        picked = np.asarray(picked, dtype=int)
        best, grid = state.best[path], state.grids.get(path, (1, 1))  # no grid in a shard without batches
        atlas.units[path], atlas.values[path] = picked, best.values[picked]
        atlas.image_index[path], atlas.row[path], atlas.column[path] = best.positions(grid, picked)
        atlas.geometry[path] = geometry_or_none(model, path)
    return atlas


def feature_atlas(
    model: keras.Model,
    data,
    layers: str | Sequence[str],
    *,
    units: int | Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    k: int = 9,
    batch_size: int = 32,
    preprocess: Callable | None = None,
    progress: bool = True,
    folder: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
) -> FeatureAtlas:
    """The ``k`` strongest activations of every unit of ``layers`` over a dataset of any size, streamed.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential; layers inside nested models (a transfer model's backbone) are found
        by name or path.
    data : array (N, H, W, C), a lazy array (memory map, `data_tools.loader.ImageFiles`) or an iterable
        of batches (a tf.data dataset of images or of ``(images, labels)``)
        Preprocessed as the model expects, or raw with ``preprocess``.
    layers : str or sequence of str
        Layers with spatial outputs.
    units : None, int, sequence of ints, or mapping layer -> sequence
        None: every channel; an int N: the N channels with the largest mean activation (decided after
        the whole dataset); a sequence: those channels of every layer; a mapping: per layer.
    k : int
        Activations kept per unit.
    batch_size : int
        Images per forward pass (array data); it bounds the memory with the units' count.
    preprocess : callable, optional
        Applied to each batch as it is read.
    progress : bool
    folder : path, optional
        Commit each batch's results there as it goes (`bagnet_keras.core.stream.PartStore`: a few
        kilobytes per batch, its entries that entered the top-k). The same call after a kill resumes
        and ends with exactly the atlas of an uninterrupted run; a call with other arguments stops
        with an error.
    shard : (i, n), optional
        Measure only the batches whose index is i modulo n (needs ``folder``), so that n processes
        share the data. The atlas returned is that of the shard's batches (image indices still count
        over the whole data); `merge_atlas` joins the n folders into the atlas of all the data.

    Returns
    -------
    FeatureAtlas

    Examples
    --------
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
    ...                           keras.layers.Conv2D(6, 3, activation="relu", name="c2")])
    >>> x = np.random.default_rng(0).normal(size=(10, 12, 12, 3)).astype("float32")
    >>> atlas = feature_atlas(model, x, ["c1", "c2"], units=2, k=4, batch_size=3, progress=False)
    >>> atlas.values["c2"].shape, atlas.geometry["c2"]
    ((2, 4), Geometry(patch_size=5, stride=1, offset=0))
    """
    chosen = spatial_layers(model, layers)
    if isinstance(units, Mapping):
        units = {find_layer(model, name)[0]: value for name, value in units.items()}
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    channels = {path: int(layer.output.shape[-1]) for path, layer in chosen.items()}
    wanted = _check_units(units, channels)
    candidates = _candidate_function(model, chosen, k)
    state = LayerTops(channels, k, lambda x: candidates(check_images(x)))
    arguments = (
        None
        if folder is None
        else model_arguments("atlas", model, preprocess, layers=list(chosen), k=k, batch_size=batch_size)
    )
    stream_state(
        state,
        data,
        batch_size,
        preprocess=preprocess,
        folder=folder,
        arguments=arguments,
        shard=shard,
        command="atlas",
        progress=progress,
        desc="the atlas",
    )
    return _atlas_of(state, model, chosen, wanted, k)


def merge_atlas(
    model: keras.Model,
    folders: Sequence[str | os.PathLike],
    *,
    units: int | Sequence[int] | Mapping[str, Sequence[int]] | None = None,
) -> FeatureAtlas:
    """The atlas of all the data from the folders of finished `feature_atlas` shards (or of one finished run).

    Equal to the atlas of one unsharded run, exactly: each shard committed the entries of its batches
    that entered its top-k, and an entry of the top-k over all the data is among them.

    Parameters
    ----------
    model : keras.Model
        The model the shards ran (its weights are checked against theirs).
    folders : sequence of paths
        The ``folder`` of every shard, each once.
    units : as for `feature_atlas`

    Examples
    --------
    >>> import keras, numpy as np, os, tempfile
    >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, name="conv")])
    >>> x = np.random.default_rng(0).normal(size=(9, 8, 8, 1)).astype("float32")
    >>> root = tempfile.mkdtemp()
    >>> folders = [os.path.join(root, f"shard-{i}") for i in range(2)]
    >>> for i, folder in enumerate(folders):
    ...     _ = feature_atlas(model, x, ["conv"], k=3, batch_size=2, folder=folder, shard=(i, 2), progress=False)
    >>> merge_atlas(model, folders).top("conv", 0) == feature_atlas(model, x, ["conv"], k=3, progress=False).top(
    ...     "conv", 0)
    True
    """
    store, _ = merged_pass(folders, "atlas", model)
    arguments = store.arguments
    chosen = spatial_layers(model, arguments["layers"])
    if isinstance(units, Mapping):
        units = {find_layer(model, name)[0]: value for name, value in units.items()}
    channels = {path: int(layer.output.shape[-1]) for path, layer in chosen.items()}
    wanted = _check_units(units, channels)
    state = LayerTops(channels, arguments["k"])
    for index in store.indices():
        state.absorb(*store.read(index))
    return _atlas_of(state, model, chosen, wanted, arguments["k"])


def _check_units(units, channels: dict[str, int]) -> dict:
    """Per layer: None -> every channel, an int -> that many strongest (chosen at the end), or the list asked."""

    def one(value, path):
        c = channels[path]
        if value is None:
            return np.arange(c)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 1 <= value <= c:
                raise ValueError(
                    f"`units` asks for the {value} strongest channels of {path!r}, which has {c}; give 1..{c}."
                )
            return int(value)
        listed = list(value)
        bad = [u for u in listed if isinstance(u, bool) or not isinstance(u, (int, np.integer)) or not 0 <= u < c]
        if bad or not listed:
            raise ValueError(f"`units` of {path!r} must be channel indices in [0, {c}). Received: {bad or listed}")
        return listed

    if isinstance(units, Mapping):
        unknown = [name for name in units if name not in channels]
        if unknown:
            raise ValueError(f"`units` names layers {unknown} that are not in `layers` {list(channels)}.")
        return {path: one(units.get(path), path) for path in channels}
    return {path: one(units, path) for path in channels}
