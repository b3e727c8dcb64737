"""The demo's atlas section: what its CNN's units and its BagNet's concepts respond to, checked against the masks.

A position of a layer "falls on" an image's motif when the ground-truth mask
has a pixel in the position's footprint: the stride x stride cell centred on
its receptive field (the part of the input that position alone stands for).
A unit or NMF group's purity is the largest fraction of its top regions that
fall on the motif of one motif class (in images of that class); the baseline
is the same for as many random positions of random images. A BagNet concept
lies on the motif when most of its example patches do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bagnet_keras.report.findings import Finding, percent


def _hits(masks, labels, motif: dict, entries, geometry) -> list[int | None]:
    """Per ``(image, row, column, ...)``: the image's motif class where the footprint meets its mask, else None."""
    out = []
    for image, row, col, *_ in entries:
        c = int(labels[image])
        if c not in motif:
            out.append(None)
            continue
        centre_y = geometry.offset + geometry.stride * row + (geometry.patch_size - 1) / 2
        centre_x = geometry.offset + geometry.stride * col + (geometry.patch_size - 1) / 2
        half = geometry.stride / 2
        mask = masks[image]
        top = max(int(np.floor(centre_y - half + 0.5)), 0)
        bottom = min(int(np.floor(centre_y + half + 0.5)), mask.shape[0])
        left = max(int(np.floor(centre_x - half + 0.5)), 0)
        right = min(int(np.floor(centre_x + half + 0.5)), mask.shape[1])
        out.append(c if top < bottom and left < right and mask[top:bottom, left:right].any() else None)
    return out


def purity(masks, labels, motif: dict, entries, geometry) -> tuple[float, int | None]:
    """The largest fraction of ``entries`` on one motif class's motif, and that class."""
    hits = [h for h in _hits(masks, labels, motif, entries, geometry) if h is not None]
    if not hits or not entries:
        return 0.0, None
    best = max(set(hits), key=hits.count)
    return hits.count(best) / len(entries), best


def random_purity(
    masks, labels, motif: dict, grid: tuple, geometry, k: int, draws: int = 500, seed: int = 0
) -> tuple[float, float]:
    """Mean and 95th percentile of the purity of ``k`` random positions of random images."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        entries = list(
            zip(
                rng.integers(len(labels), size=k),
                rng.integers(grid[0], size=k),
                rng.integers(grid[1], size=k),
                strict=True,
            )
        )
        values.append(purity(masks, labels, motif, entries, geometry)[0])
    return float(np.mean(values)), float(np.percentile(values, 95))


def _units_finding(atlas, groups, masks: np.ndarray, labels: np.ndarray, motif: dict) -> Finding:
    """How pure the purest unit or NMF group of the CNN's last layer is, against random positions."""
    layer = atlas.layers[-1]
    geometry, k = atlas.geometry[layer], atlas.k
    scored = [
        (purity(masks, labels, motif, atlas.top(layer, int(u)), geometry), f"unit {u}") for u in atlas.units[layer]
    ]
    if groups is not None:
        scored += [
            (purity(masks, labels, motif, groups.top(g), groups.geometry), f"NMF group {g}")
            for g in range(len(groups.components))
        ]
    (best, cls), name = max(scored, key=lambda item: item[0][0])
    grid = (int(atlas.row[layer].max()) + 1, int(atlas.column[layer].max()) + 1)
    mean, high = random_purity(masks, labels, motif, grid, geometry, k)
    pure = sum(p >= 8 / 9 for (p, _), _ in scored)
    return Finding(
        f"Atlas of the CNN's last conv layer ({layer.split('/')[-1]}): a unit or NMF group falls on one motif "
        "class at least 8 of 9 times",
        best >= 8 / 9,
        f"purest {name}: top {k} regions on the {motif.get(cls, '?')} motif {best * k:.0f} of {k}; "
        f"{pure} units or groups reach 8 of 9; {k} random positions: {mean * k:.1f} of {k} on average, "
        f"{high * k:.0f} at the 95th percentile",
    )


def _on_motif(concepts, masks: np.ndarray, labels: np.ndarray, c: int, name: str) -> tuple[float, float]:
    """Class ``c``'s share of top-patch evidence in concepts whose examples mostly lie on its motif, and the
    fraction of all its images' positions that lie on the motif (the baseline)."""
    on = 0.0
    for concept in concepts.concepts[c]:
        hits = _hits(masks, labels, {c: name}, concept.examples, concepts.geometry)
        if sum(h is not None for h in hits) > len(hits) / 2:
            on += concept.share
    everywhere = [
        (i, r, col)
        for i in np.flatnonzero(labels == c)
        for r in range(masks.shape[1] // concepts.geometry.stride)
        for col in range(masks.shape[2] // concepts.geometry.stride)
    ]
    hits = _hits(masks, labels, {c: name}, everywhere, concepts.geometry)
    return on, sum(h is not None for h in hits) / max(len(hits), 1)


def _concepts_finding(concepts, masks: np.ndarray, labels: np.ndarray, motif: dict) -> Finding | None:
    """Whether each motif class's BagNet concepts lie on its motif; None when no motif class has concepts."""
    shares, baselines = {}, {}
    for c, name in motif.items():
        if c in concepts.concepts:
            shares[name], baselines[name] = _on_motif(concepts, masks, labels, c, name)
    if not shares:
        return None
    listing = ", ".join(f"{n} {percent(s)} ({percent(baselines[n])})" for n, s in shares.items())
    return Finding(
        "BagNet class concepts: every motif class's top-patch evidence lies mostly (at least 70 %) in concepts "
        "on its motif",
        all(s >= 0.7 for s in shares.values()),
        f"share in concepts whose example patches lie on the motif (share of positions on the motif): {listing}",
    )


def atlas_findings(
    atlas, groups, concepts, masks: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> list[Finding]:
    """The demo's claims about its atlas, with their verdicts and numbers (`bagnet_keras.report.findings.Finding`).

    Examples
    --------
    >>> atlas_findings(None, None, None, np.zeros((1, 8, 8), bool), np.zeros(1, int), ["cross"])
    []
    """
    from data_tools.synthetic import LOCAL_CLASSES

    motif = {class_names.index(c): c for c in LOCAL_CLASSES if c in class_names}
    findings = []
    if atlas is not None and motif:
        findings.append(_units_finding(atlas, groups, masks, labels, motif))
    if concepts is not None and motif:
        finding = _concepts_finding(concepts, masks, labels, motif)
        if finding is not None:
            findings.append(finding)
    return findings
