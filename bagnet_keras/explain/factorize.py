"""A layer's activations factorised into a few groups of channels, as in "The Building Blocks of Interpretability".

`factorize` fits scikit-learn's non-negative matrix factorisation to a
layer's activations at every position of a sample of the data
(positions x channels ~= W x H, H: n groups x channels), then streams the
whole data once and keeps each group's ``k`` strongest positions (the
atlas's exact top-k, `bagnet_keras.explain.atlas`). `LayerGroups` gives each
group's spatial map on any image (W of its positions) and its attribution
to each class logit: gradient x activation of the layer, split between the
groups by each group's share of every activation's reconstruction, so that
the groups' attributions add up exactly to the layer's gradient x activation
(Olah et al. attribute W_g H_g x gradient, which misses the reconstruction
error).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from bagnet_keras.core.inputs import check_images, in_batches, n_classes_of, output_index
from bagnet_keras.core.stream import digest, merged_pass, model_arguments, stream_state
from bagnet_keras.core.topk import TopK, entries
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.atlas import (
    activation_function,
    example_crops,
    geometry_or_none,
    image_batches,
    spatial_layers,
)
from bagnet_keras.explain.cam import layer_gradients


@dataclass
class LayerGroups:
    """``n`` groups of a layer's channels (`factorize`): what each responds to and what it does for each class.

    Attributes
    ----------
    layer : str
        The layer's path.
    components : ndarray (n, C) float64
        Each group's non-negative weights of the channels (NMF's H).
    values, image_index, row, column : ndarray (n, k)
        Each group's strongest positions over the data (its W value there), strongest first.
    geometry : Geometry or None
        The layer's receptive field, to place the positions on the input.
    n_images : int
    """

    layer: str
    components: np.ndarray
    values: np.ndarray
    image_index: np.ndarray
    row: np.ndarray
    column: np.ndarray
    geometry: object
    n_images: int
    max_iter: int = 500
    _model: keras.Model | None = field(default=None, repr=False)

    def top(self, group: int) -> list[tuple[int, int, int, float]]:
        """``(image_index, row, column, value)`` of the group's strongest positions, strongest first."""
        return entries(self.values[group], self.image_index[group], self.row[group], self.column[group])

    def crops(
        self, data, group: int, count: int | None = None, preprocess: Callable | None = None, batch_size: int = 32
    ) -> np.ndarray:
        """The input pixels of the group's ``count`` strongest positions (all kept, by default), strongest first."""
        if self.geometry is None:
            raise ValueError(f"The receptive field of layer {self.layer!r} is not known; its crops cannot be placed.")
        return example_crops(data, self.geometry, self.top(group)[:count], preprocess, batch_size)

    def transform(self, activations: np.ndarray) -> np.ndarray:
        """(N, h, w, n) each group's weight at every position of the layer's activations (N, h, w, C)."""
        from sklearn.decomposition import non_negative_factorization

        n, h, w, c = activations.shape
        flat = np.maximum(activations.reshape(-1, c), 0).astype("float64")
        # NMF.transform's own computation: W for the fixed H, from the components alone (a merge has no fit)
        weights, _, _ = non_negative_factorization(
            flat, H=self.components, n_components=len(self.components), update_H=False, max_iter=self.max_iter
        )
        return weights.reshape(n, h, w, -1).astype("float32")

    def maps(self, images, batch_size: int = 32) -> np.ndarray:
        """(N, h, w, n) the groups' spatial maps on ``images`` (preprocessed as the model expects)."""
        forward = activation_function(self._model, spatial_layers(self._model, [self.layer]))
        return in_batches(
            lambda batch: self.transform(keras.ops.convert_to_numpy(forward(batch)[0])),
            batch_size,
            check_images(images),
        )

    def attribution(
        self,
        images,
        class_index=None,
        output: int | str | None = None,
        batch_size: int = 32,
        spatial: bool = False,
    ) -> np.ndarray:
        """(N, K, n) each group's attribution to each class logit (K: every class, or the one per image given).

        Gradient x activation of the layer, summed over positions and channels, split between the
        groups by their share of each activation's reconstruction (W_pg H_gc / sum_g W_pg H_gc; evenly
        where the reconstruction is 0): the groups add up to the layer's total for every image and class.
        With ``spatial``, (N, K, h, w, n): the same per position of the layer's grid (Building Blocks'
        spatial attribution), summed over channels only.
        """
        x = check_images(images)
        index = output_index(self._model, output)
        if class_index is None:
            classes = list(range(n_classes_of(self._model, index)))
        else:
            classes = [class_index] if np.ndim(class_index) == 0 else [np.asarray(class_index)]
        out = []
        for start in range(0, len(x), batch_size):  # memory: one batch's activations and gradients
            xb = x[start : start + batch_size]
            per_class = []
            for cls in classes:
                chosen = np.broadcast_to(cls, len(x))[start : start + batch_size]
                a, g, _ = layer_gradients(
                    self._model, xb, chosen, layer=self.layer, output=index, target="logit", batch_size=batch_size
                )
                per_class.append(self._split(a, g, spatial))
            out.append(np.stack(per_class, axis=1))
        return np.concatenate(out)

    def _split(self, activations: np.ndarray, gradients: np.ndarray, spatial: bool = False) -> np.ndarray:
        n_img, h, w, c = activations.shape
        weights = self.transform(activations).reshape(n_img, h * w, -1)  # (N, P, n)
        parts = weights[..., :, None] * self.components[None, None]  # (N, P, n, C)
        total = parts.sum(axis=2, keepdims=True)
        share = np.where(total > 0, parts / np.where(total > 0, total, 1), 1.0 / parts.shape[2])
        contribution = (activations * gradients).reshape(n_img, h * w, 1, c)
        per_position = (share * contribution).sum(axis=3)  # (N, P, n)
        return per_position.reshape(n_img, h, w, -1) if spatial else per_position.sum(axis=1)


