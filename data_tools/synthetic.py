"""Generated images for tests, benchmarks and offline demos: random scenes of shapes, gradients and texture.

Distinct seeds give visibly distinct scenes (their perceptual hashes lie about
32 bits apart, like unrelated photos), so planted duplicates are the only
near-duplicates in a generated set.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from bagnet_keras.core.commit import atomic_target


def scene(seed: int, size: int | tuple[int, int] = 256) -> np.ndarray:
    """One RGB uint8 scene (H, W, 3).

    Examples
    --------
    >>> scene(0, 64).shape
    (64, 64, 3)
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    image = np.empty((h, w, 3), dtype="float32")
    for c in range(3):  # a smooth random background
        a, b, phase = rng.uniform(-6, 6, 3)
        image[..., c] = 128 + 60 * np.sin(a * xx + b * yy + phase)
    image = image.astype("uint8")
    for _ in range(int(rng.integers(15, 30))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, (w, h)))
        r = int(rng.integers(max(2, min(h, w) // 40), max(3, min(h, w) // 5)))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(image, (x0, y0), r, colour, -1)
        elif kind == 1:
            cv2.rectangle(image, (x0, y0), (x0 + r, y0 + int(rng.integers(2, 2 * r))), colour, -1)
        else:
            x1, y1 = (int(v) for v in rng.integers(0, (w, h)))
            cv2.line(image, (x0, y0), (x1, y1), colour, int(rng.integers(1, 6)))
    noise = rng.normal(0, 6, image.shape)
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0) + noise, 0, 255).astype("uint8")


TEXTURES = ("horizontal", "vertical", "checker")


def textures(n_per_class: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 3) uint8 and labels of three texture classes that any patch can tell apart.

    Class ``k`` is ``TEXTURES[k]``: stripes across, stripes down, or a
    checkerboard, each with random colours, period, phase and noise, so the
    classes are separable by local texture and not by colour.

    Examples
    --------
    >>> images, labels = textures(2, size=16)
    >>> images.shape, labels.tolist()
    ((6, 16, 16, 3), [0, 0, 1, 1, 2, 2])
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for label in range(len(TEXTURES)):
        for _ in range(n_per_class):
            period = rng.uniform(4, 8)
            dy, dx = rng.uniform(0, period, 2)
            rows = np.sin(2 * np.pi * (yy + dy) / period) > 0
            cols = np.sin(2 * np.pi * (xx + dx) / period) > 0
            mask = (rows, cols, rows ^ cols)[label]
            a, b = rng.uniform(0, 255, (2, 3))
            image = np.where(mask[..., None], a, b) + rng.normal(0, 12, (size, size, 3))
            images.append(np.clip(image, 0, 255).astype("uint8"))
            labels.append(label)
    return np.stack(images), np.array(labels)


#: Classes told apart by a small local motif, and a pair told apart only by how a dot and a bar are arranged.
MOTIF_CLASSES = ("cross", "ring", "triangle")
ARRANGEMENT_CLASSES = ("dot_above_bar", "dot_left_of_bar")
#: The ring's control: the ring with its hole filled, so that only its hole tells a ring. Without it the demo's
#: CNN learned the ring as a round blob: its ring visualisation matched the triangle template as well as the ring's.
CONTROL_CLASSES = ("disc",)
#: Every class told by a local motif: the classes where a pointing game has a target.
LOCAL_CLASSES = MOTIF_CLASSES + CONTROL_CLASSES
#: The demo's classes, in the order their seeds are drawn (the control last: the other scenes are unchanged).
CLASSES = MOTIF_CLASSES + ARRANGEMENT_CLASSES + CONTROL_CLASSES


def _clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size
    image = np.empty((size, size, 3), dtype="float32")
    for c in range(3):
        a, b, phase = rng.uniform(-4, 4, 3)
        image[..., c] = 110 + 25 * np.sin(a * xx + b * yy + phase)
    image = image.astype("uint8")
    for _ in range(int(rng.integers(8, 16))):  # low-contrast blobs and strokes, none of them a motif
        colour = tuple(int(v) for v in rng.integers(70, 170, 3))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, size, 4))
        if rng.random() < 0.5:
            cv2.line(image, (x0, y0), (x1, y1), colour, 1)
        else:
            cv2.ellipse(
                image,
                (x0, y0),
                (int(rng.integers(3, 9)), int(rng.integers(2, 5))),
                float(rng.uniform(0, 180)),
                0,
                360,
                colour,
                -1,
            )
    return np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype("uint8")


def _draw(canvas: np.ndarray, kind: str, cy: int, cx: int, colour) -> None:
    # At most 9 pixels across: every motif lies whole in some patch of a BagNet-17's stride-8 grid.
    if kind == "cross":
        cv2.line(canvas, (cx - 4, cy), (cx + 4, cy), colour, 2)
        cv2.line(canvas, (cx, cy - 4), (cx, cy + 4), colour, 2)
    elif kind in ("ring", "disc"):
        cv2.circle(canvas, (cx, cy), 3, colour, 2)
        if kind == "disc":  # the ring's 3 x 3 hole filled: the same outline
            cv2.circle(canvas, (cx, cy), 2, colour, -1)
    elif kind == "triangle":
        points = np.array([[cx, cy - 4], [cx - 4, cy + 4], [cx + 4, cy + 4]], dtype=np.int32)
        cv2.fillPoly(canvas, [points], colour)
    elif kind == "dot":
        cv2.circle(canvas, (cx, cy), 3, colour, -1)
    elif kind == "bar":
        cv2.rectangle(canvas, (cx - 4, cy - 1), (cx + 4, cy + 1), colour, -1)
    else:
        raise ValueError(f"Unknown motif {kind!r}")


