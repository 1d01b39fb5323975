"""The interactive generator form (ipywidgets).

    gen = fluxnb.ui.generator(model="tiny")   # the interactive generator
    gen.load()                               # load the pipeline once (it stays loaded)
    gen                                      # show the form

Widget names are the settings' names (`gen.prompt`, `gen.steps`, `gen.seed`, ...). Every
callback calls a fluxnb function (generation.generate, tokens.count_tokens, enhancer.enhance,
sweeps.sweep); a FluxnbError is shown in the form, never as a traceback. Option lists and
ranges come from the settings table (config/schema.py).
"""

from __future__ import annotations

import dataclasses
import logging

from ...config.settings import draw_seed, require_prompt, resolve
from ...errors import FluxnbError, raise_if_strict
from ...prompt.tokens import CLIP_LIMIT
from .image_input import ImageInput
from .lora_picker import LoraPicker
from .widgets import (ERROR_BORDER, TOGGLE, bounds, count_tokens, error_html, esc, label, note, options, png,
                      preset_value, preset_widgets, row, set_preset, token_html, w)

log = logging.getLogger(__name__)


class Generator:
    """The interactive generator form. `generator(...)` builds one."""

    FIELDS = ("prompt", "enhance", "steps", "guidance", "size", "seed", "count", "image_format", "jpeg_quality")

    def __init__(self, base):
        W = w()
        s = base
        self.base = dataclasses.replace(base, seed=None, count=1)  # the settings the form does not show
        self.images: list = []           # this session's GeneratedImages, oldest first
        self.shown = None                # the GeneratedImage on display
        self.preview = None              # (prompt, backend, seed, Enhancement) of the last preview
        self.running = False
        wide = W.Layout(width="100%")
        # 1. Prompt, token counters, enhancer with a preview.
        self.prompt = W.Textarea(value=s.prompt, placeholder="describe the image", rows=3, layout=wide)
        self.tokens = W.HTML()
        self.enhance = W.ToggleButtons(options=options("enhance"), value=s.enhance, style=TOGGLE)
        self.preview_button = W.Button(description="Preview enhanced prompt", icon="eye",
                                       layout=W.Layout(width="auto"))
        self.enhanced = W.HTML()
        # 2. Presets with custom values.
        self.steps, self.steps_custom = preset_widgets("steps", s.steps, W.IntText(value=s.steps, description="",
                                                        layout=W.Layout(width="90px")))
        self.guidance, self.guidance_custom = preset_widgets(
            "guidance", s.guidance, W.FloatText(value=s.guidance, step=0.1, layout=W.Layout(width="90px")))
        self.size, self.size_custom = preset_widgets("size", s.size, W.Text(value=s.size, placeholder="WxH",
                                                      layout=W.Layout(width="110px")))
        # 3. Seed: random or locked; reuse the last one.
        self.seed_mode = W.ToggleButtons(options=["random", "lock"], value="random" if s.seed is None else "lock",
                                         style=TOGGLE)
        self.seed = W.Text(value="" if s.seed is None else str(s.seed), placeholder="random",
                           layout=W.Layout(width="130px"))
        self.reuse_button = W.Button(description="Reuse last seed", icon="recycle", disabled=True,
                                     layout=W.Layout(width="auto"))
        self.count = W.IntText(value=s.count, description="images", layout=W.Layout(width="160px"))
        # 4. Output format.
        self.image_format = W.ToggleButtons(options=options("image_format"), value=s.image_format, style=TOGGLE)
        self.jpeg_quality = W.IntSlider(value=s.jpeg_quality, description="JPEG quality", **bounds("jpeg_quality"))
        # 5. Run, progress, result, strip.
        self.generate_button = W.Button(description="Generate", button_style="primary", icon="paint-brush")
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="60%"))
        self.status = W.HTML()
        self.message = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width="auto", height="auto", object_fit="contain"))
        self.image.add_class("fluxnb-image")
        self.info = W.HTML()
        self.strip = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.image_input = ImageInput(s)  # init image, strength, mask (front/ui/image_input.py)
        self.lora_picker = LoraPicker(s)  # LoRA folder, weights, prompt tags (front/ui/lora_picker.py)
        self._wire()
        self.update_tokens()
        self.widget = W.VBox([
            self.prompt, self.tokens, row(label("enhance"), self.enhance, self.preview_button), self.enhanced,
            row(self.steps, self.steps_custom), row(self.guidance, self.guidance_custom),
            row(self.size, self.size_custom),
            row(label("seed"), self.seed_mode, self.seed, self.reuse_button, self.count),
            row(label("format"), self.image_format, self.jpeg_quality), self.image_input.widget,
            self.lora_picker.widget,
            row(self.generate_button, self.progress, self.status), self.message,
            row(self.image_input.shown, self.image, self.info, top=True),
            W.HTML("<b>This session</b> (click ↺ to restore an image's settings)"),
            self.strip])
        self.widget.add_class("fluxnb-generator")

    def _repr_mimebundle_(self, **kw):
        return self.widget._repr_mimebundle_(**kw)

    def _wire(self) -> None:
        self.prompt.observe(lambda _c: self.update_tokens(), "value")
        self.prompt.observe(lambda c: self.lora_picker.show_tags(c["new"]), "value")
        self.seed_mode.observe(lambda c: setattr(self.seed, "disabled", c["new"] == "random"), "value")
        self.seed.disabled = self.seed_mode.value == "random"
        self.image_format.observe(lambda c: setattr(self.jpeg_quality, "disabled", c["new"] != "jpg"), "value")
        self.jpeg_quality.disabled = self.image_format.value != "jpg"
        self.preview_button.on_click(lambda _b: self.show_preview())
        self.reuse_button.on_click(lambda _b: self.reuse_last_seed())
        self.generate_button.on_click(lambda _b: self.run())

    # -- settings -------------------------------------------------------------------
    def values(self) -> dict:
        """The form's values by setting name (raw: validation happens in `settings`)."""
        seed = self.seed.value.strip() if self.seed_mode.value == "lock" else None
        return {"prompt": self.prompt.value, "enhance": self.enhance.value,
                "steps": preset_value(self.steps, self.steps_custom),
                "guidance": preset_value(self.guidance, self.guidance_custom),
                "size": preset_value(self.size, self.size_custom), "seed": seed, "count": self.count.value,
                "image_format": self.image_format.value, "jpeg_quality": self.jpeg_quality.value,
                **self.image_input.value(), **self.lora_picker.value()}

    def settings(self):
        """The validated Settings the form describes (raises FluxnbError, naming the field)."""
        vals = self.values()
        if vals["seed"] == "":
            raise FluxnbError("seed '': the seed is locked but empty", field="seed", value="",
                              fix="type a seed (0 to 4294967295) or switch the seed to random")
        return self.base.replace(**vals)

    def _mark(self, field: str | None) -> None:
        for name in self.FIELDS:
            w = getattr(self, name)
            w.layout.border = ERROR_BORDER if name == field else None
        for name, custom in (("steps", self.steps_custom), ("guidance", self.guidance_custom),
                             ("size", self.size_custom)):
            custom.layout.border = ERROR_BORDER if name == field else None

    def fail(self, exc: Exception) -> None:
        """Show a failure in the form (not as a traceback)."""
        raise_if_strict(exc)
        if not isinstance(exc, FluxnbError):
            log.exception("the generator form hit an unexpected error")
        self._mark(getattr(exc, "field", None))
        self.message.value = error_html(exc)

    # -- callbacks ------------------------------------------------------------------
    def update_tokens(self) -> None:
        """Recount the prompt's CLIP/T5 tokens (the loaded pipeline's tokenizers when loaded)."""
        try:
            self.tokens.value = token_html(count_tokens(self.prompt.value, self.base))
        except Exception as e:  # noqa: BLE001 - a counter must never break typing
            raise_if_strict(e)
            self.tokens.value = error_html(e)

    def load(self):
        """Load the pipeline now (once per kernel; every later image reuses it)."""
        from ...model.pipeline import get_pipeline

        self.status.value = note("info", f"loading {esc(self.base.model)}…")
        try:
            loaded = get_pipeline(self.base.load)
        except Exception as e:  # noqa: BLE001 - shown in the form
            self.status.value = ""
            self.fail(e)
            return None
        notes = "; ".join(loaded.notes)
        self.status.value = note("ok", f"{esc(loaded.model_name)} loaded on {loaded.device} ({loaded.dtype}, "
                                        f"offload {loaded.offload}) in {loaded.load_s:.1f} s"
                                  + (f" — {esc(notes)}" if notes else ""))
        self.update_tokens()
        return loaded

    def _draw_or_pending(self, s) -> int:
        """The seed for the next image: the locked one, the previewed one, or a new one."""
        if s.seed is not None:
            return s.seed
        p = self.preview
        if p and p[0] == s.prompt and p[1] == s.enhance:
            return p[2]
        return draw_seed()

    def show_preview(self):
        """Enhance the prompt now and show the text the model will get, with its tokens."""
        from ...prompt import enhancer

        self.message.value = ""
        try:
            s = self.settings()
            require_prompt(s.prompt)
            seed = self._draw_or_pending(s)
            enh = enhancer.enhance(s.prompt, backend=s.enhance, model=s.enhance_model, seed=seed,
                                   use_cache=s.enhance_cache, fallback=s.enhance_fallback)
        except Exception as e:  # noqa: BLE001 - shown in the form
            self.enhanced.value = ""
            self.fail(e)
            return None
        self._mark(None)
        self.preview = (s.prompt, s.enhance, seed, enh)
        if enh.backend == "none":
            self.enhanced.value = note("info", "enhance is none: the model gets the prompt as typed")
            return enh
        how = f"{esc(enh.backend)}" + (f" ({esc(enh.model)})" if enh.model else "")
        if enh.fallback_from:
            how += f", fell back from {esc(enh.fallback_from)}"
        self.enhanced.value = (f'<div class="fluxnb-enhanced"><b>Enhanced</b> by {how}, seed {seed}'
                               f'{" (cached)" if enh.cached else ""}:<br><i>{esc(enh.enhanced)}</i>'
                               f"{token_html(count_tokens(enh.enhanced, s))}</div>")
        return enh

    def reuse_last_seed(self) -> None:
        if self.images:
            self.seed.value = str(self.images[-1].seed)
            self.seed_mode.value = "lock"

    def _on_step(self, _pipe, i, _t, _kwargs):
        self.progress.value = min(self.progress.value + 1, self.progress.max)
        steps = self._run_steps
        n = (self.progress.value - 1) // steps + 1
        self.status.value = note("info", f"image {n}/{self._run_count} · step {i + 1}/{steps}")
        return {}

    def run(self):
        """The Generate button: validate, generate with a per-step progress bar, show, record."""
        from ...image.make import generate

        if self.running:
            return None
        self.message.value = ""
        try:
            s = self.settings()
            require_prompt(s.prompt)
            s = s.replace(seed=self._draw_or_pending(s))
        except Exception as e:  # noqa: BLE001 - shown in the form
            self.fail(e)
            return None
        self._mark(None)
        self.running, self.generate_button.disabled = True, True
        self.generate_button.description = "Generating…"
        self._run_steps, self._run_count = s.steps, s.count
        self.progress.max, self.progress.value = s.steps * s.count, 0
        self.progress.bar_style = ""
        try:
            made = generate(settings=s, callbacks=(self._on_step,), progress=False)
        except Exception as e:  # noqa: BLE001 - recorded in the run log by generate; shown here
            self.progress.bar_style = "danger"
            self.status.value = ""
            self.fail(e)
            return None
        finally:
            self.running, self.generate_button.disabled = False, False
            self.generate_button.description = "Generate"
        self.progress.bar_style = "success"
        total = sum(m.record.get("elapsed_s") or 0 for m in made)
        self.status.value = note("ok", f"{len(made)} image(s) in {total:.1f} s")
        for item in made:
            self.images.append(item)
            self.strip.children = (*self.strip.children, self._thumb(item))
        if self.seed_mode.value == "random":
            self.seed.value = str(made[-1].seed)
        self.reuse_button.disabled = False
        self.show(made[-1])
        return made

    # -- showing and restoring ------------------------------------------------------
    def show(self, item) -> None:
        """Put an image and its settings on display."""
        self.shown = item
        self.image.value = png(item.image, 768)
        self.image.layout.width = f"{min(768, max(256, item.image.width))}px"  # small images shown bigger
        self.info.value = settings_html(item.record or item.metadata)

    def _thumb(self, item):
        W = w()
        thumb = W.Image(value=png(item.image, 96), format="png", layout=W.Layout(width="96px"))
        button = W.Button(description=f"↺ {item.seed}", tooltip="restore this image's settings",
                          layout=W.Layout(width="96px"))
        button.on_click(lambda _b, item=item: self.restore(item))
        use = W.Button(description="→ input", tooltip="use this result as the init image", layout=W.Layout(width="96px"))
        use.on_click(lambda _b, item=item: self.image_input.use(item.path))
        box = W.VBox([thumb, button, use])
        box.item = item
        return box

    def restore(self, item) -> None:
        """Set the form to an earlier image's settings (seed locked) and show it."""
        s = item.settings
        self.prompt.value = s.prompt
        self.enhance.value = s.enhance
        set_preset(self.steps, self.steps_custom, "steps", s.steps)
        set_preset(self.guidance, self.guidance_custom, "guidance", s.guidance)
        set_preset(self.size, self.size_custom, "size", s.size)
        self.seed_mode.value, self.seed.value = "lock", str(item.seed)
        self.count.value = 1
        self.image_format.value, self.jpeg_quality.value = s.image_format, s.jpeg_quality
        self.image_input.set(s)
        self.lora_picker.set(s)
        self.message.value = ""
        self._mark(None)
        self.show(item)


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
             ("time", f"{rec.get('elapsed_s')} s"), ("file", rec.get("path"))]
    body = "".join(f'<tr><th style="text-align:left;padding-right:8px">{k}</th><td class="fluxnb-info-{k}">'
                   f"{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="fluxnb-settings">{body}</table>'


def generator(model: str | None = None, output_dir: str | None = None, *, load: bool = False, **settings) -> Generator:
    """Build the interactive generator. `model`, `output_dir` and any other setting start the
    form (None: the usual resolution: defaults < env/config.env); `load=True` loads the
    pipeline straight away. Bad settings raise FluxnbError here (before any widget exists)."""
    base = resolve(model=model, output_dir=output_dir, **settings)
    form = Generator(base)
    if load:
        form.load()
    return form


