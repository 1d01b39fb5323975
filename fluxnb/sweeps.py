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
cells already recorded. The grid is drawn by `fluxnb.grids`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FluxnbError
from .grids import grid  # noqa: F401 - fluxnb.grid
from .settings import ALIASES, Settings, draw_seed, require_prompt, resolve

log = logging.getLogger(__name__)

# Sweepable settings and how their values are read; the default order of the axes
# (the first two become rows and columns, unless rows=/cols= say otherwise).
AXES = {"prompt": "prompt", "enhance": "text", "seed": "int", "guidance": "float", "steps": "int", "size": "size",
        "max_sequence_length": "int", "enhance_model": "text", "precision": "text", "model": "text"}
AXIS_ALIASES = {"seeds": "seed", "prompts": "prompt", "sizes": "size", "models": "model", "enhancer": "enhance",
                **ALIASES}
CELL_CAP = 100
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_RANGE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*({_NUM})\s*\)|\[\s*({_NUM})\s*\])?\s*")
_RANDOM = re.compile(r"\s*random(?:\s*:\s*(\d+))?\s*", re.IGNORECASE)


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
        from .pipeline import display_name

        s, names = self.base, {a.name for a in self.axes}
        out = {k: getattr(s, k) for k in ("prompt", "seed", "steps", "guidance", "size") if k not in names}
        if "size" in out and s.size != f"{s.width}x{s.height}":
            out["size"] = f"{s.size} ({s.width}x{s.height})"
        if "model" not in names:
            out["model"] = display_name(s.model)
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


@dataclass
class SweepResult:
    sweep_id: str
    plan: Plan
    cells: list                                   # row-major over every grid
    grids: list = field(default_factory=list)     # grid PNG paths
    grid_images: list = field(default_factory=list)

    @property
    def grid(self) -> Path | None:
        return self.grids[0] if self.grids else None

    @property
    def grid_image(self):
        return self.grid_images[0] if self.grid_images else None

    @property
    def images(self) -> list:
        return [c.path for c in self.cells]

    @property
    def seeds(self) -> list:
        return list(dict.fromkeys(c.seed for c in self.cells))

    def to_dict(self) -> dict:
        return {"sweep_id": self.sweep_id, "grid": self.grid, "grids": self.grids, "images": self.images,
                "seeds": self.seeds, "made": sum(not c.reused for c in self.cells),
                "reused": sum(c.reused for c in self.cells), "definition": self.plan.definition(),
                "cells": [{"index": c.index, "grid": c.grid, "row": c.row, "col": c.col, "values": c.values,
                           "seed": c.seed, "id": c.id, "path": c.path, "reused": c.reused} for c in self.cells]}

    def _repr_png_(self):
        import io

        if self.grid_image is None:
            return None
        buf = io.BytesIO()
        self.grid_image.save(buf, format="PNG")
        return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Values: lists, A1111 ranges, random seeds
# ---------------------------------------------------------------------------------------

def _bad(axis: str, value, message: str, fix: str | None = None) -> FluxnbError:
    return FluxnbError(f"{axis} {value!r}: {message}", field=axis, value=value, fix=fix)


