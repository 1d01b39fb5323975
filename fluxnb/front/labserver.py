"""The JupyterLab server `fluxnb lab` started: its state file, whether it runs and answers,
whether a port is free, and stopping it.

The state file (`<cache>/lab/server.json`: pid, the process's start time, address, folders)
is written atomically when the server is up and removed when it stops. The server is
identified by more than its pid (`identify`): the process must have the start time recorded
(a reused pid has another) and be a JupyterLab; a state without a start time to compare
counts only when the server answers at its address with fluxnb's token. Anything else is a
stale state: not running, and never stopped (its process is someone else's).
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
    """The saved state, or None when there is none or it is not one (damaged, edited)."""
    try:
        state = json.loads(state_file().read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            return None
        state["pid"], state["port"] = int(state["pid"]), int(state["port"])
        if not (0 < state["pid"] < 2**31 and 0 < state["port"] < 65536):
            return None
        state["ip"] = str(state.get("ip") or "127.0.0.1")
        state["url"] = str(state.get("url") or f"http://{connect_host(state['ip'])}:{state['port']}")
        return state
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None


def save_state(state: dict) -> None:
    lab_dir().mkdir(parents=True, exist_ok=True)
    write_atomic(state_file(), json.dumps(state, indent=2))


def forget(pid: int) -> None:
    """Remove the state file when it is the state of server `pid`."""
    state = read_state()
    if state and state["pid"] == pid:
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


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc/PID/stat), or None
    where there is no /proc or no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def answers(state: dict) -> bool:
    """Whether a Jupyter server answers at the state's address with fluxnb's token."""
    tok = token_file().read_text(encoding="utf-8") if token_file().is_file() else None
    if not tok:
        return False
    code, body = http(f"http://{connect_host(state['ip'])}:{state['port']}/api/status", tok)
    return code == 200 and b'"started"' in body


def identify(state: dict) -> bool:
    """Whether the state's process is the JupyterLab `fluxnb lab` started: alive, started
    when recorded (a reused pid started later) and a JupyterLab; with no start time to
    compare, only when the server answers at its address with fluxnb's token."""
    pid = state["pid"]
    if not pid_alive(pid):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"jupyterlab" not in cmd and b"jupyter-lab" not in cmd:
            return False
    except OSError:
        pass  # no /proc: the answer below decides
    recorded, now = state.get("process_start"), process_start(pid)
    if recorded and now:
        return str(recorded) == now
    return answers(state)


def status() -> dict:
    """{'running': bool, 'pid', 'port', 'url', 'answers', ...} of the server `fluxnb lab` started."""
    state = read_state()
    if not state or not identify(state):
        return {"running": False, **({"stale": True} if state_file().is_file() else {})}
    return {**state, "running": True, "answers": answers(state)}


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
    """Stop the server `fluxnb lab` started; False when none was running. A stale state (its
    pid gone or now another process) is removed, and that process is left alone."""
    state = read_state()
    if not state:
        state_file().unlink(missing_ok=True)
        return False
    running = identify(state)
    if running:
        terminate(state["pid"], group=bool(state.get("log")))
    state_file().unlink(missing_ok=True)
    return running
