"""Speed of feature visualisation against plain gradient passes, and the objective it reaches against tf-keras-vis.

    python bench/feature_visualization.py [--channels 8] [--steps 64] [--rounds 3] [--applications]
                                          [--peer-path DIR]

The demo's small CNN (``small_cnn((64, 64, 3), 16)`` with GlobalAveragePooling2D
and Dense(5) on top, random weights, seed 0; layer ``--layer``, default
``conv3_relu``, 16 x 16 x 64) and, with ``--applications``,
keras.applications.MobileNetV2 (random weights, 96x96; layer ``block_2_add``,
24 x 24 x 24: with random weights its activations shrink about tenfold per
block, 1e-3 there, 1e-5 by block 5). Images are pixels 0..255 and both models
take them through ``x / 127.5 - 1``.

1. Speed: `bagnet_keras.explain.visualization.feature_visualization` for
   ``--channels`` channel objectives of one layer (B images, its defaults, as
   Lucid's: Fourier parametrisation, decorrelated colour, random
   transformations), ``--steps`` steps, against exactly that many forward +
   backward passes of the same model on a batch of B images of the same size,
   written plainly: a `tf.function` with `tf.GradientTape` taking the gradient
   of the layer's channel means (channel i for image i) with respect to the
   input, and a gradient step on the images between passes. One warm-up call
   of each, then ``--rounds`` interleaved rounds; the medians and their ratio
   are printed.
2. Peer: tf-keras-vis's ``ActivationMaximization`` (its documented API:
   ``ExtractIntermediateLayer`` + ``ReplaceToLinear`` as model modifiers,
   ``CategoricalScore`` of channel i for image i, which is the channel's mean
   over positions) on the same channels, the same number of steps, seeded as
   its documentation shows (uniform 0..255). The preprocessing is put in front
   of the extracted layer (a model modifier of our own, after theirs), so it
   optimises pixels 0..255, as its defaults expect. Configurations:

   - peer-A: its defaults (jitter 4 px, rotation 1 degree, total variation
     1.0 + L1 norm 0.3, ``RMSprop(1.0, rho=0.999)``). Keras' RMSprop adds its
     epsilon (1e-7) under the square root, so where the gradients are far
     below sqrt(1e-7) per pixel, as on these random-weight models, its steps
     are tiny (about 1e-3 px) and the jitter and bilinear rotations, which
     it applies to the image itself every step, blur it towards grey;
   - peer-B: the same, RMSprop's epsilon 1e-30 (steps of its intended size);
   - peer-C: no regularisers, epsilon 1e-30: plain ascent of the objective;
   - peer-D (ReLU layers): peer-C through the ReLU's input, the layer before
     it (what ``ReplaceToLinear`` reaches on a convolution with a built-in
     ReLU, and what ours optimises there).

   Ours is also run with ``parametrization="pixel", transforms=False``
   (ours-px), the closest to plain ascent. Every method's final images are
   measured the same way: one plain forward pass (same preprocessing) and
   channel i's mean activation at the layer as named, on image i. Per unit:
   each method, the best peer configuration ("peer"), the ratio ours / peer
   (n/a where peer <= 0); then the fraction of units where ours >= peer.
   Every run of this part is timed once (information, not a target).
   ``--peer-path DIR`` appends DIR (a ``pip install --target`` folder) to
   ``sys.path``; if tf-keras-vis does not import or fails to run, the reason
   (the exception) is printed and the peer part is skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bagnet_keras.app.demo import small_cnn  # noqa: E402
from bagnet_keras.core.graph import producing_layer  # noqa: E402
from bagnet_keras.explain.objectives import channel  # noqa: E402
from bagnet_keras.explain.visualization import feature_visualization  # noqa: E402

# tf-keras-vis calls a one-input Keras 3 model with a list of one tensor; Keras warns each step, harmlessly.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")


def preprocess(x):
    """Pixels 0..255 to -1..1 (MobileNetV2's preprocessing), for both models and every method."""
    return x / 127.5 - 1.0


def small_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    base = small_cnn((64, 64, 3), 16)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base.output)
    return keras.Model(base.input, keras.layers.Dense(5, name="logits")(x), name="small_cnn_classifier")


def mobilenet() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))


def pre_relu_layer(model: keras.Model, name: str) -> str | None:
    """The layer feeding ``name`` when ``name`` is a plain ReLU layer (what ours optimises through), else None."""
    layer = model.get_layer(name)
    plain = isinstance(layer, keras.layers.ReLU) and layer.max_value is None and not layer.negative_slope
    plain = plain or (isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.relu)
    return producing_layer(layer.input).name if plain else None