def expand_range(text: str, kind: str, axis: str = "value") -> list | None:
    """A1111 X/Y/Z ranges: `1-5` (step 1), `1-10 (+2)` (step 2), `1-10 [5]` (5 values evenly
    spaced; whole-number axes truncate like A1111). None when `text` is not a range."""
    m = _RANGE.fullmatch(text)
    if not m or kind not in ("int", "float"):
        return None
    a, b, step, count = m.groups()
    if kind == "int" and any(x is not None and "." in x for x in (a, b)):
        raise _bad(axis, text, "a range of whole numbers cannot have decimals", fix="e.g. 1-10 (+2)")
    conv = int if kind == "int" else float
    lo, hi = conv(float(a)), conv(float(b))
    if count is not None:
        n = float(count)
        if n < 1 or not n.is_integer():
            raise _bad(axis, text, f"[{count}] must be a whole number of values, 1 or more", fix="e.g. 1-10 [5]")
        n = int(n)
        vals = [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [lo]
        return [int(v) for v in vals] if kind == "int" else [round(v, 6) for v in vals]
    st = conv(float(step)) if step is not None else conv(1)
    if st <= 0:
        raise _bad(axis, text, f"the range step {step} must be positive",
                   fix=f"count up with a positive step, e.g. {a}-{b} (+1); to go down, list the values")
    if hi < lo:
        raise _bad(axis, text, "the range ends below its start",
                   fix=f"write it low to high ({b}-{a}), use [N] for N values, or list the values")
    n = math.floor((hi - lo) / st + 1e-9) + 1
    return [lo + i * st for i in range(n)] if kind == "int" else [round(lo + i * st, 6) for i in range(n)]


def _items(value, sep: str) -> list:
    if isinstance(value, str):
        return value.split(sep)
    if _is_list(value):
        items = list(value.tolist() if hasattr(value, "tolist") else value)
        return [x for it in items for x in (it.split(sep) if isinstance(it, str) and sep != "|" else [it])]
    return [value]


def parse_axis(name: str, value, base: Settings) -> tuple[list, list, list]:
    """One axis's values: (values, labels, drawn seeds). Validated against `base`; refuses
    empty values, duplicates and bad ranges."""
    kind = AXES[name]
    spec = value if isinstance(value, str) else ""
    items = _items(value, "|" if kind == "prompt" else ",")
    if not items or (isinstance(value, str) and not value.strip()):
        raise _bad(name, value, "the axis is empty", fix=f"give at least one value, e.g. {_example(name)}")
    raw, drawn = [], []
    for it in items:
        text = it.strip() if isinstance(it, str) else it
        if text == "" or text is None:
            raise _bad(name, value, "an empty value in the list", fix=f"e.g. {_example(name)}")
        if name == "seed" and isinstance(text, str) and _RANDOM.fullmatch(text) or text in (-1, "-1"):
            m = _RANDOM.fullmatch(str(text))
            n = int(m.group(1)) if m and m.group(1) else 1
            if not 1 <= n <= 10000:
                raise _bad(name, text, "random:N draws N seeds: N must be 1 to 10000", fix="e.g. random:4")
            new = _draw(n, set(raw) | set(drawn))
            drawn += new
            raw += new
            continue
        rng = expand_range(text, kind, name) if isinstance(text, str) else None
        raw += rng if rng is not None else [text]
    values, labels, seen = [], [], {}
    for v in raw:
        norm, key, label = _validate(name, v, base)
        if key in seen:
            raise _bad(name, spec or value, f"{norm!r} appears twice" + (f" ({seen[key]!r} and {v!r})"
                                                                      if str(seen[key]) != str(v) else ""),
                       fix="give each value once")
        seen[key] = v
        values.append(norm)
        labels.append(label)
    return values, labels, drawn


def _draw(n: int, taken: set) -> list:
    out = []
    while len(out) < n:
        s = draw_seed()
        if s not in taken and s not in out:
            out.append(s)
    return out


def _validate(name: str, value, base: Settings):
    """(normalised value, duplicate key, label) for one axis value, checked by the settings."""
    if name == "prompt":
        text = require_prompt(value, "prompt")
        return text, text.strip(), text
    s = base.replace(**{name: value})
    norm = getattr(s, name)
    if name == "size":
        label = f"size: {norm} ({s.width}x{s.height})" if norm != f"{s.width}x{s.height}" else f"size: {norm}"
        return norm, (s.width, s.height), label
    if name == "model":
        from .pipeline import display_name
        return norm, norm, f"model: {display_name(norm)}"
    shown = f"{norm:g}" if isinstance(norm, float) else norm
    return norm, norm, f"{name}: {shown}"


def _example(name: str) -> str:
    return {"seed": "1,2,3 or 1-5 or random:4", "guidance": "1.5,3.5,5 or 1-5 (+0.5)", "steps": "4,20 or 10-50 [5]",
            "size": "square,portrait or 512x512,768x768", "prompt": '"a fox|a hare"', "enhance": "none,claude"
            }.get(name, "a,b")


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple, range)) or getattr(value, "ndim", 0) > 0  # numpy arrays too


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
        if key in AXES and (_is_list(v) or isinstance(v, str)):
            specs[key] = v
        elif _is_list(v):
            raise FluxnbError(f"{key}: not a sweep axis", field=key, value=v,
                              fix=f"sweep one of: {', '.join(AXES)}")
        else:
            fixed[key] = v
    if prompt is not None and template is None:
        fixed["prompt"] = prompt
    base = settings.replace(**fixed) if settings is not None else resolve(**fixed)
    if out is not None:
        base = base.replace(output_dir=str(out))

    # 2. Read every axis (the model first: it brings its defaults); one value is a fixed setting.
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
    total = math.prod(len(a.values) for a in layout)
    if total > CELL_CAP and not yes:
        raise FluxnbError(f"sweep of {total} cells ({' x '.join(f'{len(a.values)} {a.name}' for a in layout)}): "
                          f"more than {CELL_CAP}", field="cells", value=total,
                          fix="narrow an axis, or pass --yes (yes=True) to make them all")

    # 4. The cells, row-major within each grid; each one's settings validated now.
    from .generation import item_id

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


