"""A tiny stand-in for the Hugging Face hub on 127.0.0.1, for the model-fetch tests.

It answers the calls `fluxnb model fetch` and `fluxnb doctor --hub` make (whoami,
auth-check, model info, tree listing, file downloads) with the status codes and headers huggingface_hub reads
(`hf_raise_for_status`: X-Error-Code GatedRepo, X-Error-Message), for a gated model:
no token -> 401 GatedRepo, an unknown token -> 401 invalid credentials, a valid token whose
account has not accepted the licence -> 403 GatedRepo, an accepted one -> 200.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

REPO = "black-forest-labs/FLUX.1-dev"
SHA = "0ef5fff789c832c5c7f4e127f94c8b54bbcced44"
GOOD = "hf_" + "a" * 34      # accepted the licence
NO_LICENCE = "hf_" + "b" * 34  # valid, but the licence was not accepted
USERS = {GOOD: "alice", NO_LICENCE: "bob"}


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324


class FakeHub:
    def __init__(self, files: dict[str, bytes] | None = None, *, lfs_over: int = 64):
        self.files = files if files is not None else {
            "model_index.json": b'{"_class_name": "FluxPipeline"}',
            "scheduler/scheduler_config.json": b"{}",
            "transformer/diffusion_pytorch_model.safetensors": bytes(range(256)) * 40,
            "vae/config.json": b'{"x": 1}',
            "flux1-dev.safetensors": b"x" * 500,  # not in ALLOW_PATTERNS: never fetched
        }
        self.lfs_over = lfs_over
        self.sizes: dict[str, int] = {}   # advertised sizes that differ from the real ones
        self.requests: list[tuple[str, str]] = []
        self.served = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def entry(self, path: str) -> dict:
        data = self.files[path]
        size = self.sizes.get(path, len(data))
        e = {"type": "file", "path": path, "size": size, "oid": _git_sha1(data)}
        if len(data) > self.lfs_over:
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 134}
        return e

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body=b"", headers=None, head=False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, obj, head=False):
                self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)

            def _gate(self, head=False) -> bool:
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ").strip() if auth else ""
                if not token:
                    self._send(401, b'{"error": "restricted"}', {
                        "X-Error-Code": "GatedRepo",
                        "X-Error-Message": f"Access to model {REPO} is restricted. You must have access to it and "
                                           "be authenticated to access it. Please log in."}, head)
                    return False
                if token not in (GOOD, NO_LICENCE):
                    self._send(401, b'{"error": "Invalid credentials in Authorization header"}',
                               {"X-Error-Message": "Invalid credentials in Authorization header"}, head)
                    return False
                if token == NO_LICENCE:
                    self._send(403, b'{"error": "not in the authorized list"}', {
                        "X-Error-Code": "GatedRepo",
                        "X-Error-Message": f"Access to model {REPO} is restricted and you are not in the authorized "
                                           f"list. Visit https://huggingface.co/{REPO} to ask for access."}, head)
                    return False
                return True

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

            def _route(self, head):
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                api = f"/api/models/{REPO}"
                if path == "/api/whoami-v2":  # any valid token, whatever its licences
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                    if token in (GOOD, NO_LICENCE):
                        self._json({"type": "user", "name": USERS[token]}, head)
                    else:
                        self._send(401, b'{"error": "Invalid credentials in Authorization header"}', {}, head)
                elif path == f"{api}/auth-check":
                    if self._gate(head):
                        self._json({}, head)
                elif path in (api, f"{api}/revision/main", f"{api}/revision/{SHA}"):
                    self._json({"id": REPO, "modelId": REPO, "sha": SHA, "private": False, "gated": "manual",
                                "siblings": [{"rfilename": p} for p in hub.files]}, head)
                elif path.startswith(f"{api}/tree/"):
                    self._json([hub.entry(p) for p in hub.files], head)
                elif path.startswith(f"/{REPO}/resolve/"):
                    rel = path.split("/resolve/", 1)[1].split("/", 1)[1]
                    if not self._gate(head):
                        return
                    if rel not in hub.files:
                        self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
                        return
                    data = hub.files[rel]
                    e = hub.entry(rel)
                    headers = {"X-Repo-Commit": SHA, "ETag": f'"{e["oid"]}"', "Accept-Ranges": "bytes"}
                    if "lfs" in e:
                        headers["X-Linked-Etag"] = f'"{e["lfs"]["oid"]}"'
                        headers["X-Linked-Size"] = str(len(data))
                    if not head:
                        hub.served += 1
                    self._send(200, data, headers, head)
                else:
                    self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, head)

        return Handler
