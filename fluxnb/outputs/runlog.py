"""The append-only run log: one JSON line per image and per failed attempt.

`runlog.jsonl` in the output folder. Each record is written with one `write` under an
exclusive lock and fsynced, so two processes never interleave and a kill -9 loses no
completed record. A torn last line (a kill in mid-write) is skipped with a warning, and
the next append starts on a fresh line, so it never spoils the records after it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "runlog.jsonl"
# The run-log schema: the columns of every image's record (more may follow), in order, with
# their pandas types. `image.record.base_record` fills the ones known before an image is made
# (a column named after a setting takes the setting's value); the path adds the timings, and
# sweeps and batches their ids.
COLUMNS = {
    "id": "string", "path": "string", "status": "string", "error": "string",
    "prompt": "string", "enhanced_prompt": "string", "clip_prompt": "string", "clip_dropped": "string",
    "t5_prompt": "string", "enhancer": "string", "enhancer_model": "string", "system_prompt_sha256": "string",
    "clip_tokens": "Int64", "t5_tokens": "Int64", "seed": "Int64", "steps": "Int64", "guidance": "float64",
    "width": "Int64", "height": "Int64", "size": "string", "image_format": "string", "jpeg_quality": "Int64",
    "max_sequence_length": "Int64", "model": "string", "model_name": "string", "offload": "string",
    "precision": "string", "device": "string", "dtype": "string", "compile": "boolean",
    "fuse_qkv": "boolean", "attention_backend": "string", "compile_mode": "string", "compile_vae": "boolean",
    "compile_cache": "boolean", "elapsed_s": "float64",
    "load_s": "float64", "enhance_s": "float64", "encode_s": "float64", "denoise_s": "float64", "decode_s": "float64",
    "save_s": "float64", "compile_s": "float64", "created_at": "datetime64[ns, UTC]", "fluxnb_version": "string",
    "sweep_id": "string", "batch_id": "string",
    "task": "string", "init_image": "string", "init_sha256": "string", "mask_sha256": "string", "strength": "float64",
    "loras": "string",
    "step": "Int64",
}
STATUSES = ("ok", "error", "oom", "black", "disk_full", "enhance_failed", "interrupted")


def path_for(directory: str | os.PathLike | None = None) -> Path:
    """The run log of an output folder (or the log file itself); None: the configured
    output_dir (`fluxnb config`)."""
    if directory is None:
        from ..config.settings import resolve

        directory = resolve().output_dir
    p = Path(directory)
    return p if p.name.endswith(".jsonl") else p / FILE_NAME


def append(directory: str | os.PathLike, record: dict) -> None:
    """Append one record durably and atomically with respect to other writers."""
    path = path_for(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..logs import scrub

    line = scrub(json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":")))  # never a secret
    if "\n" in line:  # json.dumps escapes newlines; guard against a custom default
        line = line.replace("\n", "\\n")
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn last line from a killed writer: start afresh
        os.write(fd, data)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read(directory: str | os.PathLike | None = None, *, warn: bool = True) -> list[dict]:
    """Every readable record, in order, its known columns coerced to their types
    (`coerce`). Torn, corrupt or not-an-object lines are skipped, and values of a column
    that cannot be read as its type are dropped (None), with one warning for the lot."""
    path = path_for(directory)
    if not path.is_file():
        return []
    records, bad, dropped = [], [], 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError, RecursionError):
                bad.append(n)
                continue
            rec, lost = coerce(rec)
            dropped += lost
            records.append(rec)
    if (bad or dropped) and warn:
        parts = []
        if bad:
            parts.append(f"skipped {len(bad)} unreadable line(s) ({', '.join(map(str, bad[:5]))}"
                         f"{'...' if len(bad) > 5 else ''}: a write cut short by a kill, or not a record)")
        if dropped:
            parts.append(f"dropped {dropped} value(s) not of their column's type")
        log.warning("%s: %s", path, "; ".join(parts))
    return records


_INT64 = 2**63


def coerce(rec: dict) -> tuple[dict, int]:
    """(the record with each known column read as its type or None, how many were dropped).
    Whole numbers: ints (or whole floats) within int64; numbers: finite ints or floats;
    times: ISO 8601 text; booleans: true or false; text: text (a number or a boolean as its
    text). Other keys stay."""
    out, lost = dict(rec), 0
    for col, kind in COLUMNS.items():
        v = rec.get(col)
        if v is None:
            continue
        if kind == "Int64":
            ok = isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v < _INT64
            if not ok and isinstance(v, float) and v.is_integer() and -_INT64 <= v < _INT64:
                v, ok = int(v), True
        elif kind == "float64":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if ok:
                v = float(v)
        elif kind.startswith("datetime"):
            ok = isinstance(v, str) and _iso_time(v)
        elif kind == "boolean":
            ok = isinstance(v, bool)
        else:
            ok = isinstance(v, (str, int, float, bool))
            if ok and not isinstance(v, str):
                v = json.dumps(v) if isinstance(v, bool) else str(v)
        out[col] = v if ok else None
        lost += not ok
    return out, lost


def _iso_time(text: str) -> bool:
    from datetime import datetime

    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def load(directory: str | os.PathLike | None = None):
    """The run log as a pandas DataFrame with typed columns (one row per record)."""
    import pandas as pd

    records = read(directory)
    df = pd.DataFrame.from_records(records)
    for col, dtype in COLUMNS.items():
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype="object")
        if dtype.startswith("datetime"):
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce", format="ISO8601")
        elif dtype == "Int64":
            df[col] = pd.array([r.get(col) for r in records], dtype="Int64")  # ints or None (`coerce`)
        elif dtype == "float64":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        elif dtype == "boolean":
            df[col] = df[col].map(lambda v: v if isinstance(v, bool) else None).astype("boolean")
        else:
            df[col] = df[col].astype("string")
    ordered = list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]
    return df[ordered]


def is_file(path) -> bool:
    """Whether `path` (recorded text) names an existing file; False for names no file can
    have (too long, a NUL byte)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError, TypeError):
        return False


