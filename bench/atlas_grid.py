"""Drawing the atlas's tile grids: NumPy and Pillow (`atlas_page._grid`) against one Matplotlib axes per tile.

    python bench/atlas_grid.py [--units 12] [--rounds 3]

The grid of ``--units`` units as the atlas page draws them (a line of 10 tiles
of 17 x 17 crops with two titles, and a line of 10 projections beneath), each
tile 100 px. The baseline is how the page drew them before: a Matplotlib
Figure at 100 dpi with one axes per tile (``imshow``, nearest neighbour, a
left title), rendered to PNG. One warm-up each, then ``--rounds`` interleaved
rounds; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from matplotlib.figure import Figure

from bagnet_keras.report.atlas_page import GAP, TILE, TITLE, _grid, _Line


def matplotlib_png(lines) -> bytes:
    """One axes per tile, placed by hand (the atlas page's drawing before the Pillow grid)."""
    tile, gap, title = TILE / 100, GAP / 100, TITLE / 100  # inches at 100 dpi
    columns = max(len(line.tiles) for line in lines)
    heights = [tile + gap + (title if line.labels else 0) for line in lines]
    width, height = columns * (tile + gap) + gap, sum(heights) + gap
    fig = Figure(figsize=(width, height))
    top = height
    for line, h in zip(lines, heights, strict=True):
        top -= h
        for c, image in enumerate(line.tiles):
            ax = fig.add_axes(((gap + c * (tile + gap)) / width, top / height, tile / width, tile / height))
            ax.set_axis_off()
            ax.imshow(image, interpolation="nearest")
            if c in line.labels:
                ax.set_title(line.labels[c], fontsize=7, loc="left", pad=2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lines = []
    for unit in range(args.units):
        lines.append(_Line([rng.uniform(size=(17, 17, 3)) for _ in range(10)], {0: "visualisation", 1: f"unit {unit}"}))
        lines.append(_Line([rng.uniform(size=(17, 17, 3)) for _ in range(10)]))
    ways = {"pillow": lambda: _grid(lines).png(), "matplotlib": lambda: matplotlib_png(lines)}
    times = {name: [] for name in ways}
    for draw in ways.values():  # warm-up
        draw()
    for _ in range(args.rounds):
        for name, draw in ways.items():
            start = time.perf_counter()
            draw()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    tiles = sum(len(line.tiles) for line in lines)
    print(f"{tiles} tiles: pillow {median['pillow']:.3f} s, matplotlib {median['matplotlib']:.3f} s per figure")
    print(f"matplotlib / pillow: x{median['matplotlib'] / median['pillow']:.1f}")


if __name__ == "__main__":
    main()
