"""The run log: durable appends, torn lines, concurrent writers, typed DataFrame, exports."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from fluxnb import runlog
from fluxnb.errors import FluxnbError


def rec(i, **kw):
    base = {"id": f"id{i}", "path": f"/x/{i}.jpg", "status": "ok", "prompt": f"p{i}", "seed": i, "steps": 4,
            "guidance": 3.5, "width": 64, "height": 64, "model": "tiny", "elapsed_s": 0.5 + i,
            "created_at": f"2026-11-24T10:00:{i:02d}.000+00:00"}
    base.update(kw)
    return base


def test_append_and_read_back(tmp_path):
    for i in range(3):
        runlog.append(tmp_path, rec(i))
    assert [r["seed"] for r in runlog.read(tmp_path)] == [0, 1, 2]
    lines = (tmp_path / "runlog.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["status"] == "ok" for line in lines)


def test_newlines_in_values_stay_on_one_line(tmp_path):
    runlog.append(tmp_path, rec(0, prompt="line one\nline two"))
    assert len((tmp_path / "runlog.jsonl").read_text().splitlines()) == 1
    assert runlog.read(tmp_path)[0]["prompt"] == "line one\nline two"


def test_torn_last_line_is_skipped_with_a_warning_and_spoils_nothing(tmp_path, caplog):
    runlog.append(tmp_path, rec(0))
    with open(tmp_path / "runlog.jsonl", "ab") as f:
        f.write(b'{"id": "half", "status": "o')  # a writer killed mid-record
    runlog.append(tmp_path, rec(1))
    with caplog.at_level(logging.WARNING, logger="fluxnb"):
        got = runlog.read(tmp_path)
    assert [r["id"] for r in got] == ["id0", "id1"]
    assert "skipped 1 unreadable line" in caplog.text


def _writer(directory, n, tag):
    for i in range(n):
        runlog.append(directory, rec(i, id=f"{tag}-{i}", prompt=tag * 300))


def test_concurrent_writers_never_interleave(tmp_path):
    procs = [multiprocessing.Process(target=_writer, args=(tmp_path, 150, t)) for t in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = runlog.read(tmp_path, warn=False)
    assert len(got) == 600
    assert all(r["prompt"] == r["id"][0] * 300 for r in got)
    assert len(open(tmp_path / "runlog.jsonl", "rb").read().splitlines()) == 600


def test_kill_9_loses_no_completed_record(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from fluxnb import runlog
        i = 0
        while True:
            runlog.append({str(tmp_path)!r}, {{"id": str(i), "status": "ok", "prompt": "x" * 5000}})
            print(i, flush=True)
            i += 1
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    done = []
    deadline = time.time() + 60
    while len(done) < 50 and time.time() < deadline:
        done.append(int(p.stdout.readline()))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    ids = [int(r["id"]) for r in runlog.read(tmp_path, warn=False)]
    assert ids[: len(done)] == done  # every record reported done is there, in order
    runlog.append(tmp_path, {"id": "after", "status": "ok"})
    assert runlog.read(tmp_path, warn=False)[-1]["id"] == "after"


def test_dataframe_has_typed_columns(tmp_path):
    runlog.append(tmp_path, rec(1))
    runlog.append(tmp_path, rec(2, status="oom", path="", error="CUDA out of memory", elapsed_s=None))
    df = runlog.load(tmp_path)
    assert len(df) == 2
    assert str(df["seed"].dtype) == "Int64" and str(df["steps"].dtype) == "Int64"
    assert df["guidance"].dtype == "float64" and df["elapsed_s"].dtype == "float64"
    assert isinstance(df["created_at"].dtype, pd.DatetimeTZDtype)
    assert list(df["status"]) == ["ok", "oom"]
    assert pd.isna(df["elapsed_s"].iloc[1])
    assert {"clip_prompt", "t5_prompt", "enhancer"} <= set(df.columns)  # absent in records, present as columns


def test_empty_log_loads_as_empty_frame(tmp_path):
    df = runlog.load(tmp_path)
    assert df.empty and "seed" in df.columns


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_export(tmp_path, ext):
    for i in range(3):
        runlog.append(tmp_path, rec(i))
    out = runlog.export(tmp_path, tmp_path / f"runs{ext}")
    back = pd.read_csv(out) if ext == ".csv" else pd.read_parquet(out)
    assert list(back["seed"]) == [0, 1, 2] and list(back["prompt"]) == ["p0", "p1", "p2"]


def test_export_refuses_unknown_format(tmp_path):
    with pytest.raises(FluxnbError, match=r"\.csv or \.parquet"):
        runlog.export(tmp_path, tmp_path / "runs.xlsx")
    assert not (tmp_path / "runs.xlsx").exists()


def test_summary(tmp_path):
    runlog.append(tmp_path, rec(1))
    runlog.append(tmp_path, rec(2))
    runlog.append(tmp_path, rec(3, status="oom", error="CUDA out of memory"))
    text = runlog.summary(tmp_path)
    assert "3 records" in text and "ok 2" in text and "oom 1" in text and "2.00 s median" in text
    assert "CUDA out of memory" in text
