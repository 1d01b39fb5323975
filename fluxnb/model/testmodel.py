"""Random-weight FLUX-architecture pipelines, built offline, for tests and benchmarks.

`tiny`: a 64x64 image in well under a second on a CPU. `small`: a 256x256, 8-step image
in a few seconds on a CPU. `full`: the exact FLUX.1-dev configuration (12B transformer,
T5-XXL, CLIP-L, 16-channel VAE), for GPU benchmarks. Weights are drawn from fixed seeds,
so the same torch gives the same weights (and pixels) everywhere. Every scale carries
the real CLIP tokenizer; T5's is the offline T5-style one (see tokens.t5_style_vocab).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..config.environment import TINY_BUILD, tiny_model_dir
from ..errors import FluxnbError
from ..files import commit

log = logging.getLogger(__name__)
SCALES = ("tiny", "small", "full")
# Pipeline variants: text-to-image (FluxPipeline), Kontext editing and Fill inpainting. Kontext
# has FLUX.1-dev's transformer; Fill's takes 384 channels in: the 64 of the packed latents, 64 of
# the packed masked-image latents and 256 of the packed 8x8 mask (black-forest-labs/FLUX.1-Fill-dev).
VARIANTS = {"": "FluxPipeline", "kontext": "FluxKontextPipeline", "fill": "FluxFillPipeline"}
VARIANT_TRANSFORMER = {"fill": dict(in_channels=384, out_channels=64)}

CONFIGS = {
    "tiny": {
        "transformer": dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                            guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
        "vae": dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4),
        "clip": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     projection_dim=32),
        "t5": dict(d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=1),
    },
    "small": {
        "transformer": dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=64,
                            num_attention_heads=8, joint_attention_dim=256, pooled_projection_dim=128,
                            guidance_embeds=True, axes_dims_rope=(8, 28, 28)),
        "vae": dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, norm_num_groups=16),
        "clip": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                     projection_dim=128),
        "t5": dict(d_model=256, d_ff=512, d_kv=64, num_heads=4, num_layers=2),
    },
    "full": {  # black-forest-labs/FLUX.1-dev
        "transformer": dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                            guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        "clip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     projection_dim=768),
        "t5": dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128),
    },
}


def build_components(scale: str = "tiny", *, device: str = "cpu", dtype=None, variant: str = "") -> dict:
    """The pipeline components of a random-weight FLUX at `scale` (and `variant`: "", kontext or
    fill), made directly on `device`."""
    import torch

    from .runtime import quiet_libraries

    quiet_libraries()
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    from ..prompt import tokens

    if scale not in CONFIGS:
        raise FluxnbError(f"scale {scale!r}: unknown", field="scale", value=scale, fix=f"use one of {', '.join(SCALES)}")
    if variant not in VARIANTS:
        raise FluxnbError(f"variant {variant!r}: unknown", field="variant", value=variant,
                          fix=f"use one of {', '.join(v for v in VARIANTS if v)} (or none: text to image)")
    cfg = CONFIGS[scale]
    dtype = dtype or torch.float32
    vocab, merges = tokens.clip_vocab()
    t5_vocab = tokens.t5_style_vocab()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # made directly in dtype: no float32 copy of a 12B model
    try:
        with torch.device(device):
            torch.manual_seed(0)
            transformer = FluxTransformer2DModel(**{**cfg["transformer"], **VARIANT_TRANSFORMER.get(variant, {})})
            torch.manual_seed(1)
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, sample_size=1024, scaling_factor=0.3611,
                shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False, **cfg["vae"])
            torch.manual_seed(2)
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(vocab), max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406,
                eos_token_id=49407, pad_token_id=49407, **cfg["clip"]))
            torch.manual_seed(3)
            t5_cfg = dict(vocab_size=len(t5_vocab) + 100, feed_forward_proj="gated-gelu",
                          relative_attention_num_buckets=32, relative_attention_max_distance=128,
                          layer_norm_epsilon=1e-6, tie_word_embeddings=False, decoder_start_token_id=0,
                          pad_token_id=0, eos_token_id=1)
            t5_cfg.update(cfg["t5"])
            text_encoder_2 = T5EncoderModel(T5Config(**t5_cfg))
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, num_train_timesteps=1000,
        shift=3.0, use_dynamic_shifting=True)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tokenizer_2 = T5Tokenizer(vocab=t5_vocab, extra_ids=100, model_max_length=512)
    return dict(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


def build_pipeline(scale: str = "tiny", *, device: str = "cpu", dtype=None, variant: str = ""):
    """A FluxPipeline (FluxKontextPipeline, FluxFillPipeline for those variants) with random weights, in memory."""
    import diffusers

    components = build_components(scale, device=device, dtype=dtype, variant=variant)
    return getattr(diffusers, VARIANTS[variant])(**components)


def build(directory: str | os.PathLike, scale: str = "tiny", *, device: str = "cpu", dtype=None,
          overwrite: bool = False, variant: str = "") -> Path:
    """Write a random-weight FLUX pipeline (of a `variant`: "", kontext or fill) with
    `save_pretrained`, atomically: the folder appears complete or not at all.
    `FluxPipeline.from_pretrained(directory)` (FluxKontextPipeline, FluxFillPipeline) loads it."""
    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        if (target / "model_index.json").is_file() and not overwrite:
            return target
        if not overwrite:
            raise FluxnbError(f"directory {str(target)!r}: exists and is not empty", field="directory",
                              value=str(target), fix="choose an empty folder or pass --overwrite")
    if scale == "full":
        log.warning("building the full FLUX.1-dev architecture: ~12B + 4.7B random parameters (%s)",
                    "about 33 GB on disk in bf16" if dtype is not None else "about 66 GB in float32")
    # A folder of many files (save_pretrained writes them), so not the one atomic write of a file:
    # it is built whole in a folder of its own beside the target (mkdtemp: unique, so two builders
    # never share one), then renamed into place with the atomic write's last step (files.commit).
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        pipe = build_pipeline(scale, device=device, dtype=dtype, variant=variant)
        pipe.save_pretrained(tmp)
        (tmp / "fluxnb_test_model.txt").write_text(
            f"random-weight FLUX-architecture {VARIANTS[variant]}, scale {scale}, built by fluxnb (build {TINY_BUILD}).\n"
            "Its images are noise: it exists to test and benchmark the code, not to make pictures.\n")
        if target.exists():
            shutil.rmtree(target)
        commit(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_tiny(variant: str = "") -> Path:
    """The tiny model's folder (of a `variant`: "", kontext or fill), built on first use (once,
    even with several processes)."""
    target = tiny_model_dir()
    if variant:
        target = target.with_name(target.name.replace("tiny", f"tiny-{variant}", 1))
    if (target / "model_index.json").is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "model_index.json").is_file():
            log.info("building the tiny random-weight test model in %s (once)", target)
            build(target, "tiny", overwrite=True, variant=variant)
    return target


def is_test_model(path: str | os.PathLike) -> bool:
    return (Path(path) / "fluxnb_test_model.txt").is_file()


def parameter_counts(scale: str) -> dict[str, int]:
    """Parameters per component, counted on the meta device (nothing allocated)."""
    comps = build_components(scale, device="meta")
    return {k: sum(p.numel() for p in v.parameters()) for k, v in comps.items() if hasattr(v, "parameters")}
