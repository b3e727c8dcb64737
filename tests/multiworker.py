"""Test-only: one worker of a two-process MultiWorkerMirroredStrategy training on 127.0.0.1.

    python tests/multiworker.py INDEX PORT0,PORT1 OUTPUT_DIR

Prints one JSON line: the losses per epoch and a sha256 of the final weights. ``TF_CONFIG`` must be set
before TensorFlow starts, hence a process per worker.
"""

import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main() -> None:
    index, ports, output_dir = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
    workers = [f"127.0.0.1:{port}" for port in ports]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
    import tensorflow as tf

    from bagnet_keras import BagNet, preprocess_input
    from bagnet_keras.transfer.heads import build_classifier
    from bagnet_keras.transfer.training import fit_classifier, is_chief
    from data_tools.synthetic import textures

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        backbone = BagNet(
            blocks=(1, 1, 1, 1),
            kernel3=(1, 1, 0, 0),
            base_width=8,
            stem_width=16,
            include_top=False,
            input_shape=(32, 32, 3),
        )
    model = build_classifier(backbone, {"texture": 3}, mode="scratch", strategy=strategy)
    images, labels = textures(16, 32, seed=3)
    data = tf.data.Dataset.from_tensor_slices((preprocess_input(images.astype("float32")), labels)).batch(16)
    history = fit_classifier(
        model,
        data,
        data,
        epochs=4,
        learning_rate=3e-2,
        patience=None,
        output_dir=output_dir,
        strategy=strategy,
        verbose=0,
    )
    digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    print(
        json.dumps(
            {"chief": is_chief(strategy), "loss": history["loss"], "val_loss": history["val_loss"], "weights": digest}
        )
    )


if __name__ == "__main__":
    main()
