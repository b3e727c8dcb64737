"""Speed of the dense stride-1 evidence map and of Grad-CAM, against their baselines in the same process.

    python bench/evidence.py [--rounds 3] [--patches 1024] [--skip-cam]

1. Full-size BagNet-33 (random weights, with torch: the authors' model's, see
   `torch_model_and_weights`), one 224x224 image, stride 1:
   ``evidence_map(model, image, stride=1)`` against the authors' algorithm run
   with our own model (zero-pad by 16, push the patch centred on every pixel
   through the network, 50,176 patches). The patch loop is timed on
   ``--patches`` patches in batches of 256 and extrapolated to 50,176 (said so
   in the output); its logits are compared with the dense map at the same
   pixels. If torch is importable, the authors' PyTorch model with the same
   weights runs the same patches too. Target (issue 3): >= 8x against our own
   patch loop, max difference <= 1e-4.
2. Grad-CAM of keras.applications.ResNet50 (random weights) on a batch of 32
   224x224 images against one forward + backward pass of that batch (the
   gradient of the top-class score with respect to the input). Target: <= 1.5x.

Each comparison alternates the two sides for ``--rounds`` rounds after a
warm-up call and reports the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bagnet_keras import BagNet33, evidence_map  # noqa: E402
from bagnet_keras.explain import cam  # noqa: E402

PATCH_BATCH = 256


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(rounds: int, **fns) -> dict:
    for fn in fns.values():  # warm-up: tracing and first-call allocation
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def patches_of(image: np.ndarray, q: int, pixels: list) -> np.ndarray:
    pad = (q - 1) // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return np.stack([padded[i : i + q, j : j + q] for i, j in pixels])


def torch_model_and_weights(path: str, image: np.ndarray):
    """The authors' model (tools/torch_bagnet.py) with random weights, saved where our model can load them.

    Random BatchNorm statistics compound over 16 blocks into logits in the
    thousands; the fc layer is scaled so the image's logits reach +-20, the
    range of ImageNet-trained weights, where an absolute tolerance means
    what it says. (Scaling fc scales every difference alike.)
    """
    try:
        import torch

        from tools.torch_bagnet import BagNet as TorchBagNet
        from tools.torch_bagnet import randomize
    except ImportError:
        return None
    torch.manual_seed(0)
    model = randomize(TorchBagNet([3, 4, 6, 3], kernel3=(1, 1, 1, 1)), 0).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(image).permute(0, 3, 1, 2).contiguous())
        scale = 20.0 / logits.abs().max()
        model.fc.weight *= scale
        model.fc.bias *= scale
    torch.save(model.state_dict(), path)
    return model


def bench_evidence(args) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(-2, 2, size=(1, 224, 224, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "bagnet33_random.pth")
        torch_model = torch_model_and_weights(weights, image)
        model = BagNet33(weights=weights if torch_model is not None else None, classifier_activation=None)
    logits = model.predict(image, verbose=0)
    target = int(logits.argmax())
    q = 33
    pixels = [tuple(p) for p in rng.integers(0, 224, size=(args.patches, 2))]
    patches = patches_of(image[0], q, pixels)

    def patch_loop():
        return np.concatenate(
            [model.predict_on_batch(patches[i : i + PATCH_BATCH]) for i in range(0, len(patches), PATCH_BATCH)]
        )

    dense = {}

    def dense_map():
        dense["map"] = evidence_map(model, image, class_index=target, stride=1).maps[0]

    fns = {"dense": dense_map, "patch loop": patch_loop}
    if torch_model is not None:
        import torch

        xt = torch.from_numpy(patches).permute(0, 3, 1, 2).contiguous()

        def torch_loop():
            with torch.no_grad():
                return torch.cat([torch_model(xt[i : i + PATCH_BATCH]) for i in range(0, len(xt), PATCH_BATCH)])

        fns["torch patch loop"] = torch_loop
    times = alternate(args.rounds, **fns)
    scale = 224 * 224 / len(patches)
    ours = patch_loop()[:, target]
    at = np.array([dense["map"][i, j] for i, j in pixels])
    print(f"BagNet-33, one 224x224 image, stride-1 evidence map (class {target}), median of {args.rounds} rounds")
    print(f"  dense evidence_map:              {times['dense']:8.2f} s")
    print(
        f"  patch loop, our model:           {times['patch loop'] * scale:8.2f} s "
        f"(extrapolated from {len(patches)} patches, batches of {PATCH_BATCH})"
    )
    print(f"  speed-up vs our patch loop:      {times['patch loop'] * scale / times['dense']:8.2f}x  (target >= 8x)")
    print(f"  logits of the image:             max |logit| {np.abs(logits).max():.2f}")
    print(f"  max |dense - patch loop|:        {np.abs(at - ours).max():.2e}  (target <= 1e-4)")
    if torch_model is not None:
        with torch.no_grad():
            theirs = torch_loop()[:, target].numpy()
        print(
            f"  patch loop, authors' PyTorch:    {times['torch patch loop'] * scale:8.2f} s "
            f"(extrapolated, same weights)"
        )
        print(f"  speed-up vs PyTorch patch loop:  {times['torch patch loop'] * scale / times['dense']:8.2f}x")
        print(f"  max |dense - PyTorch patches|:   {np.abs(at - theirs).max():.2e}")


def bench_cam(args) -> None:
    import tensorflow as tf

    model = keras.applications.ResNet50(weights=None, classifier_activation=None)
    x = np.random.default_rng(1).uniform(-2, 2, size=(32, 224, 224, 3)).astype("float32")

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = model(x, training=False)
            top = tf.gather(scores, tf.argmax(scores, axis=-1), axis=1, batch_dims=1)
        return tape.gradient(top, x)

    xt = tf.constant(x)
    times = alternate(
        args.rounds,
        gradcam=lambda: cam(model, x, method="gradcam"),
        baseline=lambda: forward_backward(xt).numpy(),
    )
    print(f"Grad-CAM, ResNet-50, batch of 32 224x224 images, median of {args.rounds} rounds")
    print(f"  cam(model, x, method='gradcam'): {times['gradcam']:8.2f} s")
    print(f"  one forward + backward pass:     {times['baseline']:8.2f} s")
    print(f"  ratio:                           {times['gradcam'] / times['baseline']:8.2f}x  (target <= 1.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patches", type=int, default=1024)
    parser.add_argument("--skip-cam", action="store_true")
    args = parser.parse_args()
    bench_evidence(args)
    if not args.skip_cam:
        bench_cam(args)


if __name__ == "__main__":
    main()
