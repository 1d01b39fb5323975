"""`fluxnb pull URL`: the pod's new images, grids, contact sheets and run log, brought home
through the pod's JupyterLab (its contents REST API; see fluxnb.pullclient for the address,
the token and the listing), instead of SSH and download.sh.

- The remote folder (default `outputs` under the lab's root, `/workspace/outputs` on a pod)
  is mirrored into `--to` (default `outputs/`), subfolders included (3 deep at most), hidden
  files and `exports/` left out; only images and results (the extensions `fluxnb export`
  takes) come, each under a size cap (512 MiB unless --max-file-mb).
- A file already here with the same name and size is up to date (images are never rewritten
  on the pod: their names carry the time and the seed). `--verify` also compares sha256
  (computed by the lab) for those, and checks every download against it. A file here of
  another size is replaced when the pod's copy is newer (a batch notebook still being
  written); one changed here since it was pulled is kept, with a warning.
- Each file is streamed into a hidden part file in its folder, fsynced, given the pod's
  modification time, and renamed (`fluxnb.files.commit`, the last step of the one atomic
  write): an interrupted pull leaves no partial file, and the next pull resumes the part
  (an HTTP Range request) or starts it over. The part is named by the pod's version of the
  file (`.NAME.SIZE-MTIME.part`), not by process like the atomic write's temp files, so that
  it outlives the pull that began it and `tidy` leaves it be.
- The pod's run-log records are appended to the local `runlog.jsonl` of the same folder
  unless already there (by item id, time written, status and image name: a retried item has
  several records), with `path` made the local file's and the pod's kept as `pod_path`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import FluxnbError, RuntimeFailure
from ..files import commit
from ..outputs import runlog
from .export import IMAGE_EXT, OTHER_EXT, in_window, parse_since
from .pullclient import TIMEOUT_S, Entry, Lab, NotFound, lab_url, read_token, remote_dir_arg

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_MB = 512
MAX_LINE = 2**20  # one run-log record
CHUNK = 2**20
WANTED = IMAGE_EXT | OTHER_EXT
_PART = re.compile(r"^\.(.+)\.(\d+)-(\d+)\.part$")


@dataclass
class PullResult:
    url: str
    to: str
    fetched: list = field(default_factory=list)   # local paths written (would be, with dry_run)
    bytes: int = 0
    up_to_date: int = 0
    records: int = 0                               # run-log records merged (would be)
    left: list = field(default_factory=list)       # "name: why" for what stayed on the pod
    newest: str | None = None                      # the newest image here after the pull
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would pull" if self.dry_run else "pulled"
        left = f"; {len(self.left)} left on the pod (see the warnings)" if self.left else ""
        return (f"{verb} {len(self.fetched)} file(s) ({self.bytes / 1e6:.1f} MB) from {self.url} into {self.to}, "
                f"{self.up_to_date} already here, {self.records} run-log record(s) "
                f"{'to merge' if self.dry_run else 'merged'}{left}")


def pull(url: str, *, remote_dir: str = "outputs", to: str | os.PathLike = "outputs", since: str | None = None,
         dry_run: bool = False, open_image: bool = False, token_file: str | os.PathLike | None = None,
         verify: bool = False, max_file_mb: float = DEFAULT_MAX_FILE_MB, progress: bool = True,
         timeout: float = TIMEOUT_S) -> PullResult:
    """Bring what is new in the pod's `remote_dir` into `to` (see the module's notes)."""
    # 1. Validate everything before asking for a token.
    base, cutoff, remote_dir = lab_url(url), parse_since(since), remote_dir_arg(remote_dir)
    if not 0 < max_file_mb < 2**30:  # NaN fails too
        raise FluxnbError(f"max-file-mb {max_file_mb}: must be more than 0", field="max-file-mb", value=max_file_mb,
                          fix="e.g. --max-file-mb 2048")
    cap, to = int(max_file_mb * 2**20), Path(to)
    if to.exists() and not to.is_dir():
        raise FluxnbError(f"to {str(to)!r}: not a folder", field="to", value=str(to), fix="give a folder with --to")
    token = read_token(token_file, host=urllib.parse.urlsplit(base).netloc)
    lab = Lab(base, token, timeout=timeout)
    result = PullResult(url=base, to=str(to), dry_run=dry_run)

    # 2. List the remote folder; choose the files to fetch.
    entries, notes = lab.walk(remote_dir)
    result.left += notes
    logs = [e for e in entries if posixpath.basename(e.rel) == runlog.FILE_NAME]
    todo, images = plan(lab, [e for e in entries if e not in logs], to, cutoff, cap, verify, result)
    for note in result.left:
        log.warning("%s", note)

    # 3. Fetch them (a dry run only says what it would fetch).
    result.fetched = [str(to / job.entry.rel) for job in todo]
    result.bytes = sum(job.entry.size for job in todo)
    if not dry_run and todo:
        fetch_all(lab, todo, to, progress)

    # 4. Merge each folder's run log into the local one beside it.
    for e in logs:
        if e.size > cap:
            log.warning("%s: %.0f MiB, over --max-file-mb: its records were not merged", e.rel, e.size / 2**20)
            continue
        result.records += merge_runlog(lab, e, to / posixpath.dirname(e.rel), cutoff, cap, token, dry_run=dry_run)

    # 5. The newest image, opened on request.
    here = [e for e in images if (to / e.rel).is_file()]
    result.newest = str(to / max(here, key=lambda e: e.mtime).rel) if here else None
    if open_image and not dry_run and result.newest:
        open_in_viewer(Path(result.newest))
    elif open_image and not dry_run:
        log.warning("no image to open in %s", to)
    return result


# ---------------------------------------------------------------------------------------
# Choosing what to fetch
# ---------------------------------------------------------------------------------------

@dataclass
class Job:
    entry: Entry
    digest: str | None = None                    # its sha256 on the pod (--verify)
    parts: list = field(default_factory=list)    # part files here from interrupted pulls


def plan(lab: Lab, entries: list[Entry], to: Path, cutoff: datetime | None, cap: int, verify: bool,
         result: PullResult) -> tuple[list[Job], list[Entry]]:
    """(what to fetch, the images in the window); what is left out, and why, goes into
    result.left; files already here count in result.up_to_date."""
    todo, images, folders = [], [], {}
    for e in entries:
        ext = posixpath.splitext(e.rel)[1].lower()
        if ext not in WANTED or (cutoff is not None and e.mtime < cutoff.timestamp()):
            continue
        if ext in IMAGE_EXT:
            images.append(e)
        if e.size > cap:
            result.left.append(f"{e.rel}: {e.size / 2**20:.0f} MiB, over the cap (raise it with --max-file-mb)")
            continue
        folder = (to / e.rel).parent
        here, parts = folders[folder] if folder in folders else folders.setdefault(folder, scan(folder))
        name = posixpath.basename(e.rel)
        why = decide(lab, e, to / e.rel, here, verify)
        if why is None:
            result.up_to_date += 1
        elif why:
            result.left.append(f"{e.rel}: {why}")
        else:
            todo.append(Job(e, lab.file_hash(e.path) if verify else None, parts.get(name, [])))
    return todo, images


def scan(folder: Path) -> tuple[dict[str, os.stat_result | None], dict[str, list[str]]]:
    """A local folder, read once: {name: stat (None: not a plain file)}, and {file name: the
    names of its part files, left by interrupted pulls}."""
    here, parts = {}, {}
    try:
        with os.scandir(folder) as it:
            for d in it:
                here[d.name] = d.stat(follow_symlinks=False) if d.is_file(follow_symlinks=False) else None
                m = _PART.match(d.name)
                if m:
                    parts.setdefault(m.group(1), []).append(d.name)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return here, parts


def decide(lab: Lab, e: Entry, target: Path, here: dict, verify: bool) -> str | None:
    """None: up to date; "": fetch it; else why the file here is kept as it is."""
    if target.name not in here:
        return ""
    st = here[target.name]
    if st is None:
        return f"{target} is not a plain file (left alone)"
    same = st.st_size == e.size
    if same and verify:
        remote = lab.file_hash(e.path)
        same = remote is None or remote == sha256(target)
    if same:
        return None
    if e.mtime > st.st_mtime + 1:
        return ""  # the pod's copy is newer: replace ours
    return f"{target} differs from the pod's and was changed here after it (kept; delete it to pull the pod's)"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------

def fetch_all(lab: Lab, todo: list[Job], to: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=sum(job.entry.size for job in todo), unit="B", unit_scale=True, unit_divisor=1024, desc="pull",
              disable=None if progress else True) as bar:
        for job in todo:
            try:
                fetch(lab, job, to / job.entry.rel, bar.update)
            except NotFound:
                log.warning("%s: removed on the pod while pulling (skipped)", job.entry.rel)


def fetch(lab: Lab, job: Job, target: Path, advance=lambda n: None) -> Path:
    """Stream one file into `target` atomically, resuming the part an interrupted pull left."""
    # 1. This version's part file; parts of other versions of the same file go.
    e, digest = job.entry, job.digest
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{e.size}-{int(e.mtime)}.part")
    for name in job.parts:
        if name != part.name:
            (target.parent / name).unlink(missing_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    offset = offset if 0 < offset < e.size else 0

    # 2. Ask for the rest (Range); a server that sends the whole file starts it over.
    got = offset
    with lab.open(f"files/{e.path}", headers={"Range": f"bytes={offset}-"} if offset else None) as r:
        if offset and not (r.status == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {offset}-")):
            got = 0
        advance(got)
        try:
            with open(part, "ab" if got else "wb") as f:
                while chunk := r.read(CHUNK):
                    got += len(chunk)
                    if got > e.size:
                        break
                    f.write(chunk)
                    advance(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException) as err:
            raise stopped(lab, e, got, f" ({str(err) or type(err).__name__})") from None

    # 3. Check the length (and the sha256), give it the pod's time, rename.
    if got < e.size:
        raise stopped(lab, e, got)
    if got > e.size or (digest and sha256(part) != digest):
        part.unlink(missing_ok=True)  # it changed on the pod meanwhile: the next pull starts over
        raise RuntimeFailure(f"{e.rel}: the pod sent {'more bytes than listed' if got > e.size else 'another sha256'}"
                             " (did it change while pulling?)", field="url", value=lab.url,
                             fix="run the same pull again")
    os.utime(part, (e.mtime, e.mtime))
    return commit(part, target)


def stopped(lab: Lab, e: Entry, got: int, why: str = "") -> RuntimeFailure:
    return RuntimeFailure(f"{e.rel}: the download stopped at {got} of {e.size} bytes{why}", field="url",
                          value=lab.url, fix="run the same pull again: it resumes")


# ---------------------------------------------------------------------------------------
# The run log
# ---------------------------------------------------------------------------------------

def record_key(rec: dict) -> tuple:
    """What makes a record one event: its item id, the moment it was written, its status and
    its image's name (an item made twice, e.g. retried, has two records with one id)."""
    name = posixpath.basename(str(rec.get("path") or "").replace("\\", "/"))
    if rec.get("id") or rec.get("created_at"):
        return str(rec.get("id")), str(rec.get("created_at")), str(rec.get("status")), name
    rest = {k: v for k, v in rec.items() if k not in ("path", "pod_path")}
    return "", json.dumps(rest, sort_keys=True, default=str), "", name


