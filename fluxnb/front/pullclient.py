"""The pod's JupyterLab seen from home, for `fluxnb pull`: its address, its token, and its
contents REST API (listings and file downloads) with every answer checked and bounded.

- The address is the lab's base URL (RunPod's `https://POD-8888.proxy.runpod.net`, with
  or without `/lab...`). A token or a password inside it is refused: whatever is typed on
  a command line stays in the shell's history and in the process list.
- The token comes from `--token-file`, else JUPYTER_TOKEN (the environment, then
  config.env), else a prompt that does not echo. It travels only in an `Authorization`
  header that no redirect carries elsewhere (redirects are not followed at all).
- Every request has a timeout; listings are capped in bytes, entries and depth; names
  from a listing must be plain file names inside the folder listed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

from .. import __version__
from ..config.environment import getenv
from ..errors import FluxnbError, RuntimeFailure

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
MAX_LISTING_BYTES = 64 * 2**20  # one folder's JSON listing
MAX_ENTRIES = 100_000           # names in all the folders listed
MAX_DEPTH = 3                   # outputs/a/b/c: deeper folders are left on the pod
SKIP_DIRS = {"exports"}         # `fluxnb export` zips: what pull brings anyway
APP_PATHS = {"lab", "tree", "notebooks", "doc", "edit", "view", "api", "files", "login"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
TOKEN_FIX = "give the lab's token by JUPYTER_TOKEN, --token-file FILE or the prompt"


# ---------------------------------------------------------------------------------------
# The address and the token
# ---------------------------------------------------------------------------------------

def lab_url(text: str) -> str:
    """The lab's base URL (ending in /) from what a user pastes."""
    raw = (text or "").strip()
    if "://" not in raw:
        host = raw.split("/")[0].rsplit(":", 1)[0].strip("[]")
        raw = ("http://" if host in LOCAL_HOSTS or host.startswith("127.") else "https://") + raw
    parts = urllib.parse.urlsplit(raw)
    query = urllib.parse.parse_qs(parts.query)
    shown = urllib.parse.urlunsplit(parts._replace(query="", fragment="", netloc=parts.hostname or ""))
    if "token" in query or parts.password or parts.username:
        raise FluxnbError(f"URL {shown}: holds a token or password, which stays in your shell history and the "
                          "process list; remove it (and clear it from the history)", field="url", value=shown,
                          fix=TOKEN_FIX)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FluxnbError(f"URL {text!r}: not a web address", field="url", value=text,
                          fix="give the lab's address, e.g. https://POD-8888.proxy.runpod.net")
    segments = [s for s in parts.path.split("/") if s]
    cut = next((i for i, s in enumerate(segments) if s in APP_PATHS), len(segments))
    path = "/" + "".join(s + "/" for s in segments[:cut])
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS and not parts.hostname.startswith("127."):
        log.warning("%s is plain http: the token crosses the network unencrypted (RunPod's proxy is https)",
                    parts.hostname)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def read_token(token_file: str | os.PathLike | None = None, *, host: str = "the lab") -> str:
    """--token-file, else JUPYTER_TOKEN, else a prompt (on a terminal). Never logged."""
    # 1. A file named on the command line.
    if token_file is not None:
        try:
            value = open(token_file, encoding="utf-8").read().strip()
            mode = os.stat(token_file).st_mode
        except OSError as e:
            raise FluxnbError(f"token-file {str(token_file)!r}: cannot read it ({e.strerror})", field="token-file",
                              value=str(token_file), fix="give a readable file holding only the token") from None
        if not value:
            raise FluxnbError(f"token-file {str(token_file)!r}: empty", field="token-file", value=str(token_file),
                              fix="put the lab's token in it")
        if mode & 0o077:
            log.warning("token-file %s can be read by other users: chmod 600 it", token_file)
        return value
    # 2. The environment, then config.env.
    value = getenv("JUPYTER_TOKEN")
    if value is not None:
        if not value.strip():
            raise FluxnbError("JUPYTER_TOKEN is set but empty", field="JUPYTER_TOKEN", value="", fix=TOKEN_FIX)
        return value.strip()
    # 3. Ask, without echo.
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"JupyterLab token for {host}: ").strip()
        if value:
            return value
    raise FluxnbError("no token for the lab", field="token", fix=TOKEN_FIX + " (the prompt needs a terminal)")


