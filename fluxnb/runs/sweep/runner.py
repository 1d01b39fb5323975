"""Running a sweep: reuse what is recorded, make the rest, draw and save the grids."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ...config.settings import Settings, check_output_dir
from ...errors import FluxnbError
from .layout import Plan, plan

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    sweep_id: str
    plan: Plan
    cells: list                                   # row-major over every grid
    grids: list = field(default_factory=list)     # grid PNG paths
    grid_images: list = field(default_factory=list)
    grid_boxes: list = field(default_factory=list)  # per grid: boxes[row][col] = [x, y, w, h] of each cell

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

    def grid_cells(self, g: int = 0) -> list:
        """(box, path) of each cell of grid `g`: where its image lies in the grid, its file."""
        boxes = self.grid_boxes[g] if g < len(self.grid_boxes) else []
        return [(boxes[c.row][c.col], c.path) for c in self.cells
                if c.grid == g and c.row < len(boxes) and c.col < len(boxes[c.row])]

    def _repr_html_(self):
        """Every grid at its own scale, each cell a link to its image (`outputs.gridhtml`)."""
        from ...outputs.gridhtml import grid_html

        if not self.grid_images:
            return None
        return "".join(f'<div class="fluxnb-grid-page">{grid_html(im, self.grid_cells(g), alt=f"grid {path}")}</div>'
                       for g, (im, path) in enumerate(zip(self.grid_images, self.grids)))



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
    from ..ray.backend import for_backend
    for_backend(**ray)  # checked before the plan draws seeds
    p = plan(prompt, seeds=seeds, guidance=guidance, steps=steps, size=size, prompts=prompts, enhance=enhance,
             out=out, rows=rows, cols=cols, yes=yes, settings=settings, **any_setting)
    return run(p, batch_size=batch_size, staged=staged, callbacks=callbacks, progress=progress, **ray)


def run(p: Plan, *, batch_size: int | None = None, staged: bool | None = None, callbacks=(),
        progress: bool = True, backend: str = "local", **ray_options) -> SweepResult:
    """Make the cells of a plan not yet recorded, then draw and save the grids.
    `backend="ray"` and its options: see `sweep`."""
    from ...outputs import runlog
    from ...outputs.recover import tidy_and_recover
    from ..ray.backend import for_backend, make_sweep
    from . import make as sweeprun
    from .grid import save_sweep_grid

    ray = for_backend(backend, **ray_options)
    if ray is not None and callbacks:
        raise FluxnbError("callbacks: not with backend ray (they would run in the workers)", field="callbacks",
                          fix="use backend local for step callbacks")
    check_output_dir(p.base.output_dir)  # before any model loads

    # 1. Reuse the cells an earlier (interrupted) run already made, recording first any image
    #    a killed run linked into place without its record.
    tidy_and_recover(p.base.output_dir)
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

    # 3. Draw and save one grid per page (none while a skipped cell is missing: a rerun makes it).
    result = SweepResult(p.sweep_id, p, p.cells)
    missing = [c for c in p.cells if getattr(c, "image", None) is None]
    if missing:
        log.warning("%d cell(s) skipped: no grid; run the sweep again to make them", len(missing))
        return result
    for g in range(p.n_grids):
        image, path, boxes = save_sweep_grid(p, g)
        result.grid_images.append(image)
        result.grid_boxes.append(boxes)
        result.grids.append(path)
        log.info("grid %s", path)
    return result
