"""Top ImageNet classes of an image and the patches that voted for the winner.

    python examples/imagenet_evidence.py photo.jpg                 # ImageNet weights (downloads once)
    python examples/imagenet_evidence.py --weights none            # offline: random weights, generated image

A BagNet's logit is the mean of the evidence of its 33x33 patches, so the
patches listed here are exactly what made the decision, not an approximation.
"""

import argparse

import numpy as np

from bagnet_keras import BagNet33, bagnet_geometry, decode_predictions, evidence_model, preprocess_input
from bagnet_keras.cli import load_image, sample_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", help="image file (default: a generated image)")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', 'none' or a checkpoint path")
    parser.add_argument("--patches", type=int, default=5)
    args = parser.parse_args()

    image = load_image(args.image) if args.image else sample_image()
    model = BagNet33(weights=None if args.weights == "none" else args.weights, classifier_activation=None)
    evidence = evidence_model(model).predict(preprocess_input(image[None]), verbose=0)[0]
    logits = evidence.mean(axis=(0, 1))
    for wnid, name, score in decode_predictions(logits[None], top=5)[0]:
        print(f"{score:9.4f}  {name} ({wnid})")

    top = int(np.argmax(logits))
    g = bagnet_geometry(model)
    order = np.argsort(-evidence[..., top], axis=None)[: args.patches]
    print(f"\nmost informative {g.patch_size}x{g.patch_size} patches for class {top}:")
    for i, j in zip(*np.unravel_index(order, evidence.shape[:2]), strict=True):
        y, x = g.offset + g.stride * i, g.offset + g.stride * j
        print(f"  rows {y}-{y + g.patch_size - 1}, cols {x}-{x + g.patch_size - 1}: evidence {evidence[i, j, top]:.4f}")


if __name__ == "__main__":
    main()
