"""Files on disk: image names, and `write_new`, the no-clobber atomic write of a result.

`write_new` writes a fresh file through `fluxnb.files` (a temp file `.NAME.PID.tmp` in the
same folder, fsync), then hard-links it into place, which fails rather than overwrite:
`_1`, `_2`... on a clash. The overwriting `write_atomic`, the temp-file naming and the
cleaners (`tidy`, `remove_temp_files`) live in `fluxnb.files`, where every layer can reach
them; they are re-exported here for the layers above.
"""

from __future__ import annotations

import errno
import os
import shutil
from datetime import datetime
from pathlib import Path

from ..errors import FluxnbError, RuntimeFailure
from ..files import fsync_dir, write_temp
from ..files import remove_temp_files, tidy

__all__ = ["file_name", "write_new", "tidy", "remove_temp_files"]  # the cleaners: for runs/ (batch, Ray)


def file_name(seed: int, image_format: str, when: datetime | None = None) -> str:
    when = when or datetime.now()
    return f"flux_{when:%Y%m%d_%H%M%S}_{seed}.{image_format}"


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def write_new(directory: str | os.PathLike, name: str, data: bytes) -> Path:
    """Write `data` under `directory/name` atomically (a temp file in the same folder,
    fsync, then a hard link that fails rather than overwrite), adding _1, _2... on a clash.
    Checks free space first; a full disk leaves no partial file."""
    # 1. The folder, and room in it.
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
    # 2. The temp file, then the first free name linked to it (never an existing file replaced).
    stem, ext = os.path.splitext(name)
    tmp = None
    try:
        tmp = write_temp(folder / name, data)
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
                tmp = None
                break
        else:
            raise FileExistsError(f"{folder / name}: 10000 files of that name already")
        fsync_dir(folder)
        return target
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise RuntimeFailure(f"output_dir {str(folder)!r}: the disk filled up while writing", field="output_dir",
                                 value=str(folder), fix="free some space or choose another folder with --out",
                                 status="disk_full") from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise RuntimeFailure(f"output_dir {str(folder)!r}: not writable ({e.strerror})", field="output_dir",
                                 value=str(folder), fix="choose a folder you can write in with --out") from None
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
