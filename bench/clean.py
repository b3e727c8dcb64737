"""Throughput of data_tools.clean and speed of the near-duplicate search, against plain baselines in one run.

    python bench/clean.py [--images 1000] [--hashes 100000]

1. ``clean()`` on a folder of generated 256-px JPEGs (decode for real,
   convert, crop borders, sha256, dhash, dedupe, manifest), in images/s,
   beside Pillow's bare decode of the same files (``Image.open().load()``,
   one thread) as the baseline. Target (issue 4): >= 300 images/s on 2 cores.
2. ``close_pairs`` on ``--hashes`` random 64-bit hashes with planted near
   duplicates (threshold 8), beside a vectorised brute-force comparison
   (NumPy XOR + popcount, all pairs) timed on a block and extrapolated (said
   so). Target: <= 5 s for 100,000 hashes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from data_tools.clean import clean  # noqa: E402
from data_tools.dedupe import close_pairs  # noqa: E402
from data_tools.synthetic import scene  # noqa: E402


def bench_clean(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "data")
        for label in ("a", "b"):
            os.makedirs(os.path.join(root, label))
        for k in range(n):
            Image.fromarray(scene(k)).save(os.path.join(root, "ab"[k % 2], f"{k:06d}.jpg"), quality=90)
        files = [os.path.join(root, "ab"[k % 2], f"{k:06d}.jpg") for k in range(n)]

        start = time.perf_counter()
        for path in files:
            with Image.open(path) as image:
                image.load()
        decode = time.perf_counter() - start

        start = time.perf_counter()
        report = clean(root, progress=False)
        full = time.perf_counter() - start
    print(f"clean() on {n} generated 256x256 JPEGs ({os.cpu_count()} CPUs)")
    print(f"  clean (verify, convert, hash, dedupe, manifest): {n / full:8.0f} images/s  (target >= 300)")
    print(f"  baseline, Pillow decode only, one thread:        {n / decode:8.0f} images/s")
    print(f"  kept {report.kept}, duplicates {report.duplicates}, rejected {report.rejected}")


def bench_dedupe(n: int) -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, n, dtype=np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63))
    planted = n // 100
    for k in range(planted):
        flips = rng.choice(64, int(rng.integers(0, 9)), replace=False)
        hashes[k] = hashes[planted + k] ^ np.uint64(sum(1 << int(b) for b in flips))
    start = time.perf_counter()
    i, j, _ = close_pairs(hashes, threshold=8)
    ours = time.perf_counter() - start
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    recall = np.mean([(k, planted + k) in found for k in range(planted)])

    block = 2000
    start = time.perf_counter()
    distances = np.bitwise_count(hashes[:block, None] ^ hashes[None, :])
    np.nonzero(distances <= 8)
    brute = (time.perf_counter() - start) * (n / block) / 2  # all pairs i < j: half the full matrix
    print(f"near-duplicate search, {n} hashes, threshold 8 bits")
    print(f"  close_pairs (multi-index, exact): {ours:8.2f} s  (target <= 5 s)")
    print(f"  pairs found {len(i)}, recall of the {planted} planted pairs {recall:.3f}")
    print(f"  brute force, NumPy all pairs:     {brute:8.2f} s  (extrapolated from {block} rows)")
    print(f"  speed-up:                         {brute / ours:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--hashes", type=int, default=100_000)
    args = parser.parse_args()
    bench_clean(args.images)
    bench_dedupe(args.hashes)


if __name__ == "__main__":
    main()
