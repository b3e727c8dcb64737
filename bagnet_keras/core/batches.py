"""The one way a pass reads its data batch by batch: arrays, memory maps, `ImageFiles`, datasets, iterables.

Every pass over many images (`top_patches`, `compare`, the atlas and the
other streamed passes of `bagnet_keras.core.stream`) takes the same kinds of
data, and reads them here:

- an *array-like*, anything with ``shape`` that is read by slicing: a NumPy
  array, a memory map, a tensor, a `data_tools.loader.ImageFiles` (which
  decodes only the files of the slice ``files[a:b]``). It is cut into
  ``batch_size`` images, and a batch that is not wanted (another shard's) is
  not read at all;
- an *iterable* of batches: a tf.data dataset, a generator, a list of
  arrays. Its elements are images (B, H, W, C) or ``(images, labels[, ...])``
  pairs, the labels an array or a dict of arrays by head (a multi-head
  dataset); an element of one image (H, W, C), as an unbatched dataset
  yields, is a batch of one. Its batches are taken as they come, or re-cut
  to exactly ``batch_size`` images (``exact=True``), and every batch is read,
  since only reading counts them.

Labels given beside the data (``labels``) are sliced by position, beside an
array-like or in place of an iterable's own.

Examples
--------
>>> [(b.start, b.images.shape, b.labels.tolist()) for b in batches(np.zeros((5, 2)), 2, labels=[0, 1, 0, 1, 0])]
[(0, (2, 2), [0, 1]), (2, (2, 2), [0, 1]), (4, (1, 2), [0])]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["Batch", "batches", "is_array", "numbered_batches"]


class Batch(NamedTuple):
    """One batch of a pass: the index of its first image in the data, its images and its labels.

    ``images`` and ``labels`` are None where the batch is not wanted (and an array-like's is not read);
    ``labels`` is None where the data has none, a dict of arrays by head for a multi-head dataset.
    """

    start: int
    images: np.ndarray | None
    labels: np.ndarray | dict | None


def is_array(data) -> bool:
    """Whether ``data`` is read by slicing (an array, memory map, tensor or `ImageFiles`), not by iterating.

    Examples
    --------
    >>> is_array(np.zeros((2, 4, 4, 3))), is_array([np.zeros((2, 4, 4, 3))])
    (True, False)
    """
    return hasattr(data, "shape") and hasattr(data, "__getitem__")


def batches(
    data,
    batch_size: int,
    *,
    labels=None,
    wanted: Callable[[int], bool] | None = None,
    exact: bool = False,
) -> Iterator[Batch]:
    """Each `Batch` of ``data`` in the data's order, images as read (no dtype change).

    Parameters
    ----------
    data : array-like or iterable
        See the module's docstring.
    batch_size : int
        Images per batch of an array-like (and of an iterable with ``exact``).
    labels : array-like or dict of array-likes, optional
        One label per image of the data, sliced beside it; they replace an iterable's own labels.
    wanted : callable, optional
        ``wanted(index)`` is False for batches the caller skips (another shard's): their images and
        labels are None. Default: every batch.
    exact : bool
        Re-cut an iterable's batches to exactly ``batch_size`` images (the last may have fewer), as an
        array-like's are, so that batch numbers mean the same images whatever the dataset's batching.

    Examples
    --------
    >>> data = [(np.zeros((3, 2)), np.array([0, 1, 2])), (np.ones((2, 2)), np.array([3, 4]))]
    >>> [(b.start, len(b.images), b.labels.tolist()) for b in batches(data, 2, exact=True)]
    [(0, 2, [0, 1]), (2, 2, [2, 3]), (4, 1, [4])]
    >>> [(b.start, b.images) for b in batches(np.zeros((3, 2)), 2, wanted=lambda i: i == 1)]
    [(0, None), (2, array([[0., 0.]]))]
    """
    wanted = wanted or (lambda index: True)
    if is_array(data):
        if labels is not None and _count(labels) != len(data):
            raise ValueError(f"`labels` must give one class per image: {_count(labels)} labels for {len(data)} images.")
        for index, start in enumerate(range(0, len(data), batch_size)):
            if wanted(index):
                yield Batch(start, np.asarray(data[start : start + batch_size]), _slice(labels, start, batch_size))
            else:
                yield Batch(start, None, None)
        return
    elements = _elements(data)
    if exact:
        elements = _recut(elements, batch_size)
    start = 0
    for index, (x, y) in enumerate(elements):
        if labels is not None:
            y = _slice(labels, start, len(x))
        yield Batch(start, x, y) if wanted(index) else Batch(start, None, None)
        start += len(x)


def _count(labels) -> int:
    """How many images ``labels`` label (by head: each head's count)."""
    return len(next(iter(labels.values()))) if isinstance(labels, Mapping) and labels else len(labels)


def _slice(labels, start: int, size: int):
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return {head: np.asarray(values[start : start + size]) for head, values in labels.items()}
    return np.asarray(labels[start : start + size])


def _elements(data) -> Iterator[tuple]:
    """``(images, labels or None)`` of each element of an iterable, images (B, H, W, C) as arrays."""
    try:
        iterator = iter(data)
    except TypeError:
        raise ValueError(
            "`images` must be an array (N, H, W, C), a tf.data.Dataset or an iterable of image batches. "
            f"Received: {type(data).__name__}"
        ) from None
    for element in iterator:
        pair = isinstance(element, (tuple, list))  # (images, labels[, weights]) batches
        x = np.asarray(element[0] if pair else element)
        y = element[1] if pair and len(element) > 1 else None
        if isinstance(y, Mapping):  # labels by head stay by head
            y = {head: np.asarray(values) for head, values in y.items()}
        elif y is not None:
            y = np.asarray(y)
        if x.ndim == 3:  # an unbatched dataset yields single images
            x, y = x[None], _expand(y)
        yield x, y


def _expand(labels):
    if isinstance(labels, dict):
        return {head: values[None] for head, values in labels.items()}
    return None if labels is None else labels[None]


def _join(parts: list):
    """The labels of several pieces as one: None, an array, or a dict of arrays by head."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], dict):
        return {head: np.concatenate([part[head] for part in parts]) for head in parts[0]}
    return np.concatenate(parts)


def _cut(labels, stop: int | None, rest: bool = False):
    """``labels[:stop]`` (or ``labels[stop:]`` with ``rest``), of an array or of each head's array."""
    part = slice(stop, None) if rest else slice(None, stop)
    if isinstance(labels, dict):
        return {head: values[part] for head, values in labels.items()}
    return None if labels is None else labels[part]


def _recut(elements: Iterable[tuple], batch_size: int) -> Iterator[tuple]:
    """The pieces re-cut into batches of exactly ``batch_size`` images; the last may have fewer."""
    xs, ys, held = [], [], 0
    for x, y in elements:
        xs.append(x)
        ys.append(y)
        held += len(x)
        while held >= batch_size:
            x, y = np.concatenate(xs), _join(ys)
            yield x[:batch_size], _cut(y, batch_size)
            xs, ys, held = [x[batch_size:]], [_cut(y, batch_size, rest=True)], held - batch_size
    if held:
        yield np.concatenate(xs), _join(ys)


def numbered_batches(
    data, batch_size: int, wanted: Callable[[int], bool] | None = None, labels=None
) -> Iterator[tuple]:
    """The streamed passes' view of `batches`: ``(start, images, labels)``, images float32, labels as lists.

    ``labels`` beside an array-like give its labels; an iterable's batches bring their own (a dict of
    lists by head for a multi-head dataset). Images and labels are None where a batch is not ``wanted``.

    Examples
    --------
    >>> numbered = numbered_batches(np.zeros((5, 2)), 2, lambda i: i != 1, labels=[0, 1, 2, 3, 4])
    >>> [(start, None if x is None else len(x), y) for start, x, y in numbered]
    [(0, 2, [0, 1]), (2, None, None), (4, 1, [4])]
    """
    beside = labels if is_array(data) else None  # an iterable's own labels, as the streamed passes always read
    for start, x, y in batches(data, batch_size, labels=beside, wanted=wanted):
        if x is not None:
            x = np.asarray(x, dtype="float32")
        if isinstance(y, dict):
            y = {head: values.tolist() for head, values in y.items()}
        elif y is not None:
            y = y.tolist()
        yield start, x, y
