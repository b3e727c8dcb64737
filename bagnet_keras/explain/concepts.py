"""A BagNet's class concepts: its most informative patches of each class, clustered by what the network sees in them.

A BagNet's logit for a class is the mean of its patches' evidence, so the
patches with the most evidence are what the class is made of. `class_concepts`
streams a labelled dataset once and keeps, for each class, the ``patches``
positions with the most evidence for that class among the images of that
class (the atlas's exact top-k, `bagnet_keras.explain.atlas`), with the
penultimate features there. It then clusters those features (k-means on their
directions, scikit-learn) into ``n_concepts`` concepts per class: each
concept's share of the evidence of the class's top patches, and its
strongest patches as examples. That is the dataset-level answer to "what
makes this class": a class x concept table with examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from bagnet_keras.core.inputs import check_images
from bagnet_keras.core.stream import merged_pass, model_arguments, stream_state
from bagnet_keras.core.topk import TopK, entries
from bagnet_keras.core.validation import check_positive_int
from bagnet_keras.explain.atlas import example_boxes, example_crops
from bagnet_keras.explain.evidence import evidence_for


@dataclass
class Concept:
    """One concept of a class: its share of the class's top-patch evidence and its strongest patches."""

    share: float
    evidence: float
    n_patches: int
    examples: list  # (image_index, row, column, evidence), strongest first
    centroid: np.ndarray | None = None  # the mean direction of its patches' features (unit length)


