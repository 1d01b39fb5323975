"""`fluxnb export`: a zip of a run's images, run log and grids; --since; atomic; clear errors."""

from __future__ import annotations

import json
import os
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest


@pytest.fixture
def run_dir(tiny_model, outdir):
    """Two real tiny images, a failed attempt, an old image, a grid, a batch report, and litter."""
    import fluxnb
    from fluxnb import runlog

    made = fluxnb.generate("a lighthouse at dusk", model="tiny", size="64x64", steps=1, seed=7, count=2,
                           output_dir=str(outdir), progress=False)
    runlog.append(outdir, {"id": "x1", "path": "", "status": "error", "error": "boom", "prompt": "p",
                           "created_at": datetime.now(timezone.utc).isoformat()})
    old = outdir / "flux_20200101_000000_1.jpg"
    old.write_bytes(made[0].path.read_bytes())
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    runlog.append(outdir, {"id": "old", "path": str(old), "status": "ok", "seed": 1,
                           "created_at": (datetime.now(timezone.utc) - timedelta(days=10)).isoformat()})
    (outdir / "grids").mkdir()
    (outdir / "grids" / "grid_seed_x_guidance.png").write_bytes(b"\x89PNG fake grid")
    (outdir / "batch_report.ipynb").write_text("{}")
    (outdir / ".flux_x.123.tmp").write_bytes(b"half an image")
    (outdir / "notes.bin").write_bytes(b"not a result")
    return outdir, made


def _names(path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        return sorted(z.namelist())


def test_export_zips_images_log_and_grids(run_dir, capsys):
    from fluxnb.front import cli

    outdir, made = run_dir
    target = outdir.parent / "run.zip"
    assert cli.main(["export", str(outdir), "--out", str(target), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["path"] == str(target) and result["images"] == 4 and result["records"] == 4
    names = _names(target)
    top = "run/"
    for item in made:
        assert top + item.path.name in names
    assert top + "flux_20200101_000000_1.jpg" in names
    assert top + "grids/grid_seed_x_guidance.png" in names and top + "batch_report.ipynb" in names
    assert top + "runlog.jsonl" in names and top + "manifest.json" in names
    assert not any(".tmp" in n or n.endswith("notes.bin") for n in names)
    with zipfile.ZipFile(target) as z:
        assert z.read(top + made[0].path.name) == made[0].path.read_bytes()
        records = [json.loads(line) for line in z.read(top + "runlog.jsonl").decode().splitlines()]
        assert {r["status"] for r in records} == {"ok", "error"} and len(records) == 4
        manifest = json.loads(z.read(top + "manifest.json"))
        assert manifest["images"] == 4 and manifest["records"] == 4
        assert z.getinfo(top + made[0].path.name).compress_type == zipfile.ZIP_STORED  # jpgs are not recompressed
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".run.zip")]


def test_export_since_keeps_only_the_window(run_dir):
    from fluxnb.front.export import export_run

    outdir, made = run_dir
    res = export_run(outdir, since="1d")
    names = _names(res.path)
    assert res.images == 3 and res.records == 3
    assert not any("flux_20200101_000000_1" in n for n in names)
    # The default target is in the folder's exports/, and a second export leaves the first out.
    assert Path(res.path).parent == outdir / "exports"
    res2 = export_run(outdir, since="today")
    assert Path(res2.path) != Path(res.path) and not any(n.endswith(".zip") for n in _names(res2.path))
    assert res2.images == 3


def test_parse_since_formats_and_errors():
    from fluxnb.errors import FluxnbError
    from fluxnb.front.export import parse_since

    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    assert parse_since("90m", now=now) == now - timedelta(minutes=90)
    assert parse_since("12h", now=now) == now - timedelta(hours=12)
    assert parse_since("7d ago", now=now) == now - timedelta(days=7)
    assert parse_since("2026-11-24T10:30+00:00") == datetime(2026, 11, 24, 10, 30, tzinfo=timezone.utc)
    assert parse_since("2026-11-20").tzinfo is not None
    assert parse_since("yesterday", now=now) < parse_since("today", now=now) <= now
    assert parse_since(None) is None
    with pytest.raises(FluxnbError, match="since 'last tuesday': not a date") as e:
        parse_since("last tuesday")
    assert e.value.field == "since"


def test_export_errors_leave_no_file(run_dir, tmp_path, capsys, monkeypatch):
    from fluxnb.front import cli, export

    outdir, _ = run_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["export", str(empty), "--out", str(tmp_path / "e.zip")]) == 2
    assert "nothing to export" in capsys.readouterr().err and not (tmp_path / "e.zip").exists()
    assert cli.main(["export", str(tmp_path / "missing")]) == 2
    assert cli.main(["export", str(outdir), "--since", "soonish"]) == 2
    assert "since 'soonish'" in capsys.readouterr().err
    assert cli.main(["export", str(outdir), "--out", str(tmp_path / "x.tar")]) == 2
    # A failure in the middle of writing: no zip, no temporary file.
    real = export.add_file
    calls = []

    def failing(*a, **k):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(export, "add_file", failing)
    target = tmp_path / "zips" / "run.zip"
    assert cli.main(["export", str(outdir), "--out", str(target)]) == 1
    assert "disk filled up" in capsys.readouterr().err
    assert list(target.parent.iterdir()) == []
    # An existing export is replaced whole, never half-written.
    monkeypatch.setattr(export, "add_file", real)
    target.write_bytes(b"old")
    assert export.export_run(outdir, out=target).images == 4
    assert zipfile.is_zipfile(target)
