"""Test-only, run as ``KERAS_BACKEND=<name> python backend_case.py FOLDER``: what the package computes on one
backend for the models and images in FOLDER (``bagnet.keras``, ``cnn.keras``, ``case.npz``), saved as
``FOLDER/<backend>.npz`` for tests/test_backends.py to compare with TensorFlow's."""

import os
import sys


def results(model, images) -> dict:
    """Every registered method's maps, the models' outputs, evidence maps and feature visualisations, by name."""
    import keras
    import numpy as np

    from bagnet_keras.core.graph import score_function
    from bagnet_keras.explain.atlas import feature_atlas
    from bagnet_keras.explain.evidence import evidence_map
    from bagnet_keras.explain.methods import METHODS
    from bagnet_keras.explain.objectives import class_logit, unit
    from bagnet_keras.explain.registry import explain
    from bagnet_keras.explain.visualization import feature_visualization

    as_numpy = keras.ops.convert_to_numpy
    maps = {
        method: explain(model, images, method, class_index=1)
        for method, row in METHODS.items()
        if not row.transformer_only
    }
    atlas = feature_atlas(model, images, "conv5_block1_out", k=2, batch_size=2, progress=False)
    path = atlas.layers[0]
    return {
        **maps,
        "atlas_values": atlas.values[path],
        "atlas_places": np.stack([atlas.image_index[path], atlas.row[path], atlas.column[path]]).astype("float32"),
        "atlas_mean": atlas.mean[path],
        "predict": model.predict(images, batch_size=2, verbose=0),
        "call": as_numpy(model(images)),
        "logits": as_numpy(score_function(model, 0, "logit")(images)),
        "evidence": evidence_map(model, images, stride=8).maps,
        "evidence_stride_1": evidence_map(model, images, stride=1).maps,
        "top_class": np.asarray(evidence_map(model, images).class_index, "float32"),
        # a BagNet unit in its patch, and a class logit on the whole image (transformed at each step)
        "visualization_patch": feature_visualization(
            model, [unit("conv5_block1_out", 3), class_logit(1)], steps=4, progress=False
        ).images,
        "visualization_image": feature_visualization(
            model, class_logit(2), steps=4, patch=False, progress=False
        ).images,
    }


def transformer_results(model, images) -> dict:
    """Every registered method's maps on a keras-hub ViT (BagNet evidence aside), by ``vit_<method>``."""
    from bagnet_keras.explain.methods import METHODS
    from bagnet_keras.explain.registry import explain

    return {
        f"vit_{name}": explain(model, images, name, class_index=1)
        for name, row in METHODS.items()
        if not row.bagnet_only
    }


def comparison(models: dict, images, labels, masks, folder) -> dict:
    """Every number of a committed comparison and of its sanity checks, by (model, method, measure)."""
    import keras
    import numpy as np

    from bagnet_keras.metrics.comparison import compare

    out = os.path.join(folder, f"compare-{keras.backend.backend()}")
    result = compare(models, images, labels, masks, steps=4, sanity=2, output_dir=out, progress=False)
    found = {f"{a['model']}/{a['method']}/{a['metric']}": np.float64(a["mean"]) for a in result.aggregates}
    # both sanity checks: the re-initialised weights are drawn with NumPy, the same on every backend
    for check in result.sanity["randomization"]:
        for measure in ("spearman", "ssim", "passed"):
            found[f"{check['model']}/{check['method']}/randomization_{measure}"] = np.float64(check[measure])
    # an invariance difference is float noise where the check passes: its verdict is what must agree
    found.update(
        {f"{v['model']}/{v['method']}/invariance": np.float64(v["passed"]) for v in result.sanity["invariance"]}
    )
    return found


def main(folder: str) -> None:
    import keras
    import keras_hub  # noqa: F401  (registers keras-hub's layers for loading the ViT)
    import numpy as np

    import bagnet_keras  # noqa: F401  (registers the package's layers for loading)

    models = {name: keras.models.load_model(os.path.join(folder, f"{name}.keras")) for name in ("bagnet", "cnn")}
    case = np.load(os.path.join(folder, "case.npz"))
    found = results(models["bagnet"], case["images"])
    found.update(transformer_results(keras.models.load_model(os.path.join(folder, "vit.keras")), case["images"]))
    found.update(comparison(models, case["images"], case["labels"], case["masks"], folder))
    np.savez(os.path.join(folder, f"{keras.backend.backend()}.npz"), backend=keras.backend.backend(), **found)


if __name__ == "__main__":
    main(sys.argv[1])