def motif_template(kind: str) -> np.ndarray:
    """The motif ``kind`` (a name of `LOCAL_CLASSES`, or "dot" or "bar") as the scenes draw it: a float32
    13 x 13 mask (1 on the motif), for template matching against what a model makes of a class.

    Examples
    --------
    >>> motif_template("cross").astype(int)[6].tolist()
    [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    """
    canvas = np.zeros((13, 13), np.uint8)
    _draw(canvas, kind, 6, 6, 1)
    return canvas.astype("float32")


def motif_scene(label: str, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 scene of class ``label`` and its ground-truth mask (H, W) of the motif pixels.

    ``LOCAL_CLASSES`` show two copies of their motif (a cross, a ring, a
    triangle or a disc) on clutter. ``ARRANGEMENT_CLASSES`` both show one dot and one
    bar, 28 pixels apart (centre to centre), the dot above or left of the
    bar: no patch smaller than their 18-pixel gap can tell them apart.

    Examples
    --------
    >>> image, mask = motif_scene("ring", seed=0)
    >>> image.shape, mask.dtype, bool(0 < mask.mean() < 0.2)
    ((64, 64, 3), dtype('bool'), True)
    """
    rng = np.random.default_rng(seed)
    image = _clutter(rng, size)
    shapes = np.zeros((size, size), np.uint8)
    colour = tuple(int(v) for v in rng.choice([20, 235], 3))
    # Motif centres stay in [8, size - 12]: whole motifs then lie where a BagNet-17's valid grid of
    # patches reaches (pixels 0-56 of 64), so no class shows cut-off motifs more often than another.
    low, high = 8, size - 11
    if label in LOCAL_CLASSES:
        placed: list[tuple[int, int]] = []
        while len(placed) < 2:
            cy, cx = (int(v) for v in rng.integers(low, high, 2))
            if all(abs(cy - y) + abs(cx - x) > 16 for y, x in placed):
                placed.append((cy, cx))
        for cy, cx in placed:
            _draw(image, label, cy, cx, colour)
            _draw(shapes, label, cy, cx, 1)
    elif label in ARRANGEMENT_CLASSES:
        half = 14
        cy, cx = (int(v) for v in rng.integers(low + half, high - half, 2))
        dy, dx = (half, 0) if label == "dot_above_bar" else (0, half)
        for kind, y, x in (("dot", cy - dy, cx - dx), ("bar", cy + dy, cx + dx)):
            _draw(image, kind, y, x, colour)
            _draw(shapes, kind, y, x, 1)
    else:
        raise ValueError(f"Unknown class {label!r}; choose from {CLASSES}.")
    mask = cv2.dilate(shapes, np.ones((3, 3), np.uint8)) > 0
    return image, mask


def _scene_seed(seed: int, class_index: int, i: int) -> int:
    """The seed of scene ``i`` of class ``CLASSES[class_index]`` in a set drawn with ``seed``."""
    return seed * 1_000_003 + class_index * 100_003 + i


def motif_arrays(
    n_per_class: int, size: int = 64, seed: int = 0, classes: tuple[str, ...] = CLASSES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`motif_scene` images of ``classes`` in memory: images (N, H, W, 3) uint8, masks (N, H, W) bool, labels (N,).

    The scenes of `write_motif_dataset` with the same ``seed`` (a class's index counts in `CLASSES`), class
    by class; for notebooks and tests that need no dataset folder.

    Examples
    --------
    >>> images, masks, labels = motif_arrays(2, classes=("cross", "ring"))
    >>> images.shape, masks.shape, labels.tolist()
    ((4, 64, 64, 3), (4, 64, 64), [0, 0, 1, 1])
    """
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise ValueError(f"Unknown classes {unknown}; choose from {CLASSES}.")
    scenes = [
        motif_scene(label, seed=_scene_seed(seed, CLASSES.index(label), i), size=size)
        for label in classes
        for i in range(n_per_class)
    ]
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes]), labels


def write_motif_dataset(root: str, masks_root: str, n_per_class: int, size: int = 64, seed: int = 0) -> None:
    """Write `motif_scene` images as ``root/<class>/NNNNNN.png`` and their masks at the same paths under ``masks_root``.

    Every file goes through a temporary name. The masks live outside
    ``root`` so that ``root`` is an ordinary dataset folder.

    Examples
    --------
    >>> write_motif_dataset("demo/data", "demo/masks", n_per_class=100)  # doctest: +SKIP
    """
    from PIL import Image

    for k, label in enumerate(CLASSES):
        for folder in (root, masks_root):
            os.makedirs(os.path.join(folder, label), exist_ok=True)
        for i in range(n_per_class):
            image, mask = motif_scene(label, seed=_scene_seed(seed, k, i), size=size)
            for folder, array in ((root, image), (masks_root, mask.astype(np.uint8) * 255)):
                with atomic_target(os.path.join(folder, label, f"{i:06d}.png")) as tmp:
                    Image.fromarray(array).save(tmp, format="PNG")
