"""One commit protocol for every writer: temporary file, fsync, rename, folder fsync, intents, recovery on start.

The invariant it keeps: **after a kill at any instant and a rerun of the same
command, every file is either absent (and its work is retried) or present,
complete and recorded.** No reader ever sees half a file, and no file is
kept that no record knows.

The pieces, smallest first:

- `atomic_target` / `write_atomic`: a file is written under a hidden
  temporary name beside its final path (`temporary_path`, prefix
  ``.partial-``), flushed to disk, renamed over the final path, and the folder
  flushed where the platform allows. The final path holds the old file or the
  whole new one.
- `append_lines` / `read_lines` / `repair_lines`: an append-only JSON Lines log
  (the crawl's manifest and log). Each append is flushed before the caller
  goes on, so a line on disk is an *intent record*: the crawler records a
  picture (with its sha256) after writing it to `staged_path` and before
  renaming it, and `finish_staged` rolls such a record forward on resume, as
  a write-ahead log does. A line cut short by a kill was never committed:
  `repair_lines` cuts it off before anything is appended again.
- `Transaction`: a change of several files at once (clean's quarantine moves,
  re-encoded images and the new manifest). New content is staged under
  temporary names first; `commit` flushes it, writes the list of renames as
  one intent file (``.intent.json``, atomically: that write is the commit
  point), applies the renames in order and removes the intent. `recover`
  applies a committed intent again after a kill (each rename is applied once:
  see `Transaction.move` and `Transaction.replace`) and deletes the
  temporary files nobody will rename, so an uncommitted change leaves no
  trace.
- `folder_lock`: one writer per folder. The lock is the operating system's
  (``flock``), released when its process dies, so a lock left by a killed
  run never blocks the resume; the file names the holder for the error a
  second writer gets.
- `check_arguments`: a folder remembers the arguments of the run writing
  it, so a rerun with the same ones resumes and one with other ones stops
  with an error instead of mixing two runs' results.
- `disk_full_errors`: a full disk (or a file-size limit) becomes one error
  that names the folder and says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator

#: Hidden temporary files start with this; the final name follows, so writers that choose the format
#: from the extension (Keras, h5py, Pillow) see the right one.
TEMPORARY_PREFIX = ".partial-"
#: The committed, not yet applied intent of a `Transaction`, in the transaction's root folder.
INTENT_FILE = ".intent.json"
#: The lock file of `folder_lock`.
LOCK_FILE = ".lock"
#: The arguments of the run that writes a folder (`check_arguments`).
RUN_FILE = "run.json"

#: What a full disk, a full quota or a file-size limit make a write fail with.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})


def temporary_path(path: str | os.PathLike) -> str:
    """A fresh hidden path beside ``path`` that keeps its name (and extension) at the end.

    Examples
    --------
    >>> name = os.path.basename(temporary_path("runs/best.keras"))
    >>> name.startswith(TEMPORARY_PREFIX) and name.endswith("-best.keras")
    True
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def staged_path(path: str | os.PathLike) -> str:
    """The one hidden path where ``path``'s content waits for its intent record (same folder, fixed name).

    Unlike `temporary_path` the name is fixed, so recovery finds the staged
    file of a record: use it only for paths that a single writer under
    `folder_lock` names.

    Examples
    --------
    >>> staged_path("data/Paris/000001.jpg")
    'data/Paris/.partial-000001.jpg'
    """
    folder, name = os.path.split(os.fspath(path))
    return os.path.join(folder, TEMPORARY_PREFIX + name)


def is_temporary(name: str) -> bool:
    """True for the base name of a file this module writes before a rename.

    Examples
    --------
    >>> is_temporary(".partial-000001.jpg"), is_temporary("000001.jpg")
    (True, False)
    """
    return name.startswith(TEMPORARY_PREFIX)


