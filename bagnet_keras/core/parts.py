"""The committed results of a streamed run, one part per batch: in memory, in a run's folder, or across shards.

A run's folder (see `bagnet_keras.core.stream` for the run loop) holds:

- ``run.json``: its arguments (`bagnet_keras.core.commit.check_arguments`);
  a rerun with other ones stops with an error instead of mixing two runs.
- ``parts/part-<index>.npz``: the results of batch ``index``: NumPy arrays
  and plain JSON data (``meta``), written through
  `bagnet_keras.core.commit.write_atomic` (temporary name, fsync, rename).
  A batch whose part exists is done.
- ``complete.json``: written last, when every batch of the run is
  committed: how many batches the data has, and what reading the parts
  needs (`PartStore.finish`).

`PartStore` is that folder, `MemoryStore` the same interface for a run
that writes no files, and `merged_store` reads the finished shards of one
run (each its own folder) as one run's parts. Parts are read with
``allow_pickle=False``: no pickle ever runs.

Examples
--------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with PartStore(folder, {"factor": 2}) as store:
...     store.write(0, {"double": np.arange(3.0)}, {"n": 3})
...     store.finish(1, {})
>>> store, complete = merged_store([folder])
>>> store.read(0)[0]["double"].tolist(), complete
([0.0, 1.0, 2.0], {'batches': 1})
"""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np

from bagnet_keras.core.commit import RUN_FILE as RUN_FILE_NAME
from bagnet_keras.core.commit import check_arguments, differing_keys, folder_lock, recover, write_atomic

__all__ = ["COMPLETE", "PARTS", "MemoryStore", "MergedStore", "PartStore", "merged_store"]

#: The folder of the part files, inside the run's folder.
PARTS = "parts"
#: Written when a run (or shard) has committed all its batches.
COMPLETE = "complete.json"
_PART = re.compile(r"^part-(\d{6,})\.npz$")


class MemoryStore:
    """The parts of a run kept in memory: `PartStore`'s interface, for a run that writes no files."""

    def __init__(self):
        self._parts: dict[int, tuple[dict, dict]] = {}

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def done(self, index: int) -> bool:
        return index in self._parts

    def write(self, index: int, arrays: dict, meta: dict) -> None:
        self._parts[index] = (dict(arrays), json.loads(json.dumps(meta)))

    def read(self, index: int) -> tuple[dict, dict]:
        return self._parts[index]

    def read_meta(self, index: int) -> dict:
        return self._parts[index][1]

    def indices(self) -> list[int]:
        return sorted(self._parts)

    def finish(self, batches: int, details: dict) -> None:
        self.complete = {"batches": batches, **details}

    def finished(self) -> dict | None:
        return getattr(self, "complete", None)


class PartStore:
    """The part files of one run in ``folder``: lock, recovery and argument check on entering.

    Parameters
    ----------
    folder : path
        The run's folder (created if needed). Nothing is written outside it.
    arguments : dict
        Plain JSON data that identifies the run (`check_arguments`).
    command : str
        Named in the error a second writer of the folder gets.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with PartStore(folder, {"steps": 20}) as store:
    ...     store.write(0, {"x": np.ones(2)}, {"rows": [{"image": 0}]})
    ...     store.done(0), store.read_meta(0)["rows"]
    (True, [{'image': 0}])
    >>> PartStore(folder, {"steps": 10}).__enter__()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: '...' holds a run with other arguments (differing: steps). ...
    """

    def __init__(self, folder: str | os.PathLike, arguments: dict, command: str = "compare"):
        self.folder = os.fspath(folder)
        self.arguments = arguments
        self.command = command
        self._lock = None

    def __enter__(self) -> PartStore:
        os.makedirs(os.path.join(self.folder, PARTS), exist_ok=True)
        self._lock = folder_lock(self.folder, self.command)
        self._lock.__enter__()
        try:
            recover(self.folder)  # temporary files of a killed write go; parts are whole or absent
            check_arguments(self.folder, self.arguments)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def path(self, index: int) -> str:
        return os.path.join(self.folder, PARTS, f"part-{index:06d}.npz")

    def done(self, index: int) -> bool:
        return os.path.exists(self.path(index))

    def write(self, index: int, arrays: dict, meta: dict) -> None:
        """Commit batch ``index``: its arrays and ``meta`` (plain JSON data) as one file, atomically."""
        if "meta" in arrays:
            raise ValueError("An array of a part may not be called 'meta' (the part's JSON data has that name).")
        payload = {name: np.asarray(value) for name, value in arrays.items()}
        for name, value in payload.items():
            if value.dtype == object:
                raise ValueError(f"Array {name!r} of a part has dtype object, which only a pickle could store.")
        buffer = io.BytesIO()  # one write of the whole file: fewer steps for a kill to fall between
        np.savez(buffer, meta=np.array(json.dumps(meta, allow_nan=True)), **payload)
        write_atomic(self.path(index), buffer.getvalue())

    def read(self, index: int) -> tuple[dict, dict]:
        """``(arrays, meta)`` of a committed batch."""
        with np.load(self.path(index), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != "meta"}
            meta = json.loads(str(data["meta"]))
        return arrays, meta

    def read_meta(self, index: int) -> dict:
        """The ``meta`` of a committed batch alone (its arrays are not read)."""
        with np.load(self.path(index), allow_pickle=False) as data:
            return json.loads(str(data["meta"]))

    def indices(self) -> list[int]:
        """The committed batches, in order."""
        return _indices(self.folder)

    def finish(self, batches: int, details: dict) -> None:
        """Record that every batch is committed: ``complete.json`` with the count and ``details`` (plain JSON)."""
        write_atomic(os.path.join(self.folder, COMPLETE), json.dumps({"batches": batches, **details}, indent=1))

    def finished(self) -> dict | None:
        """What `finish` recorded, when the run in this folder finished before; else None."""
        return _read_json(os.path.join(self.folder, COMPLETE))


