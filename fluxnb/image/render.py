"""Encode, denoise and decode: the pipeline calls that turn prompts and seeds into pixels.

Two seams take every new per-image input, so one change reaches generate, sweeps, batches,
Ray and the widgets together:
- `prepare(loaded, s)`: the pipeline that makes images for settings `s`, ready to call
  (VAE tiling; img2img / inpaint get their pipeline here, made once from the loaded one's
  components and kept on `loaded`: `conditioning.pipeline_for`). LoRA adapters (the `loras`
  setting and the prompt's `<lora:...>` tags) are set here on the loaded pipeline
  (`model.loras.apply`: each file loaded once, `set_adapters` for the weights).
- `call_kwargs(jobs, embeds, hooks, output_type, pipe)`: the diffusers `__call__` arguments
  for one image or a batch (the init image, mask and strength: `conditioning.call_inputs`).
Whatever either one reads from the settings belongs in `render_key`: only jobs that agree
on it share a pipeline call. Noise always comes from a CPU generator seeded with the
image's seed, so a batched image starts from the very noise a single call draws.
"""

from __future__ import annotations

import logging

from ..config.loras import effective
from ..config.settings import Settings
from ..errors import RuntimeFailure
from ..model import loras
from . import conditioning

log = logging.getLogger(__name__)


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


def render_key(s: Settings) -> tuple:
    """What jobs must share to be made in one pipeline call: everything `prepare` and
    `call_kwargs` read from the settings, except the prompt and the seed."""
    key = (s.size, s.steps, s.guidance, s.max_sequence_length, s.vae_tiling, *conditioning.identity(s).values())
    adapters = tuple(x.spec for x in effective(s))
    return (*key, ("loras", *adapters)) if adapters else key


def prepare(loaded, s: Settings):
    """The pipeline that makes images for settings `s`, made ready for them."""
    configure_tiling(loaded, s)
    pipe = conditioning.pipeline_for(loaded, s)
    loras.apply(loaded, effective(s))  # the adapters and weights of `s` (none: all off)
    return pipe


def call_kwargs(jobs: list, embeds: list, hooks, output_type: str, pipe=None) -> dict:
    """diffusers `__call__` arguments for `jobs` (sharing `render_key`), embeds[i] being the
    (prompt, pooled) embeddings of jobs[i]. One job is called exactly as a single image always
    was; a batch stacks the embeddings and gives each image its own generator."""
    import torch

    s = jobs[0].settings
    w, h = s.render_size
    if len(jobs) == 1:
        text = {"prompt_embeds": embeds[0][0], "pooled_prompt_embeds": embeds[0][1],
                "generator": torch.Generator("cpu").manual_seed(jobs[0].seed)}
    else:
        text = {"prompt_embeds": torch.cat([e[0] for e in embeds]),
                "pooled_prompt_embeds": torch.cat([e[1] for e in embeds]),
                "generator": [torch.Generator("cpu").manual_seed(j.seed) for j in jobs]}
    return dict(text, width=w, height=h, num_inference_steps=s.steps, guidance_scale=s.guidance,
                max_sequence_length=s.max_sequence_length, callback_on_step_end=hooks,
                callback_on_step_end_tensor_inputs=hooks.tensor_inputs, output_type=output_type,
                **(conditioning.call_inputs(pipe, jobs) if pipe is not None else {}))


def denoise(loaded, jobs: list, embeds: list, hooks, *, output_type: str = "pil") -> list:
    """One pipeline call for `jobs` (sharing `render_key`): uncropped PIL images, or with
    output_type="latent" the packed latents for `decode_latents`. `hooks` (callbacks.Hooks)
    see the call begin, every step, and its end. Batching may move a pixel by 1/255 (other
    kernel blocking); tests hold it within 2/255 of a single call."""
    import torch

    pipe = prepare(loaded, jobs[0].settings)
    kwargs = call_kwargs(jobs, embeds, hooks, output_type, pipe)
    hooks.before(jobs)
    try:
        with torch.inference_mode():
            return pipe(**kwargs).images
    finally:
        hooks.after(jobs)


def decode_latents(loaded, s: Settings, latents) -> list:
    """Packed latents from `denoise(..., output_type="latent")` -> PIL images, decoded exactly
    as FluxPipeline decodes them (so the pixels are the same)."""
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
    """After the pipeline: an inpainted image gets the input's pixels back outside the mask,
    a cropping preset (hd) is cropped to its size, a black image is refused."""
    import numpy as np

    image = conditioning.composite(image, s)
    w, h = s.render_size
    if (w, h) != (s.width, s.height):
        left, top = (w - s.width) // 2, (h - s.height) // 2
        image = image.crop((left, top, left + s.width, top + s.height))
    if int(np.asarray(image).max()) <= 2:
        raise RuntimeFailure(f"seed {seed}: the image came out black (NaN in the model's output)", field="precision",
                             value=s.precision, fix="never use fp16 with FLUX; try --precision bf16", status="black")
    return image


class kept_on_device:
    """Under model offload a pipeline call ends by moving every component back to the CPU;
    between the calls of one stage, keep them where they are (stateful caches still reset)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def __enter__(self):
        pipe = self.pipe

        def reset_only():
            for comp in pipe.components.values():
                if hasattr(comp, "_reset_stateful_cache"):
                    comp._reset_stateful_cache()

        pipe.maybe_free_model_hooks = reset_only
        return self

    def __exit__(self, *exc):
        del self.pipe.maybe_free_model_hooks
        return False
