"""Forward speed of BagNet-33 against keras.applications.ResNet50 (and the authors' PyTorch model).

    python bench/forward.py [--rounds 5] [--images 64] [--batch 16] [--dtype-policy mixed_float16] [--jit-compile]

Both Keras models are freshly built with weights=None and called the way a
user calls them, ``model.predict(x, batch_size=16)``, in alternating rounds in
one process, so machine noise hits both; the median of the rounds is
reported. BagNet-33's ``predict`` is `bagnet_keras.models.inference.BagNetModel`'s
(BatchNorm folded, no tf.data); Keras' own predict loop on the same model
is timed beside it. If torch is importable, the authors' PyTorch BagNet-33
(the definition in tools/torch_bagnet.py) is timed in the same process too.
Targets (issue 2): BagNet-33 / ResNet-50 >= 0.27, BagNet-33 / PyTorch >= 2.
``--dtype-policy`` times a copy of BagNet-33 in that policy beside the float32 one
(`bagnet_keras.models.inference.with_dtype_policy`; issue 13's GPU target: >= 1,000
images/s with mixed_float16 on one H100) and prints how far it moves the logits and the
evidence maps; ``--jit-compile`` compiles both BagNets with XLA.
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

from bagnet_keras import BagNet33  # noqa: E402


def images_per_second(fn, n_images: int) -> float:
    start = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype-policy", choices=["mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--jit-compile", action="store_true")
    args = parser.parse_args()

    x = np.random.default_rng(0).uniform(-2, 2, size=(args.images, 224, 224, 3)).astype("float32")
    bagnet = BagNet33(weights=None)
    models = {
        "BagNet-33 (bagnet_keras)": bagnet,
        "ResNet-50 (keras.applications)": keras.applications.ResNet50(weights=None),
    }
    runners = {name: (lambda m=m: m.predict(x, batch_size=args.batch, verbose=0)) for name, m in models.items()}
    runners["BagNet-33, Keras' own predict loop"] = lambda: keras.Model.predict(
        bagnet, x, batch_size=args.batch, verbose=0
    )
    if args.dtype_policy:
        from bagnet_keras.models.inference import with_dtype_policy

        mixed = with_dtype_policy(bagnet, args.dtype_policy)
        mixed.jit_compile = bagnet.jit_compile = args.jit_compile
        runners[f"BagNet-33, {args.dtype_policy}"] = lambda: mixed.predict(x, batch_size=args.batch, verbose=0)
    elif args.jit_compile:
        bagnet.jit_compile = True
    torch_runner = _torch_runner(x, args.batch)
    if torch_runner is not None:
        runners.update(torch_runner)

    for run in runners.values():  # warm-up: tracing, allocation
        run()
    rates = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            rates[name].append(images_per_second(run, args.images))

    print(
        f"{args.images} images of 224x224, batch {args.batch}, {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs; images/s (median, min-max):"
    )
    median = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(f"  {name:45s} {median[name]:7.2f}  ({min(r):.2f}-{max(r):.2f})")
    ours, resnet = median["BagNet-33 (bagnet_keras)"], median["ResNet-50 (keras.applications)"]
    per_round = [
        b / r for b, r in zip(rates["BagNet-33 (bagnet_keras)"], rates["ResNet-50 (keras.applications)"], strict=True)
    ]
    print(
        f"ratio BagNet-33 / ResNet-50: {ours / resnet:.3f} (per round {min(per_round):.3f}-{max(per_round):.3f}); "
        "target >= 0.27"
    )
    # Keras' predict loop on this kind of machine sometimes runs a whole call at about
    # 60% speed (one core idle); best-of-rounds shows each model without that.
    best_ours, best_resnet = max(rates["BagNet-33 (bagnet_keras)"]), max(rates["ResNet-50 (keras.applications)"])
    print(f"ratio of the best rounds: {best_ours:.2f} / {best_resnet:.2f} = {best_ours / best_resnet:.3f}")
    for name in runners:
        if "PyTorch" in name:
            print(f"ratio BagNet-33 (ours) / authors' PyTorch: {ours / median[name]:.2f}; target >= 2")
    if args.dtype_policy:
        _policy_errors(
            f"BagNet-33, {args.dtype_policy}", bagnet, mixed, x[:4], median[f"BagNet-33, {args.dtype_policy}"] / ours
        )


def _torch_runner(x: np.ndarray, batch: int) -> dict | None:
    """The authors' PyTorch BagNet-33 as a runner, or None (said) where torch is not importable."""
    try:
        import torch

        from tools.torch_bagnet import BagNet as TorchBagNet
    except ImportError:
        print("torch not importable: the PyTorch model is not timed")
        return None
    torch_model = TorchBagNet([3, 4, 6, 3], kernel3=(1, 1, 1, 1)).eval()
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    def run_torch():
        with torch.no_grad():
            for i in range(0, len(xt), batch):
                torch_model(xt[i : i + batch])

    return {f"BagNet-33 (authors' PyTorch, torch {torch.__version__})": run_torch}


def _policy_errors(name: str, bagnet, mixed, sample: np.ndarray, ratio: float) -> None:
    """How far the dtype policy moves the numbers (issue 13: evidence within 1e-2 of float32's range)."""
    from bagnet_keras import evidence_map

    print(f"ratio {name} / float32: {ratio:.2f}")
    for what, exact, approx in (
        ("logits", bagnet.predict(sample, verbose=0), mixed.predict(sample, verbose=0)),
        ("evidence maps", evidence_map(bagnet, sample).maps, evidence_map(mixed, sample).maps),
    ):
        error = np.abs(np.asarray(approx, "float64") - exact).max() / np.abs(exact).max()
        print(f"{name}: {what} max |error| / max |float32 value| = {error:.2e} ({len(sample)} images)")


if __name__ == "__main__":
    main()
