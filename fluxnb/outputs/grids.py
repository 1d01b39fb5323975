"""Drawing labelled image grids, the one way: sweep grids and grids from the run log use
`draw`; batch contact sheets (runs/batch/contact.py: thumbnails flowing in rows, read one at a
time) lay out their own cells but draw them with the same pieces: `label_font`, `wrap`,
`write_lines` and `paint_cell` (an image centred, or a grey box saying why there is none).

A grid is a title (the settings every cell shares), column labels across the top, row
labels down the left, and the images. `encode_png` saves one with A1111's `parameters`
text (the first cell's, which A1111 readers expect) and a `fluxnb` JSON chunk.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

LABEL_LINES, TITLE_LINES = 3, 5
MISSING = (216, 216, 216)  # a cell without an image
REASON = "darkred"         # why, written in it
MIN_FONT = 12              # label pixels, at least, as a notebook shows the grid
SHOWN_WIDTH = 1024         # about how wide a notebook's output shows an image (wider ones are scaled down)
MAX_FONT = 256


def font_size(cell_w: int, cell_h: int, ncols: int = 1) -> int:
    """Label font size for cells of `cell_w` x `cell_h`: a 16th of the cell's shorter side,
    and never under MIN_FONT pixels once a grid `ncols` cells wide is scaled down to
    SHOWN_WIDTH (the labels of a wide grid of large images stay readable), nor under
    MIN_FONT at its own size (small cells get readable labels in the margin)."""
    band = 8 * MIN_FONT  # about what the row labels take, scaled
    shrink = max(1.0, ncols * cell_w / (SHOWN_WIDTH - band))
    return int(min(MAX_FONT, max(MIN_FONT, min(cell_w, cell_h) / 16, math.ceil(MIN_FONT * shrink))))


@functools.lru_cache(maxsize=8)
def label_font(size: int):
    """DejaVu Sans (shipped with matplotlib: wide Unicode coverage), else Pillow's own."""
    import importlib.util

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def wrap(text, font, width: float, max_lines: int) -> list[str]:
    """Lines of `text` no wider than `width` pixels, at most `max_lines` (the last ends in …
    when text was left out). `text` is broken between words, or between items when it is a
    list of items (joined by " · "); a word wider than a line is cut."""
    sep = " · " if isinstance(text, (list, tuple)) else " "
    paras = [list(text)] if sep != " " else [p.split(" ") for p in str(text).split("\n")]
    lines: list[str] = []
    for words in paras:
        cur = ""
        for word in words:
            trial = f"{cur}{sep}{word}" if cur else word
            if font.getlength(trial) <= width:
                cur = trial
                continue
            if cur:
                lines.append(cur)
            while font.getlength(word) > width and len(word) > 1:
                cut = max([1] + [i for i in range(1, len(word)) if font.getlength(word[:i]) <= width])
                lines.append(word[:cut])
                word = word[cut:]
            cur = word
        lines.append(cur)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last + "…"]
    return lines


def line_height(font) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent + 2


def write_lines(pen, xy: tuple, lines: list[str], font, *, fill="black", anchor: str = "la") -> int:
    """Paint `lines` one under another from `xy` (`anchor` as Pillow's: "ma" centres them on
    x); returns the height they take."""
    x, y = xy
    lh = line_height(font)
    for i, ln in enumerate(lines):
        pen.text((x, y + i * lh), ln, fill=fill, font=font, anchor=anchor)
    return len(lines) * lh


