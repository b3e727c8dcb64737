"""The dataset manifest: one JSON object per line, one line per file, kept beside the class folders.

Every tool reads it, updates the records it owns (crawl: source and hashes;
clean: status and reason; split: the split) and writes it back through a
temporary file, so a crash leaves the previous manifest intact. The crawler
appends a line per downloaded file instead, so a crawl killed mid-way loses
at most the line being written; later lines for a path replace earlier ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from bagnet_keras.core.files import write_atomic

MANIFEST = "manifest.jsonl"


def manifest_path(root: str) -> str:
    return os.path.join(root, MANIFEST)


def read_jsonl(path: str) -> list[dict]:
    """The objects of a JSON Lines file; empty when there is no file.

    A last line cut short by a crash mid-append is skipped; a bad line anywhere
    else is an error.

    Examples
    --------
    >>> read_jsonl("/nonexistent/log.jsonl")
    []
    """
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


def append_jsonl(path: str, objects: Iterable[dict]) -> None:
    """Append ``objects`` as lines and flush them to disk before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(o, sort_keys=True) + "\n" for o in objects))
        f.flush()
        os.fsync(f.fileno())


def read_manifest(root: str) -> dict[str, dict]:
    """Records by path (relative to ``root``, with ``/``); empty when there is no manifest yet.

    Examples
    --------
    >>> read_manifest("/nonexistent")
    {}
    """
    return {record["path"]: record for record in read_jsonl(manifest_path(root))}


def write_manifest(root: str, records: dict[str, dict]) -> None:
    """Replace the manifest with ``records`` (sorted by path) atomically."""
    lines = [json.dumps(records[key], sort_keys=True) + "\n" for key in sorted(records)]
    write_atomic(manifest_path(root), "".join(lines))
