"""The JupyterLab server `fluxnb lab` started: its state file, whether it runs and answers,
whether a port is free, and stopping it.

The state file (`<cache>/lab/server.json`: pid, address, folders) is written atomically when
the server is up and removed when it stops; a state whose process is gone, or is not a
JupyterLab, counts as not running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import FluxnbError
from ..files import pid_alive, write_atomic
from .labtoken import lab_dir, token_file


def state_file() -> Path:
    return lab_dir() / "server.json"


def read_state() -> dict | None:
    try:
        return json.loads(state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save_state(state: dict) -> None:
    lab_dir().mkdir(parents=True, exist_ok=True)
    write_atomic(state_file(), json.dumps(state, indent=2))


def forget(pid: int) -> None:
    """Remove the state file when it is the state of server `pid`."""
    state = read_state()
    if state and int(state.get("pid", 0)) == pid:
        state_file().unlink(missing_ok=True)


def connect_host(ip: str) -> str:
    """The address to reach a server listening on `ip` from this machine."""
    return "127.0.0.1" if ip in ("", "0.0.0.0", "*", "localhost", "::") else ip


def http(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET, with the token when given; status 0 when nothing answers."""
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - a local URL
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def is_our_server(pid: int) -> bool:
    """Whether process `pid` runs and is a JupyterLab (a pid may have been reused)."""
    if not pid_alive(pid):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"jupyterlab" in cmd or b"jupyter-lab" in cmd


def status() -> dict:
    """{'running': bool, 'pid', 'port', 'url', 'answers', ...} of the server `fluxnb lab` started."""
    state = read_state()
    if not state or not is_our_server(int(state.get("pid", 0))):
        return {"running": False, **({"stale": True} if state else {})}
    tok = token_file().read_text(encoding="utf-8") if token_file().is_file() else None
    code, _ = http(f"http://{connect_host(state['ip'])}:{state['port']}/api/status", tok)
    return {**state, "running": True, "answers": code == 200}


def port_free(ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip if ip not in ("", "*") else "0.0.0.0", port))
        except OSError:
            return False
    return True


def port_taken_error(ip: str, port: int) -> FluxnbError:
    """The error for a port in use, saying by what when another Jupyter server answers there."""
    code, body = http(f"http://{connect_host(ip)}:{port}/api", timeout=2)
    other = ""
    if code == 200 and b"version" in body:
        other = " by another Jupyter server"
        if os.environ.get("RUNPOD_POD_ID"):
            other += (" (RunPod's image starts one when JUPYTER_PASSWORD is set in the template; that one has its "
                      "token on the process list and allows any origin)")
    template = " (or remove JUPYTER_PASSWORD from the template)" if os.environ.get("RUNPOD_POD_ID") else ""
    return FluxnbError(f"port {port} on {ip} is in use{other}", field="port", value=port,
                       fix=f"stop the other server{template}, or use --port N (and expose that port)")


def terminate(pid: int, *, group: bool, timeout: float = 15.0) -> None:
    """SIGTERM process `pid` (its process group when `group`), SIGKILL after `timeout` s."""
    def send(sig):
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for it
            if not pid_alive(pid):
                return
        time.sleep(0.1)
    send(signal.SIGKILL)


def stop() -> bool:
    """Stop the server `fluxnb lab` started; False when none was running."""
    state = read_state()
    if not state:
        return False
    pid = int(state.get("pid", 0))
    running = is_our_server(pid)
    if running:
        terminate(pid, group=bool(state.get("log")))
    state_file().unlink(missing_ok=True)
    return running
