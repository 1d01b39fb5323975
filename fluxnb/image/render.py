"""Encode, denoise and decode: the pipeline calls that turn a prompt pair and a seed into
pixels. Noise always comes from a CPU generator seeded with the image's seed.
"""

from __future__ import annotations

import logging
import time

from ..config.settings import Settings
from ..errors import RuntimeFailure

log = logging.getLogger(__name__)


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
    from ..config.settings import defaults

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
    step_ends = []

    def on_step(pipe, i, t, kwargs):
        step_ends.append(time.perf_counter())
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
    timings = {"denoise_s": round(denoised - t0, 4), "decode_s": round(t1 - denoised, 4), "compile_s": 0.0}
    if getattr(getattr(loaded, "key", None), "compile", False) and (w, h) not in loaded.compiled_sizes:  # the first image at this size compiles
        from ..model.perf import compile_seconds

        loaded.compiled_sizes.add((w, h))
        steps = [b - a for a, b in zip([t0, *step_ends], step_ends)]
        compile_s = compile_seconds(steps)
        timings["compile_s"] = compile_s if compile_s is not None else timings["denoise_s"]
        timings["denoise_s"] = round(timings["denoise_s"] - timings["compile_s"], 4)
        log.info("compile: %.1f s for the first image at %dx%d (later images skip it)", timings["compile_s"], w, h)
    return image, timings


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
