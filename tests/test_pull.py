"""`fluxnb pull URL`: a pod's outputs brought home through a real `fluxnb lab` on 127.0.0.1
(a folder stands in for the pod's /workspace): only what is new, atomically, resumable,
the run log merged without duplicates, clear one-line errors, and the token nowhere."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import run_cli

TOKEN = "pull-test-token-" + "p" * 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pod(tmp_path_factory, session_env, tiny_model):
    """A folder standing in for /workspace, with real tiny images, a sweep subfolder, a failed
    attempt and its retry, an old image, a grid and litter; served by one `fluxnb lab`."""
    import fluxnb
    from fluxnb import runlog

    # 1. The pod's outputs.
    root = tmp_path_factory.mktemp("pod")
    out = root / "outputs"
    made = fluxnb.generate("a lighthouse at dusk", model="tiny", size="64x64", steps=1, seed=7, count=2,
                           output_dir=str(out), progress=False)
    fluxnb.generate("a red fox", model="tiny", size="64x64", steps=1, seed=3, output_dir=str(out / "fox"),
                    progress=False)
    now = datetime.now(timezone.utc)
    failed = {"id": "retry1", "path": "", "status": "error", "error": "boom", "prompt": "p", "seed": 5,
              "created_at": (now - timedelta(minutes=5)).isoformat()}
    runlog.append(out, failed)
    runlog.append(out, {**failed, "status": "ok", "error": "", "path": str(made[1].path),
                        "created_at": (now - timedelta(minutes=4)).isoformat()})  # the same item, retried
    old = out / "flux_20200101_000000_1.png"
    old.write_bytes(made[0].path.read_bytes())
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    runlog.append(out, {"id": "old", "path": str(old), "status": "ok", "seed": 1,
                        "created_at": (now - timedelta(days=10)).isoformat()})
    (out / "grid_seed.png").write_bytes(b"\x89PNG a grid")
    (out / ".flux_x.123.tmp").write_bytes(b"half an image")
    (out / "notes.bin").write_bytes(b"not a result")
    (out / "exports").mkdir()
    (out / "exports" / "fluxnb_outputs_1.zip").write_bytes(b"PK zip")
    # 2. Its JupyterLab, with the token in a 0600 file (root: the folder above notebooks/).
    port = _free_port()
    env = {"FLUXNB_CACHE_DIR": str(root / "cache"), "FLUXNB_LOG_DIR": str(root / "logs"),
           "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(root / "rt"),
           "JUPYTER_TOKEN": TOKEN}
    r = run_cli("lab", "--background", "--ip", "127.0.0.1", "--port", port, "--no-browser", "--notebook-dir",
                root / "notebooks", env=env, timeout=180)
    state_file = root / "cache" / "lab" / "server.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    try:
        assert r.returncode == 0 and state, r.stdout + r.stderr
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "root": root, "out": out, "made": made}
    finally:
        run_cli("lab", "--stop", env=env, timeout=60)
        if state:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(state["pid"], sig)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(1)


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv("JUPYTER_TOKEN", TOKEN)


def _pull(*args, capsys=None):
    from fluxnb.front import cli

    rc = cli.main(["pull", *map(str, args)])
    if capsys is None:
        return rc
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _pod_files(out: Path) -> dict[str, bytes]:
    """What a pull should bring: results, not litter, hidden files, exports or the run log."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix in (".png", ".jpg", ".json", ".ipynb")
            and "exports" not in p.parts}


def _home_files(home: Path) -> dict[str, bytes]:
    return {p.relative_to(home).as_posix(): p.read_bytes() for p in home.rglob("*")
            if p.is_file() and p.name != "runlog.jsonl"}


