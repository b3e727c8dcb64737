"""Each row's ``k`` strongest values over a stream of batches: exact with ties, shardable and resumable.

A dataset-level view (the atlas's units, the NMF groups, a BagNet's class
concepts) keeps, for each of its rows (a channel, a group, a class), the
``k`` largest values over every position of every image: a bounded top-k,
so memory depends on ``rows x k``, never on the number of images. Positions
are counted flat over the data (image, then row, then column), and ties go
to the earlier position, so the result is exactly the top-k of a
brute-force sort.

Each `TopK.add` returns the *increment*: the entries of the batch that
entered the kept top-k. `TopK.absorb` of the increments, in the batches'
order, rebuilds the same state, so a run can commit one increment per batch
and resume after a kill; and since an entry of the top-k over all the data
enters the top-k of any part of it, absorbing the increments of several
shards (each run over its own batches) gives the top-k of the whole data.

Examples
--------
>>> best = TopK(rows=1, k=2)
>>> first = best.add(np.array([[[[1.0], [3.0]]]]), offset=0)   # one image, 1 x 2 positions
>>> second = best.add(np.array([[[[3.0], [2.0]]]]), offset=2)  # ties with 3.0 go to the earlier position
>>> best.values.tolist(), best.flat.tolist()
([[3.0, 3.0]], [[1, 2]])
>>> again = TopK(rows=1, k=2)
>>> again.absorb(first); again.absorb(second)
>>> again.flat.tolist()
[[1, 2]]
"""

from __future__ import annotations

import numpy as np

#: The flat position recorded where a row had fewer than ``k`` positions in all the data.
NONE = np.iinfo(np.int64).max

#: The arrays of an increment: the row, flat position and value of each entry (and ``payload`` where kept).
INCREMENT = ("row", "flat", "value")


