"""What the generator shows beside an image: its settings, the file as a link that opens the
full image, Download (the original file, with its metadata), Copy parameters (the A1111
text) and Copy prompt.

Links go through JupyterLab's `/files/` route, relative to the running server's root (found
in Jupyter's runtime folder); a file outside that root is offered as a data: URL of its own
bytes, up to `DATA_URL_LIMIT`.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from urllib.parse import quote

from ...prompt.tokens import CLIP_LIMIT
from .widgets import esc

DATA_URL_LIMIT = 16 * 2 ** 20  # bytes: a larger file outside the server root gets no Download button
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def server_root(path: Path) -> tuple[Path, str] | None:
    """(root folder, base URL) of the Jupyter server whose root holds `path`; None outside one."""
    roots = []
    env_root = os.environ.get("FLUXNB_LAB_ROOT")
    if env_root:
        roots.append((Path(env_root), os.environ.get("FLUXNB_LAB_BASE_URL", "/")))
    try:
        from jupyter_server.serverapp import list_running_servers

        roots += [(Path(s.get("root_dir") or s.get("notebook_dir") or ""), s.get("base_url") or "/")
                  for s in list_running_servers()]
    except Exception:  # noqa: BLE001 - no Jupyter server here: no links
        pass
    path = path.resolve()
    for root, base in roots:
        try:
            path.relative_to(root.resolve())
        except (ValueError, OSError):
            continue
        return root.resolve(), base if base.endswith("/") else base + "/"
    return None


def file_url(path: str | os.PathLike) -> str | None:
    """The `/files/` URL of a file under the Jupyter server's root (None elsewhere)."""
    path = Path(path)
    found = server_root(path)
    if found is None:
        return None
    root, base = found
    return base + "files/" + quote(path.resolve().relative_to(root).as_posix())


def data_url(path: str | os.PathLike) -> str | None:
    """The file's own bytes as a data: URL (None when missing or over DATA_URL_LIMIT)."""
    path = Path(path)
    try:
        if path.stat().st_size > DATA_URL_LIMIT:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return f"data:{MIME.get(path.suffix.lower(), 'application/octet-stream')};base64," + base64.b64encode(data).decode()


COPY_JS = ("var t=this.parentNode.querySelector('textarea.fluxnb-copy-{kind}').value;var b=this;"
           "function ok(){{b.textContent='Copied';setTimeout(function(){{b.textContent='{label}'}},1200)}}"
           "function old(){{var a=document.createElement('textarea');a.value=t;document.body.appendChild(a);"
           "a.select();document.execCommand('copy');a.remove();ok()}}"
           "if(navigator.clipboard){{navigator.clipboard.writeText(t).then(ok,old)}}else{{old()}}")


def copy_button(kind: str, label: str, text: str) -> str:
    """A button that copies `text` to the clipboard (navigator.clipboard, else a selected text area)."""
    js = esc(COPY_JS.format(kind=kind, label=label))
    return (f'<textarea class="fluxnb-copy-{kind}" readonly style="display:none">{esc(text)}</textarea>'
            f'<button class="fluxnb-copy" data-copy="{kind}" onclick="{js}">{esc(label)}</button>')


def parameters_text(meta: dict) -> str:
    """The A1111 `parameters` text of an image's metadata (what Copy parameters copies)."""
    from ...outputs.metadata import infotext

    try:
        return infotext(meta)
    except (KeyError, TypeError):
        return str(meta.get("prompt", ""))


def actions_html(path, meta: dict) -> str:
    """The file as a link, Download, Copy parameters and Copy prompt, for one image."""
    parts = []
    if path and Path(path).is_file():
        name = Path(path).name
        url = file_url(path)
        if url:
            parts.append(f'<a class="fluxnb-file" href="{esc(url)}" target="_blank" rel="noopener" '
                         f'title="open the full image">{esc(name)}</a>')
        else:
            parts.append(f'<span class="fluxnb-file" title="{esc(path)}">{esc(name)}</span>')
        href = url or data_url(path)
        if href:
            parts.append(f'<a class="fluxnb-download" href="{esc(href)}" download="{esc(name)}" '
                         f'title="the original file, with its metadata">⤓ Download</a>')
    parts.append(copy_button("params", "Copy parameters", parameters_text(meta)))
    parts.append(copy_button("prompt", "Copy prompt", str(meta.get("prompt") or "")))
    return '<div class="fluxnb-actions">' + " ".join(parts) + "</div>"


def seconds(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "?"
    return f"{v:.2f} s" if v < 1 else f"{v:.1f} s"


def settings_html(rec: dict) -> str:
    """An image's settings and story as a small table."""
    rows = [("prompt", rec.get("prompt"))]
    if rec.get("enhanced_prompt"):
        rows.append(("enhanced", f"{rec['enhanced_prompt']} ({rec.get('enhancer')})"))
    clip = f"{rec.get('clip_tokens')}/{CLIP_LIMIT}"
    if rec.get("clip_dropped"):
        clip += f" — CLIP dropped «{rec['clip_dropped']}»"
    rows += [("tokens", f"CLIP {clip} · T5 {rec.get('t5_tokens')}"), ("seed", rec.get("seed")),
             ("steps", rec.get("steps")), ("guidance", rec.get("guidance")),
             ("size", f"{rec.get('width')}x{rec.get('height')}"),
             *([("input", f"{rec.get('task')} of {rec['init_image']} (strength {rec.get('strength')})")]
               if rec.get("init_image") else []),
             ("model", f"{rec.get('model_name') or rec.get('model')} ({rec.get('device')}, {rec.get('dtype')}, "
                       f"offload {rec.get('offload')})"),
             ("time", seconds(rec.get("elapsed_s"))), ("file", rec.get("path"))]
    body = "".join(f'<tr><th style="text-align:left;padding-right:8px">{k}</th><td class="fluxnb-info-{k}">'
                   f"{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="fluxnb-settings">{body}</table>'


def meta_for(item) -> dict:
    """The metadata an image carries (its record plus settings), for the copy buttons."""
    meta = dict(getattr(item, "metadata", None) or {})
    meta.update({k: v for k, v in (getattr(item, "record", None) or {}).items() if k not in meta})
    return json.loads(json.dumps(meta, default=str))
