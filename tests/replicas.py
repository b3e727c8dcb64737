"""Test-only: compare on two logical CPU devices under MirroredStrategy, against one device; prints the largest gap.

    python tests/replicas.py

TensorFlow's logical devices must be set before it starts, hence a process of its own.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main() -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bagnet_keras.metrics.comparison import compare

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        cnn = keras.Sequential(
            [
                keras.Input((24, 24, 3)),
                keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
    x = np.random.default_rng(0).normal(size=(5, 24, 24, 3)).astype("float32")
    args = dict(steps=4, linearity_k=3, batch_size=5, progress=False)  # batches of 5 and 4 passes, and 1 image
    plain = compare({"cnn": cnn}, x, [0, 1, 2, 0, 1], **args)
    split = compare({"cnn": cnn}, x, [0, 1, 2, 0, 1], strategy=strategy, **args)
    metrics = ("deletion_area", "insertion_area", "linearity_sum", "linearity_joint")
    gap = max(abs(a[m] - b[m]) for a, b in zip(plain.rows, split.rows, strict=True) for m in metrics)
    print(f"replicas {strategy.num_replicas_in_sync} rows {len(split.rows)} gap {gap:.3g}")


if __name__ == "__main__":
    main()
