"""Grids from images already made (`fluxnb.grid`): run-log records as rows and columns,
generating nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config.settings import CELL_CAP
from ..errors import FluxnbError
from . import runlog
from .grids import draw, encode_png, show_value

log = logging.getLogger(__name__)
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

    def _repr_html_(self):
        """The grid at its own scale, each cell a link to its image (`outputs.gridhtml`)."""
        from .gridhtml import grid_html

        return grid_html(self.image, list(zip(self.boxes, self.images)), alt=f"grid {self.path or ''}".strip())



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
    # 1. Check the columns, keep images that exist, filter.
    source = None
    if isinstance(df, (str, os.PathLike)):
        source, df = str(df), runlog.load(df)
    if rows is None and cols is None:
        raise FluxnbError("grid: give rows, cols or both", field="rows", fix="e.g. --rows seed --cols guidance")
    for n in (rows, cols):
        if isinstance(n, str) and n.startswith("lora:") and "loras" in df:
            df = lora_weight(df, n)
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
                  if n != "prompt" and not (n == "enhancer" and _key(sel[n].iloc[0]) in ("none", None))])
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


def lora_weight(df, name: str):
    """`df` with a column `lora:NAME`: the weight of adapter NAME in each record's `loras`
    (`style:0.5, detail:1`), None where it was not used; a LoRA's weight as a grid axis."""
    want = name.split(":", 1)[1]

    def weight(text):
        for part in str(text or "").split(", "):
            n, _, w = part.rpartition(":")
            if n == want:
                return float(w)
        return None

    df = df.copy()
    df[name] = [weight(x) if isinstance(x, str) else None for x in df["loras"]]
    return df


def _find(path: str, source: str | None) -> str:
    """A recorded path, or (run from another folder) the file of that name beside the run log."""
    if Path(path).is_file() or source is None:
        return path
    beside = runlog.path_for(source).parent / Path(path).name
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
    return f"{name}: {'n/a' if v is None else show_value(v)}"


def _open(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _plain(rec: dict | None) -> dict | None:
    if rec is None:
        return None
    return {k: (None if _key(v) is None else str(v) if k == "created_at" else _key(v)) for k, v in rec.items()}


def _save(g: Grid, where, source, out) -> Path:
    from .files import write_new

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
