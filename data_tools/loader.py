"""A tf.data pipeline over a dataset folder or its manifest (the one data_tools module that uses TensorFlow).

TensorFlow is imported when a pipeline is built, not when this module is
imported, so crawling and cleaning stay light.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from bagnet_keras.core.files import fit_image, read_image
from bagnet_keras.core.validation import check_positive_int
from data_tools.clean import class_folders
from data_tools.manifest import read_manifest

SPLITS = ("train", "val", "test")
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def _files(root: str, split: str | None) -> tuple[list[str], list[int], list[str]]:
    names = class_folders(root)
    records = read_manifest(root)
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {SPLITS} or None. Received: split={split!r}")
        chosen = [r for r in records.values() if r.get("status") == "ok" and r.get("split") == split]
        if not chosen:
            raise ValueError(f"No images of split {split!r} in {root!r}; run `bagnet-keras split {root}` first.")
        pairs = sorted((r["path"], r["class"]) for r in chosen)
    else:
        pairs = [
            (f"{label}/{name}", label)
            for label in names
            for name in sorted(os.listdir(os.path.join(root, label)))
            if name.lower().endswith(_EXTENSIONS) and not name.startswith(".")
        ]
    if not pairs:
        raise ValueError(f"No images found under {root!r} (one sub-folder per class expected).")
    index = {label: k for k, label in enumerate(names)}
    return [os.path.join(root, p) for p, _ in pairs], [index[c] for _, c in pairs], names


def image_dataset(
    root: str,
    image_size: tuple[int, int] = (224, 224),
    *,
    batch_size: int = 32,
    split: str | None = None,
    crop_to_aspect_ratio: bool = True,
    shuffle: bool | None = None,
    seed: int = 0,
    augment: bool = False,
    preprocess: Callable | None = None,
    cache: bool | str = False,
):
    """A batched ``tf.data.Dataset`` of ``(images, labels)`` with ``.class_names``, like Keras' own loader.

    Parameters
    ----------
    root : str
        Dataset folder with one sub-folder per class.
    image_size : (height, width)
    batch_size : int
    split : {"train", "val", "test"} or None
        Take the files of that split from the manifest (`data_tools.split`);
        None takes every image in the class folders.
    crop_to_aspect_ratio : bool
        Centre-crop each image to the target aspect ratio before resizing,
        instead of stretching it. Images are read by
        `bagnet_keras.core.files.read_image`, as `load_arrays` reads them.
    shuffle : bool, optional
        Default: True for the train split and for whole folders, False for val/test.
    seed : int
        Shuffle and augmentation seed.
    augment : bool
        Random horizontal flips and small brightness/contrast changes.
    preprocess : callable, optional
        Applied to each batch of float images in [0, 255], e.g.
        ``bagnet_keras.preprocess_input``.
    cache : bool or str
        Cache decoded, resized images in memory (True) or in a file (path).

    Returns
    -------
    tf.data.Dataset

    Examples
    --------
    >>> from bagnet_keras import preprocess_input
    >>> train = image_dataset("datasets/streets", split="train", preprocess=preprocess_input)  # doctest: +SKIP
    >>> train.class_names  # doctest: +SKIP
    ['berlin', 'paris', 'rome']
    """
    import tensorflow as tf

    try:
        height, width = (check_positive_int(v, "image_size") for v in image_size)
    except ValueError:  # the whole value says more than its first bad entry
        raise ValueError(
            f"`image_size` must be (height, width) positive ints. Received: image_size={image_size!r}"
        ) from None
    batch_size = check_positive_int(batch_size, "batch_size")
    paths, labels, names = _files(root, split)

    def decode(path):
        # No size warnings while training: `clean` has already refused images too small or too oddly shaped.
        return read_image(path.decode(), image_size, crop_to_aspect_ratio, warn=False).astype("float32")

    def load(path, label):
        # The same reader as load_arrays and the explain/compare commands: training and explanations see the
        # very same pixels (Pillow releases the GIL while decoding and resizing, so parallel calls overlap).
        image = tf.numpy_function(decode, [path], tf.float32, stateful=False)
        image.set_shape((height, width, 3))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    shuffled = split in (None, "train") if shuffle is None else shuffle
    if shuffled and not cache:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache(cache if isinstance(cache, str) else "")
        if shuffled:  # after the cache, or every epoch would replay the first epoch's order
            dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if augment:
        generator = tf.random.Generator.from_seed(seed)

        def jitter(image, label):
            seeds = generator.make_seeds(3)
            image = tf.image.stateless_random_flip_left_right(image, seeds[:, 0])
            image = tf.image.stateless_random_brightness(image, 20.0, seeds[:, 1])
            image = tf.image.stateless_random_contrast(image, 0.85, 1.15, seeds[:, 2])
            return tf.clip_by_value(image, 0.0, 255.0), label

        dataset = dataset.map(jitter)
    dataset = dataset.batch(batch_size)
    if preprocess is not None:
        dataset = dataset.map(_in_pipeline(preprocess), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    dataset.class_names = names
    return dataset


def _in_pipeline(preprocess: Callable) -> Callable:
    """``preprocess`` as a map function of a tf.data pipeline, on every Keras backend.

    On TensorFlow it is traced into the pipeline. The other backends' ``keras.ops`` cannot take the
    pipeline's TensorFlow tensors (nor can a NumPy preprocess), so there it runs on each batch as NumPy
    (`tf.numpy_function`), which `bagnet_keras.preprocess_input` and keras.applications' take alike.
    """
    import keras
    import tensorflow as tf

    if keras.backend.backend() == "tensorflow":
        return lambda x, y: (preprocess(x), y)

    def on_numpy(x: np.ndarray) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(preprocess(x)), "float32")

    def apply(x, y):
        out = tf.numpy_function(on_numpy, [x], tf.float32, stateful=False)
        out.set_shape(x.shape)  # preprocessing is per pixel: the batch keeps its shape
        return out, y

    return apply


class ImageFiles:
    """The images (or masks) of a dataset folder as an array read on slicing: only the sliced files are decoded.

    ``files[a:b]`` is an array (b - a, H, W, 3) of uint8, in the order of
    `image_dataset` (or (b - a, H, W) of bool with ``masks_root``: the mask
    ``<masks_root>/<class>/<name>.png`` of each image, nearest-neighbour
    resized; an image that clean converted or cropped, or that has no mask,
    gets an empty one). `bagnet_keras.compare` reads such arrays
    ``batch_size`` images at a time, so the dataset is never in memory.

    Attributes
    ----------
    paths, labels, class_names, shape

    Examples
    --------
    >>> files = ImageFiles("datasets/streets", (224, 224), split="test")  # doctest: +SKIP
    >>> files[:16].shape, len(files.labels)  # doctest: +SKIP
    ((16, 224, 224, 3), 412)
    """

    def __init__(
        self,
        root: str,
        image_size: tuple[int, int],
        split: str | None = None,
        masks_root: str | None = None,
        max_images: int | None = None,
    ):
        self.root, self.image_size, self.masks_root = root, tuple(image_size), masks_root
        paths, labels, self.class_names = _files(root, split)
        if max_images is not None:
            paths, labels = paths[:max_images], labels[:max_images]
        self.paths, self.labels = paths, np.array(labels)
        self._records = read_manifest(root) if masks_root is not None else {}
        self.shape = (len(paths), *self.image_size) + (() if masks_root is not None else (3,))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"ImageFiles are read by slices (files[a:b]). Received: {index!r}")
        chosen = self.paths[index]
        if self.masks_root is None:
            if not chosen:
                return np.zeros((0, *self.shape[1:]), np.uint8)
            return np.stack([read_image(path, self.image_size) for path in chosen])
        return np.stack([self._mask(path) for path in chosen]) if chosen else np.zeros((0, *self.image_size), bool)

    def _mask(self, path: str) -> np.ndarray:
        from PIL import Image

        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        mask_path = os.path.join(self.masks_root, os.path.splitext(rel)[0] + ".png")
        if self._records.get(rel, {}).get("converted") or not os.path.exists(mask_path):
            return np.zeros(self.image_size, bool)
        with Image.open(mask_path) as mask:
            return np.asarray(fit_image(mask.convert("L"), self.image_size, Image.NEAREST)) > 0


def load_arrays(
    root: str,
    image_size: tuple[int, int],
    split: str | None = None,
    masks_root: str | None = None,
    max_images: int | None = None,
):
    """Images of a folder or split as one uint8 array, in the order `image_dataset` uses (no TensorFlow).

    Each image is centre-cropped to the target aspect ratio and resized
    (bilinear). With ``masks_root``, the mask of ``<class>/<name>.png`` under
    it is read too (nearest neighbour); an image that clean converted or
    cropped, or that has no mask, gets an empty one. For datasets larger than
    memory, slice an `ImageFiles` instead.

    Returns
    -------
    (images, labels, masks, class_names, paths)
        ``images`` (N, H, W, 3) uint8, ``labels`` (N,), ``masks`` (N, H, W) bool or None.

    Examples
    --------
    >>> x, y, masks, names, paths = load_arrays("datasets/streets", (224, 224), split="test")  # doctest: +SKIP
    """
    files = ImageFiles(root, image_size, split, max_images=max_images)
    masks = ImageFiles(root, image_size, split, masks_root, max_images)[:] if masks_root else None
    return files[:], files.labels, masks, files.class_names, files.paths
