"""Labelled comparison grids: drawn from a sweep's cells or from images already in a run log.

A grid is a title (the settings every cell shares), column labels across the top, row
labels down the left, and the images. Saved as PNG with A1111's `parameters` text (the
first cell's, which A1111 readers expect) and a `fluxnb` JSON chunk holding the whole
definition and every cell's parameters and box in the grid.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FluxnbError

log = logging.getLogger(__name__)
LABEL_LINES, TITLE_LINES = 3, 5
MISSING = (232, 232, 232)
# Run-log columns that may name an axis, and the names people give them.
COLUMN_ALIASES = {"seeds": "seed", "enhance": "enhancer", "prompts": "prompt", "cfg": "guidance"}
TITLE_COLUMNS = ("prompt", "seed", "steps", "guidance", "size", "model_name", "enhancer")


@dataclass
class Grid:
    """A grid built from images already made (`fluxnb.grid`)."""

    image: object                 # PIL image
    path: Path | None
    rows: str | None
    cols: str | None
    row_values: list
    col_values: list
    images: list                  # cell paths, row-major (None where no image matched)
    cells: list = field(default_factory=list)     # their run-log records
    boxes: list = field(default_factory=list)     # [x, y, w, h] of each cell in the image, row-major

    def _repr_png_(self):
        import io

        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _font(size: int):
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


def draw(images: list, row_labels: list, col_labels: list, title: list) -> tuple[object, list]:
    """A grid of `images` (rows x columns of PIL images, None for a missing cell) with
    labels. `title`: lines, each a string or a list of items. Returns (PIL image, boxes):
    boxes[r][c] = [x, y, w, h] where cell (r, c) lies. Cells are as large as the largest
    image; smaller ones are centred. A narrow grid is widened (up to ~32 characters'
    width) for its title, the cells centred beneath."""
    from PIL import Image, ImageDraw

    # 1. Measure: cells, font, label bands, title.
    title = [t for t in title if t]
    present = [im for row in images for im in row if im is not None]
    cw = max((im.width for im in present), default=64)
    ch = max((im.height for im in present), default=64)
    nrows, ncols = len(images), max(len(r) for r in images)
    fs = max(12, min(40, min(cw, ch) // 12))
    font = _font(fs)
    ascent, descent = font.getmetrics()
    lh, pad, gap = ascent + descent + 2, fs // 2, max(2, fs // 4)
    col_lines = [wrap(t, font, cw - 2, LABEL_LINES) for t in col_labels]
    row_w = min(max((font.getlength(t) for t in row_labels), default=0), max(cw, 12 * fs))
    row_lines = [wrap(t, font, row_w, LABEL_LINES + 1) for t in row_labels]
    rw = int(row_w) + 2 * pad if row_labels else 0
    hh = max((len(x) for x in col_lines), default=0) * lh + 2 * pad if col_labels else 0
    block = rw + ncols * cw + (ncols - 1) * gap
    natural = max((font.getlength(" · ".join(t) if isinstance(t, (list, tuple)) else t) for t in title), default=0)
    width = max(block, min(int(natural) + 2 * pad, 32 * fs))
    x0 = (width - block) // 2
    title_lines = [ln for t in title for ln in wrap(t, font, width - 2 * pad, TITLE_LINES)][:TITLE_LINES * 2]
    th = len(title_lines) * lh + 2 * pad if title_lines else 0
    height = th + hh + nrows * ch + (nrows - 1) * gap

    # 2. Paint: title, column labels, row labels, images.
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    for i, ln in enumerate(title_lines):
        pen.text((pad, pad + i * lh), ln, fill="black", font=font)
    boxes = []
    for r in range(nrows):
        y = th + hh + r * (ch + gap)
        if r < len(row_lines):
            lines = row_lines[r]
            top = y + (ch - len(lines) * lh) // 2
            for i, ln in enumerate(lines):
                pen.text((x0 + rw // 2, top + i * lh), ln, fill="black", font=font, anchor="ma")
        boxes.append([])
        for c in range(ncols):
            x = x0 + rw + c * (cw + gap)
            if r == 0 and c < len(col_lines):
                top = th + hh - pad - len(col_lines[c]) * lh
                for i, ln in enumerate(col_lines[c]):
                    pen.text((x + cw // 2, top + i * lh), ln, fill="black", font=font, anchor="ma")
            im = images[r][c] if c < len(images[r]) else None
            if im is None:
                pen.rectangle([x, y, x + cw - 1, y + ch - 1], fill=MISSING)
                boxes[-1].append([x, y, cw, ch])
                continue
            ox, oy = x + (cw - im.width) // 2, y + (ch - im.height) // 2
            canvas.paste(im.convert("RGB"), (ox, oy))
            boxes[-1].append([ox, oy, im.width, im.height])
    return canvas, boxes


def encode_png(image, first_record: dict, meta: dict) -> bytes:
    """The grid's PNG bytes: A1111 `parameters` from the first cell, all of `meta` as JSON."""
    from .output import encode

    keys = ("prompt", "t5_prompt", "clip_prompt", "clip_dropped", "enhancer", "enhancer_model", "seed", "steps",
            "guidance", "width", "height", "model", "model_name", "fluxnb_version")
    head = {k: first_record.get(k) for k in keys if k in first_record}
    return encode(image, {**head, **meta}, "png")