@contextmanager
def _serve(handler_class):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------
# Against the real lab
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_first_pull_brings_results_and_a_working_run_log(pod, token_env, tmp_path, capsys):
    from fluxnb import runlog

    home = tmp_path / "home"
    # 1. Every result comes, byte for byte, with the pod's times; litter and exports stay.
    rc, out, err = _pull(pod["url"] + "/lab", "--to", home, capsys=capsys)
    assert rc == 0, err
    assert _home_files(home) == _pod_files(pod["out"])
    assert set(out.split()) == {str(home / rel) for rel in _pod_files(pod["out"])}
    for rel in _pod_files(pod["out"]):
        assert abs((home / rel).stat().st_mtime - (pod["out"] / rel).stat().st_mtime) < 1
    assert not [p for p in home.rglob(".*")] and not (home / "exports").exists() and not (home / "notes.bin").exists()
    assert f"pulled {len(_pod_files(pod['out']))} file(s)" in err
    # 2. The run logs (top folder and fox/) hold every pod record once, paths made local.
    for sub in ("", "fox"):
        pod_recs, home_recs = runlog.read(pod["out"] / sub), runlog.read(home / sub)
        assert len(home_recs) == len(pod_recs) > 0
        for p_rec, h_rec in zip(pod_recs, home_recs):
            assert {k: v for k, v in h_rec.items() if k not in ("path", "pod_path")} == \
                   {k: v for k, v in p_rec.items() if k != "path"}
            if p_rec["path"]:
                assert h_rec["pod_path"] == p_rec["path"] and h_rec["path"] == str((home / sub).resolve() /
                                                                                  Path(p_rec["path"]).name)
                assert Path(h_rec["path"]).is_file()
    retried = [r for r in runlog.read(home) if r["id"] == "retry1"]
    assert [r["status"] for r in retried] == ["error", "ok"]  # one item recorded twice stays twice
    # 3. pandas, `fluxnb log` and `fluxnb grid` work at home.
    df = runlog.load(home)
    assert len(df) == len(runlog.read(pod["out"])) and (df["status"] == "ok").sum() == 4
    assert all(str(home.resolve()) in p for p in df.loc[df["status"] == "ok", "path"])
    assert _pull_log(home, capsys).startswith(f"{home / 'runlog.jsonl'}: {len(df)} records")
    from fluxnb.front import cli

    assert cli.main(["grid", str(home), "--cols", "seed", "--json"]) == 0
    grid = json.loads(capsys.readouterr().out)
    assert Path(grid["grid"]).parent == home and all(str(home.resolve()) in p for p in grid["images"])


