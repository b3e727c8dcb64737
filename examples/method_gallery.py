"""Every explanation method on generated shapes, with both sanity checks: the figures of the method pages.

    python examples/method_gallery.py [--out docs/methods] [--epochs 8]

Offline and CPU-sized (a few minutes on two cores; needs the [hub] extra for the
ViT). Trains on the shapes of ``examples/explain_shapes.py`` a small BagNet (for
``evidence``), a small CNN (for every method that takes any model) and a small
keras-hub ViT (for the attention rollouts), then, per method:

- draws its maps of four test images for their true class, ``<out>/figures/<page>.png``;
- runs Adebayo et al.'s model randomisation and Kindermans et al.'s input
  invariance (`bagnet_keras.metrics.sanity`) on eight test images, and writes
  what they measured to ``<out>/figures/sanity.json``;
- rewrites the sanity section of ``<out>/<page>.md`` (between its two
  ``<!-- sanity -->`` markers) from those numbers, so the pages say what was
  measured, not what was expected; and the table of every method's verdicts
  on the sanity page (``<out>/../sanity.md``).

``tests/test_docs.py`` checks that every page's section is the one this script
writes from ``sanity.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BEGIN, END = "<!-- sanity: begin -->", "<!-- sanity: end -->"
#: Test images each sanity check runs on.
CHECKED = 8
#: How a check's `passed` reads on the pages (None: the maps were constant, the check cannot tell).
VERDICTS = {True: "passes", False: "fails", None: "says nothing"}


def page_name(method: str) -> str:
    """The file name of a method's page, without ``.md``: ``gradcam++`` -> ``gradcampp``."""
    return method.replace("++", "pp").replace("_", "-")


def percent(fraction: float) -> str:
    """A relative change as a percentage with the digits that matter: 34 %, 1.8 %, 0.006 %, 0 %."""
    value = 100 * fraction
    return f"{value:.0f} %" if value >= 10 or value == 0 else f"{value:.2g} %" if value >= 0.1 else f"{value:.1g} %"


def sanity_section(method: str, measured: dict) -> str:
    """The markdown between a page's sanity markers, from what this script measured for ``method``."""

    randomization, invariance = measured["randomization"], measured["invariance"]
    return "\n".join(
        [
            BEGIN,
            f"Measured by `examples/method_gallery.py` on its {measured['model']}, {CHECKED} test images, "
            "each for its true class:",
            "",
            "| check | result | measured |",
            "|---|---|---|",
            f"| model randomisation (Adebayo et al. 2018) | {VERDICTS[randomization['passed']]} | mean Spearman "
            f"correlation {randomization['spearman']:.2f} with every layer re-initialised (passes below 0.5) |",
            f"| input invariance (Kindermans et al. 2019) | {VERDICTS[invariance['passed']]} | the maps change by "
            f"{percent(invariance['change'])} when the input is shifted by {invariance['shift']:g} "
            "(passes at 0.1 % or less) |",
            END,
        ]
    )


def sanity_table(measured: dict) -> str:
    """The markdown between the sanity page's markers: every method's two verdicts, in the table's order."""
    from bagnet_keras.explain.methods import METHODS

    rows = [
        f"| [`{m}`](methods/{page_name(m)}.md) | {measured[m]['model'].split(' (')[0]} | "
        f"{VERDICTS[measured[m]['randomization']['passed']]} ({measured[m]['randomization']['spearman']:.2f}) | "
        f"{VERDICTS[measured[m]['invariance']['passed']]} ({percent(measured[m]['invariance']['change'])}) |"
        for m in METHODS
        if m in measured
    ]
    header = ["| method | model | model randomisation (Spearman) | input invariance (change) |", "|---|---|---|---|"]
    return "\n".join([BEGIN, *header, *rows, END])


def rewrite_page(path: str, section: str) -> None:
    """Replace the text between the page's sanity markers (inclusive) with ``section``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} section to rewrite.")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + section + tail)


def flat_cnn(classes: int):
    """A small CNN in one flat graph (input invariance folds the shift into its first layer's bias)."""
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(name="pool2"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
            layers.GlobalAveragePooling2D(name="avg_pool"),
            layers.Dense(classes, name="logits"),
        ],
        name="cnn",
    )


def small_vit(classes: int):
    """A keras-hub ViT (patches of 8 pixels, 2 blocks, width 32) with a logits head on its class token."""
    import keras_hub

    from bagnet_keras.transfer.heads import build_classifier

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(64, 64, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    return build_classifier(backbone, classes, mode="scratch", name="vit")


def small_bagnet(classes: int):
    from bagnet_keras import BagNet

    # stem_width 16: see 'Known issues' (the oneDNN crash of training a 1x1 stride-2 conv on few channels)
    model = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=8, stem_width=16, classes=classes,
        classifier_activation=None,
    )  # fmt: skip
    model.get_layer("conv1_bn").momentum = 0.9  # as in explain_shapes.py: the authors' 0.999 is for ImageNet
    return model


