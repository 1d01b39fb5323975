"""A non-editable install of fluxnb, used from another folder, runs `fluxnb batch` (the batch
notebook and the other data files ship inside the package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT


@pytest.mark.slow
def test_a_plain_install_runs_a_batch_from_another_folder(tiny_model, tmp_path):
    # 1. Install a copy of the checkout's sources (not the checkout itself: the build writes
    #    build/ and *.egg-info beside the sources) into a folder of its own: offline, no deps.
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(ROOT / "fluxnb", src / "fluxnb", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--no-compile", "--quiet", "--target", str(site), str(src)], check=True, timeout=300)
    installed = site / "fluxnb"
    for data in ("runs/batch/batch.ipynb", "config/defaults.yaml"):
        assert (installed / data).is_file(), f"{data} is not in the installed package"
    assert list((installed / "prompt" / "data").iterdir())
    assert not list(installed.rglob("*.pyc"))  # so any bytecode there later was written by a run

    # 2. From another folder, with the installed copy first on the path: which fluxnb, and a batch.
    elsewhere.mkdir()
    (elsewhere / "tiny.yaml").write_text("model: tiny\nprompts: [a red fox in the snow]\nseeds: [1, 2]\n",
                                          encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPATH"] = str(site)
    which = subprocess.run([sys.executable, "-c", "import fluxnb; print(fluxnb.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(which.stdout.strip()) == installed / "__init__.py"
    run = subprocess.run([sys.executable, "-m", "fluxnb", "batch", "tiny.yaml", "--out", "out"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    # 3. The images and the run log are there, made by the installed copy: the report names
    #    its batch notebook, and the kernel that made the images compiled the installed modules.
    out = elsewhere / "out"
    records = [json.loads(line) for line in (out / "runlog.jsonl").read_text(encoding="utf-8").splitlines()]
    images = sorted(out.glob("flux_*.jpg"))
    assert len(images) == 2 and sorted(r["status"] for r in records) == ["ok", "ok"]
    assert {Path(r["path"]).name for r in records} == {p.name for p in images}
    [report] = out.glob("batch_*.ipynb")
    used = json.loads(report.read_text(encoding="utf-8"))["metadata"]["papermill"]["input_path"]
    assert Path(used) == installed / "runs" / "batch" / "batch.ipynb"
    assert list((installed / "image" / "__pycache__").glob("make.*.pyc"))
