"""The one atomic write: every file fluxnb writes appears whole or not at all.

A writer writes into a temp file beside the target, named `.NAME.PID.tmp` (PID: the
writing process; `.NAME.N.PID.tmp` when that name is taken), fsyncs it, then renames it
onto the target (`write_atomic`, which overwrites) or hard-links it there
(`outputs.files.write_new`, which never does), and fsyncs the folder. A kill -9 at any
moment leaves the old file or the new one, and at worst a temp file whose process is gone:
`tidy` removes those, `remove_temp_files` those of one dead process.

Any layer may import this module (like errors and logs): it imports nothing of fluxnb's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO, Callable, Union

# What to write: bytes, text (written as UTF-8), or a writer called with the open binary
# temp file (for streamed content: a zip, a DataFrame's CSV or Parquet).
Content = Union[bytes, str, Callable[[BinaryIO], object]]
_TEMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def temp_name(path: str | os.PathLike, n: int = 0) -> Path:
    """The temp file this process writes `path` through (the `n`-th when others are taken)."""
    path = Path(path)
    return path.with_name(f".{path.name}{f'.{n}' if n else ''}.{os.getpid()}.tmp")


def write_temp(path: str | os.PathLike, content: Content, *, mode: int | None = None) -> Path:
    """Write `content` into a fresh temp file beside `path`, fsynced, and return it (the
    caller renames or links it into place). `mode`: its permission bits (e.g. 0o600),
    whatever the umask; by default those of a new file. Nothing is left on failure."""
    # 1. A name of our own: created exclusively, so two writers in this process never share one.
    for n in range(1000):
        tmp = temp_name(path, n)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is not None else 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path}: no free temp file name beside it")
    # 2. Write, fsync; on any failure (a full disk, an interrupt) remove the temp file.
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename a complete, fsynced temp file (or folder) onto `target` and make the rename
    durable (fsync the folder)."""
    os.replace(tmp, target)
    fsync_dir(Path(target).parent)
    return Path(target)


def write_atomic(path: str | os.PathLike, content: Content, *, mode: int | None = None) -> Path:
    """Write `path` atomically, replacing what is there: a reader sees the old file or the
    new one, never a part of one. `content`: bytes, text (UTF-8), or a writer called with the
    open binary temp file. `mode`: permission bits (0o600 for a private file). The folder
    must exist. An error (a full disk, an exception in the writer) leaves no temp file."""
    tmp = write_temp(path, content, mode=mode)
    try:
        return commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # only then: once renamed, the name may be another writer's
        raise


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or link in `folder` durable; quietly nothing where folders cannot be synced."""
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


def pid_alive(pid: int) -> bool:
    """Whether process `pid` is running; a zombie (killed, not yet reaped: a killed parent's
    kernel under an init that does not reap) counts as gone, and so does a pid under 1."""
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def dead_temp_files(directory: str | os.PathLike) -> list[Path]:
    """The temp files (`.NAME.PID.tmp`) in `directory` whose writer is gone (killed)."""
    folder = Path(directory)
    out = []
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
        m = _TEMP.match(tmp.name)
        if m and not pid_alive(int(m.group(1))):
            out.append(tmp)
    return out


def tidy(directory: str | os.PathLike) -> int:
    """Remove the temp files (`.NAME.PID.tmp`) in `directory` whose writer is gone (killed);
    how many."""
    dead = dead_temp_files(directory)
    for tmp in dead:
        tmp.unlink(missing_ok=True)
    return len(dead)


def remove_temp_files(directory: str | os.PathLike, pid: int) -> None:
    """Remove the temp files a (dead) writer process `pid` left in `directory`."""
    for tmp in Path(directory).glob(f".*.{pid}.tmp"):
        tmp.unlink(missing_ok=True)