# ---------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------

class NotFound(FluxnbError):
    """A 404: no such file or folder on the lab, or not a lab at all (Lab.is_jupyter tells)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx comes back as an HTTPError: the token never follows a redirect


@dataclass
class Entry:
    """One file of the remote folder: `rel` is its path below the folder listed."""
    rel: str
    path: str
    size: int
    mtime: float


class Lab:
    """The lab's REST API, authenticated with its token, every answer checked."""

    def __init__(self, url: str, token: str, *, timeout: float = TIMEOUT_S):
        self.url, self.timeout = url, timeout
        self._token = token
        self._hashless = False  # warned once that the lab gives no sha256
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:  # never shows the token
        return f"Lab({self.url!r})"

    def open(self, route: str, *, query: dict | None = None, headers: dict | None = None):
        """GET `route` (below the base URL): the response, or one FluxnbError for any failure."""
        url = self.url + urllib.parse.quote(route) + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, headers={"User-Agent": f"fluxnb/{__version__} (pull)", **(headers or {})})
        req.add_unredirected_header("Authorization", f"token {self._token}")
        try:
            return self._opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise self.http_error(e, route) from None
        except (urllib.error.URLError, OSError) as e:
            raise self.net_error(getattr(e, "reason", e)) from None

    def http_error(self, e: urllib.error.HTTPError, route: str) -> FluxnbError:
        body = e.read(4096) if e.fp else b""
        jupyter = _json_message(body) is not None
        what = f"GET {self.url}{route} answered {e.code} {e.reason}"
        if e.code in (401, 403) and jupyter:
            return FluxnbError(f"{self.url}: the lab refused the token ({e.code} {e.reason})", field="token",
                               fix=TOKEN_FIX + " (on the pod: JUPYTER_TOKEN, or /workspace/.cache/fluxnb/lab/token)")
        if 300 <= e.code < 400:
            return FluxnbError(f"{what} (a redirect to {e.headers.get('Location', '?')}): not JupyterLab's API",
                               field="url", value=self.url, fix="give the lab's own address")
        if e.code >= 500:
            return RuntimeFailure(f"{what}: is JupyterLab running on the pod?", field="url", value=self.url,
                                  fix="start it there with fluxnb lab (fluxnb lab --status says)")
        if e.code == 400 and jupyter:
            return FluxnbError(f"{what}: {_json_message(body)}", field="remote-dir", value=route)
        return (NotFound if e.code == 404 else FluxnbError)(
            f"{what}: not a JupyterLab (or not its address)", field="url", value=self.url,
            fix="give the lab's address, e.g. https://POD-8888.proxy.runpod.net")

    def is_jupyter(self) -> bool:
        """Whether a Jupyter server answers here (its /api gives its version)."""
        try:
            return "version" in self.json("api", {})
        except FluxnbError:
            return False

    def net_error(self, reason) -> RuntimeFailure:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused (nothing listens there: is the pod running and the port exposed?)"
        elif isinstance(reason, (TimeoutError, socket.timeout)):
            why = f"no answer within {self.timeout:g} s (is the pod running?)"
        elif isinstance(reason, socket.gaierror):
            why = "no such host (check the address)"
        elif isinstance(reason, ssl.SSLError):
            why = f"TLS failed ({reason})"
        else:
            why = str(reason)
        return RuntimeFailure(f"{self.url}: {why}", field="url", value=self.url)

    def json(self, route: str, query: dict) -> dict:
        with self.open(route, query=query, headers={"Accept": "application/json"}) as r:
            body = r.read(MAX_LISTING_BYTES + 1)
        if len(body) > MAX_LISTING_BYTES:
            raise RuntimeFailure(f"{self.url}{route}: the listing is over {MAX_LISTING_BYTES >> 20} MiB",
                                 field="remote-dir", value=route, fix="pull a smaller folder with --remote-dir")
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise FluxnbError(f"{self.url}{route}: the answer is not JSON, so this is not JupyterLab's API",
                              field="url", value=self.url, fix="give the lab's address, e.g. "
                                                                "https://POD-8888.proxy.runpod.net")
        return data

    def file_hash(self, path: str) -> str | None:
        """The file's sha256 computed by the lab (jupyter_server 2.11 and later), else None."""
        model = self.json(f"api/contents/{path}", {"content": "0", "hash": "1"})
        if model.get("hash_algorithm") == "sha256" and isinstance(model.get("hash"), str):
            return model["hash"]
        if not self._hashless:
            self._hashless = True
            log.warning("the lab gives no sha256 (jupyter_server before 2.11): files are compared by size only")
        return None

    # -----------------------------------------------------------------------------------
    # Listing
    # -----------------------------------------------------------------------------------

    def listing(self, path: str) -> list[dict]:
        model = self.json(f"api/contents/{path}", {"content": "1", "type": "directory"})
        if model.get("type") != "directory" or not isinstance(model.get("content"), list):
            raise FluxnbError(f"{self.url}api/contents/{path}: not a folder listing", field="remote-dir", value=path)
        return model["content"]

    def walk(self, remote_dir: str) -> tuple[list[Entry], list[str]]:
        """Every plain file below `remote_dir` (MAX_DEPTH folders deep at most, hidden names and
        exports/ left out), and notes on what was left out and why."""
        root = remote_dir_arg(remote_dir)
        try:
            first = self.listing(root)
        except NotFound:
            if not self.is_jupyter():
                raise
            raise FluxnbError(f"remote-dir {root!r}: no such folder on the lab at {self.url}",
                              field="remote-dir", value=root, fix="give it relative to the lab's root (the top "
                              "of JupyterLab's file browser; on a pod outputs is /workspace/outputs)") from None
        files, notes, queue, seen = [], [], [(root, "", 0)], 0
        while queue and seen <= MAX_ENTRIES:
            folder, rel, depth = queue.pop(0)
            try:
                items = self.listing(folder) if rel else first
            except NotFound:  # removed on the pod since it was listed
                continue
            for item in items:
                seen += 1
                if seen > MAX_ENTRIES:
                    notes.append(f"more than {MAX_ENTRIES} names: the rest left on the pod")
                    break
                name, kind = plain_name(item, folder)
                if name is None:
                    notes.append(f"{folder}: a listed name that is not a plain file name (left out)")
                elif name.startswith(".") or (kind == "directory" and name in SKIP_DIRS):
                    continue
                elif kind == "directory" and depth + 1 > MAX_DEPTH:
                    notes.append(f"{rel}{name}/: deeper than {MAX_DEPTH} folders (left on the pod)")
                elif kind == "directory":
                    queue.append((join(folder, name), f"{rel}{name}/", depth + 1))
                elif kind in ("file", "notebook"):
                    files.append(Entry(rel + name, join(folder, name), int(item["size"]), _timestamp(item)))
        return sorted(files, key=lambda f: f.rel), notes


