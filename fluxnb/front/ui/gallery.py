"""The generator's history as a gallery built from the run log: it survives re-running the
cell and restarting the kernel. Newest first; a click on a thumbnail shows the image, ↺
restores its settings, → input makes it the init image; hovering shows the full seed and
prompt; the one on display is outlined. Filters: this session (images made since this
kernel started), all, and by prompt text.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path

from .widgets import esc, png, w

SESSION_START = datetime.now(timezone.utc)  # "this session": records made since fluxnb.ui was imported
THUMB = 96


class LogImage:
    """An image of an earlier session, from its run-log record: loaded from its file on use."""

    def __init__(self, record: dict):
        self.record = record
        self.path = Path(record["path"])
        self.seed = record.get("seed")
        self._image = self._settings = self._meta = None

    @property
    def image(self):
        if self._image is None:
            from PIL import Image

            with Image.open(self.path) as im:
                self._image = im.copy()
        return self._image

    @property
    def metadata(self) -> dict:
        if self._meta is None:
            from ...outputs.metadata import JSON_KEY, read_metadata

            self._meta = read_metadata(self.path).get(JSON_KEY) or dict(self.record)
        return self._meta

    @property
    def settings(self):
        if self._settings is None:
            from ...outputs.metadata import read_settings

            self._settings = read_settings(self.path, model=self.record.get("model"))
        return self._settings


def created(rec: dict):
    value = rec.get("created_at")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if value is not None and getattr(value, "tzinfo", None) is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


class Gallery:
    """Thumbnails of the images in an output folder's run log."""

    def __init__(self, output_dir, on_show, on_restore, on_use, limit: int = 24):
        W = w()
        self.output_dir, self.limit = output_dir, limit
        self.on_show, self.on_restore, self.on_use = on_show, on_restore, on_use
        self.known: dict = {}     # path -> this form's GeneratedImage (shown without reading the file)
        self.thumbs_cache: dict = {}
        self.shown_path = None
        self.scope = W.ToggleButtons(options=["this session", "all"], value="this session",
                                     style={"button_width": "96px"})
        self.filter = W.Text(placeholder="filter by prompt", layout=W.Layout(width="220px"))
        self.count = W.HTML()
        self.css = W.HTML(layout=W.Layout(height="0px", overflow="hidden"))
        self.thumbs = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.scope.observe(lambda _c: self.refresh(), "value")
        self.filter.observe(lambda _c: self.refresh(), "value")
        self.widget = W.VBox([W.HBox([W.HTML("<b>History</b>"), self.scope, self.filter, self.count],
                                     layout=W.Layout(align_items="center", flex_flow="row wrap")),
                              self.css, self.thumbs])
        self.widget.add_class("fluxnb-gallery")
        self.refresh()

    def records(self) -> list[dict]:
        """The run log's images (status ok, file present) matching the filters, newest first."""
        from ...outputs import runlog

        try:
            recs = runlog.read(self.output_dir, warn=False)
        except Exception:  # noqa: BLE001 - an unreadable log shows an empty gallery
            return []
        text = self.filter.value.strip().lower()
        out = []
        for rec in reversed(recs):
            if rec.get("status") != "ok" or not rec.get("path") or not Path(rec["path"]).is_file():
                continue
            if self.scope.value == "this session":
                when = created(rec)
                if when is None or when < SESSION_START:
                    continue
            if text and text not in str(rec.get("prompt") or "").lower():
                continue
            out.append(rec)
        return out

    def add(self, item) -> None:
        """An image this form made: remembered (its click shows it without reading the file)."""
        if item.path is not None:
            self.known[str(item.path)] = item

    def refresh(self) -> None:
        recs = self.records()
        shown = recs[: self.limit]
        self.count.value = (f'<span class="fluxnb-info">{len(recs)} image(s)'
                            + (f", the newest {self.limit} shown" if len(recs) > self.limit else "") + "</span>")
        boxes, css = [], []
        for n, rec in enumerate(shown):
            box, rule = self.thumb(rec, n)
            boxes.append(box)
            css.append(rule)
        self.css.value = "<style>" + "".join(css) + "</style>"
        self.thumbs.children = boxes
        self.highlight(self.shown_path)

    def item_for(self, rec: dict):
        return self.known.get(rec["path"]) or LogImage(rec)

    def thumb(self, rec: dict, n: int):
        W = w()
        item = self.item_for(rec)
        key = f"fluxnb-t{id(self)}-{n}"
        data = self.thumbs_cache.get(rec["path"])
        if data is None:
            try:
                data = base64.b64encode(png(item.image, THUMB)).decode()
            except Exception:  # noqa: BLE001 - an unreadable file shows an empty thumbnail
                data = ""
            self.thumbs_cache[rec["path"]] = data
        rule = (f".{key}{{background-image:url(data:image/png;base64,{data});background-size:contain;"
                f"background-repeat:no-repeat;background-position:center;}}")
        when = created(rec)
        stamp = when.astimezone().strftime("%H:%M:%S") if when else ""
        prompt = str(rec.get("prompt") or "")
        picture = W.Button(description="", tooltip=f"seed {rec.get('seed')}\n{prompt}",
                           layout=W.Layout(width=f"{THUMB}px", height=f"{THUMB}px"))
        picture.add_class(key)
        picture.add_class("fluxnb-thumb-image")
        picture.on_click(lambda _b, item=item: self.on_show(item))
        caption = W.HTML(f'<div class="fluxnb-caption" title="{esc(prompt)}" style="font-size:11px;'
                         f'line-height:1.2;width:{THUMB + 14}px;overflow-wrap:anywhere">seed {esc(rec.get("seed"))}'
                         f'<br><span class="fluxnb-info">{esc(stamp)} · {esc(rec.get("steps"))} steps</span></div>')
        restore = W.Button(description=f"↺ {rec.get('seed')}", tooltip=f"restore this image's settings (seed "
                           f"{rec.get('seed')})", layout=W.Layout(width=f"{THUMB + 14}px"))
        restore.on_click(lambda _b, item=item: self.on_restore(item))
        use = W.Button(description="→ input", tooltip="use this result as the init image",
                       layout=W.Layout(width=f"{THUMB + 14}px"))
        use.on_click(lambda _b, item=item: self.on_use(item))
        box = W.VBox([picture, restore, caption, use])
        box.add_class("fluxnb-thumb")
        box.item, box.path = item, rec["path"]
        return box, rule

    def highlight(self, path) -> None:
        """Outline the thumbnail of the image on display."""
        self.shown_path = str(path) if path else None
        for box in self.thumbs.children:
            if box.path == self.shown_path:
                box.add_class("fluxnb-shown")
            else:
                box.remove_class("fluxnb-shown")
