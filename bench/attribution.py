"""Cost of each gradient attribution on ResNet-50, as a multiple of one forward + backward pass.

    python bench/attribution.py [--images 16] [--batch 16] [--steps 32] [--samples 25] [--rounds 1]

keras.applications.ResNet50 (random weights, 224x224) explains its top class
for ``--images`` images with every method of `bagnet_keras.explain.attribution`,
``batch_size=--batch``, in one process. The unit is one batched forward +
backward pass (the gradient of the class score, `BaseAttribution.gradients`)
per image, timed in the same rounds. Expected: saliency and gradient x input
about 1, epsilon-LRP about 1 (the same pass with other derivatives), DeepLIFT
about 2 (the images and their baselines go through together), integrated
gradients about ``--steps`` and SmoothGrad about ``--samples``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bagnet_keras.explain.attribution import ATTRIBUTIONS, BaseAttribution  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    x = np.random.default_rng(0).normal(size=(args.images, 224, 224, 3)).astype("float32")
    options = {"integrated_gradients": {"steps": args.steps}, "smoothgrad": {"samples": args.samples}}
    explainers = {
        name: cls(model, batch_size=args.batch, **options.get(name, {})) for name, cls in ATTRIBUTIONS.items()
    }
    unit = BaseAttribution(model, batch_size=args.batch)
    classes = unit.classes(x, None)
    runs = {"one forward + backward pass": lambda: unit.gradients(x, classes)}
    runs.update({name: (lambda e=e: e(x, classes)) for name, e in explainers.items()})
    unit.gradients(x[:2], classes[:2])  # warm-up: trace each step
    for explainer in explainers.values():
        explainer(x[:2], classes[:2])
    seconds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - start) / args.images)
            print(f"  {name}: {seconds[name][-1]:.3f} s/image", flush=True)
    base = statistics.median(seconds["one forward + backward pass"])
    print(
        f"ResNet-50, {args.images} images of 224x224, batch {args.batch}, {os.cpu_count()} CPUs, "
        f"{args.rounds} round(s); seconds per image (median), multiple of one forward + backward pass:"
    )
    for name, values in seconds.items():
        expected = {"integrated_gradients": args.steps, "smoothgrad": args.samples, "deeplift": 2}.get(name, 1)
        print(
            f"  {name:28s} {statistics.median(values):8.3f} s   x{statistics.median(values) / base:6.2f}"
            f"   (expected about x{expected})"
        )


if __name__ == "__main__":
    main()
