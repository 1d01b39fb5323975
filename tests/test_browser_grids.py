"""Sweep grids in a real JupyterLab, in Debian's Chromium (as tests/test_browser.py runs the
generator): the form's grid and the code output's are shown at the grid's own scale (never
stretched), alike, and clicking a cell opens that cell's image from the server's /files/."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_browser import CHROMIUM_ARGS, chromium, open_notebook, running_lab

pytestmark = pytest.mark.browser


@pytest.fixture
def sweep_lab(tmp_path, tiny_model):
    """A JupyterLab on 127.0.0.1 serving a copy of sweeps.ipynb, its outputs inside the root."""
    root = tmp_path / "lab"
    with running_lab(tmp_path, root, root / "outputs", ("sweeps.ipynb",)) as (url, token, _proc):
        yield url, token, root / "outputs"


SIZES = """g => { const i = g.querySelector('img'); const r = i.getBoundingClientRect();
  const cells = [...g.querySelectorAll('a.fluxnb-cell')].map(a => { const c = a.getBoundingClientRect();
    return [c.left - r.left, c.top - r.top, c.width, c.height, a.getAttribute('href')]; });
  return {natural: [i.naturalWidth, i.naturalHeight], shown: [r.width, r.height], cells}; }"""


def test_sweep_grids_in_jupyterlab_are_unstretched_alike_and_clickable(sweep_lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token, out = sweep_lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            # 1. Open the notebook, run it all: the code output's grid, then the form's (the
            #    notebook's last cell clicks Run sweep).
            open_notebook(page, url, token, "sweeps.ipynb")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            form_grid = page.locator(".fluxnb-sweep .fluxnb-gridview")
            form_grid.locator("img").wait_for(timeout=180_000)
            page.wait_for_function("() => [...document.querySelectorAll('.fluxnb-gridview img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
            code_grid = page.locator(".jp-OutputArea-output:not(:has(.fluxnb-sweep)) .fluxnb-gridview").first
            form, code = form_grid.evaluate(SIZES), code_grid.evaluate(SIZES)

            # 2. Both at the grid's own size (the output area is wider than this small grid).
            assert form["shown"] == form["natural"] and code["shown"] == code["natural"], (form, code)
            assert form["natural"] == code["natural"]
            # 3. Six cells, each link over its image, alike in both.
            assert len(form["cells"]) == len(code["cells"]) == 6
            assert [c[:4] for c in form["cells"]] == [c[:4] for c in code["cells"]]
            assert all(c[2] == 64 and c[3] == 64 and c[4].startswith("/files/outputs/flux_") for c in form["cells"])

            # 4. Clicking a cell of the form's grid opens its image.
            with page.context.expect_page() as opened:
                form_grid.locator("a.fluxnb-cell").nth(4).click()
            tab = opened.value
            tab.wait_for_load_state()
            assert tab.url.endswith(form["cells"][4][4])
            assert tab.evaluate("() => [document.images[0].naturalWidth, document.images[0].naturalHeight]") == [64, 64]
            assert (out / Path(form["cells"][4][4]).name).is_file()
            # 5. And so does clicking a cell of the code output's grid (shown by JupyterLab's renderer).
            with page.context.expect_page() as opened:
                code_grid.locator("a.fluxnb-cell").nth(1).click()
            tab = opened.value
            tab.wait_for_load_state()
            assert tab.url.endswith(code["cells"][1][4]), tab.url
            assert tab.evaluate("() => [document.images[0].naturalWidth, document.images[0].naturalHeight]") == [64, 64]
        finally:
            page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)
            browser.close()
