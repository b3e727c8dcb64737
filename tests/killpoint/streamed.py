"""Test-only: a streamed comparison through the real commit path, with NumPy in place of the models.

    python tests/killpoint/streamed.py FOLDER N_IMAGES BATCH_SIZE

It runs `bagnet_keras.core.stream.run_parts` into a `PartStore`, then
`bagnet_keras.metrics.results.assemble` and `Comparison.save`, exactly as
`compare(..., output_dir=FOLDER)` does; only the measuring of a batch is a
deterministic NumPy stand-in laid out like a real part. TensorFlow cannot be
forked once it has run, so this lets the kill-point sweep fork a warm
process per kill point (tests/killpoint/runner.py) and kill the streamed
run at every one of its file-system steps.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from bagnet_keras.core.stream import PartStore, run_parts  # noqa: E402
from bagnet_keras.metrics.results import assemble  # noqa: E402

KEYS = [("bagnet", "evidence"), ("cnn", "gradcam")]
MODELS = ["bagnet", "cnn"]
SIZE, STEPS, CLASSES = 8, 3, 3


def data(n_images: int):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n_images, SIZE, SIZE, 3)).astype("float32"), np.arange(n_images) % CLASSES


def measure(batch_size: int):
    def run(index, batch):
        x, labels = batch
        start = index * batch_size
        rng = np.random.default_rng(index)
        arrays, rows, model_rows, correlations = {}, [], [], []
        for i, label in enumerate(labels.tolist()):
            for name in MODELS:
                predicted = int(rng.integers(CLASSES))
                model_rows.append(
                    {
                        "image": start + i,
                        "model": name,
                        "label": label,
                        "predicted": predicted,
                        "correct": predicted == label,
                        "shuffle_kept": bool(rng.integers(2)),
                    }
                )
            for name, method in KEYS:
                rows.append(
                    {
                        "image": start + i,
                        "label": label,
                        "model": name,
                        "method": method,
                        "predicted": 0,
                        "deletion_area": float(x[i].mean()),
                        "insertion_area": float(rng.uniform()),
                    }
                )
            correlations.append(
                {
                    "image": start + i,
                    "map_a": "bagnet/evidence",
                    "map_b": "cnn/gradcam",
                    "spearman": float(rng.uniform(-1, 1)),
                }
            )
        for j in range(len(KEYS)):
            arrays[f"deletion_{j}"] = rng.uniform(size=(len(x), STEPS + 1))
            arrays[f"insertion_{j}"] = rng.uniform(size=(len(x), STEPS + 1))
            arrays[f"shown_map_{j}"] = x[:1, ..., 0]
        arrays["shown_index"] = np.array([start])
        arrays["shown_images"] = np.zeros((1, SIZE, SIZE, 3), np.uint8)
        meta = {
            "labels": labels.tolist(),
            "rows": rows,
            "model_rows": model_rows,
            "correlations": correlations,
            "seconds": {},
            "passes": {name: 3 * len(x) for name in MODELS},
        }
        return arrays, meta

    return run


def main(argv) -> int:
    folder, n_images, batch_size = argv[0], int(argv[1]), int(argv[2])
    x, labels = data(n_images)
    batches = ((x[s : s + batch_size], labels[s : s + batch_size]) for s in range(0, n_images, batch_size))
    with PartStore(folder, {"images": n_images, "batch_size": batch_size}) as store:
        run_parts(store, batches, measure(batch_size))
        result = assemble(store, KEYS, MODELS, CLASSES, report_images=2, patches_per_class=4, bagnet=None)
        result.save(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
