"""JupyterLab for fluxnb, always behind a token (`fluxnb lab`).

On a pod JupyterLab is reachable from the internet through RunPod's proxy, so it never
starts without authentication:

- The token (fluxnb.front.labtoken) comes from JUPYTER_TOKEN, else JUPYTER_PASSWORD, else
  the one saved by an earlier start, else a new random one, kept in a 0600 file and shown
  once, when it is made. An empty token is refused.
- The token never reaches a command line (`ps` shows every process's arguments): the
  server reads it from that file (JUPYTER_TOKEN_FILE), and JUPYTER_TOKEN/JUPYTER_PASSWORD
  are removed from its environment, so kernels and terminals do not inherit them.
- XSRF checks stay on; the only origin allowed besides the server's own is the pod's
  proxy URL (never `*`).
- After the start, an unauthenticated request must be refused (403): a Jupyter config file
  that empties the token stops the server instead of leaving it open.

The running server's state, status and stopping are in fluxnb.front.labserver; this module
starts it. Both modules' public names are here too (`lab.status`, `lab.resolve_token`...).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..config.environment import PACKAGE_DIR, getenv, log_dir, on_pod, workspace
from ..errors import FluxnbError, RuntimeFailure
from .labserver import (connect_host, forget, http, port_free, port_taken_error, process_start, read_state, save_state,
                        state_file, status, stop, terminate)
from .labtoken import TOKEN_NAMES, Token, lab_dir, resolve_token, token_file

__all__ = ["PORT", "LabInfo", "base_url", "log_file", "notebook_dir", "proxy_url", "server_command", "server_env",
           "start",  # and, from labtoken and labserver:
           "TOKEN_NAMES", "Token", "lab_dir", "resolve_token", "token_file", "read_state", "state_file", "status",
           "stop"]

log = logging.getLogger(__name__)

PORT = 8888
START_TIMEOUT_S = 90


# ---------------------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------------------

def log_file() -> Path:
    return log_dir() / "jupyterlab.log"


def notebook_dir() -> Path:
    """$FLUXNB_NOTEBOOK_DIR, else the checkout's notebooks/ folder, else the current folder."""
    explicit = getenv("FLUXNB_NOTEBOOK_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    checkout = PACKAGE_DIR.parent / "notebooks"
    return checkout if checkout.is_dir() or (PACKAGE_DIR.parent / "pyproject.toml").is_file() else Path.cwd()


def proxy_url(port: int) -> str | None:
    pod = os.environ.get("RUNPOD_POD_ID")
    return f"https://{pod}-{port}.proxy.runpod.net" if pod else None


def base_url(ip: str, port: int) -> str:
    """The address to open: RunPod's proxy on a pod, else the local address."""
    return proxy_url(port) or f"http://{connect_host(ip)}:{port}"


# ---------------------------------------------------------------------------------------
# Starting the server
# ---------------------------------------------------------------------------------------

def server_command(ip: str, port: int, root: Path, preferred: str, open_browser: bool) -> list[str]:
    """The command line: every setting but the token (it comes from JUPYTER_TOKEN_FILE)."""
    cmd = [sys.executable, "-m", "jupyterlab",
           f"--ServerApp.ip={ip}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={root}", f"--ContentsManager.preferred_dir={preferred}",
           "--ServerApp.disable_check_xsrf=False", f"--ServerApp.allow_origin={proxy_url(port) or ''}",
           "--ServerApp.allow_origin_pat=",
           f"--ServerApp.open_browser={open_browser}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # pods run as root
    return cmd


def server_env(tok_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_NAMES}
    env["JUPYTER_TOKEN_FILE"] = str(tok_path)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class LabInfo:
    url: str
    pid: int
    port: int
    token: Token
    already_running: bool = False

    def message(self) -> str:
        """What to tell the user: the URL, and the token only when it was made just now."""
        lines = []
        if self.already_running:
            lines.append(f"JupyterLab is already running (pid {self.pid}).")
        if self.token.new:
            lines.append(f"Open: {self.url}/lab?token={self.token.value}")
            lines.append(f"Token (generated, saved in {token_file()} with mode 0600; shown only this once): "
                         f"{self.token.value}")
        else:
            where = f"the one in {self.token.source}" if self.token.source in TOKEN_NAMES else f"in {token_file()}"
            lines.append(f"Open: {self.url}/lab  (log in with the token: {where})")
        return "\n".join(lines)


def start(*, ip: str | None = None, port: int = PORT, open_browser: bool | None = None, background: bool = False,
          directory: str | os.PathLike | None = None) -> LabInfo:
    """Start JupyterLab (or find the one already running) and return where to open it.
    Foreground (background=False) waits for the server to stop."""
    # 1. Settings.
    if not 1 <= int(port) <= 65535:
        raise FluxnbError(f"port {port}: not a TCP port", field="port", value=port, fix="use 1-65535, e.g. 8888")
    pod = on_pod()
    # Every interface only where RunPod's proxy must reach it; runpod_setup.sh passes --ip on other pods.
    ip = ip if ip is not None else ("0.0.0.0" if os.environ.get("RUNPOD_POD_ID") else "127.0.0.1")
    open_browser = (not pod) if open_browser is None else open_browser
    nb = Path(directory).expanduser().resolve() if directory else notebook_dir()
    ws = workspace()
    root = Path(os.path.commonpath([nb, ws])) if pod and ws.is_dir() else nb.parent
    preferred = nb.relative_to(root).as_posix() if nb != root else ""

    # 2. The token, and a server that may already be running (its token file stays as it is).
    token = resolve_token(save=False)
    st = status()
    if st["running"]:
        if int(st["port"]) != int(port):
            raise FluxnbError(f"JupyterLab is already running on port {st['port']} (pid {st['pid']})",
                              field="port", value=port, fix="stop it first: fluxnb lab --stop")
        code, _ = http(f"http://{connect_host(st['ip'])}:{st['port']}/api/status", token.value)
        if code != 200:
            raise FluxnbError(f"JupyterLab is already running (pid {st['pid']}) with another token than the one "
                              f"from {token.source}", field="token", fix="restart it to use the new token: "
                                                                         "fluxnb lab --stop, then fluxnb lab")
        token.new = False  # it was shown when the server started
        return LabInfo(url=st["url"], pid=int(st["pid"]), port=int(port), token=token, already_running=True)
    if not port_free(ip, port):
        raise port_taken_error(ip, port)
    token = resolve_token()

    # 3. Start it.
    nb.mkdir(parents=True, exist_ok=True)
    cmd = server_command(ip, port, root, preferred, open_browser)
    out = None
    if background:
        log_file().parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file(), "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(cmd, env=server_env(token_file()), cwd=nb, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=background)
    finally:
        if out:
            out.close()
    url = base_url(ip, port)
    try:
        # 4. Wait until it answers with the token, then prove it refuses without one.
        _wait_ready(proc, ip, port, token.value)
        code, _ = http(f"http://{connect_host(ip)}:{port}/api/contents")
        if code != 403:
            raise FluxnbError(f"JupyterLab answered an unauthenticated request with {code}, not 403: a Jupyter "
                              "config file turns authentication off (an empty token?); refusing to leave it running",
                              field="token", fix="remove IdentityProvider.token / ServerApp.token from the "
                                                 "jupyter_server_config files in `jupyter --config-dir` and rerun")
    except BaseException:
        terminate(proc.pid, group=background)
        raise
    state = {"pid": proc.pid, "process_start": process_start(proc.pid), "ip": ip, "port": int(port), "url": url,
             "root_dir": str(root),
             "notebook_dir": str(nb), "log": str(log_file()) if background else "",
             "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    save_state(state)
    info = LabInfo(url=url, pid=proc.pid, port=int(port), token=token)
    if background:
        return info
    # 5. Foreground: print, then wait for it (Ctrl-C, a kill or a closed terminal stop it too).
    print(info.message(), flush=True)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        proc.wait()
    except KeyboardInterrupt:
        terminate(proc.pid, group=False)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        forget(proc.pid)
    return info


def _wait_ready(proc: subprocess.Popen, ip: str, port: int, token: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://{connect_host(ip)}:{port}/api/status"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = ""
            if log_file().is_file():
                from ..logs import scrub
                tail = scrub(log_file().read_text(encoding="utf-8", errors="replace")[-1500:])
            raise RuntimeFailure(f"JupyterLab exited with status {proc.returncode} while starting"
                                 + (f"; its log ends:\n{tail}" if tail else ""), field="lab",
                                 fix=f"see {log_file()}")
        code, _ = http(url, token, timeout=1.0)
        if code == 200:
            return
        time.sleep(0.25)
    raise RuntimeFailure(f"JupyterLab did not answer on port {port} within {START_TIMEOUT_S} s", field="lab",
                         fix=f"see {log_file()}")