def factorize(
    model: keras.Model,
    data,
    layer: str,
    *,
    n_groups: int = 6,
    sample_images: int = 256,
    k: int = 9,
    batch_size: int = 32,
    preprocess: Callable | None = None,
    seed: int = 0,
    progress: bool = True,
    folder: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
) -> LayerGroups:
    """Non-negative matrix factorisation of a layer's activations into ``n_groups`` groups, and their top positions.

    Parameters
    ----------
    model : keras.Model
    data : array, lazy array or iterable of batches
        As for `bagnet_keras.explain.atlas.feature_atlas`.
    layer : str
        A layer with a spatial, non-negative output (after a ReLU).
    n_groups : int
        Groups (NMF components), at most the layer's channels.
    sample_images : int
        The first images whose positions the factorisation is fitted to (memory: their activations).
    k : int
        Strongest positions kept per group, over the whole data.
    batch_size : int
    preprocess : callable, optional
    seed : int
        NMF's initialisation.
    progress : bool
    folder, shard : optional
        Commit the pass over the data per batch, resume it, shard it: as for
        `bagnet_keras.explain.atlas.feature_atlas`; `merge_groups` joins the shards' folders.

    Returns
    -------
    LayerGroups

    Examples
    --------
    >>> import keras, numpy as np
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 3, activation="relu", name="c"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(10, 12, 12, 3)).astype("float32")
    >>> groups = factorize(model, x, "c", n_groups=3, k=4, progress=False)
    >>> groups.components.shape, groups.attribution(x[:2]).shape
    ((3, 8), (2, 2, 3))
    """
    ((path, found),) = spatial_layers(model, [layer]).items()
    channels = int(found.output.shape[-1])
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or not 1 <= n_groups <= channels:
        raise ValueError(
            f"`n_groups` must be 1..{channels} (the channels of {path!r}). Received: n_groups={n_groups!r}"
        )
    k = check_positive_int(k, "k")
    sample_images = check_positive_int(sample_images, "sample_images")
    batch_size = check_positive_int(batch_size, "batch_size")
    forward = activation_function(model, {path: found})
    sample = _activation_sample(forward, image_batches(data, batch_size, preprocess), sample_images)
    groups = _fitted_groups(model, path, sample, int(n_groups), seed)
    state = _GroupTops(groups, k, forward)
    # The components are part of what a rerun or another shard must match: each fits them on the same sample.
    arguments = (
        None
        if folder is None
        else model_arguments(
            "factorize", model, preprocess, layer=path, k=k, batch_size=batch_size, components=digest(groups.components)
        )
    )
    stream_state(
        state,
        data,
        batch_size,
        preprocess=preprocess,
        folder=folder,
        arguments=arguments,
        shard=shard,
        command="factorize",
        progress=progress,
        desc="the factorisation",
        details={"components": groups.components.tolist(), "max_iter": groups.max_iter},
    )
    return state.result()


def _activation_sample(forward: Callable, batches, sample_images: int) -> np.ndarray:
    """The layer's activations (positions x channels, float64) at every position of the first images."""
    sample, seen = [], 0
    for x in batches:
        acts = keras.ops.convert_to_numpy(forward(check_images(x))[0])
        sample.append(acts[: sample_images - seen].reshape(-1, acts.shape[-1]))
        seen += len(sample[-1]) // (acts.shape[1] * acts.shape[2])
        if seen >= sample_images:
            break
    if not sample:
        raise ValueError("The data holds no image: the factorisation needs at least one.")
    return np.concatenate(sample).astype("float64")


