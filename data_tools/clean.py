"""Clean a dataset folder in place: real decoding, conversion to RGB, border cropping, near-duplicate removal.

The dataset is a root folder with one sub-folder per class (what `crawl`
writes). Every file is decoded for real (`data_tools.images.load_clean`).
Unusable files and near-duplicates are moved to ``<root>/_quarantine/<class>/``
with the reason in the manifest; files that needed a conversion (mode, EXIF
orientation, uniform borders, a format other than JPEG or PNG) are rewritten
as JPEG through a temporary file, and their originals moved to
``<root>/_quarantine/_originals/<class>/``. Nothing is deleted, nothing is
written outside ``root``, and running it again changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.files import atomic_target
from data_tools.dedupe import DEFAULT_THRESHOLD, check_threshold, duplicate_groups, perceptual_hash
from data_tools.images import MAX_PIXELS, Rejected, load_clean
from data_tools.manifest import read_manifest, write_manifest

QUARANTINE = "_quarantine"
_KEPT_FORMATS = ("JPEG", "PNG")


@dataclass
class CleanReport:
    """What `clean` did; ``reasons`` counts rejections by kind (the text before the first colon)."""

    kept: int = 0
    converted: int = 0
    duplicates: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())


def class_folders(root: str) -> list[str]:
    """Class names: the sub-folders of ``root`` not starting with ``_`` or ``.``."""
    if not os.path.isdir(root):
        raise ValueError(f"Dataset folder {root!r} does not exist.")
    return sorted(
        name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)) and not name.startswith(("_", "."))
    )


def _unique_path(path: str) -> str:
    stem, ext = os.path.splitext(path)
    candidate, k = path, 1
    while os.path.exists(candidate):
        candidate = f"{stem}_{k}{ext}"
        k += 1
    return candidate


def _move_to_quarantine(root: str, rel: str, folder: str = "") -> str:
    target = _unique_path(os.path.join(root, QUARANTINE, folder, rel))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(os.path.join(root, rel), target)
    return os.path.relpath(target, root).replace(os.sep, "/")


def _sha256(path: str) -> str:
    with open(path, "rb") as f:  # images that passed the pixel-count check: small enough to read whole
        return hashlib.sha256(f.read()).hexdigest()


def _process(root: str, rel: str, options: dict) -> dict:
    """Check one file; rewrite or quarantine it. Returns the manifest fields it sets."""
    path = os.path.join(root, rel)
    try:
        clean = load_clean(path, **options)
    except Rejected as reason:
        return {"status": "rejected", "reason": str(reason), "quarantine": _move_to_quarantine(root, rel)}
    result = {"status": "ok", "reason": None, "width": clean.image.width, "height": clean.image.height}
    if clean.changes or clean.format not in _KEPT_FORMATS:
        changes = clean.changes or [f"{clean.format} to JPEG"]
        stem = os.path.splitext(rel)[0]
        new_rel = stem + ".jpg"
        if new_rel != rel and os.path.exists(os.path.join(root, new_rel)):
            new_rel = os.path.relpath(_unique_path(os.path.join(root, new_rel)), root).replace(os.sep, "/")
        with atomic_target(os.path.join(root, new_rel)) as tmp:
            clean.image.save(tmp, "JPEG", quality=95)
            result["original"] = _move_to_quarantine(root, rel, "_originals")
        result.update(path=new_rel, converted=changes)
    final = os.path.join(root, result.get("path", rel))
    result["sha256"] = _sha256(final)
    result["dhash"] = f"{perceptual_hash(clean.image):016x}"
    return result


def clean(
    root: str,
    min_size: int = 64,
    max_aspect: float = 3.0,
    max_pixels: int = MAX_PIXELS,
    crop_borders: bool = True,
    threshold: int = DEFAULT_THRESHOLD,
    workers: int | None = None,
    progress: bool = True,
) -> CleanReport:
    """Clean the dataset under ``root`` in place (see the module docstring).

    Parameters
    ----------
    root : str
        Folder with one sub-folder per class.
    min_size : int
        Shorter side below which an image is rejected (after border cropping).
    max_aspect : float
        Longer over shorter side above which an image is rejected.
    max_pixels : int
        Pixel count above which a file is rejected unread (decompression bombs).
    crop_borders : bool
        Crop uniform margins.
    threshold : int
        Bits of perceptual-hash difference within which images are near-duplicates
        (see `data_tools.dedupe`); of each group the largest image is kept.
    workers : int, optional
        Threads (default: the number of CPUs).
    progress : bool
        Show a progress bar when the output is a terminal.

    Returns
    -------
    CleanReport

    Examples
    --------
    >>> report = clean("datasets/streets")  # doctest: +SKIP
    >>> report.kept, report.duplicates, dict(report.reasons)  # doctest: +SKIP
    (3812, 241, {'too small': 17, 'truncated or corrupt': 4})
    """
    if not isinstance(min_size, int) or min_size < 1:
        raise ValueError(f"`min_size` must be a positive integer. Received: min_size={min_size!r}")
    if not max_aspect >= 1:
        raise ValueError(f"`max_aspect` must be at least 1. Received: max_aspect={max_aspect!r}")
    check_threshold(threshold)  # before any file is touched
    records = read_manifest(root)
    files = [
        f"{label}/{name}"
        for label in class_folders(root)
        for name in sorted(os.listdir(os.path.join(root, label)))
        if not name.startswith(".") and os.path.isfile(os.path.join(root, label, name))
    ]
    options = dict(min_size=min_size, max_aspect=max_aspect, max_pixels=max_pixels, crop_borders=crop_borders)
    report = CleanReport()
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = pool.map(lambda rel: _process(root, rel, options), files)
        kept = []
        quiet = None if progress else True  # None: tqdm shows the bar on a terminal only
        for rel, result in tqdm(zip(files, results, strict=True), total=len(files), desc="clean", disable=quiet):
            record = {**records.pop(rel, {}), "path": rel, "class": rel.split("/")[0], "cleaned": now}
            record.update(result)
            records[record["path"]] = record
            if result["status"] == "rejected":
                report.reasons[result["reason"].split(":")[0]] += 1
            else:
                kept.append(record)
                report.converted += "converted" in result
    processed = set(files)
    for rel, record in records.items():
        # A file removed by hand since the last run must not reach split or the loader.
        if record.get("status") == "ok" and rel not in processed and not os.path.exists(os.path.join(root, rel)):
            record.update(status="missing", reason="missing: the file is no longer in the dataset")
    _drop_duplicates(root, kept, records, threshold, report)
    report.kept = len(kept) - report.duplicates
    write_manifest(root, records)
    return report


def _drop_duplicates(root: str, kept: list[dict], records: dict, threshold: int, report: CleanReport) -> None:
    if not kept:
        return
    hashes = np.array([int(r["dhash"], 16) for r in kept], dtype=np.uint64)
    groups = duplicate_groups(hashes, threshold)
    # Keep the image with the most pixels of each group (ties: the first path); quarantine the rest.
    order = sorted(range(len(kept)), key=lambda k: (groups[k], -kept[k]["width"] * kept[k]["height"], kept[k]["path"]))
    keeper = {}
    for k in order:
        record = kept[k]
        record["group"] = int(groups[k])
        if groups[k] not in keeper:
            keeper[groups[k]] = record
            continue
        first = keeper[groups[k]]
        distance = int(np.bitwise_count(hashes[k] ^ np.uint64(int(first["dhash"], 16))))
        record.update(
            status="duplicate",
            reason=f"near-duplicate: of {first['path']} ({distance} bits apart)",
            quarantine=_move_to_quarantine(root, record["path"]),
        )
        report.duplicates += 1
