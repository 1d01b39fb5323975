"""Hardening, class 2 (and `export --since` of class 11): `fluxnb export` zips only regular
files inside the output folder, never through a link, says what it left out, and scrubs
secrets from the text it copies."""

from __future__ import annotations

import json
import os
import zipfile
from datetime import datetime, timezone

import pytest
from support import run_hostile, secrets_in, sentinels

from fluxnb.outputs import runlog

MARK = b"OUTSIDE-THE-FOLDER"


@pytest.fixture
def hostile_run(tmp_path):
    """An output folder holding one real result, records pointing out of it, and links."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for name in ("passwd", "token", "flux_x.png"):
        (outside / name).write_bytes(MARK + b" " + name.encode())
    out = tmp_path / "out"
    (out / "grids").mkdir(parents=True)
    (out / "flux_ok.png").write_bytes(b"\x89PNG a result")
    (out / "grids" / "grid.png").write_bytes(b"\x89PNG a grid")
    now = datetime.now(timezone.utc).isoformat()
    for i, path in enumerate([str(out / "flux_ok.png"), str(outside / "passwd"), "../elsewhere/token",
                              "../../" * 20 + str(outside / "passwd").lstrip("/"), str(out / "link.png"),
                              str(out / "linked" / "flux_x.png"), 12345, "x" * 5000, "bad\0path"]):
        runlog.append(out, {"id": f"r{i}", "path": path, "status": "ok", "created_at": now})
    (out / "link.png").symlink_to(outside / "flux_x.png")
    (out / "linked").symlink_to(outside, target_is_directory=True)
    (out / "grids" / "up.png").symlink_to("../../elsewhere/flux_x.png")
    return out, outside


def _zip_names_and_bytes(path) -> tuple[list[str], bytes]:
    with zipfile.ZipFile(path) as z:
        return z.namelist(), b"".join(z.read(n) for n in z.namelist())


def test_export_keeps_to_the_folder_and_says_what_it_left_out(hostile_run, tmp_path):
    out, outside = hostile_run
    target = tmp_path / "zips" / "run.zip"
    r, _ = run_hostile("export", out, "--out", target, "--json", world=tmp_path, allowed=[target.parent],
                       fails=False, limit=15)
    result = json.loads(r.stdout)
    names, data = _zip_names_and_bytes(target)
    assert MARK not in data
    assert sorted(n.split("/", 1)[1] for n in names) == ["flux_ok.png", "grids/grid.png", "manifest.json",
                                                         "runlog.jsonl"]
    assert not any(".." in n or n.startswith("/") for n in names)
    left = result["left_out"]
    assert any(str(outside / "passwd") in x and "outside the folder" in x for x in left)
    assert "link.png (a link)" in left and "linked (a link)" in left and "grids/up.png (a link)" in left
    assert result["images"] == 2 and result["records"] == 9  # the result and the grid
    manifest = json.loads(zipfile.ZipFile(target).read("run/manifest.json"))
    assert manifest["left_out"] == left


def test_the_summary_line_names_what_was_left_out(hostile_run, tmp_path):
    out, _ = hostile_run
    r, _ = run_hostile("export", out, "--out", tmp_path / "z" / "run.zip", world=tmp_path, allowed=[tmp_path / "z"],
                       fails=False, limit=15)
    assert "left out" in r.stderr and "a link" in r.stderr


def test_a_file_swapped_for_a_link_after_the_choice_is_not_followed(hostile_run, tmp_path, monkeypatch):
    from fluxnb.errors import FluxnbError
    from fluxnb.front import export

    out, outside = hostile_run
    real = export.select

    def swap(folder, since):
        chosen = real(folder, since)
        (out / "flux_ok.png").unlink()
        (out / "flux_ok.png").symlink_to(outside / "passwd")
        return chosen

    monkeypatch.setattr(export, "select", swap)
    with pytest.raises((FluxnbError, OSError)):
        export.export_run(out, out=tmp_path / "swap.zip")
    assert not (tmp_path / "swap.zip").exists()


def test_text_files_and_records_are_scrubbed(tmp_path):
    keys = sentinels()
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text(f"key {keys['ANTHROPIC_API_KEY']} and {keys['HF_TOKEN']}\n")
    (out / "report.ipynb").write_text(json.dumps({"cells": [{"source": keys["HUGGINGFACE_TOKEN"]}]}))
    (out / "runlog.jsonl").write_text(json.dumps({"id": "a", "status": "error", "prompt": keys["HF_TOKEN"],
                                                  "created_at": datetime.now(timezone.utc).isoformat()}) + "\n")
    target = tmp_path / "z" / "run.zip"
    run_hostile("export", out, "--out", target, world=tmp_path, allowed=[target.parent], keys=keys, fails=False,
                limit=15)
    assert not secrets_in(target, keys.values())
    assert b"***" in zipfile.ZipFile(target).read("run/notes.txt")


@pytest.mark.parametrize("since", ["99999999999d", "99999999999999999999w", "1e400d", "9" * 400 + "m",
                                   "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_since_out_of_any_range_is_one_line(since, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    runlog.append(out, {"id": "a", "status": "ok", "path": "", "created_at": "2026-01-01T00:00:00+00:00"})
    r, err = run_hostile("export", out, "--since", since, world=tmp_path, allowed=[out / "exports"])
    assert "since" in err
    assert not (out / "exports").exists() or not os.listdir(out / "exports")