def ok_paths(directory: str | os.PathLike) -> dict[str, dict]:
    """{item id: record} of the items recorded `ok` whose image still exists."""
    out = {}
    for rec in read(directory, warn=False):
        if rec.get("status") == "ok" and rec.get("id") and rec.get("path") and is_file(rec["path"]):
            out[rec["id"]] = rec
    return out


def export(directory: str | os.PathLike | None, target: str | os.PathLike) -> Path:
    """Write the run log as CSV or Parquet (by the target's extension), atomically."""
    return write_table(load(directory), target)


def write_table(df, target: str | os.PathLike) -> Path:
    """Write a run-log DataFrame as CSV or Parquet (by the target's extension), atomically
    (`fluxnb.files.write_atomic`). An unknown extension writes nothing."""
    from ..errors import FluxnbError
    from ..files import write_atomic

    target = Path(target)
    ext = target.suffix.lower()
    if ext not in (".csv", ".parquet"):
        raise FluxnbError(f"export {str(target)!r}: unknown format {ext or '(none)'}", field="export",
                          value=str(target), fix="name a .csv or .parquet file")
    target.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".csv":
        return write_atomic(target, lambda f: df.to_csv(f, index=False))
    return write_atomic(target, lambda f: df.to_parquet(f, index=False))


def summary(directory: str | os.PathLike | None = None) -> str:
    """A short text summary: counts by status, seconds per image, models, last image."""
    import pandas as pd

    path = path_for(directory)
    df = load(path)
    if df.empty:
        return f"{path}: no records"
    lines = [f"{path}: {len(df)} records"]
    counts = df["status"].fillna("(none)").value_counts()
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    ok = df[df["status"] == "ok"]
    if len(ok):
        lines.append(f"  images: {len(ok)}, {ok['elapsed_s'].median():.2f} s median per image "
                     f"({ok['elapsed_s'].sum():.1f} s in all)")
        models = ok["model"].value_counts()
        lines.append("  models: " + ", ".join(f"{k} ({v})" for k, v in models.items()))
        sizes = (ok["width"].astype(str) + "x" + ok["height"].astype(str)).value_counts()
        lines.append("  sizes: " + ", ".join(f"{k} ({v})" for k, v in sizes.head(5).items()))
        span = ok["created_at"].dropna()
        if len(span):
            lines.append(f"  from {span.min():%Y-%m-%d %H:%M} to {span.max():%Y-%m-%d %H:%M} UTC")
        last = ok.iloc[-1]
        lines.append(f"  last: {last['path']} (seed {last['seed']}, {last['steps']} steps, guidance {last['guidance']})")
    failed = df[df["status"] != "ok"]
    for _, row in failed.tail(5).iterrows():
        when = "(no time)" if pd.isna(row["created_at"]) else f"{row['created_at']:%Y-%m-%d %H:%M}"
        lines.append(f"  {row['status']}: {when} {str(row['error'])[:100]}")
    return "\n".join(lines)
