"""Hardening, classes 10 and 12 (the token): `fluxnb lab --stop/--status` identify the server by
its process's start time (and, without one, by the server answering with fluxnb's token),
never by a substring, so a stale state never stops another process; a JupyterLab token under
32 characters is refused, and a short saved one is never reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from support import run_cli, run_hostile, sentinels


@pytest.fixture
def decoy():
    """An unrelated process whose command line says "jupyterlab"."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "jupyterlab", "--ServerApp.port=1"])
    time.sleep(0.2)
    yield p
    p.kill()
    p.wait()


def _state(tmp_path, **state):
    path = tmp_path / "cache" / "lab" / "server.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state) if isinstance(state, dict) and "raw" not in state else state["raw"])
    return path


def _env(tmp_path):
    return {"FLUXNB_CACHE_DIR": str(tmp_path / "cache"), "JUPYTER_PASSWORD": ""}


@pytest.mark.parametrize("start", ["1", None, "wrong"])
def test_a_stale_state_never_stops_another_process(start, decoy, tmp_path):
    state = {"pid": decoy.pid, "ip": "127.0.0.1", "port": 9, "url": "http://127.0.0.1:9", "root_dir": str(tmp_path)}
    if start is not None:
        state["process_start"] = start
    path = _state(tmp_path, **state)
    status = run_cli("lab", "--status", "--json", env=_env(tmp_path), timeout=60)  # exit 1: not running
    assert status.returncode == 1 and json.loads(status.stdout) == {"running": False, "stale": True}
    r, _ = run_hostile("lab", "--stop", world=tmp_path, allowed=[tmp_path / "cache"], env=_env(tmp_path), fails=False)
    assert "no JupyterLab started by fluxnb is running" in r.stdout
    assert decoy.poll() is None and not path.exists()


@pytest.mark.parametrize("raw", ["[1, 2]", '{"pid": "abc", "port": 1}', '{"pid": 1e30, "port": 8888}',
                                 '{"pid": 99999999999999999999999, "port": 8888}', '{"port": 8888}', "not json",
                                 '{"pid": -1, "port": 8888}'])
def test_a_damaged_state_is_no_server(raw, tmp_path):
    path = _state(tmp_path, raw=raw)
    r, _ = run_hostile("lab", "--stop", world=tmp_path, allowed=[tmp_path / "cache"], env=_env(tmp_path), fails=False)
    assert "no JupyterLab" in r.stdout and not path.exists()


def test_the_start_time_is_what_identifies_it(decoy, tmp_path, monkeypatch):
    from fluxnb.front import labserver

    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    start = labserver.process_start(decoy.pid)
    assert start and start.isdigit() and labserver.process_start(os.getpid()) != start
    state = {"pid": decoy.pid, "ip": "127.0.0.1", "port": 9}
    assert labserver.identify({**state, "process_start": start})
    assert not labserver.identify({**state, "process_start": str(int(start) + 1)})
    assert not labserver.identify(state)  # no start time: only a server answering with our token counts
    assert not labserver.identify({"pid": os.getpid(), "ip": "127.0.0.1", "port": 9,
                                   "process_start": labserver.process_start(os.getpid())})  # not a JupyterLab


@pytest.mark.parametrize("name", ["JUPYTER_TOKEN", "JUPYTER_PASSWORD"])
def test_a_short_token_is_refused_and_never_saved(name, tmp_path):
    weak = "short-but-not-empty-12345"
    keys = {k: v for k, v in sentinels().items() if k != "JUPYTER_TOKEN"}
    r, err = run_hostile("lab", "--no-browser", "--port", "1", world=tmp_path, allowed=[tmp_path / "cache"], keys=keys,
                         env={**_env(tmp_path), name: weak})
    assert f"{name} is {len(weak)} characters" in err and "at least 32" in err and weak not in r.stderr
    assert not (tmp_path / "cache" / "lab" / "token").exists()


def test_a_short_saved_token_is_replaced(tmp_path, monkeypatch):
    from fluxnb.front import labtoken

    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    monkeypatch.delenv("JUPYTER_PASSWORD", raising=False)
    labtoken.write_private(labtoken.token_file(), "weak-saved-token")
    t = labtoken.resolve_token()
    assert t.source == "generated" and t.new and len(t.value) >= labtoken.MIN_LENGTH
    assert labtoken.token_file().read_text() == t.value