def fsync_path(path: str, directory: bool = False) -> None:
    """Flush a file, or a folder's entries (``directory=True``), to disk; a no-op where the OS cannot."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:  # folders cannot be opened on Windows; the rename is what matters there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_folder_of(path: str) -> None:
    fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


def rename_durably(src: str, dst: str) -> None:
    """``os.replace(src, dst)``, then flush the folders so the rename survives a power cut."""
    os.replace(src, dst)
    _fsync_folder_of(dst)
    if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
        _fsync_folder_of(src)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike):
    """Yield a temporary path to write ``path``'s new content to; it replaces ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it
    was; after a kill it is left for `recover` (or `sweep_temporary`) to delete.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_target(os.path.join(folder, "a.txt")) as tmp:
    ...     _ = open(tmp, "w").write("whole")
    >>> open(os.path.join(folder, "a.txt")).read(), os.listdir(folder)
    ('whole', ['a.txt'])
    """
    path = os.fspath(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        fsync_path(tmp)
        rename_durably(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> str:
    """Write ``data`` (text as UTF-8) to ``path`` through `atomic_target`.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "results.json")
    >>> write_atomic(path, "{}") == path, open(path).read()
    (True, '{}')
    """
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
    return os.fspath(path)


# -- append-only logs of intent records


def read_lines(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON Lines file; empty when there is no file.

    A last line cut short by a kill mid-append is skipped (it was never
    committed); a bad line anywhere else is an error.

    Examples
    --------
    >>> read_lines("/nonexistent/log.jsonl")
    []
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    objects = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the append never finished
                continue
            raise ValueError(f"{path}, line {number}: not valid JSON; fix or remove the line.") from None
    return objects


def repair_lines(path: str | os.PathLike) -> bool:
    """Cut off a last line that a kill left without its newline, so the next append starts a line of its own.

    Returns whether anything was cut. Call it under the writer's lock, before
    the first append of a run.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
    >>> _ = open(path, "w").write('{"a": 1}\\n{"b": ')
    >>> repair_lines(path), open(path).read()
    (True, '{"a": 1}\\n')
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return False
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return False
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())
    return True


def append_lines(path: str | os.PathLike, objects: Iterable[dict]) -> None:
    """Append ``objects`` as JSON lines and flush them to disk before returning: each line is committed.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
    >>> append_lines(path, [{"a": 1}]); append_lines(path, [{"b": 2}])
    >>> read_lines(path)
    [{'a': 1}, {'b': 2}]
    """
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(o, sort_keys=True) + "\n" for o in objects))
        f.flush()
        os.fsync(f.fileno())


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex), read in blocks: the one hash of files in the package.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "f.bin")
    >>> _ = write_atomic(path, b"abc")
    >>> file_sha256(path)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def finish_staged(final: str | os.PathLike, sha256: str) -> bool:
    """Roll a recorded file forward: True when ``final`` is (now) in place.

    Where ``final`` is missing and its `staged_path` holds exactly the
    recorded bytes, the rename that a kill interrupted is done now. Otherwise
    the staged file (if any) is removed and False says the record has no file.

    Examples
    --------
    >>> import hashlib, tempfile
    >>> final = os.path.join(tempfile.mkdtemp(), "a.bin")
    >>> _ = open(staged_path(final), "wb").write(b"abc")
    >>> finish_staged(final, hashlib.sha256(b"abc").hexdigest()), open(final, "rb").read()
    (True, b'abc')
    """
    final = os.fspath(final)
    if os.path.exists(final):
        return True
    staged = staged_path(final)
    if not os.path.exists(staged):
        return False
    if file_sha256(staged) != sha256:
        os.remove(staged)
        return False
    rename_durably(staged, final)
    return True


# -- transactions over several files


