"""The interactive notebook in a real JupyterLab, in Debian's Chromium, driven by Playwright.

JupyterLab listens on 127.0.0.1 only, with a token passed in JUPYTER_TOKEN (never on a
command line); the test opens notebooks/generate.ipynb (a copy), runs it, types a
prompt, clicks Generate, and checks the image in the page and the run-log record.
Then it stops a long run with the Stop button and with Kernel > Interrupt, checks that the
dark theme draws an error in the theme's error colour, and runs the sweep notebook. The
screenshots in docs/ (README) come from here: UPDATE_SCREENSHOTS=1 writes them there.
Skips only when no Chromium is installed (`apt-get install -y chromium` as root), and
fails instead under CI=1 (.ci/run).
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def running_lab(tmp_path, root: Path, out: Path, notebooks=()):
    """A JupyterLab on 127.0.0.1 serving `root` (with copies of `notebooks`), its own Jupyter
    folders under tmp_path and the tiny model; yields (url, token, proc); stopped after."""
    chromium()  # skip before starting anything when there is no browser
    home = tmp_path / "home"
    root.mkdir()
    for name in notebooks:
        shutil.copy(ROOT / "notebooks" / name, root / name)
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
        yield url, token, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "lab.log").read_text(errors="replace")[-3000:])


@pytest.fixture
def lab(tmp_path, tiny_model):
    """JupyterLab serving generate.ipynb and sweeps.ipynb; outputs outside its root."""
    out = tmp_path / "outputs"
    with running_lab(tmp_path, tmp_path / "lab", out, ("generate.ipynb", "sweeps.ipynb")) as (url, token, proc):
        # the token is in the server's environment, never in its command line
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        yield url, token, out


def screenshot(locator, tmp_path, name: str) -> None:
    """An element's screenshot: under tmp_path, and into docs/ with UPDATE_SCREENSHOTS=1."""
    path = tmp_path / name
    page = locator.page
    page.add_style_tag(content=".Toastify, .jp-Notification-Toast { display: none !important; }")  # the news toast
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(path))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "docs" / name)


def open_notebook(page, url, token, name):
    page.goto(f"{url}/lab/tree/{name}?token={token}", timeout=60_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
    page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                           " const k = w && w.sessionContext && w.sessionContext.session &&"
                           " w.sessionContext.session.kernel; return k && k.status === 'idle'; }",
                           timeout=90_000)


def set_custom(page, kind: str, value: str) -> None:
    """Pick `custom` in a preset dropdown and type the value (Enter commits it)."""
    page.select_option(f".fluxnb-generator .fluxnb-{kind} select", "custom")
    box = page.locator(f".fluxnb-generator .fluxnb-{kind}-custom input")
    box.fill(value)
    box.press("Enter")


def status_has(page, text: str, timeout: int = 120_000) -> None:
    page.wait_for_function("t => { const g = document.querySelector('.fluxnb-generator');"
                           " return g && g.textContent.includes(t); }", arg=text, timeout=timeout)


def stop_long_runs(page, form, out) -> None:
    """A long run stopped by the Stop button, then one by Kernel > Interrupt: no image,
    an `interrupted` record each, the form ready again."""
    set_custom(page, "steps", "150")
    set_custom(page, "size", "256x256")
    for how in ("button", "kernel"):
        form.locator("button", has_text="Generate").click()
        # at least 3 steps made (the status may skip a step between two polls on a busy machine)
        page.wait_for_function("() => { const g = document.querySelector('.fluxnb-generator');"
                               " const m = g && g.textContent.match(/step (\\d+)\\/150/);"
                               " return m && Number(m[1]) >= 3; }", timeout=120_000)
        page.wait_for_function("() => { const i = document.querySelector('img.fluxnb-image');"
                               " return i && i.offsetParent !== null && i.naturalWidth > 0; }", timeout=30_000)
        if how == "button":
            form.locator("button.fluxnb-stop").click()
        else:
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
        status_has(page, "stopped at step", timeout=30_000)
        page.wait_for_function("() => !document.querySelector('.fluxnb-generator .fluxnb-go').disabled",
                               timeout=30_000)
    records = [json.loads(line) for line in (out / "runlog.jsonl").read_text().splitlines() if line.strip()]
    stopped = [r for r in records if r["status"] == "interrupted"]
    assert len(stopped) == 2 and all(1 <= r["step"] < 150 for r in stopped), stopped
    assert not [r for r in records if r["status"] == "ok" and r["steps"] == 150]


def dark_theme_error_colour(page, form) -> None:
    """In JupyterLab Dark, a bad value shows as one line in the theme's error colour."""
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
    set_custom(page, "size", "100x100")
    form.locator("button", has_text="Generate").click()
    error = form.locator(".fluxnb-error").first
    error.wait_for(timeout=30_000)
    assert "size 100x100" in error.inner_text() and "Traceback" not in form.inner_text()
    colours = page.evaluate("""() => {
        const e = document.querySelector('.fluxnb-generator .fluxnb-error');
        const probe = document.createElement('span');
        probe.style.color = 'var(--jp-error-color1)';
        document.body.appendChild(probe);
        const want = getComputedStyle(probe).color;
        probe.remove();
        const bg = getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim();
        return [getComputedStyle(e).color, want, bg];
    }""")
    assert colours[0] == colours[1], colours
    assert colours[2].lower() not in ("#fff", "#ffffff", "white"), colours  # the dark theme's background