def _fitted_groups(model: keras.Model, path: str, sample: np.ndarray, n_groups: int, seed: int) -> LayerGroups:
    """The groups NMF fits to the activations ``sample`` (their top positions still to find)."""
    from sklearn.decomposition import NMF

    if sample.min() < 0:
        raise ValueError(
            f"Layer {path!r} has negative activations (down to {sample.min():.3g}); NMF needs a "
            "non-negative layer: choose one after a ReLU."
        )
    nmf = NMF(n_components=n_groups, init="nndsvda", random_state=seed, max_iter=500)
    nmf.fit(sample)
    return _groups_of(model, path, nmf.components_, nmf.max_iter)


def _groups_of(model: keras.Model, path: str, components: np.ndarray, max_iter: int) -> LayerGroups:
    """`LayerGroups` of ``components``, before the pass over the data fills in their top positions."""
    empty = np.empty(0)
    return LayerGroups(
        layer=path,
        components=components,
        values=empty,
        image_index=empty,
        row=empty,
        column=empty,
        geometry=geometry_or_none(model, path),
        n_images=0,
        max_iter=max_iter,
        _model=model,
    )


class _GroupTops:
    """The groups' streamed top-k (`bagnet_keras.core.stream.stream_state`'s state)."""

    def __init__(self, groups: LayerGroups, k: int, forward: Callable | None = None):
        self.groups, self.forward = groups, forward
        self.best = TopK(len(groups.components), k)
        self.grid, self.n_images = (1, 1), 0  # the grid of the first batch (none in an empty shard)

    def add(self, start: int, x: np.ndarray, labels=None) -> tuple[dict, dict]:
        weights = self.groups.transform(keras.ops.convert_to_numpy(self.forward(check_images(x))[0]))
        self.grid = weights.shape[1:3]
        increment = self.best.add(weights, start * self.grid[0] * self.grid[1])
        self.n_images += len(x)
        return increment, {"grid": list(self.grid)}

    def absorb(self, arrays: dict, meta: dict) -> None:
        self.best.absorb(arrays)
        self.grid, self.n_images = tuple(meta["grid"]), self.n_images + meta["images"]

    def result(self) -> LayerGroups:
        groups = self.groups
        groups.values, groups.n_images = self.best.values, self.n_images
        groups.image_index, groups.row, groups.column = self.best.positions(self.grid)
        return groups


def merge_groups(model: keras.Model, folders: Sequence[str | os.PathLike]) -> LayerGroups:
    """The `LayerGroups` of all the data from the folders of finished `factorize` shards (or of one finished run).

    Equal to the groups of one unsharded run, exactly; the shards must have fitted the same components
    (they do on the same kind of machine: each fits them on the same first images).

    Examples
    --------
    >>> import keras, numpy as np, os, tempfile
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="c")])
    >>> x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
    >>> folders = [os.path.join(tempfile.mkdtemp(), str(i)) for i in range(2)]
    >>> for i, folder in enumerate(folders):
    ...     _ = factorize(model, x, "c", n_groups=2, batch_size=2, folder=folder, shard=(i, 2), progress=False)
    >>> merge_groups(model, folders).top(0) == factorize(model, x, "c", n_groups=2, progress=False).top(0)
    True
    """
    store, complete = merged_pass(folders, "factorize", model)
    arguments = store.arguments
    path = arguments["layer"]
    groups = _groups_of(model, path, np.asarray(complete["components"], "float64"), complete["max_iter"])
    state = _GroupTops(groups, arguments["k"])
    for index in store.indices():
        state.absorb(*store.read(index))
    return state.result()


def class_group_table(
    groups: LayerGroups,
    images,
    class_names: Sequence[str] | None = None,
    output: int | str | None = None,
    batch_size: int = 32,
) -> list[dict]:
    """Rows ``{"class", "group", "attribution"}``: each group's mean attribution to each class logit over ``images``.

    Examples
    --------
    >>> import keras, numpy as np
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="c"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
    >>> len(class_group_table(factorize(model, x, "c", n_groups=2, progress=False), x, ["a", "b"]))
    4
    """
    mean = groups.attribution(images, output=output, batch_size=batch_size).mean(axis=0)  # (K, n)
    names = list(class_names) if class_names is not None else [str(c) for c in range(mean.shape[0])]
    return [
        {"class": names[c], "group": g, "attribution": float(mean[c, g])}
        for c in range(mean.shape[0])
        for g in range(mean.shape[1])
    ]
