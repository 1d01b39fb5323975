"""`fluxnb export DIR`: one zip of a run's images, run log and grids, to download from
JupyterLab (right-click, Download) instead of copying files home over SCP.

What goes in: the images the run log records as `ok` (made in the window), the run-log
records of the window (every status), and the other results in the folder (grids,
batch notebooks and reports, CSV/Parquet exports) whose files changed in the window,
plus a manifest. Hidden and temporary files, and earlier exports, stay out.
The zip is written with the one atomic write (`fluxnb.files.write_atomic`: a temp file in
the target folder, renamed when complete): a killed export leaves no partial zip.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .. import __version__
from ..outputs import runlog
from ..errors import FluxnbError, RuntimeFailure
from ..files import write_atomic

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp"}
OTHER_EXT = {".ipynb", ".html", ".csv", ".parquet", ".json", ".yaml", ".yml", ".txt", ".md", ".gif", ".mp4"}
STORED_EXT = IMAGE_EXT | {".parquet", ".gif", ".mp4"}   # already compressed
EXPORTS = "exports"


@dataclass
class ExportResult:
    path: str
    images: int
    files: int
    records: int
    bytes: int
    since: str = ""
    skipped: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        since = f" since {self.since}" if self.since else ""
        miss = f"; {len(self.skipped)} recorded image(s) missing on disk" if self.skipped else ""
        return (f"exported {self.images} image(s), {self.files - self.images} other file(s) and {self.records} run-log "
                f"record(s){since}: {self.bytes / 1e6:.1f} MB{miss}")


# ---------------------------------------------------------------------------------------
# --since
# ---------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*(?:ago)?\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """An aware UTC datetime from `2026-11-24`, `2026-11-24T18:00`, `today`, `yesterday`, or
    `30m` / `12h` / `7d` / `2w` (ago). Dates without a zone are local time."""
    if text is None or not str(text).strip():
        return None
    now = now or datetime.now(timezone.utc)
    t = str(text).strip().lower()
    local_midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    if t == "today":
        return local_midnight.astimezone(timezone.utc)
    if t == "yesterday":
        return (local_midnight - timedelta(days=1)).astimezone(timezone.utc)
    m = _RELATIVE.match(t)
    if m:
        return now - timedelta(**{_UNITS[m.group(2).lower()]: float(m.group(1))})
    try:
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise FluxnbError(f"since {text!r}: not a date, a time or a duration", field="since", value=text,
                          fix="use e.g. 2026-11-24, 2026-11-24T18:00, today, yesterday, 30m, 12h or 7d") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as typed
    return when.astimezone(timezone.utc)


def in_window(rec: dict, since: datetime | None) -> bool:
    """Whether a run-log record was written at or after `since` (every record when None; one
    without a readable `created_at` is not in a window). Times without a zone are UTC."""
    if since is None:
        return True
    try:
        when = datetime.fromisoformat(str(rec.get("created_at", "")).replace("Z", "+00:00"))
    except ValueError:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)) >= since


# ---------------------------------------------------------------------------------------
# Choosing the files
# ---------------------------------------------------------------------------------------

def _image_path(rec: dict, folder: Path) -> Path | None:
    """Where a record's image is now: its recorded path, or the same name in the folder
    (records hold the path as given when made, often relative to another folder)."""
    raw = rec.get("path") or ""
    if not raw:
        return None
    p = Path(raw)
    for cand in (p if p.is_absolute() else folder / p, folder / p.name, p):
        if cand.is_file():
            return cand
    return None


def _hidden_or_temp(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts) or rel.suffix in (".tmp", ".part", ".incomplete")


def select(folder: Path, since: datetime | None) -> tuple[list[tuple[Path, str]], list[dict], list[str]]:
    """([(file, name in the zip)], run-log records in the window, recorded images missing)."""
    records = [r for r in runlog.read(folder, warn=False) if in_window(r, since)]
    chosen: dict[Path, str] = {}
    missing = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        p = _image_path(rec, folder)
        if p is None:
            missing.append(rec.get("path") or rec.get("id") or "?")
            continue
        rp = p.resolve()
        try:
            arc = rp.relative_to(folder.resolve()).as_posix()
        except ValueError:
            arc = f"images/{p.name}"
        chosen.setdefault(rp, arc)
    cutoff = since.timestamp() if since else None
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or _hidden_or_temp(rel) or rel.parts[0] == EXPORTS or p.name == runlog.FILE_NAME:
            continue
        if p.suffix.lower() not in IMAGE_EXT | OTHER_EXT or p.resolve() in chosen:
            continue
        if cutoff is not None and p.stat().st_mtime < cutoff:
            continue
        chosen[p.resolve()] = rel.as_posix()
    return sorted(chosen.items(), key=lambda kv: kv[1]), records, missing


# ---------------------------------------------------------------------------------------
# Writing the zip
# ---------------------------------------------------------------------------------------

def default_out(folder: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    name = folder.resolve().name or "outputs"
    out = folder / EXPORTS / f"fluxnb_{name}_{stamp}.zip"
    n = 1
    while out.exists():
        out = folder / EXPORTS / f"fluxnb_{name}_{stamp}_{n}.zip"
        n += 1
    return out


def export_run(directory: str | os.PathLike | None = None, *, since: str | None = None,
               out: str | os.PathLike | None = None) -> ExportResult:
    """Zip the run in `directory` (default: the configured output_dir) into `out`."""
    # 1. What to export.
    if directory is None:
        from ..config.settings import resolve
        directory = resolve().output_dir
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise FluxnbError(f"export {str(folder)!r}: no such folder", field="directory", value=str(folder),
                          fix="give an output folder (the one with runlog.jsonl), e.g. outputs")
    when = parse_since(since)
    files, records, missing = select(folder, when)
    images = sum(1 for p, _ in files if p.suffix.lower() in IMAGE_EXT)
    if not files and not records:
        window = f" since {since}" if since else ""
        raise FluxnbError(f"export {str(folder)!r}: nothing to export{window} (no images, grids or run-log records)",
                          field="since" if since else "directory", value=since or str(folder),
                          fix="choose an earlier --since or another folder")

    # 2. Room on disk for it.
    target = Path(out).expanduser() if out else default_out(folder)
    if target.suffix.lower() != ".zip":
        raise FluxnbError(f"out {str(target)!r}: the export is a zip file", field="out", value=str(target),
                          fix="name a .zip file, e.g. --out run.zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p, _ in files)
    free = shutil.disk_usage(target.parent).free
    if free < total + 16 * 2**20:
        raise RuntimeFailure(f"out {str(target)!r}: no room on disk ({free // 2**20} MiB free, about "
                             f"{total // 2**20} MiB needed)", field="out", value=str(target), status="disk_full",
                             fix="free some space or write the zip elsewhere with --out")

    # 3. Write it beside the target, then rename: never a partial zip.
    top = target.stem
    manifest = {"fluxnb_version": __version__, "folder": str(folder.resolve()), "since": since or "",
                "since_utc": when.isoformat() if when else "",
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "images": images, "files": [arc for _, arc in files], "records": len(records),
                "missing_images": missing}

    def zip_into(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
            for p, arc in files:
                kind = zipfile.ZIP_STORED if p.suffix.lower() in STORED_EXT else zipfile.ZIP_DEFLATED
                z.write(p, f"{top}/{arc}", compress_type=kind)
            z.writestr(f"{top}/{runlog.FILE_NAME}",
                       "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))
            z.writestr(f"{top}/manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))

    try:
        write_atomic(target, zip_into)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise RuntimeFailure(f"out {str(target)!r}: the disk filled up while writing the zip", field="out",
                                 value=str(target), status="disk_full", fix="free some space and rerun") from None
        raise
    return ExportResult(path=str(target), images=images, files=len(files), records=len(records),
                        bytes=target.stat().st_size, since=since or "", skipped=missing)