# ---------------------------------------------------------------------------------------
# A sweep's grids
# ---------------------------------------------------------------------------------------

def save_sweep_grid(p, g: int) -> tuple[object, Path]:
    """Draw grid `g` of a sweep plan whose cells are made; save it (atomic, no clobber)."""
    from .output import write_new

    cells = [c for c in p.cells if c.grid == g]
    nr = len(p.rows.values) if p.rows else 1
    nc = len(p.cols.values) if p.cols else 1
    matrix = [[None] * nc for _ in range(nr)]
    for c in cells:
        matrix[c.row][c.col] = c
    fixed = p.fixed()
    title = [fixed.pop("prompt")] if "prompt" in fixed else []
    if p.prompt and "{}" in p.prompt:
        title.append(p.prompt)
    title.append([f"{k}: {_show(v)}" for k, v in fixed.items()])
    page = {a.name: a.values[_page_index(p, g)[i]] for i, a in enumerate(p.pages)}
    if page:
        title.append([a.labels[_page_index(p, g)[i]] for i, a in enumerate(p.pages)])
    image, boxes = draw([[c.image for c in row] for row in matrix], p.rows.labels if p.rows else [],
                        p.cols.labels if p.cols else [], title)
    meta = {"kind": "sweep_grid", "sweep": p.definition(), "settings": cells[0].record.get("settings") or
            {**cells[0].settings.to_dict(), "seed": cells[0].seed, "count": 1},
            "grid": {"index": g, "of": p.n_grids, "page": page, "rows": p.rows.name if p.rows else None,
                     "cols": p.cols.name if p.cols else None, "size": list(image.size)},
            "cells": [{"index": c.index, "row": c.row, "col": c.col, "values": c.values, "id": c.id,
                       "path": str(c.path), "box": boxes[c.row][c.col], "record": c.record,
                       "settings": {**c.settings.to_dict(), "seed": c.seed, "count": 1}} for c in cells]}
    name = f"sweep_{p.sweep_id}.png" if p.n_grids == 1 else f"sweep_{p.sweep_id}_{g + 1}of{p.n_grids}.png"
    path = write_new(p.base.output_dir, name, encode_png(image, cells[0].record, meta))
    return image, path


def _page_index(p, g: int) -> list:
    out = []
    for a in reversed(p.pages):
        g, i = divmod(g, len(a.values))
        out.append(i)
    return out[::-1]


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------
# Grids from the run log
# ---------------------------------------------------------------------------------------

def grid(df, rows: str | None = None, cols: str | None = None, where: str | None = None, *, out=None,
         yes: bool = False) -> Grid:
    """A labelled grid of images already made, from run-log records, generating nothing.

    `df`: a DataFrame from `fluxnb.runlog.load(DIR)` (or the folder itself); `rows`/`cols`:
    run-log columns (seed, guidance, steps, size, prompt, enhance, sweep_id, ...); `where`:
    a pandas query ("steps == 20 and guidance > 2"). One image per cell: the latest. `out`:
    a .png file (or folder) to save it in, with every cell's record in its metadata."""
    from . import runlog
    from .sweeps import CELL_CAP

    # 1. Check the columns, keep images that exist, filter.
    source = None
    if isinstance(df, (str, os.PathLike)):
        source, df = str(df), runlog.load(df)
    if rows is None and cols is None:
        raise FluxnbError("grid: give rows, cols or both", field="rows", fix="e.g. --rows seed --cols guidance")
    rows, cols = (_column(df, n, which) for n, which in ((rows, "rows"), (cols, "cols")))
    if rows is not None and rows == cols:
        raise FluxnbError(f"cols {cols!r}: the same column as rows", field="cols", value=cols,
                          fix="give rows and columns different columns")
    sel = df[(df["status"] == "ok") & df["path"].notna()].copy()
    sel["path"] = [_find(x, source) for x in sel["path"]]
    sel = sel[[Path(x).is_file() for x in sel["path"]]]
    if where:
        sel = _query(sel, where, df.columns)
    if sel.empty:
        raise FluxnbError(f"grid: no images {'match ' + repr(where) if where else 'in the run log'}",
                          field="where", value=where, fix="check the folder and the filter (fluxnb log DIR)")

    # 2. One image per cell (the latest), values in order.
    keys = [k for k in (rows, cols) if k]
    sel = sel.sort_values("created_at", kind="stable")
    dupes = int(sel.duplicated(keys, keep="last").sum())
    if dupes:
        log.warning("%d image(s) share a cell with a later one; the latest is shown (narrow with --where, e.g. "
                    "\"sweep_id == '...'\")", dupes)
    sel = sel.drop_duplicates(keys, keep="last")
    rv, cv = _values(sel, rows), _values(sel, cols)
    if len(rv) * len(cv) > CELL_CAP and not yes:
        raise FluxnbError(f"grid of {len(rv)} x {len(cv)} cells: more than {CELL_CAP}", field="cells",
                          value=len(rv) * len(cv), fix="narrow it with --where, or pass --yes")
    recs = {(_key(r.get(rows)) if rows else None, _key(r.get(cols)) if cols else None): r
            for r in sel.to_dict("records")}

    # 3. Draw, label and (when asked) save.
    matrix, order = [], []
    for r in rv:
        matrix.append([])
        for c in cv:
            rec = recs.get((_key(r) if rows else None, _key(c) if cols else None))
            order.append(rec)
            matrix[-1].append(_open(rec["path"]) if rec else None)
    shown = set(keys) | ({"model_name"} if "model" in keys else set())
    same = [n for n in TITLE_COLUMNS if n in sel and n not in shown and sel[n].nunique(dropna=False) == 1]
    title = [_label(n, _key(sel[n].iloc[0])) for n in same if n == "prompt"]
    title.append([_label(n, _key(sel[n].iloc[0])) for n in same
                  if n != "prompt" and not (n == "enhancer" and sel[n].iloc[0] == "none")])
    if where:
        title.append(f"where {where}")
    image, boxes = draw(matrix, [_label(rows, v) for v in rv] if rows else [],
                        [_label(cols, v) for v in cv] if cols else [], title)
    grid_ = Grid(image, None, rows, cols, rv if rows else [], cv if cols else [],
                 [rec["path"] if rec else None for rec in order], [_plain(r) for r in order],
                 [b for row in boxes for b in row])
    if out is not None:
        grid_.path = _save(grid_, where, source, out)
    return grid_