def channel_means(extractor: keras.Model, images: np.ndarray, units: list[int]) -> np.ndarray:
    """Channel ``units[i]``'s mean activation on image i, by one plain forward pass."""
    acts = keras.ops.convert_to_numpy(extractor(preprocess(np.asarray(images, "float32")), training=False))
    return acts[np.arange(len(images)), :, :, np.asarray(units)].mean(axis=(1, 2)).astype("float64")


def plain_passes(extractor: keras.Model, units: list[int], size: tuple, steps: int):
    """``steps`` forward + backward passes on B images: the gradient of channel i's mean (image i) w.r.t. the input."""
    index = tf.constant(units)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            means = tf.reduce_mean(extractor(preprocess(x), training=False), axis=(1, 2))
            score = tf.reduce_sum(tf.linalg.diag_part(tf.gather(means, index, axis=1)))
        return tape.gradient(score, x)

    start = np.random.default_rng(0).uniform(0, 255, (len(units), *size, 3)).astype("float32")

    def run():
        x = tf.constant(start)
        for _ in range(steps):
            x = x + 0.1 * gradient(x)
        return x.numpy()

    return run


def bench_speed(model, layer: str, units: list[int], steps: int, rounds: int):
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])
    objectives = [channel(layer, u) for u in units]
    extractor = keras.Model(model.inputs, model.get_layer(layer).output)
    result = {}

    def ours():
        result["ours"] = feature_visualization(model, objectives, steps=steps, preprocess=preprocess, progress=False)

    runs = {"ours": ours, "plain": plain_passes(extractor, units, size, steps)}
    for run in runs.values():  # warm-up: tracing
        run()
    seconds = {name: [] for name in runs}
    for _ in range(rounds):  # interleaved, so that a slow moment of the machine hits both
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    ours_s, plain_s = (statistics.median(seconds[name]) for name in runs)
    print(
        f"  speed, {len(units)} channels of {layer!r} ({len(units)} images of {size[0]}x{size[1]}), {steps} steps, "
        f"median of {rounds} interleaved rounds:"
    )
    print(f"    feature_visualization (fourier, decorrelated, transforms): {ours_s:7.2f} s")
    print(f"    baseline, {steps} plain forward + backward passes (tf.function): {plain_s:7.2f} s")
    print(
        f"    ratio ours / baseline: x{ours_s / plain_s:.2f}   (rounds: ours {_list(seconds['ours'])}, "
        f"baseline {_list(seconds['plain'])})"
    )
    return result["ours"], ours_s, extractor


def _list(values) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def import_peer(path: str | None):
    """tf-keras-vis's pieces, or the exception that stopped them."""
    if path:
        sys.path.append(os.path.abspath(path))  # appended: the folder's own top-level packages shadow nothing
    try:
        import tf_keras_vis
        from tf_keras_vis.activation_maximization import ActivationMaximization
        from tf_keras_vis.utils.model_modifiers import ExtractIntermediateLayer, ReplaceToLinear
        from tf_keras_vis.utils.scores import CategoricalScore
    except Exception as error:  # any failure: reported, and the peer skipped
        return None, f"{type(error).__name__}: {error}"
    pieces = dict(am=ActivationMaximization, extract=ExtractIntermediateLayer, linear=ReplaceToLinear)
    return dict(pieces, score=CategoricalScore, version=tf_keras_vis.__version__), None


def peer_run(peer, model, layer: str, units: list[int], steps: int, regularise: bool, epsilon: float | None):
    """tf-keras-vis's activation maximisation of channel i of ``layer`` on image i; its images (0..255)."""
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])

    def preprocessing_in_front(extracted):  # a model modifier: the model takes pixels 0..255
        pixels = keras.Input((*size, 3))
        return keras.Model(pixels, extracted(preprocess(pixels)))

    modifiers = [peer["extract"](layer), peer["linear"](), preprocessing_in_front]
    visualize = peer["am"](model, model_modifier=modifiers, clone=True)
    np.random.seed(0)  # Jitter draws from NumPy's global generator (Rotate2D from an unseeded one)
    seed_input = tf.constant(np.random.default_rng(0).uniform(0, 255, (len(units), *size, 3)).astype("float32"))
    options = {} if regularise else {"regularizers": []}
    if epsilon is not None:  # its default optimizer, RMSprop(1.0, 0.999), with another epsilon
        options["optimizer"] = keras.optimizers.RMSprop(learning_rate=1.0, rho=0.999, epsilon=epsilon)
    start = time.perf_counter()
    images = visualize(peer["score"](list(units)), seed_input=seed_input, steps=steps, **options)
    return np.asarray(images), time.perf_counter() - start


