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
