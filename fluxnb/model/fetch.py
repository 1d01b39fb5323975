"""Fetching a hub model once, with its checks (`fluxnb model fetch`, run by runpod_setup.sh).

The same download as `hf download REPO --include <pipeline.ALLOW_PATTERNS>` (the Hugging
Face client's snapshot_download), with what a pod start needs around it:

1. the token from HF_TOKEN (environment or config.env) or the client's token file, never shown;
2. access asked first, so a missing token, a refused token and a licence not accepted each
   get their own message before anything is downloaded;
3. free space checked against what is left to fetch (FLUX.1-dev: about 32 GB);
4. an interrupted download resumes (the client keeps its partial files);
5. every finished file checked against the hub's size and checksum (sha256 for large files);
   a bad file is removed, so the next run fetches it again;
6. the result remembered, so a rerun answers in a second without the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import FluxnbError, RuntimeFailure
from ..files import write_atomic
from .hub import find_token, free_bytes, gb, hub_cache, hub_error, repo_folder
from ..config.settings import normalize_model

log = logging.getLogger(__name__)

MARGIN_BYTES = 2 * 2**30   # kept free beyond the files themselves


@dataclass
class FetchResult:
    model: str
    path: str
    revision: str = ""
    files: int = 0
    bytes: int = 0
    downloaded_bytes: int = 0
    verified: str = ""          # "sha256", "size", or "" (a local folder or the tiny model)
    cached: bool = False        # nothing had to be fetched
    elapsed_s: float = 0.0
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _marker(repo_id: str) -> Path:
    from ..config.environment import cache_dir

    return cache_dir() / "fetched" / (repo_id.replace("/", "--") + ".json")



def verified_snapshot(repo_id: str) -> FetchResult | None:
    """The fetched and verified snapshot of `repo_id` if it is still complete on disk (no network)."""
    try:
        mark = json.loads(_marker(repo_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    snap = Path(mark.get("path", ""))
    files = mark.get("files") or {}
    if not files or not snap.is_dir():
        return None
    for rel, size in files.items():
        try:
            if (snap / rel).stat().st_size != size:
                return None
        except OSError:
            return None
    return FetchResult(model=repo_id, path=str(snap), revision=mark.get("revision", ""), files=len(files),
                       bytes=sum(files.values()), verified=mark.get("verified", ""), cached=True)


# ---------------------------------------------------------------------------------------
# Fetch
# ---------------------------------------------------------------------------------------

def fetch(model: str, *, verify: str = "sha256", min_free_bytes: int | None = None) -> FetchResult:
    """Make `model` available locally: a hub id is downloaded (with the checks in the module
    notes), `tiny` is built, a local folder is checked. verify: "sha256" or "size"."""
    # 1. What to fetch.
    t0 = time.perf_counter()
    model = normalize_model(model)
    if verify not in ("sha256", "size"):
        raise FluxnbError(f"verify {verify!r}: unknown", field="verify", value=verify, fix="use sha256 or size")
    if model == "tiny":
        from .testmodel import ensure_tiny
        return FetchResult(model=model, path=str(ensure_tiny()), cached=True,
                           notes=["the tiny random-weight test model: its images are noise"])
    from .hub import looks_like_hub_id

    local = Path(os.path.expanduser(model))
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise FluxnbError(f"model {model!r}: the folder has no model_index.json", field="model", value=model,
                              fix="point at a folder written by save_pretrained or fluxnb model build")
        return FetchResult(model=model, path=str(local), cached=True)
    if not looks_like_hub_id(model):
        raise FluxnbError(f"model {model!r}: not a hub id (owner/name), an existing folder or tiny", field="model",
                          value=model, fix="use e.g. black-forest-labs/FLUX.1-dev")

    # 2. Already fetched and verified, and still complete? Then no network at all.
    done = verified_snapshot(model)
    if done is not None:
        done.elapsed_s = round(time.perf_counter() - t0, 3)
        log.info("%s: already downloaded and verified (%s, %d files, %s)", model, done.path, done.files,
                 gb(done.bytes))
        return done

    # 3. Ask the hub: access first, then the files to fetch.
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    from .hub import ALLOW_PATTERNS

    token, source = find_token()
    log.info("%s: HF token %s", model, f"from {source}" if token else "not found")
    api = HfApi()
    auth = token if token else False
    try:
        api.auth_check(model, token=auth)
        info = api.model_info(model, token=auth)
        remote = {f.path: f for f in api.list_repo_tree(model, recursive=True, revision=info.sha, token=auth)
                  if isinstance(f, RepoFile)}
    except Exception as e:  # noqa: BLE001 - every hub error becomes a message with a fix
        raise hub_error(e, model, source if token else "") from None
    wanted = {p: remote[p] for p in filter_repo_objects(list(remote), allow_patterns=ALLOW_PATTERNS)}
    if not wanted:
        raise FluxnbError(f"model {model!r}: no diffusers pipeline files on the hub ({', '.join(ALLOW_PATTERNS)})",
                          field="model", value=model, fix="use a diffusers-format FLUX model")
    total = sum(f.size for f in wanted.values())

    # 4. Room on disk for what is still missing.
    snap = repo_folder(model) / "snapshots" / info.sha
    have = sum(f.size for p, f in wanted.items() if _size(snap / p) == f.size)
    need = total - have
    free = free_bytes(hub_cache())
    reserve = MARGIN_BYTES if min_free_bytes is None else min_free_bytes
    if need and free < need + reserve:
        raise RuntimeFailure(f"model {model!r}: not enough free space in {hub_cache()}: {gb(need)} still to "
                             f"download (of {gb(total)}) and {gb(free)} free", field="model", value=model,
                             status="disk_full", fix=f"free at least {gb(need + reserve - free)} (or use a bigger "
                                                     "volume: FLUX.1-dev needs about 35 GB) and rerun")

    # 5. Download (an interrupted one resumes from the client's partial files).
    if need:
        log.info("%s: downloading %s of %s into %s (like: hf download %s --include %s)", model, gb(need),
                 gb(total), hub_cache(), model, " ".join(ALLOW_PATTERNS))
    try:
        path = Path(snapshot_download(model, revision=info.sha, allow_patterns=ALLOW_PATTERNS, token=auth))
    except Exception as e:  # noqa: BLE001
        raise hub_error(e, model, source if token else "") from None

    # 6. Verify every file; remove bad ones so the next run fetches them again.
    bad = verify_files(path, wanted, hashes=verify == "sha256")
    if bad:
        for rel in bad:
            _remove(path / rel)
        raise RuntimeFailure(f"model {model!r}: {len(bad)} file(s) failed verification ({', '.join(bad[:4])}"
                             f"{'...' if len(bad) > 4 else ''}) and were removed", field="model", value=model,
                             fix="rerun to download them again")

    # 7. Remember it.
    result = FetchResult(model=model, path=str(path), revision=info.sha, files=len(wanted), bytes=total,
                         downloaded_bytes=need, verified=verify, cached=need == 0,
                         elapsed_s=round(time.perf_counter() - t0, 3))
    mark = _marker(model)
    mark.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(mark, json.dumps({"model": model, "path": str(path), "revision": info.sha, "verified": verify,
                                   "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "files": {p: f.size for p, f in wanted.items()}}, indent=1))
    log.info("%s: %d files, %s, verified (%s) in %s", model, len(wanted), gb(total), verify, path)
    return result


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _remove(path: Path) -> None:
    """Remove a cached file: the snapshot link and the blob it points at."""
    try:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
    except OSError:
        pass


def file_digest(path: Path, algorithm: str) -> str:
    """sha256 of a file, or git's blob sha1 (what the hub lists for small files)."""
    h = hashlib.sha256() if algorithm == "sha256" else hashlib.sha1()  # noqa: S324 - git's blob id
    if algorithm == "git-sha1":
        h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def verify_files(folder: Path, wanted: dict, *, hashes: bool = True) -> list[str]:
    """The relative paths in `wanted` ({path: hub RepoFile}) that are missing, of the wrong
    size, or (hashes=True) with the wrong checksum. Large files are hashed in parallel."""
    def check(item) -> str | None:
        rel, f = item
        p = folder / rel
        if _size(p) != f.size:
            return rel
        if not hashes:
            return None
        lfs = getattr(f, "lfs", None)
        sha = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
        expected, algorithm = (sha, "sha256") if sha else (getattr(f, "blob_id", None), "git-sha1")
        if expected and file_digest(p, algorithm) != str(expected).lower():
            return rel
        return None

    workers = min(8, max(1, (os.cpu_count() or 2)))
    with ThreadPoolExecutor(workers) as pool:
        return sorted(r for r in pool.map(check, sorted(wanted.items(), key=lambda kv: -kv[1].size)) if r)
