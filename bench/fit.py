"""fit_classifier's first epochs with the training state built before Keras' fit, beside Keras' own way, in one run.

    python bench/fit.py [--repeats 2] [--epochs 2]

Keras' TensorFlow trainer creates the optimizer's and the metrics' variables
inside its first trace of the train step, and TensorFlow then traces the step
a second time; `fit_classifier` builds them beforehand (`build_training_state`)
so it traces once. The baseline is the same call with that pre-build turned off
(Keras builds inside the trace, as a plain ``model.fit`` does). Both train a
small BagNet from the same seed on generated textures (32 px, 12 images: the
time is tracing, not arithmetic) and must reach the same losses, bit for bit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bagnet_keras import BagNet, preprocess_input  # noqa: E402
from bagnet_keras.transfer import training  # noqa: E402
from bagnet_keras.transfer.heads import build_classifier  # noqa: E402
from data_tools.synthetic import textures  # noqa: E402


def one_fit(epochs: int) -> tuple[float, list]:
    keras.utils.set_random_seed(5)
    backbone = BagNet(
        (1, 1, 1, 1), (1, 1, 0, 0), base_width=8, stem_width=16, include_top=False, input_shape=(32, 32, 3)
    )
    model = build_classifier(backbone, {"texture": 3}, mode="scratch")
    images, labels = textures(4, 32, seed=14)
    data = tf.data.Dataset.from_tensor_slices((preprocess_input(images.astype("float32")), labels)).batch(16)
    start = time.perf_counter()
    history = training.fit_classifier(model, data, data, epochs=epochs, seed=7, patience=None, verbose=0)
    return time.perf_counter() - start, history["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    built = training.build_training_state
    times: dict[str, list[float]] = {"pre-built (ours)": [], "built in the trace (Keras)": []}
    losses = {}
    for _ in range(args.repeats):  # alternated, so a slower moment of the machine hits both
        for name in times:
            training.build_training_state = built if name.startswith("pre") else (lambda model, batch: None)
            seconds, losses[name] = one_fit(args.epochs)
            times[name].append(seconds)
    training.build_training_state = built
    for name, values in times.items():
        print(f"{name:27} {' '.join(f'{v:6.2f}' for v in values)} s   losses {losses[name]}")
    ours, keras_own = (min(v) for v in times.values())
    same = len({tuple(loss) for loss in losses.values()}) == 1
    print(f"speed-up (best of each): {keras_own / ours:.2f}x; same losses: {same}")


if __name__ == "__main__":
    main()