def remote_dir_arg(text: str) -> str:
    """--remote-dir as a clean path relative to the lab's root ("" is the root itself)."""
    raw = str(text or "").strip()
    parts = [p for p in raw.rstrip("/").split("/") if p not in ("", ".")]
    if raw.startswith("/") or ".." in parts or any(ord(c) < 32 or c == "\\" for c in raw):
        raise FluxnbError(f"remote-dir {text!r}: must be a folder relative to the lab's root, without ..",
                          field="remote-dir", value=text, fix="e.g. outputs (on a pod: /workspace/outputs)")
    return "/".join(parts)


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def plain_name(item, folder: str) -> tuple[str | None, str]:
    """(name, type) of a listing entry; name None when it is not a plain name inside `folder`."""
    if not isinstance(item, dict):
        return None, ""
    name, kind = item.get("name"), item.get("type")
    size_ok = kind == "directory" or (isinstance(item.get("size"), int) and item["size"] >= 0)
    if (not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0")
            or any(ord(c) < 32 for c in name) or item.get("path") != join(folder, name) or not size_ok):
        return None, ""
    return name, str(kind)


def _timestamp(item: dict) -> float:
    try:
        when = datetime.fromisoformat(str(item.get("last_modified", "")).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _json_message(body: bytes) -> str | None:
    """Jupyter's error answers are JSON with a `message`; a proxy's or another server's are not."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return str(data.get("message")) if isinstance(data, dict) and "message" in data else None
