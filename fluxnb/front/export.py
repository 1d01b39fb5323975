"""`fluxnb export DIR`: one zip of a run's images, run log and grids, to download from
JupyterLab (right-click, Download) instead of copying files home over SCP.

What goes in: the images the run log records as `ok` (made in the window), the run-log
records of the window (every status), and the other results in the folder (grids,
batch notebooks and reports, CSV/Parquet exports) whose files changed in the window,
plus a manifest. Hidden and temporary files, and earlier exports, stay out. Only regular
files inside the folder go in, never through a link (a symlink, or a record whose path is
absolute or `../` and leads out): those are left out and listed (`left_out`, the manifest).
Text files and the run-log records are scrubbed of secrets (`logs.scrub`) on the way in.
The zip is written with the one atomic write (`fluxnb.files.write_atomic`: a temp file in
the target folder, renamed when complete): a killed export leaves no partial zip.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import time
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .. import __version__
from ..outputs import runlog
from ..errors import FluxnbError, RuntimeFailure
from ..files import write_atomic
from ..logs import scrub, scrub_data, secret_values

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp"}
OTHER_EXT = {".ipynb", ".html", ".csv", ".parquet", ".json", ".yaml", ".yml", ".txt", ".md", ".gif", ".mp4"}
STORED_EXT = IMAGE_EXT | {".parquet", ".gif", ".mp4"}   # already compressed
TEXT_EXT = {".ipynb", ".html", ".csv", ".json", ".yaml", ".yml", ".txt", ".md"}   # scrubbed on the way in
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
    left_out: list = field(default_factory=list)   # "PATH (why)": outside the folder, a link, not a file

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        since = f" since {self.since}" if self.since else ""
        miss = f"; {len(self.skipped)} recorded image(s) missing on disk" if self.skipped else ""
        if self.left_out:
            shown = ", ".join(self.left_out[:5]) + (", ..." if len(self.left_out) > 5 else "")
            miss += f"; left out {len(self.left_out)} (only regular files inside the folder go in): {shown}"
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
    shown = repr(text) if len(str(text)) <= 60 else f"{str(text)[:40]!r}… ({len(str(text))} characters)"
    m = _RELATIVE.match(t)
    try:
        if m:
            return now - timedelta(**{_UNITS[m.group(2).lower()]: float(m.group(1))})
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.astimezone()  # local time, as typed
        return when.astimezone(timezone.utc)
    except OverflowError:
        raise FluxnbError(f"since {shown}: outside the dates a computer keeps", field="since", value=text,
                          fix="use a shorter duration (e.g. 30d) or a date such as 2026-11-24") from None
    except ValueError:
        raise FluxnbError(f"since {shown}: not a date, a time or a duration", field="since", value=text,
                          fix="use e.g. 2026-11-24, 2026-11-24T18:00, today, yesterday, 30m, 12h or 7d") from None


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

def confined(folder: Path, rel: Path) -> str | None:
    """Why `folder/rel` may not be exported, or None when it is a regular file inside the
    folder reached through no link (`rel` relative, without `..`)."""
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return "outside the folder"
    cur = folder
    for i, part in enumerate(rel.parts):
        cur = cur / part
        try:
            mode = os.lstat(cur).st_mode
        except (OSError, ValueError):
            return "missing"
        if stat.S_ISLNK(mode):
            return "a link"
        if i == len(rel.parts) - 1 and not stat.S_ISREG(mode):
            return "not a regular file"
    return None


def _record_image(rec: dict, folder: Path) -> tuple[str | None, str | None]:
    """(the name of a record's image inside the folder, or None; why not, when it exists
    elsewhere or is a link). Records hold the path as given when made, often relative to
    another folder, so the same name in the folder counts too."""
    p = Path(str(rec.get("path") or ""))
    cands = []
    if p.is_absolute():
        for base in (folder.absolute(), folder.resolve()):
            try:
                cands.append(p.relative_to(base))
            except ValueError:
                pass
    else:
        cands.append(p)
    cands.append(Path(p.name))
    why_not = None
    for rel in cands:
        why = confined(folder, rel)
        if why is None:
            return rel.as_posix(), None
        if why != "missing":
            why_not = why_not or why
    if why_not is None and p.is_absolute() and runlog.is_file(p):
        why_not = "outside the folder"
    return None, why_not


def _hidden_or_temp(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts) or rel.suffix in (".tmp", ".part", ".incomplete")


def select(folder: Path, since: datetime | None) -> tuple[list[tuple[Path, str]], list[dict], list[str], list[str]]:
    """([(file, name in the zip)], run-log records in the window, recorded images missing,
    files left out as "PATH (why)")."""
    records = [r for r in runlog.read(folder, warn=False) if in_window(r, since)]
    chosen: dict[str, Path] = {}
    missing, left_out = [], []
    # 1. The images the run log records `ok`.
    for rec in records:
        if rec.get("status") != "ok":
            continue
        arc, why = _record_image(rec, folder)
        if arc is not None:
            chosen.setdefault(arc, folder / arc)
        elif why is not None:
            left_out.append(f"{rec.get('path')} ({why})")
        else:
            missing.append(rec.get("path") or rec.get("id") or "?")
    # 2. The other results in the folder: a walk that never follows a link.
    cutoff = since.timestamp() if since else None
    for top, dirs, names in os.walk(folder, followlinks=False):
        base = Path(top)
        for name in sorted(dirs + names):
            p = base / name
            rel = p.relative_to(folder)
            if _hidden_or_temp(rel) or rel.parts[0] == EXPORTS or rel.as_posix() in chosen:
                continue
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                left_out.append(f"{rel.as_posix()} (a link)")
            elif (stat.S_ISREG(st.st_mode) and name != runlog.FILE_NAME and p.suffix.lower() in IMAGE_EXT | OTHER_EXT
                  and (cutoff is None or st.st_mtime >= cutoff)):
                chosen[rel.as_posix()] = p
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (base == folder and d == EXPORTS)]
    return sorted(((p, arc) for arc, p in chosen.items()), key=lambda kv: kv[1]), records, missing, left_out


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
    files, records, missing, left_out = select(folder, when)
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
    total = sum(p.lstat().st_size for p, _ in files)
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
                "missing_images": missing, "left_out": left_out}
    secrets = secret_values()

    def zip_into(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
            for p, arc in files:
                add_file(z, p, f"{top}/{arc}", secrets)
            z.writestr(f"{top}/{runlog.FILE_NAME}", "".join(
                json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in scrub_data(records, secrets)))
            z.writestr(f"{top}/manifest.json", json.dumps(scrub_data(manifest, secrets), indent=2, ensure_ascii=False))

    try:
        write_atomic(target, zip_into)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise RuntimeFailure(f"out {str(target)!r}: the disk filled up while writing the zip", field="out",
                                 value=str(target), status="disk_full", fix="free some space and rerun") from None
        raise
    return ExportResult(path=str(target), images=images, files=len(files), records=len(records),
                        bytes=target.stat().st_size, since=since or "", skipped=missing, left_out=left_out)


def add_file(z: zipfile.ZipFile, path: Path, arcname: str, secrets: list[str]) -> None:
    """Copy one chosen file into the zip, opened without following a link (a file swapped
    for one since it was chosen is refused); text files scrubbed of secrets."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FluxnbError(f"export: {str(path)!r} is not a regular file", field="directory", value=str(path))
        info = zipfile.ZipInfo(arcname, date_time=time.localtime(max(st.st_mtime, 315532800))[:6])
        info.external_attr = (st.st_mode & 0xFFFF) << 16
        info.compress_type = zipfile.ZIP_STORED if path.suffix.lower() in STORED_EXT else zipfile.ZIP_DEFLATED
        if path.suffix.lower() in TEXT_EXT:
            text = src.read().decode("utf-8", errors="surrogateescape")  # any bytes, back as they were
            z.writestr(info, scrub(text, secrets).encode("utf-8", errors="surrogateescape"))
            return
        with z.open(info, "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 2**20)
