"""Runs over a whole dataset, batch by batch: each batch's results committed as one part file, resumed after a kill.

A comparison of 50,000 images cannot hold its images, maps or masked
copies in memory, and a run that dies at 90 % must not start from zero.
So a long run measures one batch at a time and commits that batch's
results (per-image rows, curves, the few images a report shows) as one
file, and its final tables are computed from those files at the end.

A run writes into one folder, under `bagnet_keras.core.commit.folder_lock`
(`bagnet_keras.core.parts.PartStore`: ``run.json``, ``parts/part-<index>.npz``,
``complete.json``); each part also holds a digest of its batch's inputs, so a
rerun over other data stops with an error. The data is read batch by batch
through `bagnet_keras.core.batches`, the one batching path of every pass.

A run can be one shard of a larger one (``shard=(i, n)``: the batches whose
index is i modulo n), so that n processes, machines or cluster jobs share a
dataset; `merged_store` joins the finished shards' folders into the parts of
one run, after checking that they are the shards of the same run.

The invariant of the commit protocol holds: after a kill at any instant, a
part is either absent (its batch is measured again) or present and whole.
Nothing else is state, so the rerun ends with exactly the parts an
uninterrupted run writes. Parts are read with ``allow_pickle=False``: no
pickle ever runs.

Examples
--------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> def measure(index, batch):
...     return {"double": 2 * batch}, {"n": len(batch)}
>>> batches = [np.arange(3.0), np.arange(3.0, 5.0)]
>>> with PartStore(folder, {"factor": 2}) as store:
...     run_parts(store, batches, measure)  # (batches measured now, batches in the data)
...     [store.read(i)[0]["double"].tolist() for i in store.indices()]
(2, 2)
[[0.0, 2.0, 4.0], [6.0, 8.0]]
>>> with PartStore(folder, {"factor": 2}) as store:  # the rerun finds both batches done
...     run_parts(store, batches, measure)
(0, 2)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

# The part stores and the batching live in their own modules; their names stay importable from here.
from bagnet_keras.core.batches import numbered_batches
from bagnet_keras.core.parts import COMPLETE, PARTS, MemoryStore, MergedStore, PartStore, merged_store

__all__ = [
    "COMPLETE",
    "PARTS",
    "MemoryStore",
    "MergedStore",
    "PartStore",
    "check_shard",
    "digest",
    "function_name",
    "merged_pass",
    "merged_store",
    "model_arguments",
    "numbered_batches",
    "run_parts",
    "stream_state",
]

Measure = Callable[[int, object], tuple[dict, dict]]


def digest(*values) -> str:
    """A sha256 of arrays (their dtype, shape and bytes), to recognise a batch's inputs on a rerun.

    Examples
    --------
    >>> digest(np.zeros(2)) == digest(np.zeros(2)), digest(np.zeros(2)) == digest(np.zeros(3))
    (True, False)
    """
    h = hashlib.sha256()
    for value in values:
        if value is None:
            h.update(b"none;")
            continue
        array = np.ascontiguousarray(value)
        h.update(f"{array.dtype.str}{array.shape};".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def check_shard(shard) -> tuple[int, int] | None:
    """``None`` or ``(index, count)`` with 0 <= index < count, else a ValueError naming the value.

    Examples
    --------
    >>> check_shard((2, 3))
    (2, 3)
    >>> check_shard((3, 2))
    Traceback (most recent call last):
    ...
    ValueError: shard 3/2: the index must be in 0..1 (shards are numbered from 0 to count - 1).
    """
    if shard is None:
        return None
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"`shard` must be (index, count), e.g. (0, 4). Received: shard={shard!r}") from None
    if count < 1:
        raise ValueError(f"shard {index}/{count}: the count of shards must be at least 1.")
    if not 0 <= index < count:
        raise ValueError(
            f"shard {index}/{count}: the index must be in 0..{count - 1} (shards are numbered from 0 to count - 1)."
        )
    return index, count


def function_name(function: Callable | None) -> str | None:
    """A function as ``run.json`` records it (a preprocessing function cannot be compared across runs).

    Examples
    --------
    >>> function_name(np.mean)
    'numpy.mean'
    """
    if function is None:
        return None
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', type(function).__name__)}"


def run_parts(
    store: PartStore | MemoryStore,
    batches: Iterable,
    measure: Measure,
    key: Callable[[object], str] | None = None,
    skip: Callable[[int], bool] | None = None,
    committed: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Measure every batch not yet committed in ``store`` and commit it; returns how many were measured, of how many.

    Parameters
    ----------
    store : PartStore or MemoryStore
    batches : iterable
        The run's batches, in the same order on every run.
    measure : callable
        ``measure(index, batch) -> (arrays, meta)``, deterministic.
    key : callable, optional
        ``key(batch) -> str`` identifying a batch's inputs (default: `digest` of the batch); recorded as
        ``meta["inputs"]`` and checked against a committed batch on a rerun.
    skip : callable, optional
        ``skip(index)`` is True for batches this run leaves to another (a shard's); their batches
        may be None (not read).
    committed : callable, optional
        ``committed(index)`` is called, in the batches' order, for each batch found committed by an
        earlier run (after its inputs are checked): a run that carries state from batch to batch
        rebuilds it from the parts there.

    Returns
    -------
    (measured, batches)
        How many batches were measured now, and how many the data has.
    """
    key = key or (lambda batch: digest(*(batch if isinstance(batch, tuple) else (batch,))))
    measured = total = 0
    for index, batch in enumerate(batches):
        total += 1
        if skip is not None and skip(index):
            continue
        inputs = key(batch)
        if store.done(index):
            if store.read_meta(index).get("inputs") != inputs:
                raise ValueError(
                    f"Batch {index} of the data differs from the one committed in {getattr(store, 'folder', '')!r} "
                    "(other images, labels or order). Rerun on the data of that run to resume it, or choose "
                    "another output folder to start afresh."
                )
            if committed is not None:
                committed(index)
            continue
        arrays, meta = measure(index, batch)
        store.write(index, arrays, {**meta, "inputs": inputs})
        measured += 1
    return measured, total


