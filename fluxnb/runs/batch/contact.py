"""Contact sheets: a labelled grid of thumbnails read back from image files.

Images are opened one at a time and pasted small (never all held in memory); a cell
without an image is a grey box saying why. Written atomically with `output.write_new`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

GREY = (216, 216, 216)


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


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def thumb_side(n: int) -> int:
    """Thumbnail side by number of cells: big for a few, small for thousands."""
    return 256 if n <= 16 else 192 if n <= 64 else 128 if n <= 400 else 96


def render(cells: list[Cell], *, columns: int, aspect: float = 1.0, title: str = "", subtitle: str = "",
           legend: list[str] = ()):
    """The sheet as a PIL image: a title, `columns` cells a row (thumbnails at `aspect`
    width/height), then legend lines."""
    from PIL import Image, ImageDraw

    # 1. Layout.
    n, cols = len(cells), max(1, columns)
    side = thumb_side(n)
    tw, th = (side, max(1, round(side / aspect))) if aspect >= 1 else (max(1, round(side * aspect)), side)
    pad, cap, line = 6, 16, 16
    head = 2 * line + pad
    rows = math.ceil(n / cols)
    width = max(cols * (tw + pad) + pad, 640)
    height = head + rows * (th + cap + pad) + pad + len(legend) * line + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = _font(13), _font(11)
    draw.text((pad, pad), _fit(draw, title, font, width - 2 * pad), fill="black", font=font)
    draw.text((pad, pad + line), _fit(draw, subtitle, small, width - 2 * pad), fill="dimgray", font=small)
    # 2. Cells: each image opened, shrunk, pasted and closed; a grey box saying why when missing.
    for k, cell in enumerate(cells):
        x, y = pad + (k % cols) * (tw + pad), head + (k // cols) * (th + cap + pad)
        try:
            if cell.path is None:
                raise OSError(cell.why)
            with Image.open(cell.path) as im:
                im.draft("RGB", (tw, th))
                sheet.paste(im.convert("RGB").resize((tw, th)), (x, y))
        except OSError:
            draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=GREY)
            why = cell.why if cell.path is None else "unreadable"
            draw.text((x + 4, y + 4), _fit(draw, why, small, tw - 8), fill="darkred", font=small)
        draw.text((x, y + th + 2), _fit(draw, cell.label, small, tw), fill="black", font=small)
    # 3. Legend.
    y = head + rows * (th + cap + pad) + pad
    for text in legend:
        draw.text((pad, y), _fit(draw, text, small, width - 2 * pad), fill="black", font=small)
        y += line
    return sheet


def write(cells: list[Cell], directory: str | Path, name: str, **kw) -> Sheet:
    """Render and write the sheet as PNG under `directory/name` (atomic, never overwrites)."""
    from ...outputs.files import write_new

    buf = io.BytesIO()
    render(cells, **kw).save(buf, format="PNG")
    return Sheet(write_new(directory, name, buf.getvalue()))
