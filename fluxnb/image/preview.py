"""Live previews while an image denoises: the latents every few steps as a small RGB image.

Two ways, the cheap one always there:
- `latent_rgb`: a linear projection of FLUX's 16 latent channels to RGB (one 16x3 matrix
  and a bias, the factors ComfyUI's `latent_formats.Flux` uses for its latent previews),
  after unpacking FLUX's packed latents (2x2 patches of 16 channels). An 8x smaller image
  than the result, a fraction of a millisecond.
- `Taef1`: the tiny autoencoder TAEF1 (madebyollin/taef1, `diffusers.AutoencoderTiny`),
  only when its weights are already on disk (`FLUXNB_TAEF1` or `<cache>/taef1`); never
  downloaded. Near-final colours at full size, a few milliseconds on a GPU.

`LivePreview(on_image, every=N)` is a step callback (callbacks.Callback) calling
`on_image(PIL image, step)` every N steps; benchmarks/bench_preview.py measures its cost
against a step's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .callbacks import Callback

log = logging.getLogger(__name__)

# FLUX.1's latent channels -> R, G, B (rows: channels), and the bias; from ComfyUI's
# comfy/latent_formats.py (class Flux), fitted against VAE decodes.
FLUX_RGB = (
    (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
)
FLUX_RGB_BIAS = (-0.0329, -0.0718, -0.0851)
VAE_SCALE = 8  # pixels per latent cell (each packed token covers 2x2 cells: 16x16 pixels)


def unpack(latents, width: int, height: int, scale: int = VAE_SCALE):
    """FLUX's packed latents (batch, tokens, 64) -> (batch, 16, height/8, width/8) (`scale`:
    the VAE's pixels per latent cell). Latents already unpacked (4-D) pass through."""
    if latents.ndim == 4:
        return latents
    b, _n, c = latents.shape
    h, w = 2 * (height // (scale * 2)), 2 * (width // (scale * 2))
    lat = latents.reshape(b, h // 2, w // 2, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return lat.reshape(b, c // 4, h, w)


def packed_factors(dtype=None, device=None):
    """FLUX_RGB for packed latents: (64, 12), channel c of patch p (c*4 + p) -> (p, r)."""
    import torch

    f = torch.tensor(FLUX_RGB, dtype=dtype, device=device)  # (16, 3)
    w = torch.zeros(16, 4, 4, 3, dtype=dtype, device=device)
    for p in range(4):
        w[:, p, p, :] = f
    return w.reshape(64, 12)


def latent_rgb(latents, width: int, height: int, index: int = 0, scale: int = VAE_SCALE):
    """A PIL image of one batch entry of FLUX latents by the linear projection, 1/8 the size.
    Packed latents are projected first (one small matmul) and unpacked as RGB after."""
    import torch
    from PIL import Image

    lat = latents[index].detach()
    bias = torch.tensor(FLUX_RGB_BIAS, dtype=torch.float32, device=lat.device)
    if lat.ndim == 3:  # unpacked (16, h, w)
        rgb = torch.einsum("chw,cr->hwr", lat.float(), torch.tensor(FLUX_RGB, device=lat.device)) + bias
    else:              # packed (tokens, 64): project, then lay the 2x2 patches out
        h, w = height // (scale * 2), width // (scale * 2)
        rgb = lat.float() @ packed_factors(torch.float32, lat.device)       # (tokens, 12)
        rgb = rgb.reshape(h, w, 2, 2, 3).permute(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, 3) + bias
    rgb = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return Image.fromarray(rgb, "RGB")


def taef1_dir() -> Path | None:
    """Where TAEF1's weights are, if they are on disk (never downloaded)."""
    candidates = [os.environ.get("FLUXNB_TAEF1", "")]
    try:
        from ..config.environment import cache_dir

        candidates.append(str(Path(cache_dir()) / "taef1"))
    except Exception:  # noqa: BLE001 - no cache folder configured: only the variable counts
        pass
    for c in candidates:
        if c and (Path(c) / "config.json").is_file():
            return Path(c)
    return None


class Taef1:
    """TAEF1's decoder, loaded once from local weights, on the latents' device."""

    _loaded: dict = {}

    @classmethod
    def get(cls):
        path = taef1_dir()
        if path is None:
            return None
        if str(path) not in cls._loaded:
            try:
                from diffusers import AutoencoderTiny

                cls._loaded[str(path)] = AutoencoderTiny.from_pretrained(str(path)).eval()
            except Exception as e:  # noqa: BLE001 - a preview never breaks a run
                log.warning("TAEF1 at %s could not be loaded (%s): previews use the linear projection", path, e)
                cls._loaded[str(path)] = None
        return cls._loaded[str(path)]

    @staticmethod
    def image(vae, latents, width: int, height: int, index: int = 0):
        import torch
        from PIL import Image

        lat = unpack(latents[index:index + 1].detach(), width, height)
        lat = lat / 0.3611 + 0.1159  # FLUX's VAE scaling and shift, as the pipeline decodes
        vae.to(lat.device)
        with torch.inference_mode():
            out = vae.decode(lat.to(vae.dtype), return_dict=False)[0][0]
        arr = ((out.float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        return Image.fromarray(arr, "RGB")


class LivePreview(Callback):
    """Calls `on_image(image, step)` every `every` steps with a preview of the first image of
    the pipeline call (and on the last step). `taef1`: use TAEF1 when its weights are there."""

    def __init__(self, on_image, every: int = 2, taef1: bool = True):
        self.on_image, self.every, self.use_taef1 = on_image, max(1, int(every)), taef1
        self.size = (64, 64)
        self.steps = 0
        self.count = 0  # previews made

    def before(self, jobs):
        s = jobs[0].settings
        self.size, self.steps = s.render_size, s.steps

    def step(self, pipe, i, t, tensors):
        latents = tensors.get("latents")
        if latents is None or ((i + 1) % self.every and i + 1 < self.steps):
            return None
        w, h = self.size
        scale = int(getattr(pipe, "vae_scale_factor", VAE_SCALE) or VAE_SCALE)
        try:
            vae = Taef1.get() if self.use_taef1 and scale == VAE_SCALE else None
            image = Taef1.image(vae, latents, w, h) if vae is not None else latent_rgb(latents, w, h, scale=scale)
        except Exception as e:  # noqa: BLE001 - a preview never breaks a run
            log.debug("preview failed: %s", e)
            return None
        self.count += 1
        self.on_image(image, i + 1)
        return None
