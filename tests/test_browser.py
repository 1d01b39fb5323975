"""The interactive notebook in a real JupyterLab, in Debian's Chromium, driven by Playwright.

JupyterLab listens on 127.0.0.1 only, with a token passed in JUPYTER_TOKEN (never on a
command line); the test opens notebooks/generate.ipynb (a copy), runs it, types a
prompt, clicks Generate, and checks the image in the page and the run-log record.
Skips only when no Chromium is installed (`apt-get install -y chromium` as root), and
fails instead under CI=1 (.ci/run).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
PROMPT = "a red fox in the snow, typed in a browser"


def chromium() -> str:
    for path in (shutil.which("chromium"), "/usr/bin/chromium"):
        if path and os.access(path, os.X_OK):
            return path
    missing = "no Chromium: install Debian's with `apt-get install -y chromium` (as root); .ci/run does"
    if os.environ.get("CI"):  # .ci/run sets CI=1 and installs Chromium: never skip there
        pytest.fail(missing)
    pytest.skip(missing)


def test_without_chromium_it_skips_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        chromium()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="no Chromium"):
        chromium()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, token: str, proc, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {proc.returncode}")
        try:
            req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"jupyter lab did not answer at {url} within {timeout} s")


@pytest.fixture
def lab(tmp_path, tiny_model):
    """A JupyterLab on 127.0.0.1 serving a copy of the notebooks; yields (url, token, output dir)."""
    chromium()  # skip before starting anything when there is no browser
    root, out, home = tmp_path / "lab", tmp_path / "outputs", tmp_path / "home"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "generate.ipynb", root / "generate.ipynb")
    token, port = secrets.token_hex(24), free_port()
    env = dict(os.environ, JUPYTER_TOKEN=token, FLUXNB_MODEL="tiny", FLUXNB_OUTPUT_DIR=str(out),
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               IPYTHONDIR=str(home / "ipython"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, token, proc)
        # the token is in the server's environment, never in its command line
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        yield url, token, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    print((tmp_path / "lab.log").read_text(errors="replace")[-3000:])


def test_generate_in_jupyterlab_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    from fluxnb import count_tokens

    url, token, out = lab
    exe = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # 1. Open the notebook (the token logs the browser in) and wait for its kernel.
            page.goto(f"{url}/lab/tree/generate.ipynb?token={token}", timeout=60_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
            page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                                   " const k = w && w.sessionContext && w.sessionContext.session &&"
                                   " w.sessionContext.session.kernel; return k && k.status === 'idle'; }",
                                   timeout=90_000)
            # 2. Run every cell: the form appears, with the model loaded (the last cell, the
            #    notebook's check, clicks Generate once with the default prompt).
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            form = page.locator(".fluxnb-generator")
            form.wait_for(timeout=120_000)
            page.wait_for_selector(".fluxnb-generator .fluxnb-ok", timeout=120_000)  # "tiny loaded on cpu ..."
            # 3. Type a prompt: the token counter follows.
            box = form.locator("textarea").first
            box.fill(PROMPT)
            counted = f"CLIP {count_tokens(PROMPT, model='tiny').clip_tokens}/77"
            page.wait_for_function("t => document.querySelector('.fluxnb-tokens').textContent.includes(t)", arg=counted,
                                   timeout=30_000)
            # 4. Generate: an image appears in the output, with its settings.
            form.locator("button", has_text="Generate").click()
            img = form.locator("img.fluxnb-image")
            page.wait_for_function("t => { const s = document.querySelector('.fluxnb-settings');"
                                   " return s && s.textContent.includes(t); }", arg=PROMPT, timeout=120_000)
            page.wait_for_function("() => { const i = document.querySelector('img.fluxnb-image');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=120_000)
            assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 64]
            info = form.locator(".fluxnb-settings").inner_text()
            assert PROMPT in info
            assert form.locator("button", has_text="Generate").is_enabled()
        finally:
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))  # for a failure's post-mortem
            browser.close()

    # 5. The run log holds the record of that image.
    records = [json.loads(line) for line in (out / "runlog.jsonl").read_text().splitlines() if line.strip()]
    [rec] = [r for r in records if r["prompt"] == PROMPT]
    assert rec["status"] == "ok" and rec["model"] == "tiny" and Path(rec["path"]).is_file()
    assert str(rec["seed"]) in info and rec["path"] in info
    assert not [e for e in errors if "fluxnb" in e.lower() or "widget" in e.lower()], errors
