"""Targets for multi-output heads: coarse labels derived once from fine ones (city -> East/West).

Examples
--------
>>> names, index = coarse_labels(["Berlin", "Kyiv", "Paris"], {"Berlin": "West", "Kyiv": "East", "Paris": "West"})
>>> names, index.tolist()
(['East', 'West'], [1, 0, 1])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def coarse_labels(class_names: Sequence[str], mapping: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
    """The coarse class names (sorted) and, for each fine class in order, the index of its coarse class.

    Raises ValueError naming the first fine class missing from ``mapping``.
    """
    missing = [name for name in class_names if name not in mapping]
    if missing:
        raise ValueError(
            f"Class {missing[0]!r} is not in the label mapping ({len(missing)} of {len(class_names)} classes "
            f"missing: {missing[:5]}); map every class, e.g. {{{missing[0]!r}: 'East'}}."
        )
    names = sorted({str(mapping[name]) for name in class_names})
    return names, np.array([names.index(str(mapping[name])) for name in class_names], dtype="int64")


def with_heads(dataset, class_names: Sequence[str], fine: str, coarse: Mapping[str, Mapping[str, str]]):
    """Turn a ``(images, labels)`` dataset into ``(images, {fine: labels, head: coarse labels, ...})``.

    Parameters
    ----------
    dataset : tf.data.Dataset
        Yields ``(images, integer labels)`` indexing ``class_names`` (what
        `data_tools.loader.image_dataset` gives).
    class_names : sequence of str
    fine : str
        Name of the head that predicts ``class_names`` itself (``"city"``).
    coarse : mapping head -> (fine class -> coarse class)
        ``{"region": {"Berlin": "West", "Kyiv": "East", ...}}``.

    Returns
    -------
    (tf.data.Dataset, dict)
        The dataset, and the class names of every head (``{"city": [...], "region": ["East", "West"]}``).

    Examples
    --------
    >>> import tensorflow as tf
    >>> data = tf.data.Dataset.from_tensor_slices((tf.zeros((3, 2)), [0, 1, 2])).batch(3)
    >>> data, names = with_heads(data, ["Berlin", "Kyiv", "Paris"], "city",
    ...                          {"region": {"Berlin": "West", "Kyiv": "East", "Paris": "West"}})
    >>> next(iter(data))[1]["region"].numpy().tolist(), names["region"]
    ([1, 0, 1], ['East', 'West'])
    """
    import tensorflow as tf

    names = {fine: list(class_names)}
    tables = {}
    for head, mapping in coarse.items():
        if head == fine:
            raise ValueError(f"Coarse head {head!r} has the name of the fine head; choose another name.")
        names[head], index = coarse_labels(class_names, mapping)
        tables[head] = tf.constant(index)

    def split(images, labels):
        labels = tf.cast(labels, "int64")
        return images, {fine: labels, **{head: tf.gather(table, labels) for head, table in tables.items()}}

    return dataset.map(split, num_parallel_calls=tf.data.AUTOTUNE), names
