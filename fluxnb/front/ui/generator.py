"""The interactive generator form (ipywidgets).

    gen = fluxnb.ui.generator(model="tiny")   # the interactive generator
    gen.load()                               # load the pipeline once (it stays loaded)
    gen                                      # show the form

Widget names are the settings' names (`gen.prompt`, `gen.steps`, `gen.seed`, ...). Every
callback calls a fluxnb function (generation.generate, tokens.count_tokens, enhancer.enhance,
sweeps.sweep); a FluxnbError is shown in the form as one red line, never as a traceback.
Option lists and ranges come from the settings table (config/schema.py).

In a kernel Generate runs in a worker thread (ui/running.py: Stop, Skip, Kernel > Interrupt),
showing a live preview (image/preview.py); history: ui/gallery.py; links and copy: ui/result.py.
"""

from __future__ import annotations

import dataclasses
import logging

from ...config.settings import require_prompt, resolve
from ...errors import FluxnbError, raise_if_strict
from ...image.callbacks import Callback
from . import enhanced
from .gallery import Gallery
from .image_input import ImageInput
from .lora_picker import LoraPicker
from .result import actions_html, meta_for, settings_html  # noqa: F401 - settings_html: ui's API
from .running import run_controls
from .theme import GENERATOR_LABELS, error_line, style
from .widgets import (ERROR_BORDER, TOGGLE, bounds, count_tokens, esc, label, note, options, png, preset_value,
                      preset_widgets, row, set_preset, token_html, w)

log = logging.getLogger(__name__)


