"""Time per image of the whole comparison of two small models, split by part, beside one forward pass.

    python bench/compare.py [--images 32] [--size 64] [--steps 20]

The demo's two models (a BagNet-17 of width 8 and a 5-stage CNN of width 16,
random weights) explain ``--images`` generated scenes with BagNet evidence
and Grad-CAM (BagNet) and Grad-CAM (CNN); `bagnet_keras.metrics.comparison.compare`
then runs every measurement. Printed: milliseconds per image of each part,
and each part as a multiple of one forward pass of both models over the
same images (the baseline, timed in the same run), so the slow parts show.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bagnet_keras.app.demo import small_bagnet, small_cnn  # noqa: E402
from bagnet_keras.metrics.comparison import compare  # noqa: E402
from bagnet_keras.models.imagenet import preprocess_input  # noqa: E402
from bagnet_keras.transfer.heads import build_classifier  # noqa: E402
from data_tools.synthetic import ARRANGEMENT_CLASSES, MOTIF_CLASSES, motif_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    classes = MOTIF_CLASSES + ARRANGEMENT_CLASSES
    scenes = [motif_scene(classes[i % len(classes)], seed=i, size=args.size) for i in range(args.images)]
    x = preprocess_input(np.stack([s[0] for s in scenes]).astype("float32"))
    masks = np.stack([s[1] for s in scenes])
    labels = np.arange(args.images) % len(classes)
    shape = (args.size, args.size, 3)
    keras.utils.set_random_seed(0)
    models = {
        "bagnet": build_classifier(small_bagnet(shape, 8), len(classes), mode="scratch"),
        "cnn": build_classifier(small_cnn(shape, 16), len(classes), mode="scratch"),
    }
    compare(models, x[:2], labels[:2], masks=masks[:2], steps=2, progress=False)  # trace and compile once

    start = time.perf_counter()
    for model in models.values():
        model.predict(x, verbose=0)
    forward = (time.perf_counter() - start) / args.images

    start = time.perf_counter()
    result = compare(models, x, labels, masks=masks, steps=args.steps, progress=False)
    total = (time.perf_counter() - start) / args.images

    print(f"{args.images} images of {args.size}x{args.size}, {args.steps} deletion/insertion steps, 3 maps")
    print(f"baseline: one forward pass of both models: {forward * 1e3:.2f} ms per image")
    print(f"{'part':32s} {'ms/image':>9s} {'x forward':>10s}")
    for part, seconds in sorted(result.summary["seconds"].items(), key=lambda kv: -kv[1]):
        per_image = seconds / args.images
        print(f"{part:32s} {per_image * 1e3:9.1f} {per_image / forward:10.1f}")
    print(f"{'whole comparison':32s} {total * 1e3:9.1f} {total / forward:10.1f}")


if __name__ == "__main__":
    main()