def trained_models(epochs: int):
    """The three models, trained on the shapes; their test accuracies; the test images and labels."""
    import keras
    import numpy as np
    from explain_shapes import CLASSES, make_shapes, preprocess, train

    keras.utils.set_random_seed(0)
    images, labels = make_shapes(2000, seed=0)
    test_images, test_labels = make_shapes(200, seed=1)
    x, xt = preprocess(images), preprocess(test_images)
    models = {"BagNet": small_bagnet(len(CLASSES)), "CNN": flat_cnn(len(CLASSES))}
    try:
        models["ViT"] = small_vit(len(CLASSES))
    except ImportError as error:
        raise SystemExit(f"{error}: the ViT needs keras-hub, pip install 'bagnet-keras[hub]'.") from None
    accuracy = {}
    for name, model in models.items():
        if name == "ViT":  # a softmax head: the probability's loss
            model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
            model.fit(x, labels, epochs=3 * epochs, batch_size=32, verbose=2)
        else:
            train(model, x, labels, epochs)
        scores = model.predict(xt, verbose=0)  # the ViT's one head comes as {"predictions": ...}
        scores = next(iter(scores.values())) if isinstance(scores, dict) else scores
        accuracy[name] = float((np.argmax(scores, -1) == test_labels).mean())
    return models, accuracy, xt, test_labels


def model_for(method: str) -> str:
    from bagnet_keras.explain.methods import METHODS

    row = METHODS[method]
    return "BagNet" if row.bagnet_only else "ViT" if row.transformer_only else "CNN"


def draw(images, maps, title: str):
    """The images above their maps, one column per image."""
    import numpy as np
    from explain_shapes import deprocess
    from matplotlib.figure import Figure

    from bagnet_keras.report.plot import plot_heatmap, plot_overlay

    figure = Figure(figsize=(2 * len(images), 4.2), layout="constrained")
    axes = figure.subplots(2, len(images), squeeze=False)
    draw_map = plot_heatmap if np.min(maps) < 0 else plot_overlay
    for n, image in enumerate(images):
        axes[0, n].imshow(deprocess(image))
        axes[0, n].set_axis_off()
        draw_map(maps[n], image, ax=axes[1, n], deprocess=deprocess)
    figure.suptitle(title, fontsize=10)
    return figure


def measure(model, x, y, methods) -> dict:
    """Both sanity checks of ``methods`` on one model: method -> what was measured."""
    from bagnet_keras.metrics import input_invariance, model_randomization

    randomized = model_randomization(model, x, methods, class_index=y)
    shift = 1.0
    invariant = input_invariance(model, x, methods, class_index=y, shift=shift)
    return {
        m: {
            "randomization": {"passed": randomized.passed(m), "spearman": float(randomized.mean_spearman(m)[-1])},
            "invariance": {"passed": invariant.passed(m), "change": invariant.difference[m], "shift": shift},
        }
        for m in methods
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/methods", help="the folder of the method pages")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()

    import numpy as np
    from explain_shapes import CLASSES

    from bagnet_keras.explain import explain
    from bagnet_keras.explain.methods import METHODS
    from bagnet_keras.report.plot import save_figure

    models, accuracy, xt, yt = trained_models(args.epochs)
    print("test accuracy:", json.dumps(accuracy))
    shown = [int(np.flatnonzero(yt == c)[0]) for c in range(len(CLASSES))] + [3]
    figures = os.path.join(args.out, "figures")
    os.makedirs(figures, exist_ok=True)
    measured = {}
    for name, model in models.items():
        methods = [m for m in METHODS if model_for(m) == name]
        for method in methods:
            maps = explain(model, xt[shown], method, class_index=yt[shown])
            title = f"{method} of the {name} (test accuracy {accuracy[name]:.2f}), for the true class"
            save_figure(draw(xt[shown], maps, title), os.path.join(figures, f"{page_name(method)}.png"), dpi=80)
        for method, found in measure(model, xt[:CHECKED], yt[:CHECKED], methods).items():
            measured[method] = {"model": f"small {name} (test accuracy {accuracy[name]:.2f})", **found}
            print(method, json.dumps(found))
    with open(os.path.join(figures, "sanity.json"), "w", encoding="utf-8") as f:
        json.dump(measured, f, indent=1, sort_keys=True)
    for method, found in measured.items():
        rewrite_page(os.path.join(args.out, f"{page_name(method)}.md"), sanity_section(method, found))
    rewrite_page(os.path.join(os.path.dirname(os.path.abspath(args.out)), "sanity.md"), sanity_table(measured))


if __name__ == "__main__":
    main()
