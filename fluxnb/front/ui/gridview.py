"""The sweep form's grid: shown exactly as code output shows a sweep (`SweepResult._repr_html_`:
its own scale, never stretched, each cell a link that opens its image), and a copy saved
beside it."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import FluxnbError
from .widgets import w


def grid_widget():
    """An HTML widget for a grid (class `fluxnb-grid`), empty until `show_grid`."""
    W = w()
    widget = W.HTML(value="", layout=W.Layout(max_width="100%", overflow="auto"))
    widget.add_class("fluxnb-grid")
    return widget


def show_grid(widget, result) -> None:
    """Show a SweepResult's grids in `widget` as code output shows them."""
    widget.value = result._repr_html_() or ""


def save_copy(result, name: str | os.PathLike | None = None) -> Path:
    """Save a copy of a sweep's grid (never over an existing file: `_1`, `_2`... are added)
    and return its full path. No name: `<grid>_copy.png` beside the grid in the output
    folder; a relative name is taken within that folder too; a folder (an existing one, or a
    name ending in /) gets `<grid>_copy.png` in it; `~` is expanded."""
    from ...outputs.files import write_new

    if result is None or result.grid is None:
        raise FluxnbError("save: no grid yet", field="save", fix="run a sweep first")
    grid = Path(result.grid).resolve()
    text = str(name or "").strip()
    target = Path(text).expanduser() if text else Path(f"{grid.stem}_copy.png")
    if not target.is_absolute():
        target = grid.parent / target
    if text.endswith(("/", os.sep)) or target.is_dir():  # a folder: the copy goes in it
        target = target / f"{grid.stem}_copy.png"
    if target.suffix.lower() != ".png":
        raise FluxnbError(f"save as {text!r}: grids are PNG files (they carry the sweep's metadata)",
                          field="save", value=text, fix="use a name ending in .png")
    return write_new(target.parent, target.name, grid.read_bytes()).resolve()
