"""One item's life on the Ray backend: made on a worker, landed on disk, recovered after a death.

`Worker` is the Ray actor (`backend.run` makes it one): it loads the pipeline once and makes
items on the one image path (`image.make.attempt`), saving and recording each itself
(`ray_results: volume`) or returning the encoded file and its record (`driver`), which
`land` writes on the driver. `recover` and `adopt_orphans` find what a dead worker or a
killed run finished, so that every item ends with one image and one `ok` record.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from dataclasses import dataclass, field

from ...outputs import metadata as output, runlog
from ...errors import FluxnbError


_IMAGE_NAME = re.compile(r"flux_\d{8}_\d{6}_(\d+)(?:_\d+)?\.(?:png|jpg)")  # output.file_name, write_new's _N

@dataclass
class Task:
    """One image to make: its identity, settings, seed and what its run-log record adds."""

    id: str
    settings: object
    seed: int
    extra: dict = field(default_factory=dict)
    label: str = ""


# ---------------------------------------------------------------------------------------
# The worker (a Ray actor): loads the pipeline once, makes items
# ---------------------------------------------------------------------------------------

class Worker:
    """Made a Ray actor by `raybackend.run` (ray.remote(Worker)); plain Python otherwise."""

    def __init__(self, load, output_dir: str, probe: str | None):
        import ray

        from ... import logs

        logs.setup(logging.WARNING, file=False)
        ctx = ray.get_runtime_context()
        gpus = ",".join(map(str, ctx.get_accelerator_ids().get("GPU", [])))
        self.name = f"{ray.util.get_node_ip_address()}:{os.getpid()}" + (f":gpu{gpus}" if gpus else "")
        self.output_dir, self.error, self.loaded = output_dir, None, None
        try:
            if probe and not (Path(output_dir) / probe).is_file():
                raise FluxnbError(f"output_dir {output_dir!r}: worker {self.name} does not see the driver's output "
                                  "folder", field="output_dir", value=output_dir,
                                  fix="mount the same network volume at the same path on every node (RunPod: "
                                      "/workspace), or set ray_results: driver (--ray-results driver)")
            from ...model.pipeline import get_pipeline

            self.loaded = get_pipeline(load)
        except Exception as e:  # noqa: BLE001 - told to the driver by ready()
            self.error = logs.scrub(str(e) if isinstance(e, FluxnbError) else f"{type(e).__name__}: {e}")

    def ready(self) -> dict:
        info = {"worker": self.name, "pid": os.getpid(), "error": self.error, "clock": time.time()}
        if self.loaded is not None:
            info.update(device=self.loaded.device, load_s=round(self.loaded.load_s, 2))
        return info

    def make(self, task: Task, results: str) -> dict:
        """Make one item on the one image path. volume: save and record it here (as the local
        backend does); driver: return the encoded file and its record for the driver to write."""
        from ...image.make import attempt
        from ...image.record import Job

        s, here = task.settings, results == "volume"
        made, failed = attempt(Job(s, task.seed, {**task.extra, "worker": self.name}), save=here, record=here)
        if failed is not None:  # recorded once: here (volume), or by the driver
            return {"status": failed["status"], "error": failed["error"], "record": None if here else failed}
        if here:
            return {"status": "ok", "path": str(made.path), "record": made.record}
        t0 = time.perf_counter()
        data = output.encode(made.image, made.metadata, s.image_format, s.jpeg_quality)
        return {"status": "ok", "record": made.record, "data": data, "encode_s": time.perf_counter() - t0,
                "name": output.file_name(task.seed, s.image_format)}


# ---------------------------------------------------------------------------------------
# Exactly once: what a dead worker finished
# ---------------------------------------------------------------------------------------

def recover(output_dir: str | os.PathLike, task: Task, after: int = 0) -> dict | None:
    """The `ok` record of an item a dead worker finished (among the run log's records from
    number `after` on: this run's), or None. An image it wrote but did not record (it died
    in between) is adopted: recorded once, from its own metadata."""
    records = runlog.read(output_dir, warn=False)
    for rec in reversed(records[after:]):
        if rec.get("id") == task.id and rec.get("status") == "ok" and rec.get("path") and Path(rec["path"]).is_file():
            return rec
    recorded = {str(Path(r["path"]).resolve()) for r in records if r.get("path")}
    fmt, folder = task.settings.image_format, Path(output_dir)
    for path in sorted(set(folder.glob(f"flux_*_{task.seed}.{fmt}")) | set(folder.glob(f"flux_*_{task.seed}_*.{fmt}"))):
        if str(path.resolve()) in recorded:
            continue
        try:
            meta = output.read_metadata(path)[output.JSON_KEY] or {}
        except FluxnbError:
            continue
        if meta.get("id") == task.id and meta.get("status") == "ok":
            rec = {k: v for k, v in meta.items() if k not in ("settings", "versions")}
            rec.update(path=str(path), recovered=True)
            runlog.append(output_dir, rec)
            return rec
    return None


def adopt_orphans(output_dir: str | os.PathLike, tasks: list[Task]) -> dict[str, dict]:
    """{id: record} for tasks whose image a killed run wrote but never recorded."""
    folder = Path(output_dir)
    images = list(folder.glob("flux_*")) if folder.is_dir() else []
    if not images:
        return {}
    recorded = {str(Path(r["path"]).resolve()) for r in runlog.read(output_dir, warn=False) if r.get("path")}
    orphan_seeds = {int(m.group(1)) for path in images if str(path.resolve()) not in recorded
                    and (m := _IMAGE_NAME.fullmatch(path.name))}
    return {t.id: rec for t in tasks if t.seed in orphan_seeds and (rec := recover(output_dir, t)) is not None}


# ---------------------------------------------------------------------------------------
# On the driver: a worker's answer written down
# ---------------------------------------------------------------------------------------

def land(output_dir: str, task: Task, out: dict, results: str) -> dict:
    """A worker's answer on the driver: with ray_results driver, write the image and its record."""
    outcome = {"status": out["status"], "path": out.get("path"), "error": out.get("error", ""), "recovered": False,
               "elapsed_s": (out.get("record") or {}).get("elapsed_s"), "record": out.get("record")}
    if results == "volume":
        return outcome
    rec = out["record"]
    if out["status"] == "ok":
        t0 = time.perf_counter()
        try:
            path = output.write_new(output_dir, out["name"], out["data"])
        except FluxnbError as e:
            from ...image.record import failure_record

            rec = failure_record(task.settings, task.seed, e, extra=rec)
            runlog.append(output_dir, rec)
            return {**outcome, "status": rec["status"], "error": rec["error"]}
        rec.update(save_s=round(out["encode_s"] + time.perf_counter() - t0, 4), path=str(path))
        outcome["path"] = str(path)
    runlog.append(output_dir, rec)
    return outcome


def record_failure(output_dir: str, task: Task, status: str, msg: str) -> None:
    """Record an item the workers could not make (its worker died, or its call failed)."""
    from ...image.record import failure_record

    runlog.append(output_dir, failure_record(task.settings, task.seed, msg, status=status, extra=task.extra))
