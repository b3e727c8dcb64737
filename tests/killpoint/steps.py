"""Test-only: count a process's file-system steps under chosen folders, and SIGKILL it at the k-th.

A step is each open for writing, write, truncate, fsync, rename, unlink,
mkdir and rmdir whose path lies under one of the roots (writes through
Python's file objects, ``os.open`` / ``os.sendfile`` included). At the k-th
step the process kills itself with SIGKILL before doing it, except a
write, of which it first writes half (the torn append a real kill can
leave). Every such operation *outside* the roots is recorded as a
violation. Nothing of this is in the package: `arm` patches ``builtins``
and ``os`` of the process it runs in (see ``runner.py``).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import threading

_original = {}
_state = {"count": 0, "at": 0, "roots": (), "trace": None}
_lock = threading.Lock()
_IGNORED = ("/dev/", "/proc/")


def _path_of(target) -> str | None:
    if hasattr(target, "fileno"):
        target = target.fileno()
    if isinstance(target, int):
        try:
            return os.readlink(f"/proc/self/fd/{target}")
        except OSError:
            return None
    try:
        return os.path.abspath(os.fsdecode(target))
    except TypeError:
        return None


def _under_roots(path: str) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in _state["roots"])


def _note(line: dict) -> None:
    if _state["trace"]:
        with _original["open"](_state["trace"], "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def step(kind: str, *targets, torn=None) -> None:
    """Count one step on ``targets``; kill the process if it is the armed one (``torn()`` first, for writes)."""
    paths = [p for p in (_path_of(t) for t in targets) if p is not None]
    if not paths or any(p.startswith(_IGNORED) for p in paths):
        return
    if _state["trace"] and os.path.abspath(_state["trace"]) in paths:
        return
    if not any(_under_roots(p) for p in paths):
        _note({"violation": kind, "paths": paths})
        return
    with _lock:
        _state["count"] += 1
        k = _state["count"]
        _note({"step": k, "kind": kind, "paths": paths})
        if k == _state["at"]:
            if torn is not None:
                torn()
            os.kill(os.getpid(), signal.SIGKILL)


class _File:
    """A file object whose writes are steps."""

    def __init__(self, file, path):
        self._file, self._path = file, path

    def write(self, data):
        def torn():
            self._file.write(data[: len(data) // 2])
            self._file.flush()

        step("write", self._path, torn=torn)
        return self._file.write(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def truncate(self, *args):
        step("truncate", self._path)
        return self._file.truncate(*args)

    def __enter__(self):
        self._file.__enter__()
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __iter__(self):
        return iter(self._file)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _open(file, mode="r", *args, **kwargs):
    handle = _original["open"](file, mode, *args, **kwargs)
    if isinstance(file, int) or not any(c in mode for c in "wax+"):
        return handle
    step("open", file)
    return _File(handle, file)


def _os_open(path, flags, *args, **kwargs):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
        step("open", path)
    return _original["os.open"](path, flags, *args, **kwargs)


def _wrap(name: str, kind: str, n_paths: int = 1):
    function = getattr(os, name)
    _original[f"os.{name}"] = function

    def wrapped(*args, **kwargs):
        step(kind, *args[:n_paths])
        return function(*args, **kwargs)

    setattr(os, name, wrapped)


def arm(roots, at: int = 0, trace: str | None = None) -> None:
    """Count steps under ``roots`` from now on; SIGKILL at step ``at`` (0: never); log steps to ``trace``."""
    _state.update(count=0, at=int(at), roots=tuple(os.path.abspath(r) for r in roots), trace=trace)
    if _original:
        return
    _original["open"] = builtins.open
    _original["os.open"] = os.open
    builtins.open = io.open = _open
    os.open = _os_open
    for name, kind, n_paths in (
        ("fsync", "fsync", 1),
        ("replace", "rename", 2),
        ("rename", "rename", 2),
        ("remove", "unlink", 1),
        ("unlink", "unlink", 1),
        ("mkdir", "mkdir", 1),
        ("rmdir", "rmdir", 1),
        ("truncate", "truncate", 1),
        ("ftruncate", "truncate", 1),
        ("sendfile", "write", 1),
    ):
        _wrap(name, kind, n_paths)


def count() -> int:
    return _state["count"]