def candidates(acts: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch's own top-k of every row, ``(rows, k)`` values and flat positions (``offset`` + position in the batch).

    ``acts`` is (..., rows), its positions in flat order. Exact with ties: where a row's k-th value repeats
    beyond the k, the positions above it, then the first of those equal to it. Missing entries (fewer than
    ``k`` positions) are ``-inf`` at `NONE`.
    """
    c = acts.shape[-1]
    a = np.ascontiguousarray(acts.reshape(-1, c).T)  # (rows, P)
    p = a.shape[1]
    if p <= k:
        values = np.full((c, k), -np.inf, dtype="float32")
        flat = np.full((c, k), NONE, dtype=np.int64)
        values[:, :p], flat[:, :p] = a, offset + np.arange(p)[None, :]
        return values, flat
    position = np.argpartition(a, p - k, axis=1)[:, p - k :]  # k positions at or above each k-th value
    threshold = np.take_along_axis(a, position, axis=1).min(axis=1)
    for r in np.flatnonzero((a >= threshold[:, None]).sum(axis=1) > k):  # the k-th value repeats: ties by position
        above = np.flatnonzero(a[r] > threshold[r])
        position[r] = np.concatenate([above, np.flatnonzero(a[r] == threshold[r])[: k - len(above)]])
    position = np.sort(position, axis=1)
    return np.take_along_axis(a, position, axis=1), offset + position.astype(np.int64)


def _entries_of(values: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, flat, value)`` of the real entries of per-row ``(rows, m)`` values and flat positions."""
    rows = np.broadcast_to(np.arange(values.shape[0])[:, None], values.shape)
    real = flat != NONE
    return rows[real], flat[real], values[real]


class TopK:
    """Each row's ``k`` strongest values over a stream of batches, ties by the earlier position (exact).

    Parameters
    ----------
    rows : int
    k : int
    depth : int, optional
        The width of a payload carried with every kept entry (a BagNet patch's features).

    Attributes
    ----------
    values : ndarray (rows, k) float32
        Strongest first; ``-inf`` where fewer than ``k`` positions were seen.
    flat : ndarray (rows, k) int64
        Their flat positions (`NONE` where none).
    payload : ndarray (rows, k, depth) or None
    """

    def __init__(self, rows: int, k: int, depth: int | None = None):
        self.k = k
        self.values = np.full((rows, k), -np.inf, dtype="float32")
        self.flat = np.full((rows, k), NONE, dtype=np.int64)
        self.payload = None if depth is None else np.zeros((rows, k, depth), dtype="float32")

    def add(self, acts: np.ndarray, offset: int, payload: np.ndarray | None = None) -> dict:
        """Merge a batch (..., rows) whose first position is flat position ``offset``; returns the increment.

        ``payload`` (..., depth) gives each position's payload. Only values strictly above a row's k-th
        can enter once the row is full: an equal one comes later in the data than every entry kept, so it
        loses the tie. After the first batches few positions pass, and the selection costs a comparison of
        the batch with ``k`` values per row.
        """
        c = self.values.shape[0]
        a = acts.reshape(-1, c)
        if np.isneginf(self.values[:, -1]).any():  # fewer than k positions seen yet: the batch's own top-k
            rows, flat, values = _entries_of(*candidates(acts, offset, self.k))
            position = flat - offset
        else:
            position, rows = np.nonzero(a > self.values[:, -1])
            values, flat = a[position, rows], offset + position.astype(np.int64)
        carried = None if payload is None else payload.reshape(len(a), -1)[position]
        return self.merge(rows, flat, values, carried)

    def add_candidates(self, values: np.ndarray, flat: np.ndarray) -> dict:
        """Merge a batch's own top entries per row, ``(rows, m)`` values and flat positions; returns the increment."""
        return self.merge(*_entries_of(values, flat))

    def absorb(self, increment: dict) -> None:
        """Merge an increment that `add` returned (here or in another run over other batches of the same data)."""
        self.merge(increment["row"], increment["flat"], increment["value"], increment.get("payload"))

    def merge(self, rows: np.ndarray, flat: np.ndarray, values: np.ndarray, payload: np.ndarray | None = None) -> dict:
        """Keep each row's top-k of its kept entries and the given ones; returns the given ones that were kept."""
        c, k = self.values.shape
        if self.payload is not None and payload is None:
            raise ValueError("This top-k carries a payload; give one for every entry.")
        if not len(rows):
            return self._increment(np.zeros((c, k), dtype=bool))
        units = np.concatenate([np.repeat(np.arange(c), k), np.asarray(rows, dtype=np.int64)])
        merged_values = np.concatenate([self.values.ravel(), np.asarray(values, dtype="float32")])
        merged_flat = np.concatenate([self.flat.ravel(), np.asarray(flat, dtype=np.int64)])
        order = np.lexsort((merged_flat, -merged_values, units))
        starts = np.searchsorted(units[order], np.arange(c))  # every row has its k entries and the new ones
        keep = order[starts[:, None] + np.arange(k)]
        self.values, self.flat = merged_values[keep], merged_flat[keep]
        if self.payload is not None:
            depth = self.payload.shape[-1]
            merged = np.concatenate([self.payload.reshape(c * k, depth), np.asarray(payload, "float32")])
            self.payload = merged[keep]
        return self._increment(keep >= c * k)

    def _increment(self, new: np.ndarray) -> dict:
        increment = {"row": np.nonzero(new)[0].astype(np.int32), "flat": self.flat[new], "value": self.values[new]}
        if self.payload is not None:
            increment["payload"] = self.payload[new]
        return increment

    def positions(self, grid: tuple[int, int], rows=slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image, row, column)`` of the kept entries of ``rows`` on a grid (h, w); -1 where none was."""
        flat, (h, w) = self.flat[rows], grid
        real = flat != NONE
        return (
            np.where(real, flat // (h * w), -1),
            np.where(real, flat % (h * w) // w, -1),
            np.where(real, flat % w, -1),
        )


def entries(values: np.ndarray, image: np.ndarray, row: np.ndarray, column: np.ndarray) -> list[tuple]:
    """``(image, row, column, value)`` tuples of one row's kept entries (those that exist), strongest first."""
    found = values > -np.inf
    return [
        (int(i), int(r), int(c), float(v))
        for i, r, c, v in zip(image[found], row[found], column[found], values[found], strict=True)
    ]


class LayerTops:
    """The streamed statistics of some layers' channels: each channel's top-k, sum and count, each layer's grid.

    The state of `bagnet_keras.explain.atlas.feature_atlas`'s pass over the data, fed by
    `bagnet_keras.core.stream.stream_state`: `add` measures a batch and returns its part (the
    increments that entered each layer's top-k, and the batch's sums), `absorb` merges a committed part.

    Parameters
    ----------
    channels : dict layer -> int
        The layers and their channels' count, in the order ``forward`` gives them.
    k : int
    forward : callable, optional
        ``forward(x) -> [(values, positions, sums, grid) of each layer]``: each channel's top-k over the
        batch (``(C, m)`` values and positions in the batch's flat order), its sum, and the layer's
        ``(h, w)``. Needed by `add` only.
    """

    def __init__(self, channels: dict[str, int], k: int, forward=None):
        self.forward = forward
        self.best = {path: TopK(c, k) for path, c in channels.items()}
        self.sums = {path: np.zeros(c, "float64") for path, c in channels.items()}
        self.counted = dict.fromkeys(channels, 0)
        self.grids: dict = {}
        self.n_images, self.image_shape = 0, ()

    def add(self, start: int, x: np.ndarray, labels=None) -> tuple[dict, dict]:
        """Measure a batch whose first image is image ``start``; returns its part ``(arrays, meta)``."""
        arrays = {}
        for j, (path, (values, position, sums, grid)) in enumerate(zip(self.best, self.forward(x), strict=True)):
            h, w = (int(v) for v in np.asarray(grid))
            flat = start * h * w + np.asarray(position).astype(np.int64)
            increment = self.best[path].add_candidates(np.asarray(values, "float32"), flat)
            arrays.update({f"{j}_{name}": value for name, value in increment.items()})
            arrays[f"{j}_sum"] = np.asarray(sums, "float64")
            self.grids[path] = (h, w)
        meta = {"image_shape": list(x.shape[1:]), "grids": [list(self.grids[p]) for p in self.best]}
        self._count(arrays, meta, len(x))
        return arrays, meta

    def absorb(self, arrays: dict, meta: dict) -> None:
        """Merge a committed part (of this run, resumed, or of another shard)."""
        for j, path in enumerate(self.best):
            self.best[path].absorb({name: arrays[f"{j}_{name}"] for name in INCREMENT})
        self.grids.update({path: tuple(grid) for path, grid in zip(self.best, meta["grids"], strict=True)})
        self._count(arrays, meta, meta["images"])  # the batch's images, recorded by `stream_state`

    def _count(self, arrays: dict, meta: dict, images: int) -> None:
        for j, path in enumerate(self.best):
            self.sums[path] += arrays[f"{j}_sum"]
            self.counted[path] += images * self.grids[path][0] * self.grids[path][1]
        self.n_images += images
        self.image_shape = tuple(meta["image_shape"])
