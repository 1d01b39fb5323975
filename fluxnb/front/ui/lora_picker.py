"""The generator form's LoRA picker: the LoRA folder's files (name, size, A1111's short hash),
a weight slider for each one chosen, and a note of the `<lora:NAME:WEIGHT>` tags in the prompt.

    picker = LoraPicker(settings)   # the start values (settings.loras)
    picker.widget                   # the controls
    picker.value()                  # {"loras": ["PATH:WEIGHT", ...]} for settings.replace
    picker.set(settings)            # the controls as an image's settings had them
    picker.show_tags(prompt)        # the prompt's tags, shown as chips

Adapters given elsewhere (a path outside the folder, a hub id) are kept as they were and
listed under the picker; the folder is $FLUXNB_LORA_DIR (loras/, /workspace/loras on a pod).
"""

from __future__ import annotations

from pathlib import Path

from ...config import loras as config_loras
from ...errors import FluxnbError
from .widgets import esc, note, row, w


def folder_files() -> list[Path]:
    """The LoRA folder's .safetensors files, by name."""
    d = config_loras.lora_dir()
    return sorted(d.glob("*.safetensors"), key=lambda p: p.name.lower()) if d.is_dir() else []


def describe_file(path: Path) -> str:
    """`name (12.3 MB, abc123def456)`: what the picker lists."""
    mb = path.stat().st_size / 2**20
    try:
        short = config_loras.short_hash(str(path))
    except OSError:
        short = "unreadable"
    return f"{path.stem} ({mb:.1f} MB, {short})"


class LoraPicker:
    """The LoRA controls; `.widget`, `.value()`, `.set(settings)`, `.show_tags(prompt)`."""

    def __init__(self, settings):
        W = w()
        self.weights: dict = {}          # path -> FloatSlider
        self.others: list = []           # specs from elsewhere (not in the folder), kept as given
        self.choose = W.SelectMultiple(options=[], rows=4, description="LoRAs", layout=W.Layout(width="60%"))
        self.refresh_button = W.Button(description="Refresh", icon="refresh", layout=W.Layout(width="auto"))
        self.sliders = W.VBox()
        self.tags = W.HTML()
        self.folder = W.HTML()
        self.refresh()
        self.choose.observe(lambda _c: self._sliders(), "value")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.set(settings)
        self.show_tags(settings.prompt)
        self.widget = W.VBox([row(self.choose, self.refresh_button), self.folder, self.sliders, self.tags])
        self.widget.add_class("fluxnb-lora-picker")

    def refresh(self) -> None:
        """List the LoRA folder again (a file added while the form is open)."""
        chosen = self.choose.value
        files = folder_files()
        self.choose.options = [(describe_file(p), str(p.resolve())) for p in files]
        self.choose.value = tuple(v for v in chosen if v in {str(p.resolve()) for p in files})
        where = esc(config_loras.lora_dir())
        self.folder.value = note("info", f"LoRA folder {where}: {len(files)} file{'s' * (len(files) != 1)}"
                                 + ("" if files else " (put .safetensors files there, or set FLUXNB_LORA_DIR)"))

    def _slider(self, path: str, weight: float = 1.0):
        W = w()
        if path not in self.weights:
            lo, hi = config_loras.weight_range()
            self.weights[path] = W.FloatSlider(value=weight, min=lo, max=hi, step=0.05, readout_format=".2f",
                                               description=config_loras.name_of(path)[:20],
                                               layout=W.Layout(width="60%"))
        return self.weights[path]

    def _sliders(self) -> None:
        self.sliders.children = [self._slider(p) for p in self.choose.value]

    def value(self) -> dict:
        """The `loras` setting the picker describes: the chosen files at their weights, then the others."""
        return {"loras": [f"{p}:{self._slider(p).value:g}" for p in self.choose.value] + list(self.others)}

    def set(self, settings) -> None:
        """Choose the adapters of `settings` that are in the folder (at their weights); keep the rest."""
        listed = {v for _label, v in self.choose.options}
        chosen, self.others = [], []
        for spec in settings.loras:
            x = config_loras.parse(spec)
            if x.source in listed:
                self._slider(x.source).value = x.weight
                chosen.append(x.source)
            else:
                self.others.append(spec)
        self.choose.value = tuple(chosen)
        self._sliders()
        self.show_tags(getattr(settings, "prompt", ""))

    def show_tags(self, prompt: str) -> None:
        """The prompt's `<lora:...>` tags as chips (or what is wrong with one), and the others."""
        chips = []
        try:
            found = config_loras.prompt_tags(prompt or "")
        except FluxnbError as e:
            self.tags.value = note("error", "⚠ " + esc(e))
            return
        for x in found:
            chips.append(f'<span class="fluxnb-chip" style="border:1px solid #888;border-radius:9px;padding:0 6px">'
                         f'{esc(x.name)} {x.weight:g}</span>')
        extra = [f"{esc(config_loras.parse(s).name)} {config_loras.parse(s).weight:g}" for s in self.others]
        text = ("prompt tags: " + " ".join(chips) if chips else "") + \
               (("; " if chips else "") + "also: " + ", ".join(extra) if extra else "")
        self.tags.value = note("info", text) if text else ""