def model_arguments(command: str, model, preprocess: Callable | None, **values) -> dict:
    """What identifies a pass of ``command`` over the data with ``model``: its weights, preprocessing and ``values``.

    ``model`` is anything with ``get_weights()`` (a Keras model); its weights enter as their `digest`.
    """
    return {
        "command": command,
        "model": digest(*model.get_weights()),
        "preprocess": function_name(preprocess),
        **values,
    }


def merged_pass(folders, command: str, model) -> tuple[MergedStore, dict]:
    """`merged_store` of the folders of a pass of ``command`` (`stream_state`), checked to be ``model``'s."""
    folders = [os.fspath(f) for f in folders]
    store, complete = merged_store(folders)
    if store.arguments.get("command") != command:
        found = store.arguments.get("command")
        raise ValueError(
            f"{folders[0]!r} holds no {command} run (its run.json is {found!r}'s); name the folders "
            f"of the {command} shards."
        )
    if store.arguments["model"] != digest(*model.get_weights()):
        raise ValueError(
            f"The shards in {folders} ran a model with other weights than `model`; give the model they ran."
        )
    return store, complete


def _batch_key(batch) -> str:
    """A `numbered_batches` batch's inputs as `digest` recognises them: its start, images and labels (as JSON)."""
    start, x, y = batch
    labels = None if y is None else np.frombuffer(json.dumps(y, sort_keys=True).encode(), np.uint8)
    return digest(np.int64(start), x, labels)


def stream_state(
    state,
    data,
    batch_size: int,
    preprocess: Callable | None = None,
    folder: str | os.PathLike | None = None,
    arguments: dict | None = None,
    shard: tuple[int, int] | None = None,
    command: str = "run",
    progress: bool = True,
    desc: str | None = None,
    labels=None,
    details: dict | None = None,
) -> int:
    """Feed every batch of ``data`` to a state that carries statistics from batch to batch; returns the batches.

    ``state.add(start, images, labels) -> (arrays, meta)`` measures a batch whose first image is image
    ``start`` (the images preprocessed; the labels a list, from ``labels`` beside an array or from a
    dataset's ``(images, labels)`` batches, else None) and returns its part;
    ``state.absorb(arrays, meta)`` merges a part committed before.

    With a ``folder``, each part is committed there (`PartStore`, ``arguments`` identifying the run)
    and a rerun after a kill absorbs the committed parts, in order, and measures the rest: the state
    ends as after an uninterrupted run. ``details`` (plain JSON) go to the folder's ``complete.json``,
    for what reads the parts back. With ``shard=(i, n)`` (needs a folder) only the batches whose index
    is i modulo n are measured; `merged_store` reads the shards' parts back as one run's.

    Examples
    --------
    >>> class Total:
    ...     value = 0.0
    ...     def add(self, start, x, y):
    ...         self.value += float(x.sum())
    ...         return {"sum": np.array(x.sum())}, {}
    ...     def absorb(self, arrays, meta):
    ...         self.value += float(arrays["sum"])
    >>> state = Total()
    >>> stream_state(state, np.ones((5, 2)), batch_size=2, progress=False), state.value
    (3, 10.0)
    """
    shard = check_shard(shard)
    if shard is not None and folder is None:
        raise ValueError(f"shard={shard} needs a `folder` to commit the shard's batches to, for merging.")

    def own(index: int) -> bool:
        return shard is None or index % shard[1] == shard[0]

    total = None
    if hasattr(data, "__len__") and hasattr(data, "shape"):  # the images of this run's (or shard's) batches
        total = sum(
            min(batch_size, len(data) - start)
            for index, start in enumerate(range(0, len(data), batch_size))
            if own(index)
        )
    bar = tqdm(total=total, desc=desc or command, unit="image", disable=None if progress else True)

    def measure(index: int, batch) -> tuple[dict, dict]:
        start, x, y = batch
        if preprocess is not None:
            x = np.asarray(preprocess(x), dtype="float32")
        arrays, meta = state.add(start, x, y)
        bar.update(len(x))
        return arrays, {**meta, "images": len(x)}

    with bar:
        batches = numbered_batches(data, batch_size, own, labels)
        if folder is None:
            count = 0
            for index, batch in enumerate(batches):
                count += 1
                if own(index):
                    measure(index, batch)
        else:
            arguments = {**(arguments or {}), "shard": None if shard is None else list(shard)}
            with PartStore(folder, arguments, command) as store:

                def committed(index: int) -> None:
                    arrays, meta = store.read(index)
                    state.absorb(arrays, meta)
                    bar.update(meta["images"])

                _, count = run_parts(
                    store, batches, measure, key=_batch_key, skip=lambda i: not own(i), committed=committed
                )
                if count:
                    store.finish(count, details or {})
    if count == 0:
        raise ValueError(f"The data holds no image: give {desc or command} at least one.")
    return count
