"""What every HTML page of the package shares: its style, its figures (embedded, and saved as PNGs), its tables.

The report (`bagnet_keras.report.html`) and the atlas (`bagnet_keras.report.atlas_page`)
are built from these pieces, so both pages look alike and embed their figures
the same way: nothing on a page is fetched from anywhere.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from matplotlib.figure import Figure

from bagnet_keras.core.commit import write_atomic
from bagnet_keras.report.plot import render_figure

__all__ = ["STYLE", "Figures", "Raw", "html_document", "html_table"]

#: The pages' stylesheet, inlined in each page.
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .finding { margin: 0.3em 0; } .note { color: #555; font-size: 0.9em; }
table.findings td { text-align: left; vertical-align: top; } table.findings td:first-child { text-align: center; }
.numbers { color: #555; font-size: 0.85em; } .holds { color: #1a7f37; font-weight: bold; }
.fails { color: #c62828; font-weight: bold; } .neutral { color: #888; } p.lead { margin: 0.5em 0; }
table.findings th { text-align: left; } .wide { overflow-x: auto; }
table.matrix td { white-space: nowrap; } table.matrix th { vertical-align: bottom; }
table.matrix td, table.matrix th { padding: 0.2em 0.4em; } table.findings { width: 100%; }
table.findings td:nth-child(2) { width: 45%; }
.pm { color: #666; font-size: 0.8em; }
"""


def png_url(png: bytes) -> str:
    """A ``data:`` URL of PNG bytes: the image inside the page, no request.

    Examples
    --------
    >>> png_url(b"PNG")
    'data:image/png;base64,UE5H'
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_bytes(pixels: np.ndarray, optimize: bool = False) -> bytes:
    """A PNG of an image (H, W, 3) or a grey map (H, W) of uint8; ``optimize`` trades time for a smaller file.

    Examples
    --------
    >>> png_bytes(np.zeros((2, 2, 3), "uint8"))[:4]
    b'\\x89PNG'
    """
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=optimize)
    return buffer.getvalue()


class PNGFigure(Protocol):
    """A figure drawn without Matplotlib (the atlas's tile grids) that gives its PNG bytes."""

    def png(self) -> bytes: ...


class Figures:
    """Saves each figure as a PNG under ``output_dir/figures`` and returns its ``<img>`` tag with the PNG embedded.

    Examples
    --------
    >>> import tempfile
    >>> figure = Figures(tempfile.mkdtemp())
    >>> fig = Figure(figsize=(1, 1))
    >>> _ = fig.subplots().plot([0, 1])
    >>> figure(fig, "line", "a line").startswith('<img src="data:image/png;base64,')
    True
    >>> os.listdir(figure.folder)
    ['line.png']
    """

    def __init__(self, output_dir: str):
        self.folder = os.path.join(output_dir, "figures")
        os.makedirs(self.folder, exist_ok=True)

    def __call__(self, fig: Figure | PNGFigure, name: str, alt: str) -> str:
        png = fig.png() if hasattr(fig, "png") else render_figure(fig, "png")  # once, for the file and the page
        write_atomic(os.path.join(self.folder, f"{name}.png"), png)
        return f'<img src="{png_url(png)}" alt="{html.escape(alt)}">'


class Raw(str):
    """A cell's HTML that `html_table` puts in as it is (escape any text in it yourself).

    Examples
    --------
    >>> html_table(["mark"], [[Raw('<b>x</b>')], ["<b>"]]).partition("<tbody>")[2]
    '<tr><td><b>x</b></td></tr><tr><td>&lt;b&gt;</td></tr></tbody></table>'
    """


def _cell(value) -> str:
    if isinstance(value, Raw):
        return value
    if isinstance(value, float):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return html.escape(str(value))


def html_table(header: Sequence[str], rows: Sequence[Sequence], caption: str = "", css_class: str = "") -> str:
    """An HTML table; floats with three decimals (``n/a`` where not finite), `Raw` cells as they are, everything
    else escaped; ``css_class`` names the table's class in the `STYLE`.

    Examples
    --------
    >>> html_table(["model", "accuracy"], [["a<b", 0.5], ["cnn", float("nan")]]).partition("<tbody>")[2]
    '<tr><td>a&lt;b</td><td>0.500</td></tr><tr><td>cnn</td><td>n/a</td></tr></tbody></table>'
    """
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    caption = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    table = f'<table class="{html.escape(css_class)}">' if css_class else "<table>"
    return f"{table}{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_document(title: str, parts: Sequence[str]) -> str:
    """A whole page: ``title`` (escaped) in its head, the `STYLE` inlined, ``parts`` (HTML) as its body.

    Examples
    --------
    >>> page = html_document("A & B", ["<h1>A</h1>"])
    >>> "<title>A &amp; B</title>" in page, page.endswith("<body><h1>A</h1></body></html>")
    (True, True)
    """
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