def test_generate_in_jupyterlab_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    from fluxnb import count_tokens

    url, token, out = lab
    exe = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600},
                                permissions=["clipboard-read", "clipboard-write"])
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # 1. Open the notebook (the token logs the browser in) and wait for its kernel.
            open_notebook(page, url, token, "generate.ipynb")
            # 2. Run every cell: the form appears, with the model loaded (the last cell, the
            #    notebook's check, clicks Generate once with the default prompt).
            page.evaluate("() => { const a = window.jupyterapp; a.shell.collapseLeft && a.shell.collapseLeft();"
                          " return a.commands.execute('notebook:run-all-cells'); }")
            form = page.locator(".fluxnb-generator")
            form.wait_for(timeout=120_000)
            page.wait_for_selector(".fluxnb-generator .fluxnb-ok", timeout=120_000)  # "tiny loaded on cpu ..."
            # 3. Type a prompt: the token counter follows.
            box = form.locator("textarea").first
            box.fill(PROMPT)
            counted = f"CLIP {count_tokens(PROMPT, model='tiny').clip_tokens}/77"
            page.wait_for_function("t => document.querySelector('.fluxnb-tokens').textContent.includes(t)", arg=counted,
                                   timeout=30_000)
            # 4. Generate (Ctrl+Enter in the prompt): an image appears in the output, with its settings.
            box.press("Control+Enter")
            img = form.locator("img.fluxnb-image")
            page.wait_for_function("t => { const s = document.querySelector('.fluxnb-settings');"
                                   " return s && s.textContent.includes(t); }", arg=PROMPT, timeout=120_000)
            page.wait_for_function("() => { const i = document.querySelector('img.fluxnb-image');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=120_000)
            assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 64]
            info = form.locator(".fluxnb-settings").inner_text()
            assert PROMPT in info
            assert form.locator("button", has_text="Generate").is_enabled()
            # 5. The file as a link, Download, Copy; the gallery outlines the image shown.
            assert form.locator("a.fluxnb-download").count() == 1 and form.locator("button.fluxnb-copy").count() == 2
            assert form.locator(".fluxnb-thumb.fluxnb-shown").count() == 1
            form.locator("button.fluxnb-copy[data-copy=prompt]").click()
            page.wait_for_function("() => document.querySelector('button.fluxnb-copy[data-copy=prompt]')"
                                   ".textContent === 'Copied'", timeout=10_000)
            assert page.evaluate("() => navigator.clipboard.readText()") == PROMPT
            screenshot(form, tmp_path, "generator.png")
            # 6. Stop a long run (the Stop button, then Kernel > Interrupt); the dark theme's error colour.
            stop_long_runs(page, form, out)
            dark_theme_error_colour(page, form)
        finally:
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))  # for a failure's post-mortem
            browser.close()

    # 7. The run log holds the record of that image.
    records = [json.loads(line) for line in (out / "runlog.jsonl").read_text().splitlines() if line.strip()]
    [rec] = [r for r in records if r["prompt"] == PROMPT and r["status"] == "ok"]
    assert rec["status"] == "ok" and rec["model"] == "tiny" and Path(rec["path"]).is_file()
    assert str(rec["seed"]) in info and rec["path"] in info
    assert not [e for e in errors if "fluxnb" in e.lower() or "widget" in e.lower()], errors


def test_sweep_form_in_jupyterlab_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token, out = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            open_notebook(page, url, token, "sweeps.ipynb")
            page.evaluate("() => { const a = window.jupyterapp; a.shell.collapseLeft && a.shell.collapseLeft();"
                          " return a.commands.execute('notebook:run-all-cells'); }")
            form = page.locator(".fluxnb-sweep")
            form.wait_for(timeout=120_000)
            # the check cell clicks Run sweep: the grid appears in the form
            page.wait_for_function("() => { const i = document.querySelector('.fluxnb-sweep .fluxnb-grid img');"
                                   " return i && i.offsetParent !== null && i.naturalWidth > 0; }", timeout=180_000)
            assert "6 images" in form.inner_text()
            screenshot(form, tmp_path, "sweep.png")
            # a bad value: one red line, the old grid and status gone, no traceback
            box = form.locator("input[type=text]").first
            box.fill("1-x")
            box.press("Enter")
            form.locator("button", has_text="Run sweep").click()
            form.locator(".fluxnb-error").wait_for(timeout=30_000)
            assert "1-x" in form.locator(".fluxnb-error").inner_text() and "6 images" not in form.inner_text()
            form.locator(".fluxnb-grid img").first.wait_for(state="hidden", timeout=30_000)  # the old grid goes
            assert "Traceback" not in page.content()
        finally:
            page.screenshot(path=str(tmp_path / "sweeps.png"))
            browser.close()
