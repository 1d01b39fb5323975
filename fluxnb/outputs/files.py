"""Files on disk: image names, and the one atomic write every writer uses.

`write_new` writes a fresh file (a temp file `.NAME.PID.tmp` in the same folder, fsync,
then a hard link that never overwrites: `_1`, `_2`... on a clash). `tidy` removes temp
files whose writer is gone (killed).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from ..errors import FluxnbError, RuntimeFailure


def file_name(seed: int, image_format: str, when: datetime | None = None) -> str:
    when = when or datetime.now()
    return f"flux_{when:%Y%m%d_%H%M%S}_{seed}.{image_format}"


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free



def write_new(directory: str | os.PathLike, name: str, data: bytes) -> Path:
    """Write `data` under `directory/name` atomically (a temp file in the same folder,
    fsync, then a hard link that fails rather than overwrite), adding _1, _2... on a clash.
    Checks free space first; a full disk leaves no partial file."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FluxnbError(f"output_dir {str(folder)!r}: cannot create it ({e.strerror})", field="output_dir",
                          value=str(folder), fix="choose a writable folder with --out") from None
    need = len(data) + 16 * 2**20
    free = _free_bytes(folder)
    if free < need:
        raise RuntimeFailure(f"output_dir {str(folder)!r}: no room on disk ({free // 2**20} MiB free, "
                             f"{need // 2**20} MiB needed)", field="output_dir", value=str(folder),
                             fix="free some space or choose another folder with --out", status="disk_full")
    stem, ext = os.path.splitext(name)
    tmp = folder / f".{stem}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for i in range(10000):
            target = folder / (name if i == 0 else f"{stem}_{i}{ext}")
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                continue
            except OSError as e:  # file systems without hard links: rename if still free
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if target.exists():
                    continue
                os.replace(tmp, target)
                break
        _fsync_dir(folder)
        return target
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise RuntimeFailure(f"output_dir {str(folder)!r}: the disk filled up while writing", field="output_dir",
                                 value=str(folder), fix="free some space or choose another folder with --out",
                                 status="disk_full") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)




def temp_name(folder: Path, name: str) -> Path:
    """The temp file a writer in this process uses for `name` (what `tidy` recognises)."""
    stem = os.path.splitext(name)[0] if not name.startswith(".") else name
    return folder / f".{stem}.{os.getpid()}.tmp"


def pid_alive(pid: int) -> bool:
    """Whether a process is running; a zombie (killed, not yet reaped: a killed parent's
    kernel under an init that does not reap) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def tidy(directory: str | os.PathLike) -> int:
    """Remove temp files (`.NAME.PID.tmp`) left by killed writers whose process is gone."""
    removed = 0
    folder = Path(directory)
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
        m = re.search(r"\.(\d+)\.tmp$", tmp.name)
        if not m:
            continue
        if pid_alive(int(m.group(1))):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def remove_temp_files(directory: str | os.PathLike, pid: int) -> None:
    """Remove the temp files a (dead) writer process `pid` left in `directory`."""
    for tmp in Path(directory).glob(f".*.{pid}.tmp"):
        tmp.unlink(missing_ok=True)
