"""Stratified train/val/test split in which near-duplicate groups never straddle two splits.

The split is a function of the manifest and the arguments, so a run killed
at any point and started again writes the same manifest and copies: each
file is written whole through `bagnet_keras.core.commit`, and the
temporary files a kill left are removed first.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict

import numpy as np

from bagnet_keras.core.commit import atomic_target, disk_full_errors, folder_lock, recover, sweep_temporary
from data_tools.dedupe import DEFAULT_THRESHOLD, duplicate_groups
from data_tools.manifest import read_manifest, write_manifest

SPLITS = ("train", "val", "test")


def _check_ratios(ratios) -> np.ndarray:
    values = np.asarray(ratios, dtype="float64")
    if values.shape != (3,) or (values < 0).any() or not np.isclose(values.sum(), 1.0):
        raise ValueError(
            f"`ratios` must be three non-negative numbers (train, val, test) summing to 1. Received: ratios={ratios!r}"
        )
    return values


def assign_splits(labels, groups, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Split name per item: stratified by label, whole groups at a time.

    Each class's groups are visited in a seeded random order and each goes
    to the split furthest below its share of that class.

    Examples
    --------
    >>> out = assign_splits(["a"] * 10, range(10), ratios=(0.6, 0.2, 0.2))
    >>> sorted(Counter(out).items())
    [('test', 2), ('train', 6), ('val', 2)]
    """
    ratios = _check_ratios(ratios)
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    members = defaultdict(list)
    for k, g in enumerate(groups):
        members[g].append(k)
    by_class = defaultdict(list)
    for g, items in members.items():
        majority = Counter(labels[items].tolist()).most_common(1)[0][0]
        by_class[majority].append(g)
    out = np.empty(len(labels), dtype=object)
    for label in sorted(by_class):
        class_groups = sorted(by_class[label], key=str)
        rng.shuffle(class_groups)
        total = sum(len(members[g]) for g in class_groups)
        counts = np.zeros(3)
        for g in class_groups:
            deficit = ratios * total - counts
            choice = int(np.argmax(deficit))
            counts[choice] += len(members[g])
            out[members[g]] = SPLITS[choice]
    return out


def split(
    root: str,
    ratios=(0.8, 0.1, 0.1),
    *,
    seed: int = 0,
    threshold: int = DEFAULT_THRESHOLD,
    copy_to: str | None = None,
) -> dict[str, Counter]:
    """Write a train/val/test split of the cleaned dataset under ``root`` into its manifest.

    Parameters
    ----------
    root : str
        A dataset cleaned by `data_tools.clean.clean` (its manifest holds the hashes).
    ratios : (train, val, test)
    seed : int
    threshold : int
        Hash bits within which images are grouped (may be looser than clean's).
    copy_to : str, optional
        Also copy the files to ``copy_to/<split>/<class>/``.

    Returns
    -------
    dict split -> Counter of classes

    Examples
    --------
    >>> split("datasets/streets", ratios=(0.7, 0.15, 0.15), seed=1)  # doctest: +SKIP
    {'train': Counter({'berlin': 280, ...}), 'val': ..., 'test': ...}
    """
    ratios = _check_ratios(ratios)
    if not os.path.isdir(root):
        raise ValueError(f"Dataset folder {root!r} does not exist.")
    if copy_to is not None and _inside(copy_to, root):
        raise ValueError(
            f"`copy_to` must lie outside the dataset folder {root!r}: a copy inside it would later be read as a "
            f"class. Received: copy_to={copy_to!r}"
        )
    with folder_lock(root, "split"), disk_full_errors(copy_to or root):
        recover(root)
        return _split(root, ratios, seed, threshold, copy_to)


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _split(root: str, ratios: np.ndarray, seed: int, threshold: int, copy_to: str | None) -> dict[str, Counter]:
    records = read_manifest(root)
    usable = [r for r in records.values() if r.get("status") == "ok" and "dhash" in r]
    if not usable:
        raise ValueError(f"No cleaned images in the manifest of {root!r}; run clean first.")
    hashes = np.array([int(r["dhash"], 16) for r in usable], dtype=np.uint64)
    groups = duplicate_groups(hashes, threshold)
    names = assign_splits([r["class"] for r in usable], groups, ratios, seed)
    summary = {name: Counter() for name in SPLITS}
    for record, name, group in zip(usable, names, groups, strict=True):
        record["split"] = name
        record["split_group"] = int(group)
        summary[name][record["class"]] += 1
    write_manifest(root, records)
    if copy_to is not None:
        if os.path.isdir(copy_to):
            sweep_temporary(copy_to)
        for record in usable:
            target = os.path.join(copy_to, record["split"], record["path"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with atomic_target(target) as tmp:
                shutil.copy2(os.path.join(root, record["path"]), tmp)
    return summary