class Transaction:
    """Several new and moved files under one root, committed all at once (see the module docstring).

    Stage new content with `stage` (then write to the path it returns) or
    `write`, plan renames with `move` (an existing file to a free path) and
    `replace` (a staged file over its final path), then `commit`. Until
    `commit` writes the intent, nothing visible has changed and a kill leaves
    only temporary files, which `recover` deletes; from then on `recover`
    finishes the renames.

    Paths are relative to ``root`` (``/`` or the OS separator). ``details``
    (plain JSON data: the writer's arguments and report, say) travel in the
    intent, and `recover` returns them, so a rerun can tell that the change
    it finished was its own.

    Examples
    --------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = open(os.path.join(root, "bad.txt"), "w").write("x")
    >>> with Transaction(root) as tx:
    ...     tx.move("bad.txt", "_quarantine/bad.txt")
    ...     tx.write("manifest.txt", "bad.txt: quarantined\\n")
    ...     tx.commit()
    '_quarantine/bad.txt'
    >>> sorted(os.listdir(root)), os.listdir(os.path.join(root, "_quarantine"))
    (['_quarantine', 'manifest.txt'], ['bad.txt'])
    """

    def __init__(self, root: str | os.PathLike, details: dict | None = None):
        self.root = os.fspath(root)
        self.details = dict(details or {})
        self.operations: list[dict] = []
        self.staged: list[str] = []
        self.committed = False
        self._targets: set[str] = set()

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def free_path(self, rel: str) -> str:
        """``rel``, or ``<stem>_<k><ext>`` with the smallest k, neither on disk nor planned by this transaction."""
        stem, ext = os.path.splitext(rel)
        candidate, k = rel, 1
        while candidate in self._targets or os.path.lexists(self._abs(candidate)):
            candidate = f"{stem}_{k}{ext}"
            k += 1
        return candidate

    def stage(self, rel: str) -> str:
        """A new temporary file beside ``rel`` (absolute path) for content that `replace` will move into place."""
        path = temporary_path(self._abs(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.staged.append(path)
        return path

    def move(self, src: str, dst: str) -> str:
        """Plan moving the existing file ``src`` to ``dst`` (or the next free name); returns the name used.

        Applied once: the move counts as done when its source is gone or its
        destination, free when planned, exists.
        """
        dst = self.free_path(dst)
        self._targets.add(dst)
        self.operations.append({"op": "move", "src": src, "dst": dst})
        return dst

    def replace(self, staged: str, dst: str) -> None:
        """Plan renaming the staged file ``staged`` (from `stage`) over ``dst``; done when ``staged`` is gone."""
        self._targets.add(dst)
        self.operations.append({"op": "replace", "src": self._rel(staged), "dst": dst})

    def write(self, rel: str, data: str | bytes) -> None:
        """Stage ``data`` (text as UTF-8) for ``rel`` and plan its `replace`."""
        path = self.stage(rel)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        self.replace(path, rel)

    def commit(self) -> None:
        """Flush the staged files, write the intent (the commit point), apply it, remove the intent."""
        for path in self.staged:
            fsync_path(path)
        intent = os.path.join(self.root, INTENT_FILE)
        write_atomic(intent, json.dumps({"details": self.details, "operations": self.operations}, indent=1))
        self.committed = True
        _apply(self.root, self.operations)
        os.remove(intent)
        fsync_path(self.root, directory=True)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """Without a commit, an exception leaves nothing behind: the staged files are removed."""
        if kind is not None and not self.committed:
            for path in self.staged:
                if os.path.lexists(path):
                    os.remove(path)


def _apply(root: str, operations: list[dict]) -> None:
    for operation in operations:
        src = os.path.join(root, *operation["src"].split("/"))
        dst = os.path.join(root, *operation["dst"].split("/"))
        if not os.path.lexists(src) or (operation["op"] == "move" and os.path.lexists(dst)):
            continue  # applied before the kill
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        rename_durably(src, dst)


def sweep_temporary(folder: str | os.PathLike) -> list[str]:
    """Delete every temporary file (`is_temporary`) under ``folder``; returns their paths.

    Only for folders under the caller's `folder_lock`: another writer's file
    in progress would go too.
    """
    removed = []
    for parent, _, names in os.walk(os.fspath(folder)):
        for name in names:
            if is_temporary(name):
                path = os.path.join(parent, name)
                os.remove(path)
                removed.append(path)
    return removed


def recover(root: str | os.PathLike) -> dict | None:
    """Finish a `Transaction` that a kill interrupted under ``root``, then delete leftover temporary files.

    Returns the ``details`` of the transaction it finished, or None when
    there was none. Call it under the writer's `folder_lock`, before reading
    anything the writer keeps.

    Examples
    --------
    >>> import tempfile
    >>> recover(tempfile.mkdtemp()) is None
    True
    """
    root = os.fspath(root)
    intent = os.path.join(root, INTENT_FILE)
    details = None
    if os.path.exists(intent):
        with open(intent, encoding="utf-8") as f:
            committed = json.load(f)
        _apply(root, committed["operations"])
        os.remove(intent)
        fsync_path(root, directory=True)
        details = committed["details"]
    if os.path.isdir(root):
        sweep_temporary(root)
    return details


# -- one run per folder, one writer at a time, and a full disk


def differing_keys(a: dict, b: dict) -> list[str]:
    """The keys whose values differ between two records of run arguments (missing counts as None), sorted.

    Examples
    --------
    >>> differing_keys({"steps": 20, "seed": 0}, {"steps": 10, "seed": 0, "cell": 8})
    ['cell', 'steps']
    """
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def check_arguments(folder: str | os.PathLike, arguments: dict) -> None:
    """Record ``arguments`` (plain JSON data) in ``<folder>/run.json``, or raise if it holds other ones.

    Raises ValueError naming the arguments that differ, so that a rerun
    never mixes its results with those of another run.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> check_arguments(folder, {"epochs": 4, "seed": 0})
    >>> check_arguments(folder, {"epochs": 4, "seed": 0})  # the same run again: resume
    >>> check_arguments(folder, {"epochs": 5, "seed": 0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: '...' holds a run with other arguments (differing: epochs). Rerun with ...
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, RUN_FILE)
    arguments = json.loads(json.dumps(arguments))  # as they read back (tuples become lists)
    if not os.path.exists(path):
        write_atomic(path, json.dumps(arguments, indent=1, sort_keys=True))
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    if saved != arguments:
        differing = differing_keys(saved, arguments)
        raise ValueError(
            f"{folder!r} holds a run with other arguments (differing: {', '.join(differing)}). Rerun with the "
            "arguments of that run to resume it, or choose another output folder (or delete that one) to start "
            "afresh."
        )


class FolderBusyError(OSError):
    """Another process holds the folder's lock: the message names the lock file and the process."""


class NoSpaceError(OSError):
    """The disk (or a file-size limit) is full: the message names the folder and what to do."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[str]:
    """Hold ``folder``'s lock (``<folder>/.lock``) while ``command`` writes into it; yields the lock file's path.

    Raises `FolderBusyError`, naming the lock file and the process holding
    it, when another process has it. The operating system releases the lock
    of a process that dies, so a killed run never blocks the next one.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with folder_lock(folder, "clean"):
    ...     with folder_lock(folder, "crawl"):  # doctest: +ELLIPSIS
    ...         pass
    Traceback (most recent call last):
    ...
    bagnet_keras.core.commit.FolderBusyError: ... is in use by process ... ('clean'), which holds its lock file ...
    """
    folder = os.fspath(folder)
    path = os.path.join(folder, LOCK_FILE)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; concurrent writers of one folder are the user's care
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().split(maxsplit=1) or ["unknown", "?"]
                pid, what = holder[0], holder[1].strip() if len(holder) > 1 else "?"
                raise FolderBusyError(
                    f"{folder!r} is in use by process {pid} ({what!r}), which holds its lock file {path!r}; "
                    "wait for that process to finish or stop it, then run the command again."
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {command}\n")
        handle.flush()
        yield path
    finally:
        handle.close()


@contextlib.contextmanager
def disk_full_errors(folder: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT, EFBIG) inside the block into a `NoSpaceError` naming ``folder``.

    Examples
    --------
    >>> with disk_full_errors("datasets/streets"):  # doctest: +ELLIPSIS
    ...     raise OSError(errno.ENOSPC, "No space left on device")
    Traceback (most recent call last):
    ...
    bagnet_keras.core.commit.NoSpaceError: No space left to write into 'datasets/streets' ...
    """
    try:
        yield
    except NoSpaceError:
        raise
    except OSError as error:
        if error.errno not in FULL_DISK_ERRNOS:
            raise
        raise NoSpaceError(
            f"No space left to write into {os.fspath(folder)!r} ({error.strerror or error}). Free some space "
            "on its disk (or choose a folder on another disk), then run the same command again: what was "
            "kept so far stays, and the run goes on from there."
        ) from error
