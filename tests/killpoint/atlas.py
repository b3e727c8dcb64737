"""Test-only: the atlas's streamed pass through its real commit path, with NumPy in place of the model.

    python tests/killpoint/atlas.py FOLDER N_IMAGES BATCH_SIZE [I/N]

It feeds `bagnet_keras.core.topk.LayerTops` through
`bagnet_keras.core.stream.stream_state` into FOLDER (one part per batch, or
shard I of N), exactly as `feature_atlas(..., folder=FOLDER)` does; only the
forward pass is a NumPy stand-in (two "layers": a 1x1 convolution with ReLU
and its 2x2 average pooling, each channel's batch top-k from
`bagnet_keras.core.topk.candidates`). Then it writes the finished state's
arrays to FOLDER/tops.npz, as a caller saving the atlas would. TensorFlow
cannot be forked once it has run, so this lets the kill-point sweep fork a
warm process per kill point (tests/killpoint/runner.py).
"""

import io
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from bagnet_keras.app.shards import parse_shard  # noqa: E402
from bagnet_keras.core.commit import write_atomic  # noqa: E402
from bagnet_keras.core.stream import stream_state  # noqa: E402
from bagnet_keras.core.topk import LayerTops, candidates  # noqa: E402

SIZE, K = 6, 4
CHANNELS = {"conv": 3, "pool": 3}


def data(n_images: int) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(n_images, SIZE, SIZE, 2)).astype("float32")
    x[1] = 0  # tied activations
    return x


def forward(x: np.ndarray) -> list:
    kernel = np.array([[1.0, -0.5, 0.25], [0.5, 1.0, -1.0]], dtype="float32")
    conv = np.maximum(x @ kernel, 0)
    n, h, w, c = conv.shape
    pool = conv.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    out = []
    for acts in (conv, pool):
        values, flat = candidates(acts, 0, K)
        out.append((values, flat, acts.sum(axis=(0, 1, 2), dtype="float64"), acts.shape[1:3]))
    return out


def main(argv) -> int:
    folder, n_images, batch_size = argv[0], int(argv[1]), int(argv[2])
    shard = parse_shard(argv[3]) if len(argv) > 3 else None
    state = LayerTops(CHANNELS, K, forward)
    stream_state(
        state,
        data(n_images),
        batch_size,
        folder=folder,
        arguments={"images": n_images, "k": K},
        shard=shard,
        command="atlas",
        progress=False,
    )
    arrays = {}
    for path, best in state.best.items():
        arrays.update({f"{path}_values": best.values, f"{path}_flat": best.flat, f"{path}_sums": state.sums[path]})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(os.path.join(folder, "tops.npz"), buffer.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
