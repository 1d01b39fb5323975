"""Images without a run-log record, recorded from their own metadata.

`write_new` hard-links a finished temp file (`.NAME.PID.tmp`) into place, then removes it,
and the caller then appends the run-log record. A kill between the link and the record
leaves an image with no record (and, before the temp file's removal, a hidden hard link to
it). Every fluxnb image carries its record in its own metadata (the `fluxnb` JSON), so it
can be recorded afterwards, marked `recovered: true`:

- `tidy_and_recover(folder)`: what a writer runs before it starts (as batch runs `tidy`):
  removes the temp files of dead writers, and records the images they had linked into place.
  Cheap: it reads the folder's listing, and the run log only when there is something to do.
- `recover_unrecorded(folder)`: every image in the folder with no record, whatever killed it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import FluxnbError
from ..files import dead_temp_files
from . import runlog
from .metadata import JSON_KEY, read_metadata

log = logging.getLogger(__name__)

IMAGE_EXT = (".jpg", ".jpeg", ".png")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT and not p.name.startswith(".")
                  and p.is_file() and not p.is_symlink())


def _recorded_names(folder: Path) -> set[str]:
    return {Path(str(r.get("path"))).name for r in runlog.read(folder, warn=False) if r.get("path")}


def record_from_image(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> dict | None:
    """Append the run-log record an image carries in its own metadata (status ok, its path,
    `recovered: true`) to `folder`'s run log (default: the image's folder); the record, or
    None when the image carries none (not a fluxnb image, or unreadable)."""
    path = Path(path)
    try:
        meta = read_metadata(path)[JSON_KEY]
    except FluxnbError:
        return None
    if not meta or meta.get("kind") or not isinstance(meta.get("id"), str) or not meta.get("created_at"):
        return None  # not one image's record (grids carry a `kind`)
    rec = {k: v for k, v in meta.items() if k not in ("settings", "versions")}
    rec.update(path=str(path), status="ok", error="", recovered=True)
    runlog.append(folder if folder is not None else path.parent, rec)
    log.warning("%s had no run-log record (a writer was killed): recorded it from its own metadata", path)
    return rec


def recover_unrecorded(directory: str | os.PathLike) -> list[Path]:
    """Record every fluxnb image in `directory` that has no run-log record; the images recorded."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    known = _recorded_names(folder)
    return [p for p in _images(folder) if p.name not in known and record_from_image(p, folder) is not None]


def tidy_and_recover(directory: str | os.PathLike) -> list[Path]:
    """Remove the temp files of dead writers in `directory`; an image one of them had
    already linked into place (the same file: same inode) and not recorded is recorded
    from its own metadata. The images recorded."""
    folder = Path(directory)
    dead = dead_temp_files(folder)
    if not dead:
        return []
    linked = {}
    for tmp in dead:
        try:
            st = tmp.stat()
        except OSError:
            continue
        if st.st_nlink > 1 and any(ext + "." in tmp.name.lower() for ext in IMAGE_EXT):
            linked[(st.st_dev, st.st_ino)] = tmp
    recovered = []
    if linked:
        known = _recorded_names(folder)
        for p in _images(folder):
            st = p.stat()
            if (st.st_dev, st.st_ino) in linked and p.name not in known and record_from_image(p, folder) is not None:
                recovered.append(p)
    for tmp in dead:
        tmp.unlink(missing_ok=True)
    return recovered
