"""Ctrl-C on `fluxnb generate`, `sweep` and `batch` during a long tiny-model run: exit 130,
one `error: interrupted` line, no partial file, and an `interrupted` record with the step
reached. The signal goes to the whole process group, as a terminal's Ctrl-C does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import BIN

HOOKS = Path(__file__).parent / "interrupt_hooks"
LONG = ["--model", "tiny", "--steps", "150", "--size", "256x256"]


def interrupt(args, ready: str, after: float, tmp_path):
    """Run `fluxnb ARGS`; once its output matches the pattern `ready` (`[step N ended]`
    lines come from tests/interrupt_hooks), wait `after` seconds and Ctrl-C it."""
    env = dict(os.environ, FLUXNB_TEST_STEP_MARKS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([str(BIN / "fluxnb"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=tmp_path, env=env)
    chunks: list = []

    def read():
        while True:
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                return
            chunks.append(data.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not re.search(ready, "".join(chunks)):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(chunks)
        time.sleep(0.05)
    time.sleep(after)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(60)
    reader.join(10)
    return rc, "".join(chunks)


def records(out):
    return [json.loads(line) for line in (out / "runlog.jsonl").read_text().splitlines() if line.strip()]


def made_files(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(("flux_", "sweep_")) or p.name.endswith(".tmp"))


@pytest.mark.parametrize("command", ["generate", "sweep"])
def test_ctrl_c_stops_generate_and_sweep_cleanly(tiny_model, tmp_path, command):
    out = tmp_path / "out"
    args = ["generate", "a fox", *LONG, "--seed", "3"] if command == "generate" else \
        ["sweep", "a fox", *LONG, "--seeds", "1,2"]
    rc, printed = interrupt([*args, "--out", str(out)], r"\[step 2 ended\]", 0.0, tmp_path)
    assert rc == 130 and "error: interrupted" in printed and "Traceback" not in printed, printed
    assert made_files(out) == []
    recs = records(out)
    assert recs and all(r["status"] == "interrupted" and 2 <= r["step"] < 150 for r in recs), recs
    assert recs[0]["error"] == f"interrupted at step {recs[0]['step']}"


def test_ctrl_c_stops_a_batch_cleanly(tiny_model, tmp_path):
    out = tmp_path / "out"
    params = tmp_path / "long.yaml"
    params.write_text("batch_name: long\nmodel: tiny\nprompts:\n  - a lighthouse\nseeds: [1, 2]\nsteps: 150\n"
                      "size: 256x256\nimage_format: png\n")
    rc, printed = interrupt(["batch", str(params), "--out", str(out)], r"\[step 2 ended\]", 0.0, tmp_path)
    assert rc == 130 and "error: interrupted" in printed, printed
    assert made_files(out) == []
    recs = records(out)
    assert [r["status"] for r in recs] == ["interrupted"] and 2 <= recs[0]["step"] < 150, recs
