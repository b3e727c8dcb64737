"""Train a small BagNet and a small CNN on generated shapes, then draw every explanation the package has.

    python examples/explain_shapes.py [--out docs] [--epochs 8]

Offline and CPU-sized (about two minutes on two cores). Each 64x64 image
holds one white shape (disc, square or cross: the class) among grey clutter
on a noisy background. Three figures are written to ``--out``:

- ``evidence_shapes.png``: the BagNet's exact evidence, native grid and stride 1;
- ``cam_shapes.png``: Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM, occlusion
  and guided Grad-CAM of the CNN, whose backbone is a nested model;
- ``top_patches_shapes.png``: the BagNet patches with the most evidence for
  "cross" across the test images.
"""

from __future__ import annotations

import argparse
import os

import cv2
import keras
import numpy as np

from bagnet_keras import BagNet, evidence_map
from bagnet_keras.explain import cam, guided_gradcam, occlusion, top_patches
from bagnet_keras.report.plot import plot_grid, plot_patches, save_figure

CLASSES = ("disc", "square", "cross")
SIZE = 64


def make_shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8) with one white shape each, and its class."""
    rng = np.random.default_rng(seed)
    images = rng.normal(70, 20, size=(n, SIZE, SIZE, 3)).clip(0, 255).astype("uint8")
    labels = rng.integers(0, len(CLASSES), n)
    for image, label in zip(images, labels, strict=True):
        for _ in range(3):  # clutter: grey lines that are not shapes
            p, q = rng.integers(0, SIZE, (2, 2))
            cv2.line(image, tuple(map(int, p)), tuple(map(int, q)), (130, 130, 130), 2)
        cy, cx = rng.integers(12, SIZE - 12, 2)
        r = int(rng.integers(6, 10))
        white = (235, 235, 235)
        if CLASSES[label] == "disc":
            cv2.circle(image, (int(cx), int(cy)), r, white, -1)
        elif CLASSES[label] == "square":
            cv2.rectangle(image, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), white, -1)
        else:
            cv2.line(image, (int(cx - r), int(cy)), (int(cx + r), int(cy)), white, 4)
            cv2.line(image, (int(cx), int(cy - r)), (int(cx), int(cy + r)), white, 4)
    return images, labels


def preprocess(images: np.ndarray) -> np.ndarray:
    return images.astype("float32") / 127.5 - 1.0


def deprocess(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x) + 1.0) * 127.5).clip(0, 255).astype("uint8")


def small_cnn() -> keras.Model:
    backbone = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
        ],
        name="backbone",
    )
    return keras.Sequential(
        [backbone, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(len(CLASSES), name="logits")],
        name="cnn",
    )


def train(model: keras.Model, x, y, epochs: int) -> keras.Model:
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=2)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs", help="folder for the PNG files")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(0)

    train_images, train_labels = make_shapes(2000, seed=0)
    test_images, test_labels = make_shapes(200, seed=1)
    x, xt = preprocess(train_images), preprocess(test_images)

    # stem_width 16: the first shortcut (1x1, stride 2) reads the stem, and training such a convolution on fewer
    # than 16 channels crashes TensorFlow's oneDNN on AVX-512 CPUs (issue 17, tools/onednn_check.py).
    bagnet = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=8, stem_width=16, classes=3, classifier_activation=None
    )
    # The authors' stem BatchNorm keeps 99.9% of its running statistics per step (torch momentum
    # 0.001): right for long ImageNet training, far too slow for 500 steps, so inference would use
    # statistics from before training. Use the other layers' 0.9 here.
    bagnet.get_layer("conv1_bn").momentum = 0.9
    bagnet = train(bagnet, x, train_labels, args.epochs)
    cnn = train(small_cnn(), x, train_labels, args.epochs)
    for name, model in (("BagNet (patch 17)", bagnet), ("CNN", cnn)):
        accuracy = (model.predict(xt, verbose=0).argmax(1) == test_labels).mean()
        print(f"{name}: test accuracy {accuracy:.3f}")

    shown = xt[[int(np.flatnonzero(test_labels == c)[0]) for c in range(3)] + [3]]
    titles = [CLASSES[c] for c in bagnet.predict(shown, verbose=0).argmax(1)]
    evidence = {
        "evidence, stride 8": evidence_map(bagnet, shown).upsample(),
        "evidence, stride 1": evidence_map(bagnet, shown, stride=1).maps,
    }
    path = save_figure(
        plot_grid(shown, evidence, deprocess=deprocess, row_titles=titles), f"{args.out}/evidence_shapes.png"
    )
    print("wrote", path)

    maps = {
        method: cam(cnn, shown, method=method, layer="conv3")
        for method in ("gradcam", "gradcam++", "scorecam", "layercam")
    }
    maps["occlusion"] = np.maximum(occlusion(cnn, shown, patch_size=12, stride=4), 0)
    maps["guided Grad-CAM"] = np.abs(guided_gradcam(cnn, shown, layer="conv3")).sum(-1)
    titles = [CLASSES[c] for c in cnn.predict(shown, verbose=0).argmax(1)]
    path = save_figure(plot_grid(shown, maps, deprocess=deprocess, row_titles=titles), f"{args.out}/cam_shapes.png")
    print("wrote", path)

    best = top_patches(bagnet, xt, class_index=CLASSES.index("cross"), k=16)
    figure = plot_patches(best, deprocess=deprocess, title="BagNet: most informative 17x17 patches for 'cross'")
    path = save_figure(figure, f"{args.out}/top_patches_shapes.png")
    print("wrote", path)


if __name__ == "__main__":
    main()
