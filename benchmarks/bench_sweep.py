"""Sweep benchmark: a 3x3 seed-by-guidance `fluxnb.sweep` against a plain loop of diffusers
pipeline calls making the same nine images, printed side by side from one run.

The plain loop is what people write: `pipe(prompt=..., guidance_scale=g, generator=...)`
once per image (the prompt is encoded every time; under model offload every component
moves to the GPU and back every time). The sweep encodes the prompt once, batches cells
that share steps and guidance on the CPU, and under model offload denoises everything
before decoding anything; it also saves nine PNGs, records them and draws the grid, which
the loop does not. Both use the same loaded pipeline and seeds; the images are compared.

- CPU: the random-weight `small` model (fluxnb.testmodel, built once into the cache).
- GPU, when there is one: the `full` FLUX.1-dev architecture (random weights, bf16, built
  once into the cache, ~33 GB) under a 24 GiB cap (`set_per_process_memory_fraction`) with
  model offload, as on a 24 GB card.

Runs alternate (loop, sweep, loop, sweep, ...) after a one-image warm-up; medians of N.

    .venv/bin/python benchmarks/bench_sweep.py                 # CPU (+ GPU when present)
    .venv/bin/python benchmarks/bench_sweep.py --runs 3 --cpu-only
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import date

PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic sky"
SEEDS = [1, 2, 3]
GUIDANCE = [1.5, 3.5, 5.0]
CAP_GIB = 24


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2, help="timed runs of each side (after a warm-up)")
    p.add_argument("--size", type=int, default=256, help="CPU image side (default 256)")
    p.add_argument("--steps", type=int, default=8, help="CPU steps (default 8)")
    p.add_argument("--gpu-size", type=int, default=1024)
    p.add_argument("--gpu-steps", type=int, default=28)
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU part even when a GPU is present")
    p.add_argument("--gpu-only", action="store_true", help="skip the CPU part")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error(f"--runs {a.runs}: must be at least 1")
    return a


def plain_loop(pipe, size: int, steps: int) -> tuple[list, float]:
    """Nine pipeline calls, row by row, as a notebook loop would make them."""
    import torch

    t0 = time.perf_counter()
    images = []
    for seed in SEEDS:
        for g in GUIDANCE:
            with torch.inference_mode():
                images.append(pipe(prompt=PROMPT, guidance_scale=g, num_inference_steps=steps, width=size,
                                   height=size, generator=torch.Generator("cpu").manual_seed(seed),
                                   max_sequence_length=512).images[0])
    return images, time.perf_counter() - t0


def fluxnb_sweep(settings, loaded) -> tuple[list, float, object]:
    import fluxnb

    loaded.embeds.clear()  # no help from an earlier run: encode afresh
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        r = fluxnb.sweep(PROMPT, seeds=SEEDS, guidance=GUIDANCE, settings=settings, out=out, progress=False)
        elapsed = time.perf_counter() - t0
    return [c.image for c in r.cells], elapsed, r


def max_diff(a: list, b: list) -> int:
    import numpy as np

    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b))


def measure(label: str, settings, size: int, steps: int, runs: int) -> dict:
    """Warm up, then alternate the loop and the sweep; medians and the largest pixel difference."""
    import torch

    import fluxnb
    from fluxnb.model.pipeline import get_pipeline

    loaded = get_pipeline(settings.load)
    pipe = loaded.pipe
    with tempfile.TemporaryDirectory() as out:  # warm-up: one image each way
        with torch.inference_mode():
            pipe(prompt=PROMPT, num_inference_steps=steps, width=size, height=size,
                 generator=torch.Generator("cpu").manual_seed(0))
        fluxnb.sweep(PROMPT, seeds=[0], settings=settings, out=out, progress=False)
    loop_t, sweep_t, diff, peak = [], [], 0, {}
    for i in range(runs):
        for side in ("loop", "sweep"):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            if side == "loop":
                loop_images, t = plain_loop(pipe, size, steps)
                loop_t.append(t)
            else:
                sweep_images, t, _result = fluxnb_sweep(settings, loaded)
                sweep_t.append(t)
            if torch.cuda.is_available():
                peak[side] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            print(f"  {label} run {i + 1}/{runs} {side}: {t:.2f} s", file=sys.stderr)
        diff = max(diff, max_diff(loop_images, sweep_images))
    loop_s, sweep_s = statistics.median(loop_t), statistics.median(sweep_t)
    return {"label": label, "device": loaded.device, "offload": loaded.offload, "size": f"{size}x{size}",
            "steps": steps, "images": len(SEEDS) * len(GUIDANCE), "loop_s": round(loop_s, 2),
            "sweep_s": round(sweep_s, 2), "ratio": round(loop_s / sweep_s, 2), "max_diff": diff,
            "peak_gib": peak or None, "runs": runs}


def cpu_part(a) -> dict:
    import torch

    from fluxnb.config.settings import resolve
    from fluxnb.model.testmodel import build
    from fluxnb.config.environment import cache_dir

    model = build(cache_dir() / "models" / "small-v1", "small")
    s = resolve(model=str(model), device="cpu", steps=a.steps, size=f"{a.size}x{a.size}", image_format="png")
    print(f"CPU: {torch.get_num_threads()} threads, model {model}", file=sys.stderr)
    return measure("cpu small", s, a.size, a.steps, a.runs)


def gpu_part(a) -> dict:
    import torch

    from fluxnb.model import pipeline
    from fluxnb.config.settings import resolve
    from fluxnb.model.testmodel import build
    from fluxnb.config.environment import cache_dir

    pipeline.unload()
    gc.collect()
    total = torch.cuda.get_device_properties(0).total_memory
    where = "cuda" if total > 40 * 2**30 else "cpu"  # the random weights are made once; ~33 GB in bf16
    model = build(cache_dir() / "models" / "full-bf16-v1", "full", device=where, dtype=torch.bfloat16)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, CAP_GIB * 2**30 / total))
    s = resolve(model=str(model), device="cuda", offload="model", steps=a.gpu_steps,
                size=f"{a.gpu_size}x{a.gpu_size}", image_format="png")
    print(f"GPU: {torch.cuda.get_device_name(0)}, capped at {CAP_GIB} GiB, model {model}", file=sys.stderr)
    return measure("gpu full", s, a.gpu_size, a.gpu_steps, a.runs)


def main(argv=None) -> int:
    import torch

    from fluxnb.model.runtime import quiet_libraries

    a = parse_args(argv)
    quiet_libraries()
    rows = []
    if not a.gpu_only:
        rows.append(cpu_part(a))
    if torch.cuda.is_available() and not a.cpu_only:
        rows.append(gpu_part(a))
    elif not a.cpu_only:
        print("no GPU: the full-model part is skipped", file=sys.stderr)
    print(f"\nSweep benchmark {date.today()}, {platform.node()}, torch {torch.__version__}: "
          f"3 seeds x 3 guidance = 9 images, median of {a.runs}")
    print(f"{'part':<10} {'device':<6} {'offload':<7} {'size':<9} {'steps':>5} {'plain loop':>11} "
          f"{'fluxnb.sweep':>13} {'speed-up':>9} {'max diff':>9}")
    for r in rows:
        print(f"{r['label']:<10} {r['device']:<6} {r['offload']:<7} {r['size']:<9} {r['steps']:>5} "
              f"{r['loop_s']:>10.2f}s {r['sweep_s']:>12.2f}s {r['ratio']:>8.2f}x {r['max_diff']:>5}/255"
              + (f"  peak GiB {r['peak_gib']}" if r["peak_gib"] else ""))
    if a.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
