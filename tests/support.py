"""Plain helpers for the tests (import them with `from support import ...`; a `conftest`
module name is shared by tests/ and notebooks/, so nothing is imported from conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_cli(*args, env=None, timeout=300, input=None):
    """Run the real `fluxnb` command in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(BIN / "fluxnb"), *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, input=input)


def tiny_pipeline(model_dir):
    """A FluxPipeline of the tiny model, in float32 on the CPU, progress bars off."""
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(model_dir), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pixels(pipe, seed=5):
    """A 64x64, 2-step image of "a fox" as a float array in [0, 1]."""
    import numpy as np
    import torch

    out = pipe("a fox", width=64, height=64, num_inference_steps=2, guidance_scale=3.5, max_sequence_length=64,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
    return np.asarray(out)


# ---------------------------------------------------------------------------------------
# Hostile inputs (tests/test_harden_*.py): one clear line, fast, confined, no secret
# ---------------------------------------------------------------------------------------

SECRET_VARS = ("ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGINGFACE_TOKEN", "JUPYTER_TOKEN", "RAY_AUTH_TOKEN")


def sentinels() -> dict:
    """Fresh values for the secret variables, shaped like the real ones and unique to a run
    (built here, so no key-shaped text is committed)."""
    import secrets

    tag = secrets.token_hex(10)
    return {"ANTHROPIC_API_KEY": "sk-ant-api03-" + "Sentinel" + tag, "HF_TOKEN": "hf_" + "Sentinel" + tag,
            "HUGGINGFACE_TOKEN": "hf_" + "Alias" + tag + "x", "JUPYTER_TOKEN": "jupyter-sentinel-" + tag * 2,
            "RAY_AUTH_TOKEN": "ray-sentinel-" + tag}


def snapshot(*roots) -> dict:
    """{file: (mtime, size, inode)} of every file under `roots` (links not followed)."""
    out = {}
    for root in roots:
        for top, _dirs, files in os.walk(root):
            for name in files:
                p = Path(top, name)
                try:
                    st = p.lstat()
                except OSError:
                    continue
                out[p] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def run_hostile(*args, world, allowed=(), keys=None, env=None, fails=True, limit=10.0, input=None):
    """Run `fluxnb ARGS` and assert what every hostile input's test asserts: with `fails`, a
    non-zero exit and exactly one `error:` line (else exit 0 and none); no traceback; done
    within `limit` seconds; nothing written under `world` (the test's folder) outside
    `allowed`; and no secret value (`keys`, set in its environment) in anything it printed
    or any file it wrote or changed (`world`, fluxnb's log and cache folders).
    Returns (CompletedProcess, the error line or "")."""
    import time

    keys = keys or sentinels()
    watched = [Path(world), Path(os.environ["FLUXNB_LOG_DIR"]), Path(os.environ["FLUXNB_CACHE_DIR"])]
    before = snapshot(*watched)
    t0 = time.monotonic()
    r = run_cli(*args, env={**keys, **(env or {})}, timeout=max(120, 4 * limit), input=input)
    took = time.monotonic() - t0
    shown = r.stdout + r.stderr
    assert "Traceback" not in shown, shown[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    if fails:
        assert r.returncode != 0 and len(errors) == 1, (r.returncode, shown[-3000:])
    else:
        assert r.returncode == 0 and not errors, (r.returncode, shown[-3000:])
    assert took < limit, f"took {took:.1f} s (limit {limit} s)"
    changed = [p for p, sig in snapshot(*watched).items() if before.get(p) != sig]
    world_changes = [p for p in changed if Path(world) in p.parents]
    outside = [p for p in world_changes if not any(Path(a) == p or Path(a) in p.parents for a in allowed)]
    assert not outside, f"written outside {list(map(str, allowed))}: {outside}"
    for value in keys.values():
        assert value not in shown, "a secret in what was printed"
    for p in changed:
        assert not secrets_in(p, keys.values()), f"a secret in {p}"
    return r, (errors[0] if errors else "")


def secrets_in(path, values) -> list:
    """The `values` found in a file: its bytes as UTF-8 and UTF-16 (JPEG's EXIF comment), and
    a zip's members decompressed."""
    import zipfile

    data = [Path(path).read_bytes()]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            data += [z.read(n) for n in z.namelist()]
    forms = [(v, v.encode(enc)) for v in values for enc in ("utf-8", "utf-16-be", "utf-16-le")]
    return sorted({v for v, b in forms for d in data if b in d})


# ---------------------------------------------------------------------------------------
# Tiny LoRA adapters for the tiny model (tests/test_lora.py, tests/test_fidelity.py)
# ---------------------------------------------------------------------------------------

TINY_DIM, TINY_RANK = 32, 4   # the tiny transformer's inner dimension (2 heads of 16); the adapters' rank


def tiny_lora(path, *, layout="diffusers", seed=0, scale=0.5, metadata=None):
    """A random LoRA for the tiny model's attention projections, saved at `path` in the
    diffusers/PEFT layout (`transformer.<module>.lora_A/lora_B.weight`, as ai-toolkit writes)
    or kohya's (`lora_unet_double_blocks_0_img_attn_qkv.lora_down/lora_up.weight` and `.alpha`,
    as Civitai files are). B is non-zero, so a weight changes the pixels."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * scale).contiguous()

    d, r = TINY_DIM, TINY_RANK
    sd = {}
    if layout == "diffusers":
        for mod in ("transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v",
                    "transformer_blocks.0.attn.add_q_proj", "single_transformer_blocks.0.attn.to_q",
                    "single_transformer_blocks.0.attn.to_v"):
            sd[f"transformer.{mod}.lora_A.weight"] = rand(r, d)
            sd[f"transformer.{mod}.lora_B.weight"] = rand(d, r)
    elif layout == "kohya":
        for mod, out in (("double_blocks_0_img_attn_qkv", 3 * d), ("double_blocks_0_txt_attn_qkv", 3 * d),
                         ("double_blocks_0_img_attn_proj", d)):
            sd[f"lora_unet_{mod}.lora_down.weight"] = rand(r, d)
            sd[f"lora_unet_{mod}.lora_up.weight"] = rand(out, r)
            sd[f"lora_unet_{mod}.alpha"] = torch.tensor(float(r))
    elif layout == "sdxl":  # a LoRA for another architecture: keys of no FLUX module
        for mod in ("down_blocks_0_attentions_0_proj_in", "mid_block_attentions_0_proj_out"):
            sd[f"lora_unet_{mod}.lora_down.weight"] = rand(r, d)
            sd[f"lora_unet_{mod}.lora_up.weight"] = rand(d, r)
    elif layout == "unet":  # diffusers layout, but for a UNet
        sd["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"] = rand(r, d)
        sd["unet.down_blocks.0.attentions.0.proj_in.lora_B.weight"] = rand(d, r)
    else:
        raise ValueError(layout)
    save_file(sd, str(path), metadata=metadata)
    return path
