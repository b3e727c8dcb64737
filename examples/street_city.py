"""The street-city study in one script: which city is a street photo from, and is it Eastern or Western?

Crawls street photos of the study's ten cities (data_tools.crawl), cleans and
splits them, then compares, for each backbone (VGG16 trained on Places365, the
study's scene backbone, VGG16 trained on ImageNet, and BagNet-33), an SVM on
pooled features, training from scratch, transfer learning and fine-tuning,
with two outputs at once (city, and Eastern or Western). Prints the study's
results table and writes, under --out: every run's best model, history and
confusion matrices, results.json, results.md (the table) and results.png (its
figure: accuracy per backbone and mode, for both heads). Then the best CNN and
the best BagNet (by city accuracy) are explained on test images, under
--out/explain: report.html (Grad-CAM beside BagNet evidence, with deletion,
insertion and the sanity checks), atlas.html and explorer.html.

    python examples/street_city.py --out runs/streets                       # crawls (network), then trains
    python examples/street_city.py --data datasets/streets --out runs/streets   # offline: an existing dataset

With --data the folder needs one sub-folder per city (any of CITIES); it is
cleaned and split in place first if its manifest has no split yet. On a CPU,
``--backbones vgg16 bagnet33 --modes transfer --image-size 128 --epochs 2`` is a quick look.
Every model takes the pixels (0..255) and preprocesses them in its first layer
(``include_preprocessing=True``), so one copy of each split serves all of them.
"""

from __future__ import annotations

import argparse
import os
import sys

#: The study's ten cities and its second head: Western (Europe and North America) or Eastern (East Asia).
CITIES = {
    "London": "Western",
    "Paris": "Western",
    "Moscow": "Western",
    "Vancouver": "Western",
    "New York": "Western",
    "Beijing": "Eastern",
    "Singapore": "Eastern",
    "Seoul": "Eastern",
    "Kyoto": "Eastern",
    "Tokyo": "Eastern",
}
#: The study's central comparison: scene-trained against object-trained VGG16, with a BagNet beside them.
BACKBONES = ("vgg16_places365", "vgg16", "bagnet33")
QUERY = "{label} street photo -art -fashion -food"
MODES = ("svm", "scratch", "transfer", "finetune")


def prepare(args) -> str:
    """The dataset folder, crawled, cleaned and split as needed."""
    from data_tools.clean import clean
    from data_tools.manifest import read_manifest
    from data_tools.split import split

    root = args.data or os.path.join(args.out, "data")
    if args.data is None:
        from data_tools.crawl import crawl

        where = {"endpoint": args.endpoint} if args.endpoint else {}
        report = crawl(
            root, list(CITIES), n_per_class=args.per_class, queries=[QUERY], filters={"type": "photo"}, **where
        )
        print(f"crawled: {report.counts} (failures: {dict(report.failures)})")
    records = read_manifest(root)
    if not any("split" in r for r in records.values()):
        report = clean(root)
        print(f"cleaned: kept {report.kept}, {report.duplicates} near-duplicates, {report.rejected} unusable")
        split(root, seed=args.seed)
    return root


def datasets(root: str, size: int, batch_size: int):
    """The splits as pixels 0..255, with both heads' labels: every model preprocesses in its first layer.

    Read from the files every epoch, not cached: decoded images in memory would grow with the dataset
    (20,000 photos at 224 px are 12 GB as float32).
    """
    from bagnet_keras.transfer import with_heads
    from data_tools.loader import image_dataset

    out = {}
    for name in ("train", "val", "test"):
        data = image_dataset(root, (size, size), batch_size=batch_size, split=name, augment=name == "train")
        unknown = sorted(set(data.class_names) - set(CITIES))
        if unknown:
            raise SystemExit(f"street_city.py: classes {unknown} are not cities of CITIES; add them with a region.")
        out[name], names = with_heads(data, data.class_names, "city", {"region": CITIES})
    return out, names


def run_svm(backbone_name, data, names, weights, size):
    from bagnet_keras.transfer.baselines import SVMBaseline, extract_features, feature_extractor, svm_results

    extractor = feature_extractor(backbone_name, weights, (size, size, 3), include_preprocessing=True)
    x_train, y_train = extract_features(extractor, data["train"])
    x_test, y_test = extract_features(extractor, data["test"])
    return {
        head: svm_results(SVMBaseline().fit(x_train, y_train[head]), x_test, y_test[head], names[head])
        for head in ("city", "region")
    }


def run_network(backbone_name, mode, data, names, args, folder):
    from bagnet_keras import build_classifier, fit_classifier
    from bagnet_keras.report.plot import plot_confusion, save_figure
    from bagnet_keras.transfer import evaluate_classifier

    weights = None if mode == "scratch" else args.weights
    model = build_classifier(
        backbone_name,
        {"city": len(names["city"]), "region": 2},
        mode=mode,
        weights=weights,
        input_shape=(args.image_size, args.image_size, 3),
        include_preprocessing=True,
        dropout=0.2,
    )
    epochs = args.epochs * (3 if mode == "scratch" else 1)
    fit_classifier(model, data["train"], data["val"], epochs=epochs, head_epochs=args.epochs, output_dir=folder)
    results = evaluate_classifier(model, data["test"], names)
    for head, result in results.items():
        title = f"{backbone_name} {mode}: {head} ({result['accuracy']:.2f})"
        save_figure(
            plot_confusion(result["confusion_matrix"], result["class_names"], title=title),
            os.path.join(folder, f"confusion_{head}.png"),
        )
    return results


