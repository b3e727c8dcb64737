"""The dataset manifest: one JSON object per line, one line per file, kept beside the class folders.

Every tool reads it, updates the records it owns (crawl: source and hashes;
clean: status and reason; split: the split) and writes it back through a
temporary file, so a crash leaves the previous manifest intact.
"""

from __future__ import annotations

import json
import os

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
    path = manifest_path(root)
    if not os.path.exists(path):
        return {}
    records = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # A line cut by a crash mid-append: the file it named is checked again by the next tool.
                if number == sum(1 for _ in open(path, encoding="utf-8")):
                    continue
                raise ValueError(f"{path}, line {number}: not valid JSON; fix or remove the line.") from None
            records[record["path"]] = record
    return records


def write_manifest(root: str, records: dict[str, dict]) -> None:
    """Replace the manifest with ``records`` (sorted by path) atomically."""
    path = manifest_path(root)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for key in sorted(records):
            f.write(json.dumps(records[key], sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
