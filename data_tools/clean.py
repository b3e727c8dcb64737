"""Clean a dataset folder in place: real decoding, conversion to RGB, border cropping, near-duplicate removal.

The dataset is a root folder with one sub-folder per class (what `crawl`
writes). Every file is decoded for real (`data_tools.images.load_clean`).
Unusable files and near-duplicates are moved to ``<root>/_quarantine/<class>/``
with the reason in the manifest; files that needed a conversion (mode, EXIF
orientation, uniform borders, a format other than JPEG or PNG) are rewritten
as JPEG through a temporary file, and their originals moved to
``<root>/_quarantine/_originals/<class>/``. Nothing is deleted, nothing is
written outside ``root``, and running it again changes nothing.

Every change of a run is one `bagnet_keras.core.commit.Transaction`: the
files are inspected and the re-encoded ones staged under temporary names
first, then the moves, the renames and the new manifest are committed
together. A kill before the commit point leaves the dataset as it was; a
kill after it is finished by the next run, before it does anything else.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from bagnet_keras.core.commit import Transaction, disk_full_errors, file_sha256, folder_lock, recover
from bagnet_keras.core.validation import check_int, check_number, check_positive_int
from data_tools.dedupe import DEFAULT_THRESHOLD, check_threshold, duplicate_groups, perceptual_hash
from data_tools.images import MAX_PIXELS, Rejected, load_clean
from data_tools.manifest import MANIFEST, manifest_text, read_manifest

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


def _inspect(root: str, rel: str, options: dict, tx: Transaction) -> dict:
    """Check one file (reading only) and stage its re-encoded copy where it needs one.

    Returns the manifest fields it sets, and ``staged`` for a re-encoded file.
    """
    path = os.path.join(root, rel)
    try:
        clean = load_clean(path, **options)
    except Rejected as reason:
        return {"status": "rejected", "reason": str(reason)}
    result = {"status": "ok", "reason": None, "width": clean.image.width, "height": clean.image.height}
    if clean.changes or clean.format not in _KEPT_FORMATS:
        staged = tx.stage(os.path.splitext(rel)[0] + ".jpg")
        encoded = io.BytesIO()  # encoded first: Pillow's own file writes lose the errno of a full disk
        clean.image.save(encoded, "JPEG", quality=95)
        with open(staged, "wb") as f:
            f.write(encoded.getbuffer())
        result.update(staged=staged, converted=clean.changes or [f"{clean.format} to JPEG"])
    result["sha256"] = file_sha256(result.get("staged", path))
    result["dhash"] = f"{perceptual_hash(clean.image):016x}"
    return result


def _plan(tx: Transaction, rel: str, result: dict) -> dict:
    """Plan the moves of one inspected file; returns its fields with the paths it will have."""
    if result["status"] == "rejected":
        return {**result, "quarantine": tx.move(rel, f"{QUARANTINE}/{rel}")}
    if "staged" not in result:
        return result
    result = dict(result)
    staged = result.pop("staged")
    new_rel = os.path.splitext(rel)[0] + ".jpg"
    if new_rel != rel:
        new_rel = tx.free_path(new_rel)
    result["original"] = tx.move(rel, f"{QUARANTINE}/_originals/{rel}")
    tx.replace(staged, new_rel)
    return {**result, "path": new_rel}


def clean(
    root: str,
    *,
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
    min_size = check_positive_int(min_size, "min_size")
    check_number(max_aspect, "max_aspect", low=1)
    check_int(workers, "workers", low=1, allow_none=True)
    check_threshold(threshold)  # before any file is touched
    class_folders(root)  # the folder must exist before its lock can
    options = dict(min_size=min_size, max_aspect=max_aspect, max_pixels=max_pixels, crop_borders=crop_borders)
    arguments = {**options, "threshold": threshold}
    with folder_lock(root, "clean"), disk_full_errors(root):
        finished = recover(root)
        if finished is not None and finished.get("clean") == arguments:
            # This command, killed after its commit point: what it committed is its whole result.
            return _report_from(finished["report"])
        with Transaction(root) as tx:
            report = _clean(root, tx, options, threshold, workers, progress)
            tx.details.update(clean=arguments, report={**asdict(report), "reasons": dict(report.reasons)})
            tx.commit()
    return report


def _report_from(fields: dict) -> CleanReport:
    return CleanReport(**{**fields, "reasons": Counter(fields["reasons"])})


def _clean(root: str, tx: Transaction, options: dict, threshold: int, workers, progress: bool) -> CleanReport:
    """Plan the whole run into ``tx``; the caller commits it."""
    records = read_manifest(root)
    files = [
        f"{label}/{name}"
        for label in class_folders(root)
        for name in sorted(os.listdir(os.path.join(root, label)))
        if not name.startswith(".") and os.path.isfile(os.path.join(root, label, name))
    ]
    report = CleanReport()
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = pool.map(lambda rel: _inspect(root, rel, options, tx), files)
        kept, seen = [], set()
        quiet = None if progress else True  # None: tqdm shows the bar on a terminal only
        for rel, result in tqdm(zip(files, results, strict=True), total=len(files), desc="clean", disable=quiet):
            record = {**records.pop(rel, {}), "path": rel, "class": rel.split("/")[0], "cleaned": now}
            record.update(_plan(tx, rel, result))
            records[record["path"]] = record
            seen.add(record["path"])
            if result["status"] == "rejected":
                report.reasons[result["reason"].split(":")[0]] += 1
            else:
                kept.append(record)
                report.converted += "converted" in result
    for rel, record in records.items():
        # A file removed by hand since the last run must not reach split or the loader.
        if record.get("status") == "ok" and rel not in seen and not os.path.exists(os.path.join(root, rel)):
            record.update(status="missing", reason="missing: the file is no longer in the dataset")
    _drop_duplicates(tx, kept, threshold, report)
    report.kept = len(kept) - report.duplicates
    tx.write(MANIFEST, manifest_text(records))
    return report


def _drop_duplicates(tx: Transaction, kept: list[dict], threshold: int, report: CleanReport) -> None:
    if not kept:
        return
    hashes = np.array([int(r["dhash"], 16) for r in kept], dtype=np.uint64)
    groups = duplicate_groups(hashes, threshold)
    # Keep the image with the most pixels of each group (ties: the first path); quarantine the rest.
    order = sorted(range(len(kept)), key=lambda k: (groups[k], -kept[k]["width"] * kept[k]["height"], kept[k]["path"]))
    keeper = {}
    for k in order:
        record = kept[k]
        first = keeper.setdefault(groups[k], record)
        # Named by its kept image, not by a component number: a rerun, which no longer sees the
        # quarantined members, names every group as this run did.
        record["group"] = first["path"]
        if first is record:
            continue
        distance = int(np.bitwise_count(hashes[k] ^ np.uint64(int(first["dhash"], 16))))
        record.update(
            status="duplicate",
            reason=f"near-duplicate: of {first['path']} ({distance} bits apart)",
            quarantine=tx.move(record["path"], f"{QUARANTINE}/{record['path']}"),
        )
        report.duplicates += 1
