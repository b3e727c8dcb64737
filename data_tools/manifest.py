"""The dataset manifest: one JSON object per line, one line per file, kept beside the class folders.

Every tool reads it, updates the records it owns (crawl: source and hashes;
clean: status and reason; split: the split) and writes it back whole through
`bagnet_keras.core.commit` (atomically, or as part of clean's transaction).
The crawler appends a line per downloaded file instead: each line is the
intent record of its file (`bagnet_keras.core.commit.finish_staged`); later
lines for a path replace earlier ones.
"""

from __future__ import annotations

import json
import os

from bagnet_keras.core.commit import read_lines, write_atomic

MANIFEST = "manifest.jsonl"


def manifest_path(root: str) -> str:
    return os.path.join(root, MANIFEST)


def read_manifest(root: str) -> dict[str, dict]:
    """Records by path (relative to ``root``, with ``/``); empty when there is no manifest yet.

    Examples
    --------
    >>> read_manifest("/nonexistent")
    {}
    """
    return {record["path"]: record for record in read_lines(manifest_path(root))}


def manifest_text(records: dict[str, dict]) -> str:
    """The manifest file's content for ``records``: one sorted line per path.

    Examples
    --------
    >>> manifest_text({"a/1.jpg": {"path": "a/1.jpg", "status": "ok"}})
    '{"path": "a/1.jpg", "status": "ok"}\\n'
    """
    return "".join(json.dumps(records[key], sort_keys=True) + "\n" for key in sorted(records))


def write_manifest(root: str, records: dict[str, dict]) -> None:
    """Replace the manifest with ``records`` (sorted by path) atomically."""
    write_atomic(manifest_path(root), manifest_text(records))