def paint_cell(canvas, pen, box: list, image=None, *, why: str = "", font=None) -> list:
    """Paint one cell into `box` ([x, y, w, h]): `image` (PIL) centred in it, or, when None,
    a grey box with `why` written in it (in `font`). Returns [x, y, w, h] of what it painted."""
    x, y, w, h = box
    if image is None:
        pen.rectangle([x, y, x + w - 1, y + h - 1], fill=MISSING)
        if why and font is not None:
            lines = wrap(why, font, w - 8, max(1, (h - 8) // line_height(font)))
            write_lines(pen, (x + 4, y + 4), lines, font, fill=REASON)
        return [x, y, w, h]
    ox, oy = x + (w - image.width) // 2, y + (h - image.height) // 2
    canvas.paste(image if image.mode == "RGB" else image.convert("RGB"), (ox, oy))
    return [ox, oy, image.width, image.height]


def draw(images: list, row_labels: list, col_labels: list, title: list) -> tuple[object, list]:
    """A grid of `images` (rows x columns of PIL images, None for a missing cell) with
    labels. `title`: lines, each a string or a list of items. Returns (PIL image, boxes):
    boxes[r][c] = [x, y, w, h] where cell (r, c)'s image lies. Cells are as large as the
    largest image (of any size: smaller ones are centred, never scaled); cells narrower than
    their labels get a wider column (up to 8 times the font size) so labels stay readable, always
    outside the images. The font size comes from the cell size (`font_size`). A narrow grid
    is widened (up to ~32 characters' width) for its title, the cells centred beneath."""
    from PIL import Image, ImageDraw

    # 1. Measure: cells, font, label bands, title.
    title = [t for t in title if t]
    present = [im for row in images for im in row if im is not None]
    cw = max((im.width for im in present), default=64)
    ch = max((im.height for im in present), default=64)
    nrows, ncols = len(images), max(len(r) for r in images)
    fs = font_size(cw, ch, ncols)
    font = label_font(fs)
    lh, pad, gap = line_height(font), fs // 2, max(2, fs // 4)
    widest = max((font.getlength(t) for t in col_labels), default=0)
    sw = max(cw, min(int(widest) + 4, 8 * fs))  # a column's width: the cells, or more for their labels
    col_lines = [wrap(t, font, sw - 2, LABEL_LINES) for t in col_labels]
    row_w = min(max((font.getlength(t) for t in row_labels), default=0), max(cw, 12 * fs))
    row_lines = [wrap(t, font, row_w, LABEL_LINES + 1) for t in row_labels]
    rw = int(row_w) + 2 * pad if row_labels else 0
    hh = max((len(x) for x in col_lines), default=0) * lh + 2 * pad if col_labels else 0
    block = rw + ncols * sw + (ncols - 1) * gap
    natural = max((font.getlength(" · ".join(t) if isinstance(t, (list, tuple)) else t) for t in title), default=0)
    width = max(block, min(int(natural) + 2 * pad, 32 * fs))
    x0 = (width - block) // 2
    title_lines = [ln for t in title for ln in wrap(t, font, width - 2 * pad, TITLE_LINES)][:TITLE_LINES * 2]
    th = len(title_lines) * lh + 2 * pad if title_lines else 0
    height = th + hh + nrows * ch + (nrows - 1) * gap

    # 2. Paint: title, column labels, row labels, images.
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    write_lines(pen, (pad, pad), title_lines, font)
    boxes = []
    for r in range(nrows):
        y = th + hh + r * (ch + gap)
        if r < len(row_lines):
            write_lines(pen, (x0 + rw // 2, y + (ch - len(row_lines[r]) * lh) // 2), row_lines[r], font, anchor="ma")
        boxes.append([])
        for c in range(ncols):
            x = x0 + rw + c * (sw + gap)
            if r == 0 and c < len(col_lines):
                write_lines(pen, (x + sw // 2, th + hh - pad - len(col_lines[c]) * lh), col_lines[c], font,
                            anchor="ma")
            im = images[r][c] if c < len(images[r]) else None
            boxes[-1].append(paint_cell(canvas, pen, [x, y, sw, ch], im))
    return canvas, boxes


def encode_png(image, first_record: dict, meta: dict) -> bytes:
    """The grid's PNG bytes: A1111 `parameters` from the first cell, all of `meta` as JSON."""
    from .metadata import encode

    keys = ("prompt", "t5_prompt", "clip_prompt", "clip_dropped", "enhancer", "enhancer_model", "seed", "steps",
            "guidance", "width", "height", "model", "model_name", "fluxnb_version")
    head = {k: first_record.get(k) for k in keys if k in first_record}
    return encode(image, {**head, **meta}, "png")


def show_value(v) -> str:
    """A value as a label shows it: 3.5, not 3.5000001; everything else as text."""
    return f"{v:g}" if isinstance(v, float) else str(v)