@dataclass
class ClassConcepts:
    """What `class_concepts` found, per class: the top patches and their concepts.

    Attributes
    ----------
    concepts : dict class -> list of Concept
        Largest share first.
    patches : dict class -> list of (image_index, row, column, evidence)
        The class's top patches, strongest first.
    features : dict class -> ndarray (P, D)
        The penultimate features of those patches.
    labels : dict class -> ndarray (P,)
        Each patch's concept (index into the unsorted clustering; see ``concept_of``).
    geometry : Geometry
        Where a position's patch lies on the input.
    """

    concepts: dict = field(default_factory=dict)
    patches: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    concept_of: dict = field(default_factory=dict)
    geometry: object = None

    def table(self, class_names: Sequence[str] | None = None) -> list[dict]:
        """Rows ``{"class", "concept", "share", "patches"}``: the class x concept table."""
        rows = []
        for c, concepts in self.concepts.items():
            name = class_names[c] if class_names is not None else c
            for j, concept in enumerate(concepts):
                rows.append({"class": name, "concept": j, "share": concept.share, "patches": concept.n_patches})
        return rows

    def assign(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """The concept of class ``class_index`` (index into ``concepts[class_index]``) nearest to each feature
        vector by direction (cosine), as k-means grouped the class's top patches; -1 where the class has none.

        Examples
        --------
        >>> found = ClassConcepts(concepts={0: [Concept(0.7, 7.0, 3, [], np.array([1.0, 0.0])),
        ...                                     Concept(0.3, 3.0, 1, [], np.array([0.0, 1.0]))]})
        >>> found.assign(np.array([[0.2, 0.9], [3.0, 1.0]]), 0).tolist(), found.assign(np.ones((1, 2)), 1).tolist()
        ([1, 0], [-1])
        """
        features = np.asarray(features, dtype="float64")
        concepts = self.concepts.get(int(class_index), [])
        if not concepts:
            return np.full(features.shape[:-1], -1, dtype=int)
        centroids = np.stack([c.centroid for c in concepts])
        directions = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
        return np.argmax(directions @ centroids.T, axis=-1)

    def boxes(self, examples: Sequence[tuple]) -> np.ndarray:
        """(n, 4) ``top, left, bottom, right`` of the patches of ``examples`` on the input."""
        return example_boxes(self.geometry, examples)

    def crops(
        self, data, examples: Sequence[tuple], preprocess: Callable | None = None, batch_size: int = 32
    ) -> np.ndarray:
        """The input pixels of the patches of ``examples`` (reads ``data`` again up to the last image needed)."""
        return example_crops(data, self.geometry, examples, preprocess, batch_size)


def class_concepts(
    model: keras.Model,
    data,
    labels: Sequence[int] | None = None,
    classes: Sequence[int] | None = None,
    *,
    n_concepts: int = 4,
    patches: int = 200,
    examples: int = 8,
    output: int | str | None = None,
    batch_size: int = 32,
    preprocess: Callable | None = None,
    seed: int = 0,
    progress: bool = True,
    folder: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
) -> ClassConcepts:
    """Each class's most informative BagNet patches over a labelled dataset, clustered into concepts.

    Parameters
    ----------
    model : keras.Model
        A BagNet (or a transfer model with a BagNet top on ``output``).
    data : array (N, H, W, C) with ``labels``, or an iterable of ``(images, labels)`` batches
    labels : sequence of N ints, optional
        The true classes, with an array.
    classes : sequence of ints, optional
        The classes to analyse; default every class of the output.
    n_concepts : int
        Concepts per class (k-means clusters).
    patches : int
        Top patches kept per class (memory: patches x features per class).
    examples : int
        Example patches kept per concept.
    output, batch_size, preprocess, seed, progress
    folder, shard : optional
        Commit the pass over the data per batch, resume it, shard it: as for
        `bagnet_keras.explain.atlas.feature_atlas`; `merge_concepts` joins the shards' folders.

    Returns
    -------
    ClassConcepts

    Examples
    --------
    >>> import keras, numpy as np
    >>> from bagnet_keras import BagNet
    >>> keras.utils.set_random_seed(0)
    >>> model = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, classes=2, input_shape=(32, 32, 3))
    >>> x = np.random.default_rng(0).normal(size=(6, 32, 32, 3)).astype("float32")
    >>> found = class_concepts(model, x, [0, 1] * 3, n_concepts=2, patches=20, progress=False)
    >>> round(sum(c.share for c in found.concepts[0]), 6)
    1.0
    """
    ev = evidence_for(model, output)
    patches = check_positive_int(patches, "patches")
    n_concepts = check_positive_int(n_concepts, "n_concepts")
    examples = check_positive_int(examples, "examples")
    batch_size = check_positive_int(batch_size, "batch_size")
    if n_concepts > patches:
        raise ValueError(
            f"`n_concepts` ({n_concepts}) cannot exceed `patches` ({patches}): each concept needs patches."
        )
    classes = list(range(ev.n_classes)) if classes is None else [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < ev.n_classes]
    if bad:
        raise ValueError(f"`classes` {bad} are not classes of the model's output (0..{ev.n_classes - 1}).")
    if hasattr(data, "shape") and (labels is None or len(labels) != len(data)):
        raise ValueError(f"`labels` must give one class per image ({len(data)}) of an image array.")
    state = _ConceptTops(ev, classes, patches, batch_size, output)
    arguments = (
        None
        if folder is None
        else model_arguments(
            "concepts", model, preprocess, output=output, classes=classes, patches=patches, batch_size=batch_size
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
        command="concepts",
        progress=progress,
        desc="the class concepts",
        labels=labels,
    )
    return state.result(n_concepts, examples, seed)


class _ConceptTops:
    """Each class's top patches among its images, with their features (the state of `stream_state`)."""

    def __init__(self, ev, classes: list[int], patches: int, batch_size: int = 32, output=None):
        self.ev, self.classes, self.batch_size, self.output = ev, classes, batch_size, output
        as_numpy = keras.ops.convert_to_numpy
        self.kernel, self.bias = as_numpy(ev.kernel)[:, classes], as_numpy(ev.bias)[classes]
        self.best = TopK(len(classes), patches, depth=self.kernel.shape[0])
        self.grid, self.n_images = (1, 1), 0  # the grid of the first batch (none in an empty shard)

    def add(self, start: int, x: np.ndarray, labels) -> tuple[dict, dict]:
        if labels is None:
            raise ValueError("A dataset given to class_concepts must yield (images, labels) batches.")
        if isinstance(labels, dict):  # a multi-head dataset: the explained head's labels
            if self.output not in labels:
                raise ValueError(f"The dataset's labels are by head {sorted(labels)}; pass output=<head name>.")
            labels = labels[self.output]
        x = check_images(x, self.ev.geometry.patch_size, channels=3)
        features = keras.ops.convert_to_numpy(self.ev.native(x, self.batch_size))  # (B, h, w, D)
        self.grid = features.shape[1:3]
        evidence = features @ self.kernel + self.bias  # (B, h, w, classes)
        own = np.asarray(labels).reshape(-1)[:, None] == np.asarray(self.classes)[None, :]  # the image's class
        evidence = np.where(own[:, None, None, :], evidence, -np.inf).astype("float32")
        increment = self.best.add(evidence, start * self.grid[0] * self.grid[1], payload=features)
        self.n_images += len(x)
        return increment, {"grid": list(self.grid)}

    def absorb(self, arrays: dict, meta: dict) -> None:
        self.best.absorb(arrays)
        self.grid, self.n_images = tuple(meta["grid"]), self.n_images + meta["images"]

    def result(self, n_concepts: int, examples: int, seed: int) -> ClassConcepts:
        """The concepts: each class's top patches clustered (k-means on their features' directions)."""
        from sklearn.cluster import KMeans

        found = ClassConcepts(geometry=self.ev.geometry)
        image, row, column = self.best.positions(self.grid)
        for i, c in enumerate(self.classes):
            top = entries(self.best.values[i], image[i], row[i], column[i])  # -inf: positions of other classes
            if not top:
                continue  # no image of this class
            vectors = self.best.payload[i][: len(top)]
            found.patches[c], found.features[c] = top, vectors
            clusters = min(n_concepts, len(top))
            directions = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            assignment = KMeans(clusters, n_init=10, random_state=seed).fit_predict(directions)
            found.concept_of[c] = assignment
            evidence = np.array([t[3] for t in top])
            total = float(evidence.sum())
            concepts = []
            for j in range(clusters):
                members = [t for t, a in zip(top, assignment, strict=True) if a == j]  # strongest first, as `top`
                mass = float(sum(t[3] for t in members))
                centroid = directions[assignment == j].mean(axis=0)
                concepts.append(
                    Concept(
                        share=mass / total if total else float("nan"),
                        evidence=mass,
                        n_patches=len(members),
                        examples=members[:examples],
                        centroid=centroid / max(float(np.linalg.norm(centroid)), 1e-12),
                    )
                )
            found.concepts[c] = sorted(concepts, key=lambda concept: -concept.share)
        return found


def merge_concepts(
    model: keras.Model, folders: Sequence[str | os.PathLike], *, n_concepts: int = 4, examples: int = 8, seed: int = 0
) -> ClassConcepts:
    """The `ClassConcepts` of all the data from the folders of finished `class_concepts` shards (or of one run).

    The top patches (and so the concepts) equal those of one unsharded run, exactly.

    Examples
    --------
    >>> import keras, numpy as np, os, tempfile
    >>> from bagnet_keras import BagNet
    >>> keras.utils.set_random_seed(0)
    >>> model = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, classes=2, input_shape=(32, 32, 3))
    >>> x, y = np.random.default_rng(0).normal(size=(6, 32, 32, 3)).astype("float32"), [0, 1] * 3
    >>> folders = [os.path.join(tempfile.mkdtemp(), str(i)) for i in range(2)]
    >>> for i, folder in enumerate(folders):
    ...     _ = class_concepts(model, x, y, patches=20, batch_size=2, folder=folder, shard=(i, 2), progress=False)
    >>> merge_concepts(model, folders).patches[1] == class_concepts(model, x, y, patches=20, progress=False).patches[1]
    True
    """
    n_concepts = check_positive_int(n_concepts, "n_concepts")
    examples = check_positive_int(examples, "examples")
    store, _ = merged_pass(folders, "concepts", model)
    arguments = store.arguments
    state = _ConceptTops(evidence_for(model, arguments["output"]), arguments["classes"], arguments["patches"])
    for index in store.indices():
        state.absorb(*store.read(index))
    return state.result(n_concepts, examples, seed)
