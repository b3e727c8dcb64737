"""A small vision transformer beside the demo's BagNet, on the demo's generated scenes (issue 26's figure).

    python examples/vit_vs_bagnet.py [--run runs/demo] [--out runs/vit] [--epochs 60]

Runs the demo first where ``--run`` holds no finished demo, then trains a keras-hub ViT (patches of 8
pixels, 4 blocks, width 64) from scratch on the demo's training split, and draws one test image per
class: the image, the BagNet's evidence, and the ViT's Grad-CAM (at the input of its last block),
attention rollout, gradient rollout (Chefer et al.) and integrated gradients. Writes
``<out>/vit_vs_bagnet.png`` and ``<out>/accuracy.json``. Needs the [hub] extra (keras-hub); no network,
no pretrained weights. On 2 CPU cores: the demo about 20 minutes, the ViT's 60 epochs about 11.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("gradcam", "rollout", "gradient_rollout", "integrated_gradients")


def vit_classifier(size: int, classes: int):
    """A ViT from keras-hub with a softmax head, taking the demo's preprocessed images."""
    import keras_hub

    from bagnet_keras.transfer.heads import build_classifier

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3),
        patch_size=8,
        num_layers=4,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
        dropout_rate=0.1,
    )
    return build_classifier(backbone, {"label": classes}, mode="scratch", dropout=0.1, name="vit")


def train_vit(run: str, out: str, size: int, epochs: int, learning_rate: float):
    import keras

    from bagnet_keras.models.imagenet import preprocess_input
    from bagnet_keras.transfer.training import fit_classifier
    from data_tools.loader import image_dataset

    data = os.path.join(run, "data")
    train = image_dataset(data, (size, size), batch_size=32, split="train", preprocess=preprocess_input, cache=True)
    # Without augmentation this ViT learns the training scenes by heart (train 0.95, validation 0.32 after 26
    # epochs). Shifts keep every class what it is; flips would not (dot_left_of_bar).
    shift = keras.layers.RandomTranslation(0.15, 0.15, fill_mode="reflect", seed=0)
    train = train.map(lambda x, y: (shift(x, training=True), y))
    val = image_dataset(data, (size, size), batch_size=64, split="val", preprocess=preprocess_input, cache=True)
    model = vit_classifier(size, len(val.class_names))
    # a transformer from scratch on a few thousand images learns slowly at first: no early stop
    fit_classifier(
        model,
        train,
        val,
        epochs=epochs,
        learning_rate=learning_rate,
        patience=None,
        output_dir=os.path.join(out, "model"),
    )
    return keras.saving.load_model(os.path.join(out, "model", "best.keras"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--out", default="runs/vit")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    args = parser.parse_args()

    import keras
    import matplotlib.pyplot as plt
    import numpy as np

    from bagnet_keras.app.demo import run_demo
    from bagnet_keras.explain.registry import explain
    from bagnet_keras.models.imagenet import preprocess_input
    from data_tools.loader import ImageFiles

    if not os.path.exists(os.path.join(args.run, "report.html")):
        run_demo(args.run)
    bagnet = keras.saving.load_model(os.path.join(args.run, "models", "bagnet", "best.keras"))
    size = bagnet.input_shape[1] or 64
    os.makedirs(args.out, exist_ok=True)
    vit = train_vit(args.run, args.out, size, args.epochs, args.learning_rate)
    files = ImageFiles(os.path.join(args.run, "data"), (size, size), split="test")
    raw = files[:]
    x = preprocess_input(raw.astype("float32"))
    predicted = {
        name: np.argmax(model.predict(x, verbose=0)["label"], -1) for name, model in (("bagnet", bagnet), ("vit", vit))
    }
    accuracy = {name: float((guess == files.labels).mean()) for name, guess in predicted.items()}
    with open(os.path.join(args.out, "accuracy.json"), "w", encoding="utf-8") as f:
        json.dump(accuracy, f)
    chosen = [int(np.flatnonzero(files.labels == k)[0]) for k in range(len(files.class_names))]
    columns = [("image", None, None), ("BagNet evidence", bagnet, "evidence")] + [
        (f"ViT {method}", vit, method) for method in METHODS
    ]
    figure, axes = plt.subplots(len(chosen), len(columns), figsize=(2.2 * len(columns), 2.2 * len(chosen)))
    for i, index in enumerate(chosen):
        label = int(files.labels[index])
        for j, (title, model, method) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(raw[index])
            if method is not None:
                heat = explain(model, x[index : index + 1], method, class_index=label)[0]
                ax.imshow(heat, cmap="jet", alpha=0.5)
            ax.set_title(title if i == 0 else "", fontsize=8)
            ax.set_ylabel(files.class_names[label] if j == 0 else "", fontsize=8)
            if j == 0:  # what each model says about this image
                ax.set_xlabel(
                    "\n".join(f"{name}: {files.class_names[guess[index]]}" for name, guess in predicted.items()),
                    fontsize=7,
                )
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(f"test accuracy: BagNet {accuracy['bagnet']:.2f}, ViT {accuracy['vit']:.2f}", fontsize=9)
    figure.tight_layout()
    figure.savefig(os.path.join(args.out, "vit_vs_bagnet.png"), dpi=80)
    print(json.dumps(accuracy), os.path.join(args.out, "vit_vs_bagnet.png"))


if __name__ == "__main__":
    main()