def peer_configurations(model, layer: str) -> dict:
    """label -> (layer optimised, regularisers on, RMSprop epsilon or None for its default)."""
    configurations = {
        "peer-A": (layer, True, None),
        "peer-B": (layer, True, 1e-30),
        "peer-C": (layer, False, 1e-30),
    }
    inner = pre_relu_layer(model, layer)
    if inner:
        configurations["peer-D"] = (inner, False, 1e-30)
    return configurations


def bench_peer(peer, model, layer: str, units: list[int], args, ours, ours_s: float, extractor) -> None:
    reached = {"ours": channel_means(extractor, ours.images, units)}
    gap = float(np.max(np.abs(reached["ours"] - ours.values)))
    objectives = [channel(layer, u) for u in units]
    start = time.perf_counter()
    pixel = feature_visualization(
        model,
        objectives,
        steps=args.steps,
        preprocess=preprocess,
        parametrization="pixel",
        transforms=False,
        progress=False,
    )
    pixel_s = time.perf_counter() - start
    reached["ours-px"] = channel_means(extractor, pixel.images, units)
    print(
        f"  peer: tf-keras-vis {peer['version']} ActivationMaximization, {args.steps} steps, the same channels; every "
        f"final image measured by one forward pass: channel i's mean at {layer!r} (one run each)"
    )
    print(f"    ours     feature_visualization, defaults (fourier, decorrelated, transforms): {ours_s:6.2f} s")
    print(f"    ours-px  feature_visualization, parametrization='pixel', transforms=False: {pixel_s:6.2f} s")
    for label, (target, regularise, epsilon) in peer_configurations(model, layer).items():
        images, seconds = peer_run(peer, model, target, units, args.steps, regularise, epsilon)
        reached[label] = channel_means(extractor, images, units)
        what = (
            "its defaults (TV 1.0 + L1 0.3, RMSprop epsilon 1e-7)"
            if epsilon is None
            else (f"{'its regularisers' if regularise else 'no regularisers'}, RMSprop epsilon {epsilon:g}")
        )
        print(f"    {label}   optimising {target!r}, jitter + rotation, {what}: {seconds:6.2f} s")
    peers = np.max(np.stack([v for k, v in reached.items() if k.startswith("peer")]), axis=0)
    names = list(reached)
    print(
        "    unit" + "".join(f"{n:>11s}" for n in names) + f"{'peer':>11s}{'ours/peer':>11s}   (peer: the best peer-*)"
    )
    for i, u in enumerate(units):
        ratio = f"{reached['ours'][i] / peers[i]:11.2f}" if peers[i] > 0 else f"{'n/a':>11s}"
        print(f"    {u:4d}" + "".join(f"{reached[n][i]:11.4g}" for n in names) + f"{peers[i]:11.4g}{ratio}")
    print(f"    units where ours >= peer: {np.mean(reached['ours'] >= peers):.2f} ({len(units)} units)")
    print(
        "    by configuration: "
        + ", ".join(f"ours >= {n} {np.mean(reached['ours'] >= reached[n]):.2f}" for n in names[2:])
        + f"; ours-px >= peer {np.mean(reached['ours-px'] >= peers):.2f}"
    )
    print(f"    ours: largest |.values - the value remeasured| {gap:.2e}")


def bench_model(name: str, model, layer: str, args, peer, why) -> None:
    units = list(range(args.channels))
    print(f"{name}, layer {layer!r}:")
    ours, ours_s, extractor = bench_speed(model, layer, units, args.steps, args.rounds)
    if peer is None:
        print(f"  peer skipped: tf-keras-vis unavailable ({why})")
        return
    try:
        bench_peer(peer, model, layer, units, args, ours, ours_s, extractor)
    except Exception as error:  # the peer's failure is reported, not raised
        print(f"  peer skipped: tf-keras-vis failed to run: {type(error).__name__}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=8, help="B: channel objectives, one image each")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each, interleaved; medians reported")
    parser.add_argument("--layer", default="conv3_relu", help="the small CNN's layer")
    parser.add_argument("--applications", action="store_true", help="MobileNetV2 (96x96, block_2_add) too")
    parser.add_argument("--peer-path", help="a folder holding tf-keras-vis (pip install --target DIR)")
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}"
    )
    peer, why = import_peer(args.peer_path)
    print(f"peer: tf-keras-vis {peer['version']}" if peer else f"peer: not importable ({why})")
    bench_model("small CNN (64x64, random weights)", small_model(), args.layer, args, peer, why)
    if args.applications:
        bench_model("MobileNetV2 (96x96, random weights)", mobilenet(), "block_2_add", args, peer, why)


if __name__ == "__main__":
    main()
