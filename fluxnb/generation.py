"""One call that makes N images from settings, each with an explicit seed.

Every result carries its own metadata (the run-log record plus the settings that
reproduce it); saving embeds that metadata, and every image and every failed attempt
appends one record to the run log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .errors import FluxnbError, RuntimeFailure
from .settings import Settings, draw_seed, require_prompt, resolve

log = logging.getLogger(__name__)

# The settings that decide an image's pixels: an item's identity.
IDENTITY_FIELDS = ("prompt", "enhance", "enhance_model", "steps", "guidance", "size", "model", "max_sequence_length",
                   "precision", "image_format", "jpeg_quality")


@dataclass
class GeneratedImage:
    """An image and its story: settings, seed, prompts, tokens, timings."""

    image: object                     # PIL.Image
    seed: int
    settings: Settings
    metadata: dict
    path: Path | None = None
    record: dict = field(default_factory=dict)

    def _repr_png_(self):
        import io

        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()

    def save(self, directory=None) -> Path:
        from .output import save

        s = self.settings
        self.path = save(self.image, self.metadata, directory or s.output_dir, s.image_format, s.jpeg_quality)
        return self.path


def item_id(settings: Settings, seed: int) -> str:
    """A stable identity for (settings that decide the pixels, seed)."""
    key = {k: getattr(settings, k) for k in IDENTITY_FIELDS}
    key["seed"] = int(seed)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def seeds_for(settings: Settings, seeds=None) -> list[int]:
    """Explicit seeds, else seed, seed+1, ... (count of them); a random first seed when unset."""
    if seeds is not None:
        out = [resolve(seed=s, use_env=False).seed for s in seeds]
        if any(s is None for s in out):
            out = [draw_seed() if s is None else s for s in out]
        return out
    first = settings.seed if settings.seed is not None else draw_seed()
    return [(first + i) % 2**32 for i in range(settings.count)]


def _versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {"fluxnb": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def base_record(s: Settings, seed: int, *, plan=None, enh=None, loaded=None) -> dict:
    """The run-log record / metadata of one image before it is made."""
    rec = {
        "id": item_id(s, seed), "path": "", "status": "", "error": "",
        "prompt": s.prompt, "enhanced_prompt": enh.enhanced if enh and enh.backend != "none" else "",
        "clip_prompt": plan.clip_prompt if plan else "", "clip_dropped": plan.clip_dropped if plan else "",
        "t5_prompt": plan.t5_prompt if plan else "",
        "enhancer": enh.backend if enh else s.enhance, "enhancer_model": (enh.model or "") if enh else "",
        "system_prompt_sha256": (enh.system_prompt_sha256 or "") if enh else "",
        "clip_tokens": plan.clip_tokens if plan else None, "t5_tokens": plan.t5_tokens if plan else None,
        "seed": seed, "steps": s.steps, "guidance": s.guidance, "width": s.width, "height": s.height, "size": s.size,
        "image_format": s.image_format, "jpeg_quality": s.jpeg_quality, "max_sequence_length": s.max_sequence_length,
        "model": s.model, "model_name": loaded.model_name if loaded else "", "offload": loaded.offload if loaded else s.offload,
        "precision": loaded.precision if loaded else s.precision, "device": loaded.device if loaded else s.device,
        "dtype": loaded.dtype if loaded else "", "compile": s.compile,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "fluxnb_version": __version__,
    }
    if enh and enh.fallback_from:
        rec["enhancer_fallback_from"] = enh.fallback_from
        rec["enhancer_fallback_reason"] = getattr(enh, "fallback_reason", None) or ""
    return rec


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def encode(loaded, clip_prompt: str, t5_prompt: str, max_sequence_length: int):
    """Text embeddings for one prompt pair, computed once per loaded pipeline."""
    key = (clip_prompt, t5_prompt, max_sequence_length)
    if key not in loaded.embeds:
        import torch

        with torch.inference_mode():
            pe, ppe, _ids = loaded.pipe.encode_prompt(prompt=clip_prompt, prompt_2=t5_prompt,
                                                      max_sequence_length=max_sequence_length)
        if len(loaded.embeds) >= 16:
            loaded.embeds.pop(next(iter(loaded.embeds)))
        loaded.embeds[key] = (pe, ppe)
    return loaded.embeds[key]


def configure_tiling(loaded, s: Settings) -> None:
    from .settings import defaults

    lim = defaults()["limits"]
    w, h = s.render_size
    mp = w * h / 1e6
    on = s.vae_tiling == "on" or (s.vae_tiling == "auto" and mp > lim["tiling_above_mp"])
    vae = loaded.pipe.vae
    if on and not getattr(vae, "use_tiling", False):
        log.info("%dx%d is %.1f MP: VAE tiling on (FLUX.1 was trained up to ~%g MP; large sizes may repeat "
                 "subjects)", w, h, mp, lim["trained_mp"])
        vae.enable_tiling()
    elif not on and getattr(vae, "use_tiling", False):
        vae.disable_tiling()


def render(loaded, s: Settings, seed: int, embeds, *, callbacks=(), progress: bool = True) -> tuple[object, dict]:
    """Denoise and decode one image; returns (PIL image at the final size, timings)."""
    import torch

    w, h = s.render_size
    bar = _progress(s.steps, progress, f"seed {seed}")
    marks = {}

    def on_step(pipe, i, t, kwargs):
        if bar is not None:
            bar.update(1)
        for cb in callbacks:
            out = cb(pipe, i, t, kwargs)
            if isinstance(out, dict):
                kwargs.update(out)
        if i == s.steps - 1:
            marks["denoised"] = time.perf_counter()
        return kwargs

    configure_tiling(loaded, s)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            image = loaded.pipe(prompt_embeds=embeds[0], pooled_prompt_embeds=embeds[1], width=w, height=h,
                                num_inference_steps=s.steps, guidance_scale=s.guidance,
                                generator=torch.Generator("cpu").manual_seed(seed),
                                max_sequence_length=s.max_sequence_length, callback_on_step_end=on_step,
                                output_type="pil").images[0]
    finally:
        if bar is not None:
            bar.close()
    t1 = time.perf_counter()
    image = finish_image(image, s, seed)
    denoised = marks.get("denoised", t1)
    return image, {"denoise_s": round(denoised - t0, 4), "decode_s": round(t1 - denoised, 4)}


def generate(prompt: str | None = None, *, settings: Settings | None = None, seeds=None, callbacks=(),
             progress: bool = True, save: bool = True, record: bool = True, extra: dict | None = None,
             **overrides) -> list[GeneratedImage]:
    """Make `count` images (or one per seed in `seeds`) from settings.

    `settings`: a Settings to start from; `overrides`: any setting by name (they win).
    `callbacks`: diffusers-style `callback_on_step_end` callables. `extra`: more fields
    for each run-log record (sweep_id, batch_id, ...). Saves each image with its metadata
    and appends a run-log record unless told not to; a failure is recorded and raised."""
    from . import enhancer as enhance_mod
    from . import runlog
    from .output import save as save_image
    from .pipeline import get_pipeline, oom_error
    from .tokens import plan as token_plan
    from .tokens import summary

    # 1. Validate.
    if prompt is not None:
        overrides["prompt"] = prompt
    s = settings.replace(**overrides) if settings is not None else resolve(**overrides)
    require_prompt(s.prompt)
    seed_list = seeds_for(s, seeds)
    extra = dict(extra or {})
    t_start = time.perf_counter()

    def fail(exc: Exception, seed: int, stage_rec: dict | None = None) -> None:
        if record:
            rec = dict(stage_rec or base_record(s, seed))
            rec.update(extra, status=getattr(exc, "status", "error"), error=str(exc),
                       elapsed_s=round(time.perf_counter() - t_start, 4))
            runlog.append(s.output_dir, rec)

    # 2. Enhance the prompt (once for all seeds).
    t0 = time.perf_counter()
    try:
        enh = enhance_mod.enhance(s.prompt, backend=s.enhance, model=s.enhance_model, seed=seed_list[0],
                                  use_cache=s.enhance_cache, fallback=s.enhance_fallback)
    except FluxnbError as e:
        e.status = "enhance_failed"
        fail(e, seed_list[0])
        raise
    enhance_s = round(time.perf_counter() - t0, 4)

    # 3. Load the pipeline (once per process) and plan the tokens with its tokenizers.
    try:
        loaded = get_pipeline(s.load)
    except FluxnbError as e:
        fail(e, seed_list[0])
        raise
    plan = token_plan(enh.enhanced, pipe=loaded.pipe, t5_limit=s.max_sequence_length)
    log.info("prompt %r (%s)", _short(enh.enhanced), summary(plan))
    if plan.clip_dropped:
        log.info("CLIP sees the first %d tokens; T5 gets the whole prompt", plan.clip_limit)

    # 4. Encode the prompt once.
    t0 = time.perf_counter()
    try:
        embeds = encode(loaded, plan.clip_prompt, plan.t5_prompt, s.max_sequence_length)
    except Exception as e:  # noqa: BLE001 - recorded, then raised as a clear error
        err = _as_error(e, loaded, oom_error)
        fail(err, seed_list[0], base_record(s, seed_list[0], plan=plan, enh=enh, loaded=loaded))
        raise err from None
    encode_s = round(time.perf_counter() - t0, 4)

    # 5. Denoise, decode, save and record each image.
    results = []
    for n, seed in enumerate(seed_list):
        rec = base_record(s, seed, plan=plan, enh=enh, loaded=loaded)
        rec.update(extra)
        t_img = time.perf_counter()
        try:
            image, timings = render(loaded, s, seed, embeds, callbacks=callbacks, progress=progress)
        except KeyboardInterrupt:
            fail(RuntimeFailure("interrupted", status="interrupted"), seed, rec)
            raise
        except Exception as e:  # noqa: BLE001
            err = _as_error(e, loaded, oom_error)
            fail(err, seed, rec)
            raise err from None
        rec.update(timings, load_s=round(loaded.load_s, 4) if n == 0 else 0.0, enhance_s=enhance_s if n == 0 else 0.0,
                   encode_s=encode_s if n == 0 else 0.0, status="ok")
        rec["elapsed_s"] = round(time.perf_counter() - t_img + (enhance_s + encode_s if n == 0 else 0.0), 4)
        meta = dict(rec, settings={**s.to_dict(), "seed": seed, "count": 1}, versions=_versions())
        item = GeneratedImage(image=image, seed=seed, settings=s.replace(seed=seed, count=1), metadata=meta)
        if save:
            t0 = time.perf_counter()
            try:
                item.path = save_image(image, meta, s.output_dir, s.image_format, s.jpeg_quality)
            except FluxnbError as e:
                fail(e, seed, rec)
                raise
            rec["save_s"] = round(time.perf_counter() - t0, 4)
            rec["path"] = str(item.path)
            log.info("saved %s (seed %d, %.2f s)", item.path, seed, rec["elapsed_s"])
        if record:
            runlog.append(s.output_dir, rec)
        item.record = rec
        results.append(item)
    return results


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _as_error(e: Exception, loaded, oom_error) -> FluxnbError:
    if isinstance(e, FluxnbError):
        return e
    try:
        import torch

        if isinstance(e, torch.OutOfMemoryError):
            return oom_error(loaded.key, loaded.offload)
    except ImportError:
        pass
    return RuntimeFailure(f"generation failed: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------
# Several images per pipeline call, and denoising apart from decoding (used by sweeps)
# ---------------------------------------------------------------------------------------

def render_many(loaded, s: Settings, seeds, embeds, *, callbacks=(), output_type: str = "pil") -> list:
    """Denoise len(seeds) images sharing `s` (size, steps, guidance) in one pipeline call.

    Image i starts from the noise of its own CPU generator seeded with seeds[i] (the very
    noise a single-image call draws) and uses embeds[i]. Returns uncropped PIL images, or
    with output_type="latent" the packed latents for `decode_latents`. Batching may move a
    pixel by 1/255 (other kernel blocking); tests hold it within 2/255 of `render`."""
    import torch

    w, h = s.render_size
    configure_tiling(loaded, s)

    def on_step(pipe, i, t, kwargs):
        for cb in callbacks:
            out = cb(pipe, i, t, kwargs)
            if isinstance(out, dict):
                kwargs.update(out)
        return kwargs

    with torch.inference_mode():
        return loaded.pipe(prompt_embeds=torch.cat([e[0] for e in embeds]),
                           pooled_prompt_embeds=torch.cat([e[1] for e in embeds]), width=w, height=h,
                           num_inference_steps=s.steps, guidance_scale=s.guidance,
                           generator=[torch.Generator("cpu").manual_seed(x) for x in seeds],
                           max_sequence_length=s.max_sequence_length, callback_on_step_end=on_step,
                           output_type=output_type).images


def decode_latents(loaded, s: Settings, latents) -> list:
    """Packed latents from `render_many(..., output_type="latent")` -> PIL images, decoded
    exactly as FluxPipeline decodes them (so the pixels are the same)."""
    import torch
    from diffusers.utils.torch_utils import get_module_execution_device

    pipe = loaded.pipe
    w, h = s.render_size
    configure_tiling(loaded, s)
    with torch.inference_mode():
        lat = pipe._unpack_latents(latents, h, w, pipe.vae_scale_factor)
        lat = (lat / pipe.vae.config.scaling_factor) + pipe.vae.config.shift_factor
        image = pipe.vae.decode(lat.to(get_module_execution_device(pipe.vae)), return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type="pil")


def finish_image(image, s: Settings, seed: int):
    """What `render` does after the pipeline: crop a cropping preset (hd), refuse a black image."""
    import numpy as np

    w, h = s.render_size
    if (w, h) != (s.width, s.height):
        left, top = (w - s.width) // 2, (h - s.height) // 2
        image = image.crop((left, top, left + s.width, top + s.height))
    if int(np.asarray(image).max()) <= 2:
        raise RuntimeFailure(f"seed {seed}: the image came out black (NaN in the model's output)", field="precision",
                             value=s.precision, fix="never use fp16 with FLUX; try --precision bf16", status="black")
    return image
