"""Where the running JupyterLab (`fluxnb lab`) serves a file: its `/files/` address, to open or
download in the browser that is logged in to the lab."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path


def download_url(path: str | os.PathLike) -> str | None:
    """The address at which the JupyterLab that `fluxnb lab` started serves `path`, or None
    when none is running or the file is outside its root folder."""
    from .lab import status

    st = status()
    if not st["running"] or not st.get("root_dir"):
        return None
    try:
        rel = Path(path).resolve().relative_to(Path(st["root_dir"]).resolve()).as_posix()
    except ValueError:
        return None
    return f"{st['url']}/files/{urllib.parse.quote(rel)}"
