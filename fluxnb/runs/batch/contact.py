"""Contact sheets: a labelled grid of thumbnails read back from image files.

Drawn with the grids' pieces (`outputs.grids`: its font, wrapping, and cells: an image, or
a grey box saying why there is none); the layout is the sheet's own: thumbnails flowing
`columns` to a row with a label under each, a title, a legend. Images are opened one at a
time and pasted small (never all held in memory). Written atomically with `write_new`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

from ...outputs.files import write_new
from ...outputs.grids import label_font, line_height, paint_cell, wrap, write_lines


@dataclass
class Cell:
    path: str | Path | None   # the image, or None
    label: str                # under the thumbnail
    why: str = "not made"     # in the grey box when there is no image


@dataclass
class Sheet:
    """A contact sheet on disk; shows a small JPEG preview in a notebook."""

    path: Path

    def __repr__(self) -> str:
        return f"contact sheet: {self.path}"

    def __fspath__(self) -> str:
        return str(self.path)

    def _repr_jpeg_(self):
        from PIL import Image

        with Image.open(self.path) as im:
            im = im.convert("RGB")
            im.thumbnail((1400, 1400))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
        return buf.getvalue()


def thumb_side(n: int) -> int:
    """Thumbnail side by number of cells: big for a few, small for thousands."""
    return 256 if n <= 16 else 192 if n <= 64 else 128 if n <= 400 else 96


def render(cells: list[Cell], *, columns: int, aspect: float = 1.0, title: str = "", subtitle: str = "",
           legend: list[str] = ()):
    """The sheet as a PIL image: a title, `columns` cells a row (thumbnails at `aspect`
    width/height, each labelled underneath), then legend lines."""
    from PIL import Image, ImageDraw

    # 1. Layout.
    n, cols = len(cells), max(1, columns)
    side = thumb_side(n)
    tw, th = (side, max(1, round(side / aspect))) if aspect >= 1 else (max(1, round(side * aspect)), side)
    font, small = label_font(13), label_font(11)
    line, cap, pad = line_height(font), line_height(small), 6
    head = line + cap + pad
    rows = math.ceil(n / cols)
    width = max(cols * (tw + pad) + pad, 640)
    height = head + rows * (th + cap + pad) + pad + len(legend) * cap + pad
    sheet = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(sheet)
    write_lines(pen, (pad, pad), wrap(title, font, width - 2 * pad, 1), font)
    write_lines(pen, (pad, pad + line), wrap(subtitle, small, width - 2 * pad, 1), small, fill="dimgray")
    # 2. Cells: each image opened, shrunk, pasted and closed; a grey box saying why when missing.
    for k, cell in enumerate(cells):
        x, y = pad + (k % cols) * (tw + pad), head + (k // cols) * (th + cap + pad)
        try:
            if cell.path is None:
                raise OSError(cell.why)
            with Image.open(cell.path) as im:
                im.draft("RGB", (tw, th))
                paint_cell(sheet, pen, [x, y, tw, th], im.convert("RGB").resize((tw, th)))
        except OSError:
            paint_cell(sheet, pen, [x, y, tw, th], why=cell.why if cell.path is None else "unreadable", font=small)
        write_lines(pen, (x, y + th + 2), wrap(cell.label, small, tw, 1), small)
    # 3. Legend.
    write_lines(pen, (pad, head + rows * (th + cap + pad) + pad),
                [wrap(text, small, width - 2 * pad, 1)[0] for text in legend], small)
    return sheet


def write(cells: list[Cell], directory: str | Path, name: str, **kw) -> Sheet:
    """Render and write the sheet as PNG under `directory/name` (atomic, never overwrites)."""
    buf = io.BytesIO()
    render(cells, **kw).save(buf, format="PNG")
    return Sheet(write_new(directory, name, buf.getvalue()))
