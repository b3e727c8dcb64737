"""The SVM baseline's cross-validation in threads (``n_jobs=-1``) beside one fit at a time, in one run.

    python bench/svm.py [--repeats 2] [--images 96]

`SVMBaseline` chooses C by a grid search of 5 values x 5 folds, 26 fits of
liblinear per head. liblinear releases the GIL, so ``n_jobs`` runs the fits
in threads. Both fit the same features (VGG16 from random weights, as the
offline street-city run uses, on generated textures at 48 px) with ten
classes and must give the same C and the same coefficients.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bagnet_keras.transfer.baselines import SVMBaseline, feature_extractor  # noqa: E402
from data_tools.synthetic import textures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=96)
    args = parser.parse_args()
    images, _ = textures(args.images // 3 + 1, 48, seed=100)
    extractor = feature_extractor("vgg16", None, (48, 48, 3), include_preprocessing=True)
    features = np.asarray(extractor.predict(images[: args.images].astype("float32"), verbose=0))
    labels = np.arange(len(features)) % 10
    times: dict[str, list[float]] = {"threads (n_jobs=-1)": [], "one at a time": []}
    fitted = {}
    for _ in range(args.repeats):  # alternated, so a slower moment of the machine hits both
        for name in times:
            start = time.perf_counter()
            fitted[name] = SVMBaseline(n_jobs=-1 if name.startswith("threads") else None).fit(features, labels)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name:20} {' '.join(f'{v:6.2f}' for v in values)} s   C {fitted[name].C_}")
    ours, one = (min(v) for v in times.values())
    same = np.array_equal(*(model.pipeline_[-1].coef_ for model in fitted.values()))
    print(f"{os.cpu_count()} cores; speed-up (best of each): {one / ours:.2f}x; same model: {same}")


if __name__ == "__main__":
    main()
