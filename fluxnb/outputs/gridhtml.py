"""A grid as a notebook shows it, in code output (`fluxnb.sweep(...)`, `fluxnb.grid(...)`)
and in the sweep form alike: HTML holding the grid at its own scale (never stretched: its
width in CSS pixels is its width in pixels, at most the output's width), each cell a link
that opens that cell's image file.

The links point at the Jupyter server's `/files/` address of the image (the server this
kernel runs under, found from its runtime file), which a browser opens in a new tab; outside
Jupyter, a path relative to the working folder (JupyterLab resolves it in code output) or a
file:// address.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import urllib.parse
from pathlib import Path

DISPLAY_MAX = (2048, 4096)   # the largest display copy (a larger grid is shown shrunk; the file keeps it whole)
PNG_PIXELS = 2_000_000       # a display copy up to this many pixels is a PNG, larger ones a JPEG
PIXELATED_BELOW = 160        # cells this small keep crisp pixels when the browser zooms in
STYLE = ("<style>.fluxnb-gridview a.fluxnb-cell{position:absolute;display:block}"
         ".fluxnb-gridview a.fluxnb-cell:hover{outline:2px solid #1a73e8;outline-offset:-2px}</style>")


def display_copy(image) -> tuple[bytes, str, tuple]:
    """(bytes, mime type, (width, height)) of the grid as shown: the image itself up to
    DISPLAY_MAX (shrunk to fit, never enlarged), PNG when small, else JPEG."""
    img = image if image.mode == "RGB" else image.convert("RGB")
    if img.width > DISPLAY_MAX[0] or img.height > DISPLAY_MAX[1]:
        img = img.copy()
        img.thumbnail(DISPLAY_MAX)
    buf = io.BytesIO()
    if img.width * img.height <= PNG_PIXELS:
        img.save(buf, format="PNG")
        return buf.getvalue(), "image/png", img.size
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), "image/jpeg", img.size


def grid_html(image, cells: list, *, alt: str = "grid") -> str:
    """HTML showing `image` (a PIL grid) with a link over each cell. `cells`: (box, path)
    pairs, box = [x, y, w, h] of the cell's image in the grid, path its file (None: no link)."""
    data, mime, (w, h) = display_copy(image)
    W, H = image.size
    small = cells and min(min(b[2], b[3]) for b, _p in cells) < PIXELATED_BELOW
    crisp = "image-rendering:pixelated;" if small else ""
    links, servers = [], jupyter_servers()
    for (x, y, cw, ch), path in cells:
        if path is None:
            continue
        place = (f"left:{100 * x / W:.4f}%;top:{100 * y / H:.4f}%;width:{100 * cw / W:.4f}%;"
                 f"height:{100 * ch / H:.4f}%")
        links.append(f'<a class="fluxnb-cell" href="{html.escape(files_url(path, servers))}" target="_blank" '
                     f'rel="noopener" title="open {html.escape(Path(path).name)}" style="{place}"></a>')
    src = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return (f'{STYLE}<div class="fluxnb-gridview" style="position:relative;display:inline-block;max-width:100%;'
            f'line-height:0"><img src="{src}" alt="{html.escape(alt)}" width="{w}" height="{h}" '
            f'style="display:block;width:{w}px;max-width:100%;height:auto;{crisp}">{"".join(links)}</div>')


# ---------------------------------------------------------------------------------------
# Where the browser finds a file
# ---------------------------------------------------------------------------------------

def files_url(path: str | os.PathLike, servers: list | None = None) -> str:
    """The address at which the browser opens `path`: `<base_url>files/<path under the
    server's root>` of the Jupyter server this kernel runs under; else (no server, or a file
    outside its root) a path relative to the working folder, else a file:// address.
    `servers`: `jupyter_servers()`, when already read."""
    p = Path(path).resolve()
    for server in jupyter_servers() if servers is None else servers:
        try:
            rel = p.relative_to(Path(server["root_dir"]).expanduser().resolve())
        except (KeyError, ValueError, OSError):
            continue
        base = str(server.get("base_url") or "/")
        return f"{base if base.endswith('/') else base + '/'}files/{urllib.parse.quote(rel.as_posix())}"
    try:
        return urllib.parse.quote(p.relative_to(Path.cwd().resolve()).as_posix())
    except ValueError:
        return p.as_uri()


def jupyter_servers() -> list[dict]:
    """The running Jupyter servers' root folders and base URLs ({"root_dir", "base_url"}, from
    their runtime files; nothing else is kept), the one this kernel's parent process runs
    first; [] when there are none (or Jupyter is not installed)."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        folder = Path(jupyter_runtime_dir())
        files = sorted(folder.glob("jpserver-*.json")) + sorted(folder.glob("nbserver-*.json"))
    except (ImportError, OSError):
        return []
    parent = str(os.getppid())
    files.sort(key=lambda f: f.stem.split("-", 1)[-1] != parent)
    servers = []
    for f in files:
        try:
            info = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict):
            continue
        root = info.get("root_dir") or info.get("notebook_dir")  # the classic notebook's name for it
        if root and (f.stem.endswith(f"-{parent}") or _alive(info.get("pid"))):
            servers.append({"root_dir": root, "base_url": info.get("base_url") or "/"})
    return servers


def _alive(pid) -> bool:
    from ..files import pid_alive

    return isinstance(pid, int) and pid_alive(pid)
