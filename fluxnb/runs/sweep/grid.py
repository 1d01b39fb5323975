"""A sweep's grids: its made cells drawn with their axis labels and saved atomically."""

from __future__ import annotations

from pathlib import Path

from ...outputs.files import write_new
from ...outputs.grids import draw, encode_png, show_value


def save_sweep_grid(p, g: int) -> tuple[object, Path, list]:
    """Draw grid `g` of a sweep plan whose cells are made; save it (atomic, no clobber).
    Returns (PIL image, path, boxes): boxes[row][col] = [x, y, w, h] of each cell's image."""
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
    title.append([f"{k}: {show_value(v)}" for k, v in fixed.items()])
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
    return image, path, boxes


def _page_index(p, g: int) -> list:
    out = []
    for a in reversed(p.pages):
        g, i = divmod(g, len(a.values))
        out.append(i)
    return out[::-1]