def _pull_log(home, capsys) -> str:
    from fluxnb.front import cli

    assert cli.main(["log", str(home)]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_second_pull_fetches_only_what_is_new(pod, token_env, tmp_path, capsys):
    import fluxnb
    from fluxnb import runlog

    home = tmp_path / "home"
    assert _pull(pod["url"], "--to", home) == 0
    n_records = len(runlog.read(home))
    capsys.readouterr()
    # 1. Nothing new: nothing fetched, nothing merged, the files untouched.
    before = {p: p.stat().st_mtime_ns for p in home.rglob("*")}
    rc, out, err = _pull(pod["url"], "--to", home, capsys=capsys)
    assert rc == 0 and out == "" and "pulled 0 file(s)" in err and "0 run-log record(s) merged" in err
    assert {p: p.stat().st_mtime_ns for p in home.rglob("*")} == before
    # 2. A new image on the pod: exactly it comes, and its one record.
    new = fluxnb.generate("a new moon", model="tiny", size="64x64", steps=1, seed=11, output_dir=str(pod["out"]),
                          progress=False)[0]
    rc, out, err = _pull(pod["url"], "--to", home, capsys=capsys)
    assert rc == 0 and out.split() == [str(home / new.path.name)]
    assert (home / new.path.name).read_bytes() == new.path.read_bytes()
    assert "1 run-log record(s) merged" in err and len(runlog.read(home)) == n_records + 1
    # 3. A file rewritten on the pod (a batch notebook still being written) is replaced;
    #    one changed here after it was pulled is kept, with a warning.
    report = pod["out"] / "batch_x.ipynb"
    report.write_text('{"cells": []}')
    assert _pull(pod["url"], "--to", home) == 0
    report.write_text('{"cells": [1, 2, 3]}')
    os.utime(report, (time.time() + 5,) * 2)
    mine = home / pod["made"][0].path.name
    mine.write_bytes(b"edited here")
    capsys.readouterr()
    rc, out, err = _pull(pod["url"], "--to", home, capsys=capsys)
    assert rc == 0 and out.split() == [str(home / "batch_x.ipynb")]
    assert (home / "batch_x.ipynb").read_text() == '{"cells": [1, 2, 3]}'
    assert mine.read_bytes() == b"edited here" and "changed here" in err


@pytest.mark.slow
def test_interrupted_pull_leaves_no_file_and_resumes(pod, token_env, tmp_path, capsys):
    # 1. A 3 MiB file on the pod, and a proxy in front of the lab that cuts the first
    #    download after 1 MiB (as a dropped connection does).
    big = pod["root"] / "bigrun" / "flux_big.png"
    big.parent.mkdir()
    big.write_bytes(os.urandom(3 * 2**20))
    cut, ranges = [2**20], []

    class Proxy(BaseHTTPRequestHandler):
        def do_GET(self):
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "range", "accept")}
            ranges.append((self.path.split("?")[0], self.headers.get("Range")))
            req = urllib.request.Request(pod["url"] + self.path, headers=headers)
            try:
                up = urllib.request.urlopen(req, timeout=30)
            except urllib.error.HTTPError as e:
                up = e
            body = up.read()
            self.send_response(up.status if hasattr(up, "status") else up.code)
            for k in ("Content-Type", "Content-Range"):
                if up.headers.get(k):
                    self.send_header(k, up.headers[k])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path.startswith("/files/") and cut:
                self.wfile.write(body[:cut.pop()])
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    home = tmp_path / "home"
    with _serve(Proxy) as url:
        rc, out, err = _pull(url, "--remote-dir", "bigrun", "--to", home, capsys=capsys)
        # 2. One error line; no file under its name, only the hidden part.
        assert rc == 1 and err.count("error:") == 1 and "stopped at 1048576 of 3145728 bytes" in err
        assert "run the same pull again" in err
        assert not (home / "flux_big.png").exists()
        parts = list(home.glob(".flux_big.png.*.part"))
        assert len(parts) == 1 and parts[0].stat().st_size == 2**20
        # 3. The next pull asks for the rest only, and the file is whole; no part is left
        #    (nor one of an older version of the file).
        (home / ".flux_big.png.5-1.part").write_bytes(b"stale")
        rc, out, err = _pull(url, "--remote-dir", "bigrun", "--to", home, capsys=capsys)
    assert rc == 0, err
    assert ranges[-1] == ("/files/bigrun/flux_big.png", f"bytes={2**20}-")
    assert (home / "flux_big.png").read_bytes() == big.read_bytes()
    assert sorted(p.name for p in home.iterdir()) == ["flux_big.png"]


@pytest.mark.slow
def test_dry_run_writes_nothing(pod, token_env, tmp_path, capsys):
    home = tmp_path / "home"
    rc, out, err = _pull(pod["url"], "--to", home, "--dry-run", capsys=capsys)
    assert rc == 0 and "would pull" in err and "run-log record(s) to merge" in err
    assert set(out.split()) == {str(home / rel) for rel in _pod_files(pod["out"])}
    assert not home.exists()


@pytest.mark.slow
def test_since_keeps_old_files_and_records_on_the_pod(pod, token_env, tmp_path, capsys):
    from fluxnb import runlog

    home = tmp_path / "home"
    rc, out, err = _pull(pod["url"], "--to", home, "--since", "1d", capsys=capsys)
    assert rc == 0, err
    assert not (home / "flux_20200101_000000_1.png").exists() and (home / pod["made"][0].path.name).is_file()
    ids = [r["id"] for r in runlog.read(home)]
    assert "old" not in ids and "retry1" in ids and len(ids) == len(runlog.read(pod["out"])) - 1
    assert _pull(pod["url"], "--to", home, "--since", "soon") == 2