def best_models(results: dict) -> dict[str, str]:
    """The trained network of highest city accuracy among the CNNs, and among the BagNets: ``{"cnn": key, ...}``."""
    from bagnet_keras.transfer.backbones import get_backbone

    best: dict[str, str] = {}
    for key, result in results.items():
        backbone_name, mode = key.split("/")
        if mode == "svm":
            continue
        kind = "bagnet" if get_backbone(backbone_name).bagnet else "cnn"
        if kind not in best or result["city"]["accuracy"] > results[best[kind]]["city"]["accuracy"]:
            best[kind] = key
    return best


def explain_best(args, root: str, results: dict) -> None:
    """Grad-CAM beside BagNet evidence (the comparison report), the atlas and the explorer of the best models.

    Each is explained for its city head alone (a model of that output, saved as ``city.keras`` beside the
    run's ``best.keras``), on the first ``--explain-images`` test images, under ``--out``/explain.
    """
    import keras

    from bagnet_keras.app.workflows import compare_models, explore_models

    chosen = {}
    for kind, key in best_models(results).items():
        folder = os.path.join(args.out, key)
        model = keras.models.load_model(os.path.join(folder, "best.keras"))
        city = keras.Model(model.inputs, model.get_layer("city").output, name=f"{kind}_city")
        chosen[kind] = os.path.join(folder, "city.keras")
        city.save(chosen[kind])
        print(f"explaining {kind}: {key} (city accuracy {results[key]['city']['accuracy']:.3f})")
    out = os.path.join(args.out, "explain")
    common = dict(split="test", image_size=args.image_size, preprocess="none", max_images=args.explain_images)
    report = compare_models(chosen, root, out, sanity=min(args.sanity, args.explain_images), **common)
    steps = args.visualization_steps
    explorer = explore_models(chosen, root, out, batch_size=args.batch_size, visualization_steps=steps, **common)
    print(f"comparison report: {report}\natlas: {os.path.join(out, 'atlas.html')}\nexplorer: {explorer}")


def results_table(results: dict) -> str:
    """The study's table, in markdown: test accuracy per backbone and mode, for both heads."""
    lines = ["| backbone | mode | city accuracy | Eastern/Western accuracy |", "|---|---|---|---|"]
    for key, result in results.items():
        backbone_name, mode = key.split("/")
        lines.append(
            f"| {backbone_name} | {mode} | {result['city']['accuracy']:.3f} | {result['region']['accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def results_figure(results: dict):
    """The table as a figure: one panel per head, a group of bars per mode, a bar per backbone."""
    import numpy as np
    from matplotlib.figure import Figure

    keys = [key.split("/") for key in results]
    backbones = list(dict.fromkeys(b for b, _ in keys))
    modes = list(dict.fromkeys(m for _, m in keys))
    figure = Figure(figsize=(4 + 2 * len(modes), 3.6), layout="constrained")
    width = 0.8 / len(backbones)
    for ax, (head, title) in zip(
        figure.subplots(1, 2), (("city", "city"), ("region", "Eastern or Western")), strict=True
    ):
        for i, backbone_name in enumerate(backbones):
            values = [
                results.get(f"{backbone_name}/{mode}", {}).get(head, {}).get("accuracy", np.nan) for mode in modes
            ]
            ax.bar(np.arange(len(modes)) + i * width, values, width, label=backbone_name)
        ax.set_xticks(np.arange(len(modes)) + width * (len(backbones) - 1) / 2, modes)
        ax.set_ylim(0, 1)
        ax.set_title(f"test accuracy: {title}", fontsize=10)
    ax.legend(fontsize=8)
    return figure


def main(argv=None) -> int:
    from data_tools.cli import integer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (models, figures, results.json)")
    parser.add_argument("--data", help="an existing dataset folder: skip crawling (offline)")
    parser.add_argument("--per-class", type=int, default=2000, help="images to crawl per city")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--weights", default="pretrained", help="'pretrained', 'none' or a weights file")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per phase (scratch: three times as many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--explain-images",
        type=integer("--explain-images", low=0),
        default=64,
        help="test images the best models are explained on (0: none)",
    )
    parser.add_argument(
        "--sanity", type=integer("--sanity", low=0), default=4, help="test images of the maps' sanity checks"
    )
    parser.add_argument(
        "--visualization-steps",
        type=integer("--visualization-steps", low=1),
        default=128,
        help="of the explorer's feature visualisations",
    )
    parser.add_argument("--endpoint", help="the search engine's address (a test server; default: the engine's own)")
    args = parser.parse_args(argv)
    args.weights = None if args.weights == "none" else args.weights
    os.makedirs(args.out, exist_ok=True)

    from bagnet_keras.core.commit import write_atomic
    from bagnet_keras.report.plot import save_figure
    from bagnet_keras.transfer.backbones import get_backbone
    from bagnet_keras.transfer.evaluation import save_json

    root = prepare(args)
    data, names = datasets(root, args.image_size, args.batch_size)
    results = {}
    for backbone_name in args.backbones:
        get_backbone(backbone_name)  # an unknown name stops here, before any training
        for mode in args.modes:
            if mode == "svm":
                result = run_svm(backbone_name, data, names, args.weights, args.image_size)
            else:
                folder = os.path.join(args.out, backbone_name, mode)
                os.makedirs(folder, exist_ok=True)
                result = run_network(backbone_name, mode, data, names, args, folder)
            results[f"{backbone_name}/{mode}"] = result
            save_json(results, os.path.join(args.out, "results.json"))

    table = results_table(results)
    write_atomic(os.path.join(args.out, "results.md"), table)
    save_figure(results_figure(results), os.path.join(args.out, "results.png"))
    print("\n" + table)
    print(f"\nfull results: {os.path.join(args.out, 'results.json')}")
    if args.explain_images:
        explain_best(args, root, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