# ---------------------------------------------------------------------------------------
# Running a sweep
# ---------------------------------------------------------------------------------------

def sweep(prompt: str | None = None, *, seeds=None, guidance=None, steps=None, size=None, prompts=None,
          enhance=None, out=None, yes: bool = False, rows: str | None = None, cols: str | None = None,
          settings: Settings | None = None, batch_size: int | None = None, staged: bool | None = None,
          callbacks=(), progress: bool = True, backend: str = "local", address: str | None = None,
          workers: int | None = None, gpus_per_worker: float | None = None, ray_results: str | None = None,
          **any_setting) -> SweepResult:
    """Make every combination of the axes, save each cell and the labelled grid(s).

    Axes: `seeds`, `guidance`, `steps`, `size`, `prompts`, `enhance` and any sweepable
    setting by name (a list, or text such as "1-10 (+2)"); other settings are fixed.
    `batch_size`: cells per pipeline call (default: 4 on the CPU, where it is faster, 1 on
    a GPU); `staged`: all denoising, then all decoding (default: under model offload).
    `backend="ray"`: the cells on Ray workers (address=, workers=, gpus_per_worker=,
    ray_results=, as for `fluxnb batch`), each made as a single generate makes it."""
    ray = dict(backend=backend, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
               ray_results=ray_results)
    from .raybackend import for_backend
    for_backend(**ray)  # checked before the plan draws seeds
    p = plan(prompt, seeds=seeds, guidance=guidance, steps=steps, size=size, prompts=prompts, enhance=enhance,
             out=out, rows=rows, cols=cols, yes=yes, settings=settings, **any_setting)
    return run(p, batch_size=batch_size, staged=staged, callbacks=callbacks, progress=progress, **ray)


def run(p: Plan, *, batch_size: int | None = None, staged: bool | None = None, callbacks=(),
        progress: bool = True, backend: str = "local", **ray_options) -> SweepResult:
    """Make the cells of a plan not yet recorded, then draw and save the grids.
    `backend="ray"` and its options: see `sweep`."""
    from . import grids, runlog, sweeprun
    from .raybackend import for_backend, make_sweep

    ray = for_backend(backend, **ray_options)
    if ray is not None and callbacks:
        raise FluxnbError("callbacks: not with backend ray (they would run in the workers)", field="callbacks",
                          fix="use backend local for step callbacks")

    # 1. Reuse the cells an earlier (interrupted) run already made.
    done = runlog.ok_paths(p.base.output_dir)
    todo = [c for c in p.cells if not (c.id in done and sweeprun.reuse(p, c, done[c.id]))]
    log.info("%s, %d already made", p.describe(), len(p.cells) - len(todo))
    if p.drawn_seeds:
        log.info("seeds drawn: %s", ", ".join(map(str, p.drawn_seeds)))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(p.cells), initial=len(p.cells) - len(todo), desc=f"sweep {p.sweep_id}", unit="cell")

    # 2. Make the rest, one pipeline (load settings) at a time.
    try:
        for _key, group in sweeprun.groups(todo, lambda c: c.settings.load):
            if ray is not None:
                make_sweep(p, group, ray, bar)
            else:
                sweeprun.make(p, group, bar, batch_size, staged, callbacks)
    finally:
        if bar is not None:
            bar.close()

    # 3. Draw and save one grid per page.
    result = SweepResult(p.sweep_id, p, p.cells)
    for g in range(p.n_grids):
        image, path = grids.save_sweep_grid(p, g)
        result.grid_images.append(image)
        result.grids.append(path)
        log.info("grid %s", path)
    return result