@pytest.mark.slow
def test_open_shows_the_newest_image(pod, token_env, tmp_path, monkeypatch, capsys):
    if "microsoft" in Path("/proc/version").read_text().lower():
        pytest.skip("WSL opens images with the Windows viewer")
    bin_dir, seen = tmp_path / "bin", tmp_path / "opened.txt"
    bin_dir.mkdir()
    (bin_dir / "xdg-open").write_text(f'#!/bin/sh\necho "$1" > {seen}\n')
    (bin_dir / "xdg-open").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    home = tmp_path / "home"
    assert _pull(pod["url"], "--to", home, "--open") == 0
    for _ in range(100):
        if seen.is_file() and seen.read_text().strip():
            break
        time.sleep(0.1)
    pod_images = [pod["out"] / rel for rel in _pod_files(pod["out"]) if rel.endswith((".png", ".jpg"))]
    newest = max(pod_images, key=lambda p: p.stat().st_mtime)
    assert seen.read_text().strip() == str((home / newest.relative_to(pod["out"])).resolve())


@pytest.mark.slow
def test_verify_compares_sha256_of_same_size_files(pod, token_env, tmp_path, capsys):
    run = pod["root"] / "verifyrun"
    run.mkdir()
    (run / "flux_v.png").write_bytes(b"A" * 100)
    home = tmp_path / "home"
    home.mkdir()
    (home / "flux_v.png").write_bytes(b"B" * 100)  # the same size, other bytes, older than the pod's
    os.utime(home / "flux_v.png", (time.time() - 3600,) * 2)
    rc, out, err = _pull(pod["url"], "--remote-dir", "verifyrun", "--to", home, capsys=capsys)
    assert rc == 0 and out == "" and "1 already here" in err  # by name and size
    rc, out, err = _pull(pod["url"], "--remote-dir", "verifyrun", "--to", home, "--verify", capsys=capsys)
    assert rc == 0 and out.split() == [str(home / "flux_v.png")]
    assert (home / "flux_v.png").read_bytes() == b"A" * 100
    rc, out, err = _pull(pod["url"], "--remote-dir", "verifyrun", "--to", home, "--verify", capsys=capsys)
    assert rc == 0 and "1 already here" in err