def _indices(folder: str) -> list[int]:
    names = os.listdir(os.path.join(folder, PARTS))
    return sorted(int(m.group(1)) for m in map(_PART.match, names) if m)


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class MergedStore:
    """The parts of several finished shards of one run, read as one run's (see `merged_store`).

    ``arguments`` are the run's (as ``run.json`` holds them), without the shard.
    """

    def __init__(self, owners: dict[int, str], arguments: dict):
        self._owners = owners
        self.arguments = arguments

    def indices(self) -> list[int]:
        return sorted(self._owners)

    def read(self, index: int) -> tuple[dict, dict]:
        store = PartStore(self._owners[index], {})
        return store.read(index)


def _short(value) -> str:
    """A value for an error message; long ones (weight digests) cut to their start."""
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _finished_runs(folders: list[str]) -> list[tuple[str, dict, dict]]:
    """``(folder, run.json, complete.json)`` of each folder, or a ValueError naming one that holds no finished run."""
    if not folders:
        raise ValueError("Name the folders of the shards to merge.")
    runs = []
    for folder in folders:
        arguments = _read_json(os.path.join(folder, RUN_FILE_NAME))
        complete = _read_json(os.path.join(folder, COMPLETE))
        if arguments is None:
            raise ValueError(
                f"{folder!r} holds no run ({RUN_FILE_NAME} is missing): name the output folder of a sharded run."
            )
        if complete is None:
            raise ValueError(
                f"The run in {folder!r} has not finished ({COMPLETE} is missing): run its command "
                "again to complete it, then merge."
            )
        runs.append((folder, arguments, complete))
    return runs


def _same_run(runs: list[tuple[str, dict, dict]]) -> dict:
    """The arguments the runs share but their shard, or a ValueError naming what differs."""
    first_folder, first, _ = runs[0]
    same = {k: v for k, v in first.items() if k != "shard"}
    for folder, arguments, _ in runs[1:]:
        other = {k: v for k, v in arguments.items() if k != "shard"}
        if other != same:
            differing = differing_keys(other, same)
            values = "; ".join(f"{k}: {_short(other.get(k))} vs {_short(same.get(k))}" for k in differing)
            raise ValueError(
                f"{folder!r} and {first_folder!r} are not shards of the same run (differing: "
                f"{', '.join(differing)}; {values}); merge the shards of one run only."
            )
    return same


def _check_shards(shards: list[tuple[int, int]]) -> None:
    """A ValueError unless ``shards`` are 0..n-1 of one count n, each once."""
    counts = {n for _, n in shards}
    if len(counts) != 1:
        raise ValueError(f"The shards name different shard counts ({sorted(counts)}); merge the shards of one run.")
    count = counts.pop()
    indices = sorted(i for i, _ in shards)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        twice = sorted({i for i in indices if indices.count(i) > 1})
        raise ValueError(
            f"Merging {count} shards needs each of 0..{count - 1} once: "
            f"{'missing ' + str(missing) if missing else ''}{' ' if missing and twice else ''}"
            f"{'given twice ' + str(twice) if twice else ''}."
        )


def _owners(runs: list[tuple[str, dict, dict]]) -> dict[int, str]:
    """Which folder holds each batch, checked to be every batch of the run exactly once."""
    totals = {c["batches"] for _, _, c in runs}
    if len(totals) != 1:
        raise ValueError(
            f"The shards saw different numbers of batches ({sorted(totals)}): the data changed "
            "between them; run every shard on the same data."
        )
    owners: dict[int, str] = {}
    for folder, _, _ in runs:
        for index in _indices(folder):
            owners[index] = folder
    total = totals.pop()
    if sorted(owners) != list(range(total)):
        raise ValueError(
            f"The shards hold {len(owners)} of the run's {total} batches; run each shard's command "
            "again to complete it."
        )
    return owners


def merged_store(folders: list[str]) -> tuple[MergedStore, dict]:
    """Join the folders of finished shards into one run's parts; returns the store and the run's ``complete.json``.

    Raises ValueError, naming the folder and the value, unless the folders are
    the finished shards 0..n-1 of one run: the same arguments but the shard,
    each shard once, each complete, each batch in exactly one of them.

    Examples
    --------
    >>> merged_store([])
    Traceback (most recent call last):
    ...
    ValueError: Name the folders of the shards to merge.
    """
    runs = _finished_runs(folders)
    same = _same_run(runs)
    shards = [tuple(a.get("shard") or (0, 1)) for _, a, _ in runs]
    _check_shards(shards)
    owners = _owners(runs)
    # Shard 0's details: it holds the first batch, and what was measured on it alone (the sanity checks).
    return MergedStore(owners, same), next(c for (_, _, c), (i, _) in zip(runs, shards, strict=True) if i == 0)
