"""Hardening, class 12 (generate's tidy): a writer killed between linking its image into
place and cleaning up leaves a hidden hard link and an image without a record; the next
writer's `tidy_and_recover` removes the temp file and records the image from its own
metadata (`recovered: true`); `recover_unrecorded` does it for any image without a record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from fluxnb.outputs import runlog
from fluxnb.outputs.recover import recover_unrecorded, tidy_and_recover

CHILD = """
import json, os, signal, sys
from PIL import Image
from fluxnb.outputs.files import write_new
from fluxnb.outputs.metadata import encode

meta = json.load(open(sys.argv[2]))
real_link = os.link


def link_then_die(src, dst, *a, **k):  # killed between the link and the clean-up
    real_link(src, dst, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)


os.link = link_then_die
write_new(sys.argv[1], "flux_20260101_000000_%d.%s" % (meta["seed"], sys.argv[3]),
          encode(Image.new("RGB", (64, 64)), meta, sys.argv[3]))
"""


@pytest.fixture
def made(tiny_model, tmp_path):
    import fluxnb

    [r] = fluxnb.generate("a fox in the snow", model="tiny", steps=1, seed=21, output_dir=str(tmp_path / "first"),
                          progress=False)
    return r


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_a_kill_between_link_and_clean_up_is_tidied_and_recorded(fmt, made, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(json.dumps(made.metadata, default=str))
    child = subprocess.run([sys.executable, "-c", CHILD, str(out), str(meta_file), fmt], capture_output=True)
    assert child.returncode == -signal.SIGKILL
    image = out / f"flux_20260101_000000_21.{fmt}"
    [tmp] = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert image.is_file() and tmp.stat().st_ino == image.stat().st_ino and runlog.read(out) == []

    assert tidy_and_recover(out) == [image]
    assert sorted(p.name for p in out.iterdir()) == sorted([image.name, runlog.FILE_NAME])
    [rec] = runlog.read(out)
    assert rec["recovered"] is True and rec["status"] == "ok" and rec["path"] == str(image)
    assert (rec["id"], rec["seed"], rec["prompt"]) == (made.record["id"], 21, "a fox in the snow")
    assert runlog.ok_paths(out) == {rec["id"]: rec}  # batch and sweep reruns now skip it
    assert tidy_and_recover(out) == [] and recover_unrecorded(out) == [] and len(runlog.read(out)) == 1


def test_a_live_writers_temp_file_is_left_alone(made, tmp_path):
    out = made.path.parent
    live = out / f".{made.path.name}.{os.getpid()}.tmp"
    os.link(made.path, live)
    assert tidy_and_recover(out) == [] and live.exists()
    dead = out / f".{made.path.name}.999999999.tmp"
    os.link(made.path, dead)
    assert tidy_and_recover(out) == [] and not dead.exists()  # its image has a record already


def test_images_without_a_record_are_recovered_once(made, tmp_path):
    import fluxnb

    out = made.path.parent
    (out / "flux_20260101_000000_99.jpg").write_bytes(made.path.read_bytes())  # a copy: no record
    (out / "foreign.png").write_bytes(b"\x89PNG not an image")
    (out / ".hidden.jpg").write_bytes(made.path.read_bytes())
    fluxnb.sweep("a fox", model="tiny", steps=1, seeds="1,2", out=out, progress=False)  # grids are not images
    before = len(runlog.read(out))
    assert recover_unrecorded(out) == [out / "flux_20260101_000000_99.jpg"]
    assert len(runlog.read(out)) == before + 1 and recover_unrecorded(out) == []


def test_fluxnb_generate_tidies_and_recovers_first(made, tmp_path):
    from support import run_hostile

    out = tmp_path / "out"
    out.mkdir()
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(json.dumps(made.metadata, default=str))
    subprocess.run([sys.executable, "-c", CHILD, str(out), str(meta_file), "jpg"], capture_output=True)
    assert any(p.name.endswith(".tmp") for p in out.iterdir())
    run_hostile("generate", "a hare", "--model", "tiny", "--steps", "1", "--seed", "2", "--out", out, world=tmp_path,
                allowed=[out], fails=False, limit=120)
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    records = runlog.read(out)
    assert [r.get("recovered", False) for r in records] == [True, False]
    assert records[0]["id"] == made.record["id"] and records[1]["prompt"] == "a hare"