# ---------------------------------------------------------------------------------------
# Errors: one line each, nothing written
# ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_wrong_token_is_refused_in_one_line(pod, tmp_path):
    home = tmp_path / "home"
    r = run_cli("pull", pod["url"], "--to", home, env={"JUPYTER_TOKEN": "not-the-token-123"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:") and "refused the token" in r.stderr
    assert "not-the-token-123" not in r.stderr and not home.exists()


@pytest.mark.slow
def test_wrong_url_and_wrong_folder(pod, token_env, tmp_path, capsys):
    class Plain(BaseHTTPRequestHandler):  # any web server that is not JupyterLab
        def do_GET(self):
            body = b"<html>hello</html>" if self.path == "/" else b"<html>not found</html>"
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    home = tmp_path / "home"
    with _serve(Plain) as url:
        rc, out, err = _pull(url, "--to", home, capsys=capsys)
    assert rc == 2 and err.count("\n") == 1 and "not a JupyterLab" in err and "404" in err
    rc, out, err = _pull(pod["url"], "--remote-dir", "nothing/here", "--to", home, capsys=capsys)
    assert rc == 2 and err.count("\n") == 1 and "remote-dir 'nothing/here': no such folder" in err
    rc, out, err = _pull(pod["url"], "--remote-dir", "/workspace/outputs", "--to", home, capsys=capsys)
    assert rc == 2 and "relative to the lab's root" in err
    assert not home.exists()


def test_unreachable_pod_is_one_line(token_env, tmp_path, capsys):
    from fluxnb.errors import RuntimeFailure
    from fluxnb.front.pull import pull

    home = tmp_path / "home"
    rc, out, err = _pull(f"http://127.0.0.1:{_free_port()}", "--to", home, capsys=capsys)
    assert rc == 1 and err.count("\n") == 1 and "connection refused" in err
    # A pod that accepts the connection and never answers: the timeout.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        t0 = time.monotonic()
        with pytest.raises(RuntimeFailure, match="no answer within 1 s"):
            pull(f"http://127.0.0.1:{s.getsockname()[1]}", to=home, timeout=1)
        assert time.monotonic() - t0 < 10
    assert not home.exists()


def test_token_in_the_url_is_refused(token_env, tmp_path, capsys):
    rc, out, err = _pull("https://abc123-8888.proxy.runpod.net/lab?token=SECRETSECRET42", "--to", tmp_path / "h",
                         capsys=capsys)
    assert rc == 2 and err.count("\n") == 1 and "shell history" in err and "SECRETSECRET42" not in err
    rc, out, err = _pull("https://me:SECRETSECRET42@abc123-8888.proxy.runpod.net", capsys=capsys)
    assert rc == 2 and "SECRETSECRET42" not in err


@pytest.mark.slow
def test_token_never_appears_in_output_or_files(pod, tmp_path):
    from fluxnb import runlog

    # A record on the pod that (wrongly) holds the token: it comes home masked.
    runlog.append(pod["out"] / "leak", {"id": "leak", "path": "", "status": "error", "prompt": f"x {TOKEN} y",
                                        "created_at": datetime.now(timezone.utc).isoformat()})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    home, logs = tmp_path / "home", tmp_path / "logs"
    r = run_cli("-v", "pull", pod["url"], "--to", home, "--token-file", token_file, env={"FLUXNB_LOG_DIR": str(logs)})
    assert r.returncode == 0, r.stderr
    assert TOKEN not in r.stdout + r.stderr
    written = [p for p in list(home.rglob("*")) + list(logs.rglob("*")) if p.is_file()]
    assert len(written) > 5 and not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert [r["prompt"] for r in runlog.read(home / "leak")] == ["x *** y"]


# ---------------------------------------------------------------------------------------
# The parts, without a server
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, base", [
    ("https://abc123-8888.proxy.runpod.net", "https://abc123-8888.proxy.runpod.net/"),
    ("https://abc123-8888.proxy.runpod.net/lab/tree/outputs?x=1", "https://abc123-8888.proxy.runpod.net/"),
    ("abc123-8888.proxy.runpod.net/", "https://abc123-8888.proxy.runpod.net/"),
    ("localhost:8888/lab", "http://localhost:8888/"),
    ("http://127.0.0.1:8888/user/me/lab", "http://127.0.0.1:8888/user/me/"),
])
def test_lab_url_forms(given, base):
    from fluxnb.front.pullclient import lab_url

    assert lab_url(given) == base


def test_remote_dir_and_listed_names_are_bounded():
    from fluxnb.errors import FluxnbError
    from fluxnb.front.pullclient import plain_name, remote_dir_arg

    assert remote_dir_arg("outputs/") == "outputs" and remote_dir_arg("./a//b") == "a/b" and remote_dir_arg("") == ""
    for bad in ("../etc", "a/../../b", "/workspace/outputs"):
        with pytest.raises(FluxnbError, match="relative to the lab's root"):
            remote_dir_arg(bad)
    ok = {"name": "a.png", "path": "outputs/a.png", "type": "file", "size": 3}
    assert plain_name(ok, "outputs") == ("a.png", "file")
    for bad in ({**ok, "name": "../a.png", "path": "outputs/../a.png"}, {**ok, "name": "x/a.png"},
                {**ok, "path": "elsewhere/a.png"}, {**ok, "name": "/etc/passwd", "path": "outputs//etc/passwd"},
                {**ok, "size": -1}, {**ok, "size": "3"}, {**ok, "name": "a\n.png", "path": "outputs/a\n.png"},
                {**ok, "name": ".."}, "a.png"):
        assert plain_name(bad, "outputs") == (None, ""), bad