class _ImageCounter(Callback):
    """Which image of the run is denoising (for the progress bar and the status line)."""

    def __init__(self, form):
        self.form = form

    def before(self, jobs):
        self.form._image_no += 1


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
        self.preview_every = None        # live preview every N steps (None: about 8 per image)
        self.last = None                 # what the last Generate returned (the images), or the error
        self.running = False
        wide = W.Layout(width="100%")
        # 1. Prompt, token counters, enhancer with a preview.
        self.prompt = W.Textarea(value=s.prompt, placeholder="describe the image (Ctrl+Enter generates)", rows=3,
                                 layout=wide)
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
        self.count = W.IntText(value=s.count, description="images", layout=W.Layout(width="160px"),
                               style={"description_width": "64px"})
        # 4. Output format.
        self.image_format = W.ToggleButtons(options=options("image_format"), value=s.image_format, style=TOGGLE)
        self.jpeg_quality = W.IntSlider(value=s.jpeg_quality, description="JPEG quality", **bounds("jpeg_quality"))
        # 5. Run (Stop, Skip), progress, result with its actions, the gallery.
        self.generate_button = run_controls(self, "Generate", "paint-brush", "40%")  # + worker, Stop, Skip, progress
        self.status = W.HTML()
        self.message = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width="auto", height="auto", object_fit="contain",
                                                           display="none"))  # hidden until the first image
        self.image.add_class("fluxnb-image")
        self.actions = W.HTML()
        self.info = W.HTML()
        self.image_input = ImageInput(s)  # init image, strength, mask (front/ui/image_input.py)
        self.lora_picker = LoraPicker(s)  # LoRA folder, weights, prompt tags (front/ui/lora_picker.py)
        self.gallery = Gallery(s.output_dir, on_show=self.show, on_restore=self.restore,
                               on_use=lambda item: self.image_input.use(item.path))
        self.strip = self.gallery.thumbs
        self._wire()
        self.update_tokens()
        controls = W.VBox([
            row(self.steps, self.steps_custom), row(self.guidance, self.guidance_custom),
            row(self.size, self.size_custom),
            row(label("seed"), self.seed_mode, self.seed, self.reuse_button), row(label(""), self.count),
            row(label("format"), self.image_format, self.jpeg_quality), self.image_input.widget,
            self.lora_picker.widget],
            layout=W.Layout(flex="0 1 560px", min_width="360px"))
        result = W.VBox([self.image, self.actions, self.info], layout=W.Layout(flex="1 1 320px", min_width="256px"))
        self.widget = W.VBox([
            style(), self.prompt, self.tokens, row(label("enhance"), self.enhance, self.preview_button), self.enhanced,
            row(self.generate_button, self.stop_button, self.skip_button, self.progress, self.status), self.message,
            W.HBox([controls, W.VBox([self.image_input.shown]), result],
                   layout=W.Layout(flex_flow="row wrap", align_items="flex-start")),
            self.gallery.widget])
        self.widget.add_class("fluxnb-generator")

    def _repr_mimebundle_(self, **kw):
        return self.widget._repr_mimebundle_(**kw)

    def _wire(self) -> None:
        self.prompt.observe(lambda _c: self.update_tokens(), "value")
        self.prompt.observe(lambda c: self.lora_picker.show_tags(c["new"]), "value")
        self.prompt.observe(lambda _c: self._mark_stale_preview(), "value")
        self.enhance.observe(lambda _c: self._mark_stale_preview(), "value")
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

    def mark_field(self, field: str | None) -> None:  # outline the field a message names (None: none)
        for name in self.FIELDS:
            w = getattr(self, name)
            w.layout.border = ERROR_BORDER if name == field else None
        for name, custom in (("steps", self.steps_custom), ("guidance", self.guidance_custom),
                             ("size", self.size_custom)):
            custom.layout.border = ERROR_BORDER if name == field else None

    def fail(self, exc: BaseException) -> None:
        """Show a failure in the form as one red line (never a traceback for a FluxnbError);
        the stale status, progress and result go."""
        raise_if_strict(exc)
        if not isinstance(exc, FluxnbError):
            log.error("the generator form hit an unexpected error", exc_info=exc)
        self.mark_field(getattr(exc, "field", None))
        self.message.value = error_line(exc, GENERATOR_LABELS)
        self.status.value = ""
        self.progress.value, self.progress.bar_style = 0, ""
        self.clear_result()

    def clear_result(self) -> None:
        self.shown = None
        self.image.layout.display = "none"
        self.actions.value = self.info.value = ""
        self.gallery.highlight(None)

    # -- callbacks ------------------------------------------------------------------
    def update_tokens(self) -> None:
        """Recount the prompt's CLIP/T5 tokens (the loaded pipeline's tokenizers when loaded)."""
        try:
            self.tokens.value = token_html(count_tokens(self.prompt.value, self.base))
        except Exception as e:  # noqa: BLE001 - a counter must never break typing
            raise_if_strict(e)
            self.tokens.value = error_line(e, GENERATOR_LABELS)

    def load(self):
        """Load the pipeline now (once per kernel; every later image reuses it)."""
        from ...model.pipeline import get_pipeline

        self.status.value = note("info", f"loading {esc(self.base.model)}…")
        try:
            loaded = get_pipeline(self.base.load)
        except Exception as e:  # noqa: BLE001 - shown in the form
            self.fail(e)
            return None
        notes = "; ".join(loaded.notes)
        self.status.value = note("ok", f"{esc(loaded.model_name)} loaded on {loaded.device} ({loaded.dtype}, "
                                        f"offload {loaded.offload}) in {loaded.load_s:.1f} s"
                                  + (f" — {esc(notes)}" if notes else ""))
        self.update_tokens()
        return loaded

    def _draw_or_pending(self, s) -> int:
        return enhanced.seed_for(self, s)

    def _mark_stale_preview(self) -> None:
        enhanced.mark_stale(self)

    def show_preview(self):
        """Enhance the prompt now and show the text the model will get (front/ui/enhanced.py)."""
        return enhanced.show_preview(self)

    def reuse_last_seed(self) -> None:
        if self.images:
            self.seed.value = str(self.images[-1].seed)
            self.seed_mode.value = "lock"

    def _on_step(self, _pipe, i, _t, _kwargs):
        steps = self._run_steps
        self.progress.value = min((self._image_no - 1) * steps + i + 1, self.progress.max)
        self.status.value = note("info", f"image {self._image_no}/{self._run_count} · step {i + 1}/{steps}")
        return {}

    def _on_preview(self, image, step) -> None:
        self.image.value = png(image, 768)
        self.image.layout.width = f"{min(768, max(256, self._run_width))}px"
        self.image.layout.display = None

    def stop(self) -> None:  # the Stop button
        self.worker.control.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a Generate running in the background (inside a kernel) to end."""
        return self.worker.wait(timeout)

    def run(self):
        """The Generate button: validate, then generate (in a worker thread inside a kernel)
        with a per-step progress bar, a live preview, Stop and Skip; show and record."""
        from ...image.make import generate
        from ...image.preview import LivePreview

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
        self.mark_field(None)
        self.running, self.generate_button.disabled = True, True
        self.generate_button.description = "Generating…"
        self._run_steps, self._run_count, self._run_width, self._image_no = s.steps, s.count, s.width, 0
        self.progress.max, self.progress.value = s.steps * s.count, 0
        self.progress.bar_style = ""
        self.status.value = note("info", "starting…")
        every = self.preview_every or max(1, s.steps // 8)
        hooks = (_ImageCounter(self), self._on_step, LivePreview(self._on_preview, every=every))

        def work(control):
            return generate(settings=s, callbacks=(control.callback(), *hooks), progress=False)

        self.last = None
        self.worker.start(work, self._done, skip=s.count > 1)
        return self.last if isinstance(self.last, list) else None  # the images (outside a kernel)

    def _done(self, made, error) -> None:
        self.running, self.generate_button.disabled = False, False
        self.generate_button.description = "Generate"
        if isinstance(error, KeyboardInterrupt):
            self.last = error
            self._stopped(self.worker.control.step)
            return
        if error is not None:
            self.last = error
            self.progress.bar_style = "danger"
            self.fail(error)
            return
        self.last = made
        self._finished(made)

    def _stopped(self, step: int) -> None:
        self.progress.bar_style = "warning"
        self.status.value = note("warn", f"stopped at step {step}/{self._run_steps} of image {self._image_no}/"
                                         f"{self._run_count}: nothing unfinished saved (recorded as interrupted)")
        self.gallery.refresh()
        if self.shown is not None:
            self.show(self.shown)  # the preview goes; the image shown before comes back
        else:
            self.clear_result()

    def _finished(self, made: list) -> None:
        self.progress.bar_style = "success"
        self.progress.value = self.progress.max
        skipped = self._run_count - len(made)
        total = sum(m.record.get("elapsed_s") or 0 for m in made)
        self.status.value = note("ok", f"{len(made)} image(s) in {total:.1f} s"
                                 + (f", {skipped} skipped" if skipped else ""))
        for item in made:
            self.images.append(item)
            self.gallery.add(item)
        self.gallery.refresh()
        if not made:
            return
        if self.seed_mode.value == "random":
            self.seed.value = str(made[-1].seed)
        self.reuse_button.disabled = False
        self.show(made[-1])

    # -- showing and restoring ------------------------------------------------------
    def show(self, item) -> None:
        """Put an image, its settings and its file's links on display."""
        self.shown = item
        image = item.image
        self.image.value = png(image, 768)
        self.image.layout.width = f"{min(768, max(256, image.width))}px"  # small images shown bigger
        self.image.layout.display = None
        rec = item.record or item.metadata
        self.info.value = settings_html(rec)
        self.actions.value = actions_html(item.path, meta_for(item))
        self.gallery.highlight(item.path)

    def restore(self, item) -> None:
        """Set the form to an earlier image's settings (seed locked) and show it."""
        try:
            s = item.settings
        except Exception as e:  # noqa: BLE001 - an image of another session whose file cannot be read back
            self.fail(e)
            return
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
        self.mark_field(None)
        self.progress.value, self.progress.bar_style = 0, ""
        prompt = s.prompt if len(s.prompt) <= 60 else s.prompt[:59] + "…"
        self.status.value = note("info", f"restored: seed {item.seed}, {s.steps} steps, guidance {s.guidance:g}, "
                                         f"{s.size} — «{esc(prompt)}»; Generate makes it again")
        self.show(item)


def generator(model: str | None = None, output_dir: str | None = None, *, load: bool = False, **settings) -> Generator:
    """Build the interactive generator. `model`, `output_dir` and any other setting start the
    form (None: the usual resolution: defaults < env/config.env); `load=True` loads the
    pipeline straight away. Bad settings raise FluxnbError here (before any widget exists)."""
    base = resolve(model=model, output_dir=output_dir, **settings)
    form = Generator(base)
    if load:
        form.load()
    return form
