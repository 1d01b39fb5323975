"""A sweep's cells on the one image path: each cell a job (recorded with the sweep id and its
coordinates), made by `image.make.make` with batched and staged pipeline calls; a cell an
earlier run (or a generate) already made is reused.
"""

from __future__ import annotations

from pathlib import Path

from ...image.callbacks import Callback


def reuse(p, c, rec: dict) -> bool:
    """Take a recorded cell's image; a cell made outside this sweep gets a record here too."""
    from PIL import Image

    from ...outputs import runlog

    try:
        with Image.open(rec["path"]) as im:
            c.image = im.convert("RGB")
    except OSError:
        return False
    c.path, c.reused, c.record = Path(rec["path"]), True, rec
    if {k: rec.get(k) for k in c.extra(p.sweep_id)} != c.extra(p.sweep_id):  # made elsewhere: record it here too
        c.record = dict(rec, **c.extra(p.sweep_id), reused=True, elapsed_s=0.0, load_s=0.0, enhance_s=0.0,
                        encode_s=0.0, denoise_s=0.0, decode_s=0.0, save_s=0.0)
        runlog.append(p.base.output_dir, c.record)
    return True


def groups(items, key) -> list:
    """[(key, items)] in order of first appearance."""
    out: dict = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return list(out.items())


class CellMade(Callback):
    """Puts each image made on its cell, and moves the sweep's progress bar over the cells."""

    def __init__(self, cells: dict, bar=None):
        self.cells, self.bar = cells, bar

    def made(self, job, image) -> None:
        c = self.cells[id(job)]
        c.image, c.path, c.record = image.image, image.path, image.record
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in c.values.items() if k != "prompt")[:60])
            self.bar.update(1)


def make(p, cells: list, bar, batch_size, staged, callbacks) -> None:
    """Make cells sharing one pipeline: every prompt encoded once, the cells batched (and
    staged) as `batch_size` and `staged` say (see `image.make.make`)."""
    from ...image.make import make as make_images
    from ...image.record import Job

    jobs = [Job(c.settings, c.seed, c.extra(p.sweep_id)) for c in cells]
    made = CellMade({id(j): c for j, c in zip(jobs, cells)}, bar)
    make_images(jobs, callbacks=(*callbacks, made), progress=False, batch_size=batch_size, staged=staged)