def _find(path: str, source: str | None) -> str:
    """A recorded path, or (run from another folder) the file of that name beside the run log."""
    if Path(path).is_file() or source is None:
        return path
    from .runlog import path_for

    beside = path_for(source).parent / Path(path).name
    return str(beside) if beside.is_file() else path


def _column(df, name: str | None, which: str) -> str | None:
    if name is None:
        return None
    key = COLUMN_ALIASES.get(name, name)
    if key not in df.columns:
        raise FluxnbError(f"{which} {name!r}: no such run-log column", field=which, value=name,
                          fix="use one of: seed, guidance, steps, size, prompt, enhance, model, sweep_id, "
                              f"... ({len(df.columns)} columns)")
    return key


def _query(sel, where: str, columns):
    try:
        out = sel.query(where, engine="python")
    except Exception as e:  # noqa: BLE001 - pandas raises many kinds; all mean a bad filter
        unknown = [w for w in _names(where) if w not in columns and w not in ("and", "or", "not", "in", "True",
                                                                                 "False", "None")]
        hint = f"unknown column {unknown[0]!r}" if unknown else f"{type(e).__name__}: {e}"
        raise FluxnbError(f"where {where!r}: not a valid filter ({hint})", field="where", value=where,
                          fix='e.g. --where "steps == 20 and guidance > 2" (pandas query syntax)') from None
    if not hasattr(out, "columns"):
        raise FluxnbError(f"where {where!r}: not a filter of rows", field="where", value=where,
                          fix='e.g. --where "steps == 20"')
    return out


def _names(text: str) -> list:
    import re

    return re.findall(r"(?<![\w'\"])([A-Za-z_]\w*)(?![\w'\"])", re.sub(r"(['\"]).*?\1", "", text))


def _values(sel, col):
    if col is None:
        return [None]
    vals = list(dict.fromkeys(_key(v) for v in sel[col]))
    if all(isinstance(v, (int, float)) for v in vals if v is not None):
        vals.sort(key=lambda v: (v is None, v if v is not None else 0))
    return vals


def _key(v):
    try:
        import pandas as pd

        if v is None or pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v


def _label(col: str, v) -> str:
    if col == "prompt":
        return str(v)
    name = {"model_name": "model", "enhancer": "enhance"}.get(col, col)
    return f"{name}: {'n/a' if v is None else _show(v)}"


def _open(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _plain(rec: dict | None) -> dict | None:
    if rec is None:
        return None
    return {k: (None if _key(v) is None else str(v) if k == "created_at" else _key(v)) for k, v in rec.items()}


def _save(g: Grid, where, source, out) -> Path:
    from .output import write_new

    target = Path(out)
    if target.is_dir() or not target.suffix:
        target = target / f"grid_{g.rows or 'one'}_by_{g.cols or 'one'}.png"
    if target.suffix.lower() != ".png":
        raise FluxnbError(f"out {str(out)!r}: a grid is saved as PNG", field="out", value=str(out),
                          fix="name a .png file or a folder")
    ncols = max(len(g.col_values), 1)
    cells = [{"row": i // ncols, "col": i % ncols, "path": p, "box": box, "record": rec}
             for i, (p, rec, box) in enumerate(zip(g.images, g.cells, g.boxes))]
    first = next((c for c in g.cells if c), {})
    meta = {"kind": "grid", "grid": {"rows": g.rows, "cols": g.cols, "where": where, "source": source,
                                     "row_values": g.row_values, "col_values": g.col_values,
                                     "size": list(g.image.size)}, "cells": cells}
    return write_new(target.parent, target.name, encode_png(g.image, first, meta))
