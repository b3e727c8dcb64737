"""Memory and time of the feature atlas over growing datasets, against one plain forward pass.

    python bench/atlas.py [--images 1000 10000] [--size 64] [--batch-size 64] [--k 9] [--rounds 3]

For each image count, a process of its own builds the demo's small CNN
(random weights, ``--size`` px), generates 512 motif scenes and presents them
as a lazy array of N images (image i is scene i mod 512, assembled when a batch
is sliced: the dataset is never in memory, and scene generation does not
dilute the timings), and runs `bagnet_keras.feature_atlas` over them for two
layers (``conv3_relu``: 16 x 16 x 64 at 64 px, ``conv5_relu``: 4 x 4 x 128),
every unit, ``k`` examples each. The same process times one plain pass over
the same generated batches (the same compiled forward of the two layers,
nothing kept), so the ratio is the atlas's cost over the forward pass itself,
and the atlas committing every batch to a folder (``folder=``: what makes it
resumable and shardable). Each is timed ``--rounds`` times, interleaved, and
the medians are compared. Projections of the final top-k are timed apart
(``examples`` of 8 units of the last layer). Targets (issue 11): peak resident
memory grows by less than 10 % from 1,000 to 10,000 images; the atlas takes
at most 1.5x the plain pass.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYERS = ["conv3_relu", "conv5_relu"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(args) -> None:
    import keras
    import numpy as np

    from bagnet_keras.app.demo import small_cnn
    from bagnet_keras.explain.atlas import activation_function, feature_atlas, spatial_layers
    from bagnet_keras.models.imagenet import preprocess_input
    from data_tools.synthetic import CLASSES, motif_scene

    classes = CLASSES
    keras.utils.set_random_seed(0)
    model = small_cnn((args.size, args.size, 3), 16)

    pool = np.stack([motif_scene(classes[i % len(classes)], seed=i, size=args.size)[0] for i in range(512)]).astype(
        "float32"
    )

    class Scenes:  # N images, assembled from the pool when sliced
        def __init__(self, n):
            self.shape = (n, *pool.shape[1:])

        def __len__(self):
            return self.shape[0]

        def __getitem__(self, items):
            return pool[np.arange(self.shape[0])[items] % len(pool)]

    options = dict(k=args.k, batch_size=args.batch_size, preprocess=preprocess_input, progress=False)
    # warm-up: tracing, for a full batch and the last one's size
    warm = Scenes(args.batch_size + args.images % args.batch_size)
    feature_atlas(model, warm, LAYERS, **options)
    data = Scenes(args.images)
    forward = activation_function(model, spatial_layers(model, LAYERS))

    def plain(images=data):
        for begin in range(0, len(images), args.batch_size):
            [np.asarray(a) for a in forward(np.asarray(preprocess_input(images[begin : begin + args.batch_size])))]

    def committed():
        with tempfile.TemporaryDirectory() as folder:
            feature_atlas(model, data, LAYERS, folder=folder, **options)

    plain(warm)
    seconds = {"atlas": [], "plain": [], "committed": []}
    for _ in range(args.rounds):  # interleaved, so that a slow moment of the machine hits all three
        for name, run in (
            ("atlas", lambda: feature_atlas(model, data, LAYERS, **options)),
            ("plain", plain),
            ("committed", committed),
        ):
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    atlas_seconds, plain_seconds, committed_seconds = (float(np.median(seconds[n])) for n in seconds)
    atlas = feature_atlas(model, data, LAYERS, **options)
    start = time.perf_counter()
    for unit in atlas.units["conv5_relu"][:8]:
        atlas.examples(data, "conv5_relu", int(unit), preprocess=preprocess_input)
    projection_seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "images": args.images,
                "atlas": atlas_seconds,
                "plain": plain_seconds,
                "committed": committed_seconds,
                "projections": projection_seconds,
                "peak_gb": peak_rss_gb(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each, interleaved; medians reported")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.images = args.images[0]
        child(args)
        return
    runs = []
    for n in args.images:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            "--images",
            str(n),
            "--size",
            str(args.size),
            "--batch-size",
            str(args.batch_size),
            "--k",
            str(args.k),
            "--rounds",
            str(args.rounds),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"{n:6d} images of {args.size}x{args.size}, layers {', '.join(LAYERS)}, k {args.k}: atlas "
            f"{run['atlas']:7.1f} s, plain forward {run['plain']:7.1f} s (x{run['atlas'] / run['plain']:.2f}), "
            f"committing each batch {run['committed']:7.1f} s (x{run['committed'] / run['plain']:.2f}), "
            f"projections of 8 units {run['projections']:.1f} s, peak resident memory {run['peak_gb']:.3f} GB",
            flush=True,
        )
    first = runs[0]
    for run in runs[1:]:
        per_image = (run["atlas"] / run["images"]) / (first["atlas"] / first["images"])
        print(
            f"{first['images']} -> {run['images']} images: peak memory x{run['peak_gb'] / first['peak_gb']:.3f}, "
            f"atlas time per image x{per_image:.3f}"
        )


if __name__ == "__main__":
    main()
