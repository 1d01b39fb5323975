"""Running a batch plan's items (in the batch notebook's kernel): execute, summarize,
contact sheet, exit status. `fluxnb.batch` re-exports these for the notebook.

Each item is made by the one image path (`image.make.attempt`, which saves atomically and
appends a run-log record for every image and every failure); only small facts are kept
between items, so memory stays flat. What was made, skipped and failed is read back from
the run log.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ...errors import FluxnbError, RuntimeFailure
from ...logs import say
from ...outputs import runlog
from ...outputs.recover import tidy_and_recover
from .params import Plan, preflight, size_text

log = logging.getLogger("fluxnb.batch")


class BatchFailed(RuntimeFailure):
    """Some items failed or were not made: the batch exits 1 listing them."""

    def __init__(self, message: str, summary: "Summary | None" = None):
        super().__init__(message, status="failed")
        self.summary = summary


def now() -> datetime:
    t = datetime.now(timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)  # the run log's precision


def _ensure_logging() -> None:
    from ... import logs

    if not logging.getLogger("fluxnb").handlers:
        logs.setup(logging.INFO)


def execute(p: Plan) -> datetime:
    """Make every item not yet made; record failures and go on. Returns when it started
    (for `summarize`). A disk-full failure stops the batch (every later item would fail)."""
    _ensure_logging()
    started = now()
    # 1. One run of a batch at a time. Under the lock, temp files left by a killed run are
    #    tidied away (an image it had linked but not recorded is recorded from its own
    #    metadata), then what is made is read again.
    lock = _lock(p)
    try:
        if tidy_and_recover(p.output_dir):
            say(f"recorded image(s) a killed run had written but not recorded in {p.output_dir}", log)
        fresh = runlog.ok_paths(p.output_dir)
        p.done = {i.id: fresh[i.id] for i in p.items if i.id in fresh}
        todo = p.todo
        if len(todo) < len(p.items):
            say(f"skipping {len(p.items) - len(todo)} item(s) already made (force: true redoes them)", log)
        if todo:
            preflight(p)
            if p.backend == "ray":
                from ..ray.backend import make_batch
                started -= make_batch(p, todo)  # a worker's clock behind this one's moves the start back
            else:
                _make(p, todo)
    finally:
        os.close(lock)  # releases the lock (a killed process releases it too)
    return started


def _lock(p: Plan) -> int:
    import fcntl

    folder = Path(p.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f".batch_{p.batch_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FluxnbError(f"batch {p.batch_id}: already running in {p.output_dir} (another process holds its lock)",
                          field="batch_name", value=p.batch_id, fix="wait for it to finish, or stop it and run again"
                          ) from None
    return fd


def _make(p: Plan, todo: list) -> None:
    """Make each item in turn on the one image path (under the batch's lock)."""
    from ...image import make as path
    from ...image.record import Job
    from ...model.pipeline import get_pipeline

    # 1. Load the pipeline once: if that fails, no item could be made.
    get_pipeline(p.settings.load)

    # 2. Each item: make, save and record it (a failure is recorded once, and the batch goes
    #    on); keep only small facts (memory stays flat).
    path_log = logging.getLogger(path.__name__)
    level = path_log.level
    path_log.setLevel(logging.WARNING)
    extra = {"batch_id": p.batch_id}
    try:
        for k, item in enumerate(todo, 1):
            s = dataclasses.replace(p.settings, prompt=item.prompt, enhance=item.enhance, seed=None, count=1)
            head = f"[{k}/{len(todo)}] P{item.prompt_no} seed {item.seed}" + (
                f" {item.enhance}" if len(p.enhances) > 1 else "")
            made, failed = path.attempt(Job(s, item.seed, extra))
            if failed is None:
                took = made.record.get("elapsed_s")
                took = f" {took:.2f} s" if isinstance(took, (int, float)) else ""
                say(f"{head} ok{took} -> {made.path}", log)  # good news to stdout; failures below to stderr
                del made
                continue
            log.warning("%s %s: %s", head, failed["status"], failed["error"])
            if failed["status"] == "disk_full":
                log.error("the disk is full: stopping the batch; free space and run it again")
                break
    finally:
        path_log.setLevel(level)


# ---------------------------------------------------------------------------------------
# Summary, contact sheet, exit status
# ---------------------------------------------------------------------------------------

@dataclass
class Summary:
    batch_id: str
    output_dir: str
    items: int
    made: int
    skipped: int
    failed: int
    missing: int
    seconds_per_image: float | None
    elapsed_s: float
    failures: list = field(default_factory=list)
    report: Path | None = None
    contact_sheet: Path | None = None

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    def __repr__(self) -> str:
        per = f" ({self.seconds_per_image:.2f} s per image)" if self.seconds_per_image is not None else ""
        lines = [f"batch {self.batch_id}: {self.items} items: {self.made} made, {self.skipped} skipped, "
                 f"{self.failed} failed" + (f", {self.missing} not made" if self.missing else "")
                 + f" in {self.elapsed_s:.1f} s{per}"]
        for f in self.failures:
            lines.append(f"  #{f['n']} P{f['prompt_no']} seed {f['seed']}"
                         + (f" enhance {f['enhance']}" if f["enhance"] != "none" else "")
                         + f": {f['status']}: {f['error'][:200]}")
        return "\n".join(lines)


def summarize(p: Plan, since: datetime) -> Summary:
    """Made, skipped and failed items of the run that started at `since`, from the run log."""
    from ... import logs

    by_id = {i.id: i for i in p.items}
    made, last_fail, elapsed = set(), {}, []
    for rec in runlog.read(p.output_dir, warn=False):
        item = by_id.get(rec.get("id"))
        if item is None:
            continue
        try:
            when = datetime.fromisoformat(str(rec.get("created_at")))
        except ValueError:
            continue
        if when < since:
            continue
        if rec.get("status") == "ok":
            made.add(item.id)
            if isinstance(rec.get("elapsed_s"), (int, float)):
                elapsed.append(rec["elapsed_s"])
        else:
            last_fail[item.id] = rec
    failures = [{"n": i.n, "id": i.id, "prompt_no": i.prompt_no, "prompt": i.prompt, "seed": i.seed,
                 "enhance": i.enhance, "status": str(last_fail[i.id].get("status") or "error"),
                 "error": logs.scrub(str(last_fail[i.id].get("error") or ""))}
                for i in p.items if i.id in last_fail and i.id not in made]
    skipped = 0 if p.force else sum(1 for i in p.items if i.id in p.done)
    return Summary(p.batch_id, p.output_dir, len(p.items), len(made), skipped, len(failures),
                   len(p.items) - len(made) - skipped - len(failures),
                   round(sum(elapsed) / len(elapsed), 3) if elapsed else None,
                   round((now() - since).total_seconds(), 1), failures)


def check(summary: Summary) -> None:
    """Raise BatchFailed (exit 1) listing the failures when any item failed or was not made."""
    if summary.failed or summary.missing:
        raise BatchFailed(f"{summary!r}\nrun the batch again to retry the failed items", summary)


def contact_sheet(p: Plan, summary: Summary | None = None, *, max_items: int = 2500):
    """A labelled thumbnail grid of the batch (a row per prompt when there are few seeds),
    written atomically as `contact_<batch>_<time>.png` in the output folder."""
    from . import contact as contactsheet

    items = p.items[:max_items]
    if not items:
        return None
    ok = runlog.ok_paths(p.output_dir)
    failed = {f["id"]: f["status"] for f in (summary.failures if summary else [])}
    many = len(p.enhances) > 1
    cells = [contactsheet.Cell(ok[i.id]["path"] if i.id in ok else None,
                               f"P{i.prompt_no}" + (f" {i.enhance}" if many else "") + f" · seed {i.seed}",
                               failed.get(i.id, "not made")) for i in items]
    per_row = len(p.seeds) * len(p.enhances)
    s = p.settings
    legend = [f"P{n}: {prompt}" for n, prompt in enumerate(p.prompts[:40], 1)]
    if len(p.prompts) > 40:
        legend.append(f"... {len(p.prompts) - 40} more prompts: see runlog.jsonl")
    sheet = contactsheet.write(
        cells, p.output_dir, f"contact_{p.batch_id}_{datetime.now():%Y%m%d_%H%M%S}.png",
        columns=per_row if per_row <= 12 else math.ceil(math.sqrt(len(cells) * 1.3)), aspect=s.width / s.height,
        title=f"batch {p.batch_id}: {sum(1 for i in p.items if i.id in ok)} of {len(p.items)} made"
              + (f" (first {max_items} shown)" if len(p.items) > max_items else ""),
        subtitle=f"{s.model}, {size_text(s)}, {s.steps} steps, guidance {s.guidance}", legend=legend)
    if summary is not None:
        summary.contact_sheet = sheet.path
    return sheet


