"""Grids as people see them: labels readable at any cell size and never over an image, mixed
image sizes, and the HTML a notebook shows (own scale, each cell a link to its image file)."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb import runlog
from fluxnb.outputs import gridhtml
from fluxnb.outputs.grids import MIN_FONT, SHOWN_WIDTH, draw, font_size


def arr(im):
    return np.asarray(im.convert("RGB")).astype(int)


def shown_image(html: str):
    """The image an HTML grid embeds, and the width its <img> asks for."""
    m = re.search(r'<img src="data:image/(png|jpeg);base64,([^"]+)"[^>]* width="(\d+)"', html)
    assert m, html[:300]
    return Image.open(io.BytesIO(base64.b64decode(m.group(2)))).convert("RGB"), int(m.group(3))


def links(html: str) -> list:
    return re.findall(r'<a class="fluxnb-cell" href="([^"]*)"[^>]*style="left:([\d.]+)%;top:([\d.]+)%;'
                      r'width:([\d.]+)%;height:([\d.]+)%"', html)


@pytest.fixture
def jupyter_server(tmp_path, monkeypatch):
    """A Jupyter server's runtime file, as the server this kernel runs under writes it: its
    root folder is tmp_path/root, its base URL /lab-base/."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    (runtime / f"jpserver-{os.getppid()}.json").write_text(json.dumps(
        {"root_dir": str(root), "base_url": "/lab-base/", "pid": os.getppid(), "port": 8888}))
    return root


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("side,ncols", [(16, 1), (64, 3), (256, 8), (512, 4), (1024, 3), (1024, 10), (2048, 6)])
def test_label_font_is_readable_as_a_notebook_shows_the_grid(side, ncols):
    fs = font_size(side, side, ncols)
    assert fs >= MIN_FONT                                    # at its own size
    width = ncols * side + 8 * fs                            # the cells and the row labels
    assert fs * min(1.0, SHOWN_WIDTH / width) >= MIN_FONT - 1  # shrunk to a notebook's width
    assert fs >= side // 16                                  # and grows with the cells


def test_tiny_cells_get_wide_enough_columns_and_labels_never_cover_them():
    cells = [[Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]]
    labels = ["seed: 1234567890", "seed: 2", "seed: 3"]
    grid, boxes = draw(cells, [], labels, ["a fox"])
    (x0, y0, w0, h0), (x1, _, _, _), (x2, _, _, _) = boxes[0]
    assert (w0, h0) == (16, 16)                               # never scaled
    assert x1 - x0 >= 5 * MIN_FONT and x2 - x1 == x1 - x0     # columns as wide as readable labels
    for (x, y, w, h), im in zip(boxes[0], cells[0]):          # each image whole: no label over it
        assert (arr(grid.crop((x, y, x + w, y + h))) == arr(im)).all()
    g = arr(grid)
    gap = g[:y0, x0 + w0 + 2:x1 - 2]                          # between the first two columns' labels
    assert (g[:y0, x0 - 20:x0 + 36] < 128).any()              # the first label was drawn
    assert (gap == 255).all(axis=(0, 2)).any()                # and a white gap parts it from the next


# ---------------------------------------------------------------------------------------
# Mixed image sizes from the run log
# ---------------------------------------------------------------------------------------

def _record(out, n, size, colour):
    path = out / f"img{n}.png"
    out.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    runlog.append(out, {"id": f"id{n}", "status": "ok", "path": str(path), "prompt": "a fox", "seed": n,
                        "steps": 2, "guidance": 3.5, "width": size[0], "height": size[1],
                        "size": f"{size[0]}x{size[1]}", "model": "tiny", "model_name": "tiny",
                        "created_at": f"2026-11-20T10:00:0{n}.000+00:00"})
    return path


