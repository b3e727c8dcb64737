"""The whole comparison against its lower bound (the forward passes it needs), its peak memory, and its scaling.

    python bench/compare.py [--images 4] [--size 224] [--batch-size 16]
    python bench/compare.py --scale 1000 8000 [--size 64] [--steps 20] [--linearity-k 10]

Default: BagNet-33 and DenseNet-121 with 10-class heads (random weights)
explain ``--images`` random images with `bagnet_keras.compare` at its
default arguments (BagNet evidence and Grad-CAM of the BagNet, Grad-CAM of
the CNN). Printed: the model inputs each image needs by model (the
comparison counts them: the image, its shuffled tiles, every masked copy),
the measured time per image, and its ratio to the bound: those passes times
one forward pass per image of each model at the same batch size (timed in
the same process after the comparison), plus the time of the maps
themselves (Grad-CAM's forward and backward pass, the evidence), as the
comparison timed them. Also the process's peak resident memory.

``--scale N1 N2 ...`` runs the demo's small BagNet and CNN (random
weights) over N generated scenes each, in one child process per N,
streamed into a temporary folder (``output_dir``), the scenes generated
batch by batch; it prints each run's time per image and peak resident
memory, and their growth from the first N to the others.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def bound(args) -> None:
    import keras
    import numpy as np

    from bagnet_keras.metrics.comparison import compare, default_batch_size
    from bagnet_keras.metrics.faithfulness import logit_fn
    from bagnet_keras.transfer.heads import build_classifier

    batch_size = args.batch_size or default_batch_size()
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(args.images, args.size, args.size, 3)).astype("float32")
    labels = np.arange(args.images) % 10
    models = {
        "bagnet": build_classifier("bagnet33", 10, mode="scratch"),
        "cnn": build_classifier("densenet121", 10, mode="scratch"),
    }
    built = peak_rss_gb()
    start = time.perf_counter()
    result = compare(models, x, labels, batch_size=batch_size, progress=False)
    total = (time.perf_counter() - start) / args.images
    peak = peak_rss_gb()

    forward = {}
    batch = np.concatenate([x] * -(-batch_size // len(x)))[:batch_size]
    for name, model in models.items():
        scorer = logit_fn(model, batch_size=batch_size)
        scorer(batch)
        begin = time.perf_counter()
        for _ in range(args.rounds):
            scorer(batch)
        forward[name] = (time.perf_counter() - begin) / (args.rounds * batch_size)
    passes = result.summary["passes"]
    seconds = result.summary["seconds"]
    maps = sum(v for k, v in seconds.items() if k.startswith("maps ")) / args.images
    lower = sum(passes[name] * forward[name] for name in models) + maps

    print(
        f"{args.images} images of {args.size}x{args.size}, BagNet-33 and DenseNet-121 (random weights, 10 classes), "
        f"batch size {batch_size}, default arguments (steps 20, linearity 10 cells)"
    )
    for name in models:
        print(
            f"  {name:7s} {passes[name]:6.0f} inputs per image x {forward[name] * 1e3:7.1f} ms forward per image "
            f"= {passes[name] * forward[name]:6.2f} s"
        )
    print(f"  maps (Grad-CAM forward+backward, evidence), as timed by compare: {maps:.2f} s per image")
    print(f"measured: {total:.2f} s per image; bound: {lower:.2f} s; measured / bound: {total / lower:.2f}")
    print(f"peak resident memory: {peak:.2f} GB (after building the models: {built:.2f} GB)")
    print("time per part (s per image):")
    for part, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {part:32s} {value / args.images:8.2f}")


def scale_child(args) -> None:
    import keras
    import numpy as np

    from bagnet_keras.app.demo import small_bagnet, small_cnn
    from bagnet_keras.metrics.comparison import compare
    from bagnet_keras.models.imagenet import preprocess_input
    from bagnet_keras.transfer.heads import build_classifier
    from data_tools.synthetic import CLASSES, motif_scene

    classes = CLASSES
    shape = (args.size, args.size, 3)
    keras.utils.set_random_seed(0)
    models = {
        "bagnet": build_classifier(small_bagnet(shape, 8), len(classes), mode="scratch"),
        "cnn": build_classifier(small_cnn(shape, 16), len(classes), mode="scratch"),
    }

    def scenes(n):  # generated as they are read: the data set is never in memory
        for start in range(0, n, 64):
            batch = [
                motif_scene(classes[i % len(classes)], seed=i, size=args.size)[0]
                for i in range(start, min(n, start + 64))
            ]
            yield np.stack(batch).astype("float32"), np.arange(start, start + len(batch)) % len(classes)

    with tempfile.TemporaryDirectory() as folder:
        options = dict(
            preprocess=preprocess_input,
            progress=False,
            batch_size=args.batch_size,
            steps=args.steps,
            linearity_k=args.linearity_k,
        )
        compare(models, scenes(64), output_dir=os.path.join(folder, "warm-up"), **options)
        start = time.perf_counter()
        compare(models, scenes(args.images), output_dir=os.path.join(folder, "run"), **options)
        seconds = time.perf_counter() - start
    print(json.dumps({"images": args.images, "seconds": seconds, "peak_gb": peak_rss_gb()}))


def scale(args) -> None:
    runs = []
    for n in args.scale:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--scale-child",
            "--images",
            str(n),
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--linearity-k",
            str(args.linearity_k),
        ]
        command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        run = runs[-1]
        print(
            f"{run['images']:6d} images of {args.size}x{args.size} (steps {args.steps}, linearity "
            f"{args.linearity_k} cells): {run['seconds']:8.1f} s, "
            f"{run['seconds'] / run['images'] * 1e3:6.1f} ms per image, peak resident memory "
            f"{run['peak_gb']:.3f} GB",
            flush=True,
        )
    first = runs[0]
    for run in runs[1:]:
        per_image = (run["seconds"] / run["images"]) / (first["seconds"] / first["images"])
        print(
            f"{first['images']} -> {run['images']} images: peak memory x{run['peak_gb'] / first['peak_gb']:.3f}, "
            f"time per image x{per_image:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="default: 224, or 64 with --scale")
    parser.add_argument("--batch-size", type=int, default=None, help="default: compare's default")
    parser.add_argument("--rounds", type=int, default=3, help="forward passes timed per model for the bound")
    parser.add_argument("--steps", type=int, default=20, help="with --scale: deletion and insertion steps")
    parser.add_argument("--linearity-k", type=int, default=10, help="with --scale: cells of the linearity test")
    parser.add_argument("--scale", type=int, nargs="+", metavar="N", help="image counts to run side by side")
    parser.add_argument("--scale-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.size or (64 if args.scale or args.scale_child else 224)
    if args.scale_child:
        scale_child(args)
    elif args.scale:
        scale(args)
    else:
        bound(args)


if __name__ == "__main__":
    main()
