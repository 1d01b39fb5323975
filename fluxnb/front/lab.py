"""JupyterLab for fluxnb, always behind a token (`fluxnb lab`).

On a pod JupyterLab is reachable from the internet through RunPod's proxy, so it never
starts without authentication:

- The token comes from JUPYTER_TOKEN, else JUPYTER_PASSWORD (the RunPod templates'
  variable), else the token saved by an earlier start, else a new random one. It is kept in
  a 0600 file (`<cache>/lab/token`, on the volume on a pod) and a generated token is shown
  once, when it is made. An empty token is refused.
- The token never reaches a command line (`ps` shows every process's arguments): the
  server reads it from that file (JUPYTER_TOKEN_FILE), and JUPYTER_TOKEN/JUPYTER_PASSWORD
  are removed from its environment, so kernels and terminals do not inherit them.
- XSRF checks stay on; the only origin allowed besides the server's own is the pod's
  proxy URL (never `*`).
- After the start, an unauthenticated request must be refused (403): a Jupyter config file
  that empties the token stops the server instead of leaving it open.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import FluxnbError, RuntimeFailure
from ..config.environment import PACKAGE_DIR, cache_dir, getenv, log_dir, on_pod, workspace

log = logging.getLogger(__name__)

PORT = 8888
TOKEN_NAMES = ("JUPYTER_TOKEN", "JUPYTER_PASSWORD")
START_TIMEOUT_S = 90


# ---------------------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------------------

def lab_dir() -> Path:
    return cache_dir() / "lab"


def token_file() -> Path:
    return lab_dir() / "token"


def state_file() -> Path:
    return lab_dir() / "server.json"


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
    return proxy_url(port) or f"http://{_connect_host(ip)}:{port}"


def _connect_host(ip: str) -> str:
    return "127.0.0.1" if ip in ("", "0.0.0.0", "*", "localhost", "::") else ip


# ---------------------------------------------------------------------------------------
# The token
# ---------------------------------------------------------------------------------------

@dataclass
class Token:
    value: str
    source: str       # JUPYTER_TOKEN, JUPYTER_PASSWORD, saved, generated
    new: bool = False  # generated just now: show it once

    def __repr__(self) -> str:  # never shown by accident
        return f"Token(source={self.source!r}, new={self.new})"


def _write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically (no trailing newline: Jupyter reads the file verbatim)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def resolve_token(*, save: bool = True) -> Token:
    """The token to start with (see the module's notes); `save`: keep it in the 0600 token file."""
    # 1. An explicit token: the environment, then config.env.
    for name in TOKEN_NAMES:
        value = getenv(name)
        if value is None:
            continue
        if not value.strip():
            raise FluxnbError(f"{name} is set but empty: fluxnb lab never starts JupyterLab without a token",
                              field=name, value="", fix=f"unset {name} to use a generated token, or set it to a "
                                                         "long random string")
        token = Token(value.strip(), name)
        break
    else:
        # 2. The one saved by an earlier start, else a new one.
        path = token_file()
        saved = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        token = Token(saved, "saved") if saved else Token(secrets.token_urlsafe(32), "generated", new=True)
    if not token.value.strip():  # belt and braces: never an empty token
        raise FluxnbError("the JupyterLab token is empty", field="token", fix="set JUPYTER_TOKEN")
    if len(token.value) < 12:
        log.warning("the JupyterLab token from %s is short (%d characters): anyone who guesses it gets a shell "
                    "on this machine", token.source, len(token.value))
    # 3. The server reads it from the private file.
    path = token_file()
    if save and (not path.is_file() or path.read_text(encoding="utf-8") != token.value
                 or path.stat().st_mode & 0o077):
        _write_private(path, token.value)
    return token


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------

def _http(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - a local URL
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return pid > 0


def _is_our_server(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)
    return b"jupyterlab" in cmd or b"jupyter-lab" in cmd


def read_state() -> dict | None:
    try:
        return json.loads(state_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def status() -> dict:
    """{'running': bool, 'pid', 'port', 'url', 'answers', ...} of the server `fluxnb lab` started."""
    state = read_state()
    if not state or not _pid_alive(int(state.get("pid", 0))) or not _is_our_server(int(state["pid"])):
        return {"running": False, **({"stale": True} if state else {})}
    tok = token_file().read_text(encoding="utf-8") if token_file().is_file() else None
    code, _ = _http(f"http://{_connect_host(state['ip'])}:{state['port']}/api/status", tok)
    return {**state, "running": True, "answers": code == 200}


def _port_free(ip: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip if ip not in ("", "*") else "0.0.0.0", port))
        except OSError:
            return False
    return True


def _port_taken_error(ip: str, port: int) -> FluxnbError:
    code, body = _http(f"http://{_connect_host(ip)}:{port}/api", timeout=2)
    other = ""
    if code == 200 and b"version" in body:
        other = " by another Jupyter server"
        if os.environ.get("RUNPOD_POD_ID"):
            other += (" (RunPod's image starts one when JUPYTER_PASSWORD is set in the template; that one has its "
                      "token on the process list and allows any origin)")
    template = " (or remove JUPYTER_PASSWORD from the template)" if os.environ.get("RUNPOD_POD_ID") else ""
    return FluxnbError(f"port {port} on {ip} is in use{other}", field="port", value=port,
                       fix=f"stop the other server{template}, or use --port N (and expose that port)")


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
        code, _ = _http(f"http://{_connect_host(st['ip'])}:{st['port']}/api/status", token.value)
        if code != 200:
            raise FluxnbError(f"JupyterLab is already running (pid {st['pid']}) with another token than the one "
                              f"from {token.source}", field="token", fix="restart it to use the new token: "
                                                                         "fluxnb lab --stop, then fluxnb lab")
        token.new = False  # it was shown when the server started
        return LabInfo(url=st["url"], pid=int(st["pid"]), port=int(port), token=token, already_running=True)
    if not _port_free(ip, port):
        raise _port_taken_error(ip, port)
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
        code, _ = _http(f"http://{_connect_host(ip)}:{port}/api/contents")
        if code != 403:
            raise FluxnbError(f"JupyterLab answered an unauthenticated request with {code}, not 403: a Jupyter "
                              "config file turns authentication off (an empty token?); refusing to leave it running",
                              field="token", fix="remove IdentityProvider.token / ServerApp.token from the "
                                                 "jupyter_server_config files in `jupyter --config-dir` and rerun")
    except BaseException:
        _terminate(proc.pid, group=background)
        raise
    state = {"pid": proc.pid, "ip": ip, "port": int(port), "url": url, "root_dir": str(root),
             "notebook_dir": str(nb), "log": str(log_file()) if background else "",
             "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lab_dir().mkdir(parents=True, exist_ok=True)
    state_file().write_text(json.dumps(state, indent=2), encoding="utf-8")
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
        _terminate(proc.pid, group=False)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        _forget(proc.pid)
    return info


def _wait_ready(proc: subprocess.Popen, ip: str, port: int, token: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://{_connect_host(ip)}:{port}/api/status"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = ""
            if log_file().is_file():
                from ..logs import scrub
                tail = scrub(log_file().read_text(encoding="utf-8", errors="replace")[-1500:])
            raise RuntimeFailure(f"JupyterLab exited with status {proc.returncode} while starting"
                                 + (f"; its log ends:\n{tail}" if tail else ""), field="lab",
                                 fix=f"see {log_file()}")
        code, _ = _http(url, token, timeout=1.0)
        if code == 200:
            return
        time.sleep(0.25)
    raise RuntimeFailure(f"JupyterLab did not answer on port {port} within {START_TIMEOUT_S} s", field="lab",
                         fix=f"see {log_file()}")


def _terminate(pid: int, *, group: bool, timeout: float = 15.0) -> None:
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
            if not _pid_alive(pid):
                return
        time.sleep(0.1)
    send(signal.SIGKILL)


def _forget(pid: int) -> None:
    state = read_state()
    if state and int(state.get("pid", 0)) == pid:
        state_file().unlink(missing_ok=True)


def stop() -> bool:
    """Stop the server `fluxnb lab` started; False when none was running."""
    state = read_state()
    if not state:
        return False
    pid = int(state.get("pid", 0))
    running = pid > 0 and _pid_alive(pid) and _is_our_server(pid)
    if running:
        _terminate(pid, group=bool(state.get("log")))
    state_file().unlink(missing_ok=True)
    return running