def test_grid_of_mixed_image_sizes_pads_each_cell_never_stretching(outdir, tmp_path):
    sizes = {1: ((64, 64), (255, 0, 0)), 2: ((96, 64), (0, 0, 255)), 3: ((64, 96), (0, 160, 0))}
    for n, (size, colour) in sizes.items():
        _record(outdir, n, size, colour)
    g = fluxnb.grid(runlog.load(outdir), cols="seed", out=tmp_path / "mixed.png")
    assert g.col_values == [1, 2, 3] and g.path.is_file()
    for (x, y, w, h), n in zip(g.boxes, (1, 2, 3)):
        size, colour = sizes[n]
        assert (w, h) == size                                  # each image at its own size
        crop = arr(g.image.crop((x, y, x + w, y + h)))
        assert (crop == np.array(colour)).all()                # whole and undistorted
    centres = [(x + w / 2, y + h / 2) for x, y, w, h in g.boxes]
    (c1, m1), (c2, m2), (c3, m3) = centres
    assert c2 - c1 == c3 - c2 >= 96                            # slots as wide as the widest image
    assert m1 == m2 == m3                                      # each centred in a slot as tall as the tallest


# ---------------------------------------------------------------------------------------
# The HTML a notebook shows
# ---------------------------------------------------------------------------------------

def test_grid_html_native_scale_and_a_link_per_cell_to_the_servers_files(outdir, jupyter_server):
    out = jupyter_server / "my outputs"
    out.mkdir()
    for n in (1, 2):
        _record(out, n, (64, 64), "red")
    g = fluxnb.grid(str(out), cols="seed")
    html = g._repr_html_()
    shown, width = shown_image(html)
    assert shown.size == g.image.size and width == g.image.width           # its own scale: never stretched
    assert (arr(shown) == arr(g.image)).all()
    assert "max-width:100%" in html and "height:auto" in html and "image-rendering:pixelated" in html
    found = links(html)
    assert [h for h, *_ in found] == ["/lab-base/files/my%20outputs/img1.png", "/lab-base/files/my%20outputs/img2.png"]
    W, H = g.image.size
    for (_h, left, top, w, h), (x, y, bw, bh) in zip(found, g.boxes):      # each link lies over its cell
        assert abs(float(left) * W / 100 - x) < 0.5 and abs(float(top) * H / 100 - y) < 0.5
        assert abs(float(w) * W / 100 - bw) < 0.5 and abs(float(h) * H / 100 - bh) < 0.5
    assert not hasattr(g, "_repr_png_")  # one copy of the image in the notebook, not two


def test_files_url_without_a_server(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "none"))
    (tmp_path / "a b").mkdir()
    assert gridhtml.files_url(tmp_path / "a b" / "x.png") == "a%20b/x.png"   # the working folder is tmp_path
    elsewhere = tmp_path.parent / "x.png"
    assert gridhtml.files_url(elsewhere) == elsewhere.resolve().as_uri()


def test_large_grids_are_shown_shrunk_never_enlarged():
    big = Image.new("RGB", (5000, 3000), "white")
    data, mime, size = gridhtml.display_copy(big)
    assert size == (2048, 1229) and mime == "image/jpeg" and Image.open(io.BytesIO(data)).size == size
    small = Image.new("RGB", (200, 100), "white")
    assert gridhtml.display_copy(small)[1:] == ("image/png", (200, 100))
    html = gridhtml.grid_html(big, [([0, 0, 1000, 1000], None)])
    assert 'width="2048"' in html and "image-rendering" not in html and not links(html)


def test_sweep_result_shows_every_grid_with_links_to_its_cells(tiny_model, outdir, jupyter_server):
    out = jupyter_server / "sweep"
    r = fluxnb.sweep("a fox", seeds="1,2", guidance="1.5,5", steps=[1, 2], out=out, progress=False, model="tiny",
                     image_format="png")
    assert len(r.grids) == 2
    html = r._repr_html_()
    assert html.count("<img ") == 2
    hrefs = [h for h, *_ in links(html)]
    assert hrefs == [f"/lab-base/files/sweep/{c.path.name}" for c in r.cells]   # grid by grid, row-major
    for g, im in enumerate(r.grid_images):
        for (x, y, w, h), path in r.grid_cells(g):
            assert (arr(im.crop((x, y, x + w, y + h))) == arr(Image.open(path))).all()
