"""The baseline for bench_generate.py: the shortest plain-diffusers script that makes the
same image fluxnb generate makes (same model folder, size, steps, guidance, seed, CPU
noise, max_sequence_length, JPEG quality). Usage:

    python plain_diffusers.py MODEL_DIR OUT.jpg PROMPT --size 256 --steps 8 --seed 7
"""

import argparse

import torch
from diffusers import FluxPipeline

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("out")
p.add_argument("prompt")
p.add_argument("--size", type=int, default=256)
p.add_argument("--steps", type=int, default=8)
p.add_argument("--seed", type=int, default=7)
p.add_argument("--guidance", type=float, default=3.5)
p.add_argument("--max-sequence-length", type=int, default=512)
a = p.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if device == "cuda" else torch.float32
pipe = FluxPipeline.from_pretrained(a.model, torch_dtype=dtype).to(device)
pipe.set_progress_bar_config(disable=True)
image = pipe(a.prompt, width=a.size, height=a.size, num_inference_steps=a.steps, guidance_scale=a.guidance,
             generator=torch.Generator("cpu").manual_seed(a.seed), max_sequence_length=a.max_sequence_length).images[0]
image.save(a.out, quality=95)
print(a.out)
