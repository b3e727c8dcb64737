"""Writing a file so that it is either the old one or the whole new one, never half of it."""

from __future__ import annotations

import os
import uuid


def write_atomic(path: str | os.PathLike, data: str | bytes) -> str:
    """Write ``data`` to a hidden temporary file beside ``path``, then rename it to ``path``.

    A failure leaves ``path`` as it was and removes the temporary file.

    Examples
    --------
    >>> write_atomic("runs/results.json", "{}")  # doctest: +SKIP
    'runs/results.json'
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
    try:
        if isinstance(data, bytes):
            with open(tmp, "wb") as f:
                f.write(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