def merge_runlog(lab: Lab, e: Entry, local_dir: Path, cutoff: datetime | None, cap: int, token: str,
                 *, dry_run: bool = False) -> int:
    """Append the pod's records (of the window) that `local_dir`'s run log lacks; how many."""
    # 1. What is here already.
    have = {record_key(r) for r in runlog.read(local_dir, warn=False)}
    base, new, bad, total = local_dir.resolve(), 0, 0, 0
    secret = token.encode() if len(token) >= 6 else b"\0never\0"
    # 2. Stream the pod's log line by line, bounded in all and per line.
    with lab.open(f"files/{e.path}") as r:
        while raw := r.readline(MAX_LINE + 1):
            total += len(raw)
            if total > cap:
                log.warning("%s: over the cap: the rest of its records were not merged", e.rel)
                break
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while (more := r.readline(MAX_LINE)) and not more.endswith(b"\n"):
                    total += len(more)
                bad += 1
                continue
            try:
                rec = json.loads(raw.replace(secret, b"***").decode("utf-8")) if raw.strip() else None
            except (ValueError, UnicodeDecodeError):
                rec, bad = None, bad + 1
            if not isinstance(rec, dict) or record_key(rec) in have or not in_window(rec, cutoff):
                continue
            # 3. The path becomes the local file's; the pod's is kept.
            have.add(record_key(rec))
            if rec.get("path"):
                name = posixpath.basename(str(rec["path"]).replace("\\", "/"))
                rec.setdefault("pod_path", rec["path"])
                rec["path"] = str(base / name) if name not in ("", ".", "..") else ""
            if not dry_run:
                runlog.append(local_dir, rec)
            new += 1
    if bad:
        log.warning("%s: skipped %d unreadable record(s)", e.rel, bad)
    return new


# ---------------------------------------------------------------------------------------
# --open
# ---------------------------------------------------------------------------------------

def viewer_command(path: Path, *, platform: str = sys.platform, proc_version: str | None = None,
                   which=shutil.which) -> list[str] | None:
    """The command that shows `path` in the system's viewer: open (macOS), on WSL wslview or
    the Windows Explorer, else xdg-open; None when there is none."""
    if platform == "darwin":
        return ["open", str(path)]
    if proc_version is None:
        try:
            proc_version = Path("/proc/version").read_text(errors="replace")
        except OSError:
            proc_version = ""
    if "microsoft" in proc_version.lower():  # WSL: the Windows side shows it
        if which("wslview"):
            return ["wslview", str(path)]
        if which("explorer.exe") and which("wslpath"):
            win = subprocess.run(["wslpath", "-w", str(path)], capture_output=True, text=True, timeout=10).stdout
            return ["explorer.exe", win.strip()]
    return ["xdg-open", str(path)] if which("xdg-open") else None


def open_in_viewer(path: Path) -> bool:
    cmd = viewer_command(path.resolve())
    if cmd is None:
        log.warning("no image viewer found (xdg-open, open, wslview): open %s yourself", path)
        return False
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    log.info("opened %s", path)
    return True
