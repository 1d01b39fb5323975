"""`fluxnb lab`: a real JupyterLab on 127.0.0.1 that always asks for a token, never shows
it on a command line, keeps XSRF and origin checks, and is always stopped by the test."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests
from support import run_cli

TOKEN = "lab-test-token-" + "t" * 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_env(tmp_path, **extra) -> dict:
    env = {"FLUXNB_CACHE_DIR": str(tmp_path / "cache"), "FLUXNB_LOG_DIR": str(tmp_path / "logs"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTER_PASSWORD": ""}
    env.update(extra)
    return env


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _state(tmp_path) -> dict | None:
    p = tmp_path / "cache" / "lab" / "server.json"
    return json.loads(p.read_text()) if p.is_file() else None


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, session_env):
    """A background `fluxnb lab` on a free port, shared by this module's server tests;
    stopped (and its process group killed) whatever happens."""
    tmp_path = tmp_path_factory.mktemp("lab")
    port = _free_port()
    env = _lab_env(tmp_path, JUPYTER_TOKEN=TOKEN)
    env.pop("JUPYTER_PASSWORD")
    nb = tmp_path / "notebooks"
    args = ("lab", "--background", "--ip", "127.0.0.1", "--port", port, "--no-browser", "--notebook-dir", nb)
    r = run_cli(*args, env=env, timeout=180)
    state = _state(tmp_path)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert state and state["port"] == port
        yield {"port": port, "pid": state["pid"], "env": env, "args": args, "start": r, "nb": nb,
               "url": f"http://127.0.0.1:{port}", "dir": tmp_path}
    finally:
        stop = run_cli("lab", "--stop", env=env, timeout=60)
        if state:
            _kill_group(state["pid"])
            assert stop.returncode == 0


@pytest.mark.slow
def test_lab_needs_the_token_and_never_shows_it(lab_server):
    url, tmp_path = lab_server["url"], lab_server["dir"]
    # 1. Unauthenticated and wrong-token requests are refused; the right token works.
    assert requests.get(f"{url}/api/contents", timeout=10).status_code == 403
    assert requests.get(f"{url}/api/contents", headers={"Authorization": "token wrong-token"},
                        timeout=10).status_code == 403
    assert requests.get(f"{url}/api/contents?token=wrong-token", timeout=10).status_code == 403
    ok = requests.get(f"{url}/api/contents", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
    assert ok.status_code == 200
    assert requests.get(f"{url}/api/contents?token={TOKEN}", timeout=10).status_code == 200
    # 2. It serves the notebooks folder.
    (lab_server["nb"] / "hello.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                              "nbformat_minor": 5}))
    listing = requests.get(f"{url}/api/contents/notebooks", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
    assert listing.status_code == 200 and "hello.ipynb" in [c["name"] for c in listing.json()["content"]]
    # 3. The token is on no command line (ps, /proc/*/cmdline) and not in the server's environment.
    ps = subprocess.run(["ps", "-eo", "pid,args", "-ww"], capture_output=True, text=True).stdout
    assert str(lab_server["pid"]) in ps and TOKEN not in ps
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert TOKEN.encode() not in cmdline.read_bytes(), cmdline
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    environ = Path(f"/proc/{lab_server['pid']}/environ").read_bytes()
    assert TOKEN.encode() not in environ and b"JUPYTER_TOKEN=" not in environ
    assert b"JUPYTER_TOKEN_FILE=" in environ
    # 4. Nor in what `fluxnb lab` printed (the token came from the environment), nor in its log.
    start = lab_server["start"]
    assert TOKEN not in start.stdout + start.stderr
    assert f"{url}/lab" in start.stdout and "JUPYTER_TOKEN" in start.stdout
    assert TOKEN not in (tmp_path / "logs" / "jupyterlab.log").read_text()
    token_file = tmp_path / "cache" / "lab" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


@pytest.mark.slow
def test_lab_keeps_xsrf_and_origin_checks(lab_server):
    url = lab_server["url"]
    s = requests.Session()
    # Log in with the token the way a browser does: the login form sets the auth cookie.
    s.get(f"{url}/login", timeout=10)
    xsrf = s.cookies.get("_xsrf")
    assert xsrf
    r = s.post(f"{url}/login", data={"password": TOKEN, "_xsrf": xsrf}, allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303)
    assert s.get(f"{url}/api/contents", timeout=10).status_code == 200  # the cookie works
    # A cookie-authenticated write without the XSRF token is refused; with it, it works.
    assert s.post(f"{url}/api/contents", json={"type": "notebook"}, timeout=10).status_code == 403
    made = s.post(f"{url}/api/contents", json={"type": "notebook"}, headers={"X-XSRFToken": xsrf}, timeout=10)
    assert made.status_code == 201
    # Another site's page cannot use the cookie: no allow_origin=*.
    evil = s.get(f"{url}/api/contents", headers={"Origin": "https://evil.example"}, timeout=10)
    assert evil.status_code in (403, 404)
    assert "Access-Control-Allow-Origin" not in evil.headers


@pytest.mark.slow
def test_lab_again_finds_the_running_one_and_reports_status(lab_server, capsys):
    tmp_path = lab_server["dir"]
    r = run_cli(*lab_server["args"], env=lab_server["env"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"already running (pid {lab_server['pid']})" in r.stdout
    assert _state(tmp_path)["pid"] == lab_server["pid"]
    st = run_cli("lab", "--status", "--json", env=lab_server["env"])
    assert st.returncode == 0 and json.loads(st.stdout)["running"] is True
    # A changed token is not silently ignored.
    another = "another-token-" + "1234567890" * 3
    other = run_cli(*lab_server["args"], env={**lab_server["env"], "JUPYTER_TOKEN": another})
    assert other.returncode == 2 and "another token" in other.stderr and "another-token" not in other.stderr
    # doctor's row sees it, and an export says where to download the zip in it.
    from fluxnb.front import cli, doctor

    run = tmp_path / "outputs"
    run.mkdir()
    (run / "grid_seed.png").write_bytes(b"\x89PNG not really")
    os.environ["FLUXNB_CACHE_DIR"], old = str(tmp_path / "cache"), os.environ["FLUXNB_CACHE_DIR"]
    try:
        row = doctor.check_lab(None)
        assert cli.main(["export", str(run)]) == 0
    finally:
        os.environ["FLUXNB_CACHE_DIR"] = old
    assert row.status == "ok" and str(lab_server["port"]) in row.value
    err = capsys.readouterr().err
    assert f"{lab_server['url']}/files/outputs/exports/fluxnb_outputs_" in err


@pytest.mark.slow
def test_lab_stops_a_server_a_config_file_leaves_open(tmp_path):
    cfg = tmp_path / "jupyter-config"
    cfg.mkdir()
    (cfg / "jupyter_server_config.json").write_text(json.dumps({"IdentityProvider": {"token": ""}}))
    port = _free_port()
    env = _lab_env(tmp_path, JUPYTER_TOKEN=TOKEN)
    env.pop("JUPYTER_PASSWORD")
    try:
        r = run_cli("lab", "--background", "--ip", "127.0.0.1", "--port", port, "--no-browser", "--notebook-dir",
                    tmp_path / "nb", env=env, timeout=180)
        assert r.returncode == 2
        assert "not 403" in r.stderr and "refusing" in r.stderr
        # Nothing is left listening, and no state claims a server.
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine; a listener is not
            s.bind(("127.0.0.1", port))
        assert _state(tmp_path) is None
    finally:
        st = _state(tmp_path)
        if st:
            _kill_group(st["pid"])


# ---------------------------------------------------------------------------------------
# Without a server
# ---------------------------------------------------------------------------------------

@pytest.fixture
def lab_env(tmp_path, monkeypatch):
    for k, v in _lab_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("JUPYTER_PASSWORD")
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    return tmp_path


def test_empty_token_is_refused(lab_env, monkeypatch, capsys):
    from fluxnb.front import cli

    monkeypatch.setenv("JUPYTER_TOKEN", "  ")
    assert cli.main(["lab", "--port", str(_free_port()), "--no-browser"]) == 2
    assert "JUPYTER_TOKEN is set but empty" in capsys.readouterr().err
    assert not (lab_env / "cache" / "lab" / "server.json").exists()


def test_token_sources(lab_env, monkeypatch):
    from fluxnb.front import lab

    # Generated once, kept 0600, shown once.
    t1 = lab.resolve_token()
    assert t1.source == "generated" and t1.new and len(t1.value) >= 32
    path = lab.token_file()
    assert path.read_text() == t1.value and stat.S_IMODE(path.stat().st_mode) == 0o600
    info = lab.LabInfo(url="http://127.0.0.1:1", pid=1, port=1, token=t1)
    assert t1.value in info.message() and "shown only this once" in info.message()
    t2 = lab.resolve_token()
    assert (t2.source, t2.value, t2.new) == ("saved", t1.value, False)
    assert t1.value not in lab.LabInfo(url="u", pid=1, port=1, token=t2).message()
    assert t1.value not in repr(t2)
    # RunPod's JUPYTER_PASSWORD, then JUPYTER_TOKEN before it.
    password, explicit = "runpod-password-" + "p" * 20, "explicit-token-" + "e" * 20
    monkeypatch.setenv("JUPYTER_PASSWORD", password)
    assert lab.resolve_token().source == "JUPYTER_PASSWORD" and path.read_text() == password
    monkeypatch.setenv("JUPYTER_TOKEN", explicit)
    t = lab.resolve_token()
    assert (t.source, t.value) == ("JUPYTER_TOKEN", explicit)
    assert explicit not in lab.LabInfo(url="u", pid=1, port=1, token=t).message()


def test_port_in_use_is_a_clear_error(lab_env, monkeypatch):
    from fluxnb.front import lab
    from fluxnb.errors import FluxnbError

    monkeypatch.setenv("JUPYTER_TOKEN", TOKEN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(FluxnbError, match=f"port {port} on 127.0.0.1 is in use"):
            lab.start(ip="127.0.0.1", port=port, open_browser=False, background=True, directory=lab_env / "nb")
    with pytest.raises(FluxnbError, match="not a TCP port"):
        lab.start(port=70000)


def test_command_line_holds_no_token_and_keeps_checks(lab_env, monkeypatch):
    from fluxnb.front import lab

    monkeypatch.setenv("RUNPOD_POD_ID", "pod42")
    cmd = lab.server_command("0.0.0.0", 8888, Path("/workspace"), "fluxnb/notebooks", False)
    text = " ".join(cmd)
    assert "token" not in text.lower()
    assert "--ServerApp.disable_check_xsrf=False" in cmd
    assert "--ServerApp.allow_origin=https://pod42-8888.proxy.runpod.net" in cmd  # the proxy, never *
    assert "*" not in text and "--ServerApp.port_retries=0" in cmd
    env = lab.server_env(Path("/x/token"))
    monkeypatch.setenv("JUPYTER_TOKEN", "zzz")
    assert "JUPYTER_TOKEN" not in lab.server_env(Path("/x/token")) and env["JUPYTER_TOKEN_FILE"] == "/x/token"
    assert lab.base_url("0.0.0.0", 8888) == "https://pod42-8888.proxy.runpod.net"
    monkeypatch.delenv("RUNPOD_POD_ID")
    assert lab.base_url("0.0.0.0", 8888) == "http://127.0.0.1:8888"
