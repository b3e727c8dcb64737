"""Runs over a whole dataset, batch by batch: each batch's results committed as one part file, resumed after a kill.

A comparison of 50,000 images cannot hold its images, maps or masked
copies in memory, and a run that dies at 90 % must not start from zero.
So a long run measures one batch at a time and commits that batch's
results (per-image rows, curves, the few images a report shows) as one
file, and its final tables are computed from those files at the end.

A run writes into one folder, under `bagnet_keras.core.commit.folder_lock`:

- ``run.json``: its arguments (`bagnet_keras.core.commit.check_arguments`);
  a rerun with other ones stops with an error instead of mixing two runs.
- ``parts/part-<index>.npz``: the results of batch ``index``: NumPy arrays
  and plain JSON data (``meta``), written through
  `bagnet_keras.core.commit.write_atomic` (temporary name, fsync, rename).
  A batch whose part exists is done; the part also holds a digest of the
  batch's inputs, so a rerun over other data stops with an error.
- ``complete.json``: written last, when every batch of the run is
  committed: how many batches the data has, and what reading the parts
  needs (`PartStore.finish`).

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
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.commit import RUN_FILE as RUN_FILE_NAME
from bagnet_keras.core.commit import check_arguments, differing_keys, folder_lock, recover, write_atomic

#: The folder of the part files, inside the run's folder.
PARTS = "parts"
#: Written when a run (or shard) has committed all its batches.
COMPLETE = "complete.json"
_PART = re.compile(r"^part-(\d{6,})\.npz$")

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


def parse_shard(text: str, environ=None) -> tuple[int, int]:
    """The shard a command-line ``--shard`` names: ``"I/N"``, or ``"env"`` / ``"env/N"`` from a cluster's variables.

    With ``env`` the index comes from ``JOB_COMPLETION_INDEX`` (a Kubernetes
    indexed Job) or ``SLURM_ARRAY_TASK_ID`` (a Slurm array; counted from
    ``SLURM_ARRAY_TASK_MIN``), and the count, when not given, from
    ``SLURM_ARRAY_TASK_COUNT``.

    Examples
    --------
    >>> parse_shard("1/4")
    (1, 4)
    >>> parse_shard("env", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"})
    (4, 8)
    >>> parse_shard("env/3", {"JOB_COMPLETION_INDEX": "2"})
    (2, 3)
    """
    environ = os.environ if environ is None else environ
    head, _, tail = str(text).partition("/")

    def invalid() -> ValueError:
        return ValueError(f"--shard {text!r} is not I/N (shard I of N, counted from 0, e.g. 0/4) or env[/N].")

    def number(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise invalid() from None

    count = number(tail) if tail else None
    if head != "env":
        if count is None:
            raise invalid()
        return check_shard((number(head), count))
    if "JOB_COMPLETION_INDEX" in environ:
        index = number(environ["JOB_COMPLETION_INDEX"])
    elif "SLURM_ARRAY_TASK_ID" in environ:
        index = number(environ["SLURM_ARRAY_TASK_ID"]) - number(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        if count is None and environ.get("SLURM_ARRAY_TASK_COUNT"):
            count = number(environ["SLURM_ARRAY_TASK_COUNT"])
    else:
        raise ValueError(
            f"--shard {text}: neither JOB_COMPLETION_INDEX (a Kubernetes indexed Job) nor "
            "SLURM_ARRAY_TASK_ID (a Slurm array) is set; give the shard as I/N."
        )
    if count is None:
        raise ValueError(f"--shard {text}: the number of shards is not known; give it as env/N.")
    return check_shard((index, count))


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


def merged_store(folders: list[str]) -> tuple[MergedStore, dict]:
    """Join the folders of finished shards into one run's parts; returns the store and the run's ``complete.json``.

    Raises ValueError, naming the folder and the value, unless the folders are
    the finished shards 0..n-1 of one run: the same arguments but the shard,
    each shard once, each complete, each batch in exactly one of them.
    """
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
    shards = [tuple(a.get("shard") or (0, 1)) for _, a, _ in runs]
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
    # Shard 0's details: it holds the first batch, and what was measured on it alone (the sanity checks).
    return MergedStore(owners, same), next(c for (_, _, c), (i, _) in zip(runs, shards, strict=True) if i == 0)


def run_parts(
    store: PartStore | MemoryStore,
    batches: Iterable,
    measure: Measure,
    key: Callable[[object], str] | None = None,
    skip: Callable[[int], bool] | None = None,
    committed: Callable[[int], None] | None = None,
) -> int:
    """Measure every batch not yet committed in ``store`` and commit it; returns how many were measured.

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


def numbered_batches(data, batch_size: int, wanted: Callable[[int], bool], labels=None) -> Iterator[tuple]:
    """``(first image's index, images, labels)`` of each batch in the data's order; None where not ``wanted``.

    An array-like (an array, a memory map, `data_tools.loader.ImageFiles`) is sliced in ``batch_size``
    batches, with ``labels`` beside it, and an unwanted batch is not read; an iterable's batches (of images
    or ``(images, labels)``) are taken as they come, read to be counted also when unwanted. The labels are
    None where the data has none.

    Examples
    --------
    >>> batches = numbered_batches(np.zeros((5, 2)), 2, lambda i: i != 1, labels=[0, 1, 2, 3, 4])
    >>> [(start, None if x is None else len(x), y) for start, x, y in batches]
    [(0, 2, [0, 1]), (2, None, None), (4, 1, [4])]
    """
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"`labels` must give one class per image: {len(labels)} labels for {len(data)} images.")
        for index, start in enumerate(range(0, len(data), batch_size)):
            if not wanted(index):
                yield start, None, None
                continue
            y = None if labels is None else np.asarray(labels[start : start + batch_size]).tolist()
            yield start, np.asarray(data[start : start + batch_size], dtype="float32"), y
        return
    start = 0
    for index, batch in enumerate(data):
        pair = isinstance(batch, (tuple, list))
        x = np.asarray(batch[0] if pair else batch, dtype="float32")
        y = None
        if pair and len(batch) > 1 and wanted(index):  # labels by head (a dict) stay by head
            y = (
                {head: np.asarray(v).tolist() for head, v in batch[1].items()}
                if isinstance(batch[1], Mapping)
                else np.asarray(batch[1]).tolist()
            )
        yield start, x if wanted(index) else None, y
        start += len(x)


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