def test_a_hostile_server_writes_nothing_outside_and_nothing_oversized(token_env, tmp_path, capsys):
    listing = {"type": "directory", "content": [
        {"name": "../evil.png", "path": "outputs/../evil.png", "type": "file", "size": 4},
        {"name": "a_ok.png", "path": "outputs/a_ok.png", "type": "file", "size": 4},
        {"name": "huge.png", "path": "outputs/huge.png", "type": "file", "size": 2**30},
        {"name": "liar.png", "path": "outputs/liar.png", "type": "file", "size": 4}]}

    class Hostile(BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/api/contents/outputs": json.dumps(listing).encode(), "/files/outputs/a_ok.png": b"good",
                    "/files/outputs/liar.png": b"much more than four bytes"}.get(self.path.split("?")[0], b"x" * 9)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    home = tmp_path / "deep" / "home"
    with _serve(Hostile) as url:
        rc, out, err = _pull(url, "--to", home, capsys=capsys)
    assert rc == 1 and "liar.png: the pod sent more bytes than listed" in err  # refused, no file
    assert "not a plain file name" in err and "huge.png: 1024 MiB, over the cap" in err
    assert sorted(p.name for p in home.iterdir()) == ["a_ok.png"] and (home / "a_ok.png").read_bytes() == b"good"
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["home"]


def test_the_token_never_follows_a_redirect(token_env, tmp_path, capsys):
    seen = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    with _serve(Elsewhere) as other:
        class Redirect(Elsewhere):
            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", other + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

        with _serve(Redirect) as url:
            rc, out, err = _pull(url, "--to", tmp_path / "home", capsys=capsys)
    assert rc == 2 and err.count("\n") == 1 and "a redirect to " + other in err and seen == []


def test_record_key_tells_retries_apart():
    from fluxnb.front.pull import record_key

    a = {"id": "i1", "created_at": "2026-01-01T00:00:00.000+00:00", "status": "error", "path": ""}
    b = {**a, "created_at": "2026-01-01T00:01:00.000+00:00", "status": "ok", "path": "/workspace/outputs/x.png"}
    assert record_key(a) != record_key(b)
    assert record_key(b) == record_key({**b, "path": "/home/me/outputs/x.png", "pod_path": b["path"]})
    assert record_key({"prompt": "p", "path": "/a/x.png"}) == record_key({"prompt": "p", "path": "x.png"})


def test_token_sources(tmp_path, monkeypatch):
    import getpass
    import sys

    from fluxnb.errors import FluxnbError
    from fluxnb.front.pullclient import read_token

    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    f = tmp_path / "token"
    f.write_text("  from-the-file-123\n")
    f.chmod(0o600)
    monkeypatch.setenv("JUPYTER_TOKEN", "from-the-env-456")
    assert read_token(f) == "from-the-file-123" and read_token() == "from-the-env-456"
    monkeypatch.setenv("JUPYTER_TOKEN", " ")
    with pytest.raises(FluxnbError, match="JUPYTER_TOKEN is set but empty"):
        read_token()
    monkeypatch.delenv("JUPYTER_TOKEN")
    f.write_text("\n")
    with pytest.raises(FluxnbError, match="empty"):
        read_token(f)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    with pytest.raises(FluxnbError, match="no token for the lab"):
        read_token()
    asked = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or "typed-789")
    assert read_token(host="pod-8888.proxy.runpod.net") == "typed-789"
    assert asked == ["JupyterLab token for pod-8888.proxy.runpod.net: "]


def test_viewer_command_per_system(tmp_path, monkeypatch):
    from fluxnb.front.pull import viewer_command

    img = tmp_path / "a.png"
    tools = {"xdg-open", "wslview"}

    def which(name):
        return f"/usr/bin/{name}" if name in tools else None

    wsl = "Linux version 5.15.153.1-microsoft-standard-WSL2"
    assert viewer_command(img, platform="darwin") == ["open", str(img)]
    assert viewer_command(img, platform="linux", proc_version="Linux version 6.1 (debian)", which=which) == \
        ["xdg-open", str(img)]
    assert viewer_command(img, platform="linux", proc_version=wsl, which=which) == ["wslview", str(img)]
    tools.clear()
    assert viewer_command(img, platform="linux", proc_version="Linux", which=which) is None
    # WSL without wslview: the Windows Explorer, given the Windows path wslpath makes.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wslpath").write_text("#!/bin/sh\n" + r"""printf '%s\n' "C:\\x\\$(basename "$2")" """ + "\n")
    (bin_dir / "wslpath").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tools.update({"wslpath", "explorer.exe"})
    assert viewer_command(img, platform="linux", proc_version=wsl, which=which) == ["explorer.exe", "C:\\x\\a.png"]
