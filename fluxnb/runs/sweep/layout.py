"""Sweeps: any setting as an axis, run efficiently, drawn as labelled comparison grids.

    import fluxnb
    r = fluxnb.sweep("a lighthouse at dusk", seeds="1-3", guidance=[1.5, 3.5, 5])
    r.grid_image, r.grid, r.images          # the grid (PIL, path) and every cell's file
    fluxnb.grid(fluxnb.runlog.load("outputs"), rows="seed", cols="guidance", where="steps == 20")

Axes are setting names (seed, guidance, steps, size, prompt, enhance, ...). Values are lists,
or text in A1111's X/Y/Z-plot syntax: `1,2,3`, `1-5`, `1-10 (+2)`, `1-10 [5]`; seeds also
take `random:4`. The first axis runs down the rows, the second across the columns, and each
further axis (or combination) gets a grid of its own. Every cell is saved and recorded as a
single `generate` would save it, plus the sweep id and its coordinates; a rerun reuses the
cells already recorded. The grid is drawn by `fluxnb.outputs.grids`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ...config.settings import CELL_CAP, CELL_MAX, Settings, draw_seed, require_prompt, resolve
from ...errors import FluxnbError
from .axes import AXES, AXIS_ALIASES, count_values, is_list, parse_axis

log = logging.getLogger(__name__)



@dataclass
class Axis:
    name: str          # a setting name
    values: list       # validated values, in order
    labels: list       # what the grid shows for each value
    spec: str = ""     # what was written


@dataclass
class Cell:
    index: int         # row-major position over all grids
    grid: int
    row: int
    col: int
    values: dict       # {axis: value}
    settings: Settings
    id: str            # generation.item_id: how a rerun finds it
    path: Path | None = None
    image: object = None
    record: dict = field(default_factory=dict)
    reused: bool = False

    @property
    def seed(self) -> int:
        return self.settings.seed

    def extra(self, sweep_id: str) -> dict:
        return {"sweep_id": sweep_id, "sweep_index": self.index, "sweep_grid": self.grid, "sweep_row": self.row,
                "sweep_col": self.col}


@dataclass
class Plan:
    sweep_id: str
    base: Settings
    prompt: str            # the prompt, or a template holding {} for the prompt axis
    axes: list             # in layout order: rows, cols, then one grid per combination of the rest
    rows: Axis | None
    cols: Axis | None
    pages: list
    cells: list
    drawn_seeds: list

    @property
    def n_grids(self) -> int:
        return math.prod(len(a.values) for a in self.pages)

    def fixed(self) -> dict:
        """The settings every cell shares (the grid's title)."""
        from ...model.hub import display_name

        s, names = self.base, {a.name for a in self.axes}
        out = {k: getattr(s, k) for k in ("prompt", "seed", "steps", "guidance", "size") if k not in names}
        if "size" in out and s.size != f"{s.width}x{s.height}":
            out["size"] = f"{s.size} ({s.width}x{s.height})"
        if "model" not in names:
            out["model"] = display_name(s.model)
        if s.init_image:  # image inputs: the file names (and the strength, when not an axis)
            out.update({k: Path(getattr(s, k)).name for k in ("init_image", "mask") if getattr(s, k)})
            out.update({} if "strength" in names else {"strength": s.strength})
        lora_axis = next((a.values for a in self.axes if a.name == "loras"), None)
        same = [x for x in lora_axis[0] if all(x in v for v in lora_axis)] if lora_axis else s.loras
        if same:  # the adapters every cell shares (at one weight)
            out["loras"] = ", ".join(f"{Path(x.rpartition(':')[0]).stem}: {x.rpartition(':')[2]}" for x in same)
        for k, plain in (("enhance", "none"), ("precision", "bf16"), ("max_sequence_length", 512)):
            if k not in names and getattr(s, k) != plain:
                out[k] = getattr(s, k)
        return out

    def definition(self) -> dict:
        return {"sweep_id": self.sweep_id, "prompt": self.prompt, "cells": len(self.cells), "grids": self.n_grids,
                "rows": self.rows.name if self.rows else None, "cols": self.cols.name if self.cols else None,
                "pages": [a.name for a in self.pages], "drawn_seeds": self.drawn_seeds, "fixed": self.fixed(),
                "axes": [{"name": a.name, "values": a.values, "labels": a.labels, "spec": a.spec} for a in self.axes],
                "settings": {k: v for k, v in self.base.to_dict().items() if k not in {a.name for a in self.axes}}}

    def describe(self) -> str:
        dims = " x ".join(f"{len(a.values)} {a.name}" for a in self.axes) or "no axis"
        n, g = len(self.cells), self.n_grids
        return f"sweep {self.sweep_id}: {n} cell{'s' * (n != 1)} ({dims}) on {g} grid{'s' * (g != 1)}"



# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------

def plan(prompt: str | None = None, *, seeds=None, guidance=None, steps=None, size=None, prompts=None, enhance=None,
         out=None, rows: str | None = None, cols: str | None = None, yes: bool = False,
         settings: Settings | None = None, **any_setting) -> Plan:
    """Check a sweep and lay out its cells; nothing is loaded or generated. Raises a
    FluxnbError for an empty or unknown axis, duplicate values, a bad range, or more than
    CELL_CAP cells without yes=True."""
    # 1. Split what varies (axes) from what stays fixed.
    given = {"seed": seeds, "guidance": guidance, "steps": steps, "size": size, "enhance": enhance}
    for k, v in any_setting.items():
        key = AXIS_ALIASES.get(k, k)
        if v is not None and given.get(key) is not None:
            raise FluxnbError(f"{key}: given twice ({k} and {'seeds' if key == 'seed' else key})", field=key,
                              fix="give it once")
        given[key] = v if v is not None else given.get(key)
    if prompts is not None:
        given["prompt"] = prompts
        if prompt is not None and "{}" not in prompt:
            raise FluxnbError(f"prompt {prompt!r}: given with --prompts, it must hold {{}} for the prompts to fill",
                              field="prompt", value=prompt,
                              fix='e.g. "a fox, {} style" --prompts "watercolor|oil paint", or only --prompts')
    template = prompt if prompt is not None and prompts is not None else None
    fixed, specs = {}, {}
    for key, v in given.items():
        if v is None:
            continue
        if key in AXES and (is_list(v) or isinstance(v, str)):
            specs[key] = v
        elif is_list(v):
            raise FluxnbError(f"{key}: not a sweep axis", field=key, value=v,
                              fix=f"sweep one of: {', '.join(AXES)}")
        else:
            fixed[key] = v
    if prompt is not None and template is None:
        fixed["prompt"] = prompt
    base = settings.replace(**fixed) if settings is not None else resolve(**fixed)
    if out is not None:
        base = base.replace(output_dir=str(out))

    # 2. Count the cells from what was written (ranges arithmetically), and refuse too many
    #    before any value is built; then read every axis (the model first: it brings its
    #    defaults); one value is a fixed setting.
    counts = {key: count_values(key, v) for key, v in specs.items()}
    seeds_by_count = base.count if counts.get("seed", 1) <= 1 and base.count > 1 else 1
    check_cells({k: n for k, n in counts.items() if n > 1} | ({"seed": seeds_by_count} if seeds_by_count > 1 else {}),
                yes)
    axes, drawn = {}, []
    for key in sorted(specs, key=lambda k: k != "model"):
        v = specs[key]
        values, labels, new = parse_axis(key, v, base)
        drawn += new
        if len(values) > 1:
            axes[key] = Axis(key, values, labels, v if isinstance(v, str) else "")
        else:
            base = base.replace(**{key: _fill(template, values[0]) if key == "prompt" else values[0]})
    if "prompt" not in axes:
        require_prompt(base.prompt)
    if "seed" not in axes and base.count > 1:      # -n N: seeds seed, seed+1, ... as an axis
        if base.seed is None:
            base = base.replace(seed=draw_seed())
            drawn.append(base.seed)
        seed_list = [(base.seed + i) % 2**32 for i in range(base.count)]
        axes["seed"] = Axis("seed", seed_list, [f"seed: {s}" for s in seed_list], f"-n {base.count}")
    if "seed" not in axes and base.seed is None:
        base = base.replace(seed=draw_seed())
        drawn.append(base.seed)
    base = base.replace(count=1)

    # 3. Lay out: rows, columns, then one grid per combination of the rest.
    order = _order(sorted(axes, key=list(AXES).index), rows, cols)
    layout = [axes[k] for k in order]
    r_ax = layout[0] if len(layout) > 1 or (layout and rows) else None
    c_ax = layout[1] if len(layout) > 1 else (layout[0] if layout and not rows else None)
    pages = layout[2:]
    check_cells({a.name: len(a.values) for a in layout}, yes)

    # 4. The cells, row-major within each grid; each one's settings validated now.
    from ...image.record import item_id

    cells = []
    for g, page in enumerate(itertools.product(*(range(len(a.values)) for a in pages))):
        for r in range(len(r_ax.values) if r_ax else 1):
            for c in range(len(c_ax.values) if c_ax else 1):
                idx = dict(zip([a.name for a in pages], page))
                if r_ax:
                    idx[r_ax.name] = r
                if c_ax:
                    idx[c_ax.name] = c
                values = {a.name: a.values[idx[a.name]] for a in layout}
                change = {k: v for k, v in values.items() if k != "prompt"}
                if "prompt" in values:
                    change["prompt"] = _fill(template, values["prompt"])
                s = base.replace(**change) if change else base
                cells.append(Cell(len(cells), g, r, c, values, s, item_id(s, s.seed)))
    if len({c.id for c in cells}) < len(cells):
        raise FluxnbError("two cells of this sweep would be the same image", field="axes",
                          fix="give values that change the image (e.g. not square and 1024x1024)")
    digest = hashlib.sha256(json.dumps([order, [c.id for c in cells]]).encode()).hexdigest()[:12]
    return Plan(digest, base, template or base.prompt, layout, r_ax, c_ax, pages, cells, drawn)


def check_cells(dims: dict, yes: bool) -> int:
    """The number of cells of axes of these lengths; refused past CELL_CAP without yes, and
    past CELL_MAX always."""
    total = math.prod(dims.values())
    shape = " x ".join(f"{n} {name}" for name, n in dims.items())
    if total > CELL_MAX:
        raise FluxnbError(f"sweep of {total} cells ({shape}): more than {CELL_MAX}, the most a sweep makes",
                          field="cells", value=total, fix="narrow an axis (a larger step, [N] values, fewer seeds)")
    if total > CELL_CAP and not yes:
        raise FluxnbError(f"sweep of {total} cells ({shape}): more than {CELL_CAP}", field="cells", value=total,
                          fix="narrow an axis, or pass --yes (yes=True) to make them all")
    return total


def _fill(template: str | None, value: str) -> str:
    return template.replace("{}", value) if template else value


def _order(names: list, rows: str | None, cols: str | None) -> list:
    picked = []
    for which, name in (("rows", rows), ("cols", cols)):
        if name is None:
            continue
        key = AXIS_ALIASES.get(name, name)
        if key not in names:
            raise FluxnbError(f"{which} {name!r}: not an axis of this sweep", field=which, value=name,
                              fix=f"use one of: {', '.join(names) or '(no axis has two or more values)'}")
        if key in picked:
            raise FluxnbError(f"cols {name!r}: the same axis as rows", field="cols", value=name,
                              fix="give rows and columns different axes")
        picked.append(key)
    rest = [n for n in names if n not in picked]
    if rows is None and cols is not None:
        return rest[:1] + picked + rest[1:]
    return picked + rest


