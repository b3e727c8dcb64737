"""Top ImageNet classes of an image, the patches that voted for the winner, and its full-resolution heatmap.

    python examples/imagenet_evidence.py photo.jpg --out out/      # ImageNet weights (downloads once)
    python examples/imagenet_evidence.py --weights none            # offline: random weights, generated image

A BagNet's logit is the mean of the evidence of its 33x33 patches, so the
patches listed here are exactly what made the decision, not an approximation.
With ``--out``, the stride-1 evidence map (the logit of the patch centred on
every pixel) is drawn the way the authors draw it and saved there.
"""

import argparse
import os

import numpy as np

from bagnet_keras import BagNet33, decode_predictions, deprocess_input, evidence_map, preprocess_input
from bagnet_keras.app.cli import load_image, sample_image
from bagnet_keras.report.plot import plot_evidence, save_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", help="image file (default: a generated image)")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', 'none' or a checkpoint path")
    parser.add_argument("--patches", type=int, default=5)
    parser.add_argument("--out", help="folder for heatmap.png (stride-1 map, about 7 s on two CPU cores)")
    args = parser.parse_args()

    image = load_image(args.image) if args.image else sample_image()
    model = BagNet33(weights=None if args.weights == "none" else args.weights, classifier_activation=None)
    x = preprocess_input(image[None])
    result = evidence_map(model, x)  # native grid, the top class
    for wnid, name, score in decode_predictions(result.logits, top=5)[0]:
        print(f"{score:9.4f}  {name} ({wnid})")

    top = int(result.class_index[0])
    boxes = result.boxes()
    order = np.argsort(-result.maps[0], axis=None)[: args.patches]
    print(f"\nmost informative {result.patch_size}x{result.patch_size} patches for class {top}:")
    for i, j in zip(*np.unravel_index(order, result.maps.shape[1:]), strict=True):
        y0, x0, y1, x1 = boxes[i, j]
        print(f"  rows {y0}-{y1 - 1}, cols {x0}-{x1 - 1}: evidence {result.maps[0, i, j]:.4f}")

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        dense = evidence_map(model, x, class_index=top, stride=1)
        figure = plot_evidence(dense, x, deprocess=deprocess_input)
        print("wrote", save_figure(figure, os.path.join(args.out, "heatmap.png")))


if __name__ == "__main__":
    main()
