"""Every registered method on one model of each keras.applications family and a keras-hub ViT: ok, or why not
(issue 26).

    python bench/families.py [--size 96] [--families MobileNetV3 EfficientNet ...] [--methods gradcam ...]

Each family's smallest builder is called with random weights (``weights=None``, 10 classes, softmax head)
at ``--size`` pixels, and every method of `bagnet_keras.explain.registry.METHODS` but BagNet evidence
explains the logit of its top class on one image. A cell is "ok" when the map has the image's size, is finite
and is not constant (a CAM map is "all 0" where the weighted sum is negative everywhere: the ReLU
in its definition); "n/a" where a transformers-only method (attention rollout) meets a CNN; otherwise
it holds the error's first words or what was wrong. Below the table:
the layer the CAM methods chose by default, and the seconds each family took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bagnet_keras.core.tokens import transformer_blocks  # noqa: E402
from bagnet_keras.explain.cam import GradCAM  # noqa: E402
from bagnet_keras.explain.registry import METHODS, explain  # noqa: E402
from tools.families import FAMILIES, build, images  # noqa: E402


def cell(model: keras.Model, method: str, x: np.ndarray) -> str:
    """``"ok"``, or what went wrong with ``method`` on ``model``."""
    if METHODS[method].transformer_only and not transformer_blocks(model):
        return "n/a"
    try:
        maps = explain(model, x, method)
    except Exception as error:  # the table reports any failure, whatever its kind
        return f"{type(error).__name__}: {str(error)[:160]}"
    if maps.shape != x.shape[:3]:
        return f"shape {maps.shape}"
    if not np.isfinite(maps).all():
        return "not finite"
    if np.ptp(maps) == 0:
        return "all 0" if not maps.any() else "constant"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--methods", nargs="+", choices=[m for m in METHODS if m != "evidence"])
    args = parser.parse_args()
    if args.size < 32:
        parser.error(f"--size must be at least 32 (Xception needs 71, the Inceptions 75); got {args.size}")
    methods = args.methods or [m for m in METHODS if m != "evidence"]
    x = images(1, args.size)
    rows, notes = {}, []
    for family in args.families:
        start = time.perf_counter()
        model = build(family, args.size)
        rows[family] = {method: cell(model, method, x) for method in methods}
        layer = GradCAM(model).layer_path
        notes.append(f"{family}: default CAM layer {layer!r}, {time.perf_counter() - start:.0f} s")
        print(family, sum(v == "ok" for v in rows[family].values()), "of", len(methods), "ok", flush=True)
    print(f"\nkeras {keras.__version__}, backend {keras.backend.backend()}, {args.size} px, random weights\n")
    print("| method | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for method in methods:
        print(f"| {method} | " + " | ".join(rows[family][method] for family in rows) + " |")
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
