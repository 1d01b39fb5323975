"""What the generator's live preview costs, side by side with a denoising step.

    .venv/bin/python benchmarks/bench_preview.py [--model tiny] [--size 256x256] [--steps 16] [--runs 5]

1. The same run (model, size, steps, seed) without and with `image.preview.LivePreview`
   at every step and at the form's default (every steps // 8), median of N after a
   warm-up: seconds per step and the ratio.
2. The preview alone at FLUX.1's real latent size (1024x1024: 4096 packed tokens of 64
   channels): the linear projection and the PNG the form sends, per preview, against a
   published H100 step (6.6 s / 28 steps, bf16) and an RTX 4090 step (~0.8 s).
Goal: under 5 % of step time at the form's default.
"""

from __future__ import annotations

import argparse
import statistics
import time


def per_step(steps: int, runs: int, variants: dict, **kw) -> dict:
    """Seconds per step of each variant (name -> callbacks factory), runs interleaved."""
    from fluxnb.image.make import generate

    times: dict = {name: [] for name in variants}
    for r in range(runs + 1):  # round 0 warms up
        for name, callbacks_for in variants.items():
            t0 = time.perf_counter()
            generate(steps=steps, save=False, record=False, progress=False, callbacks=callbacks_for(), **kw)
            if r:
                times[name].append((time.perf_counter() - t0) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    import torch

    from fluxnb.front.ui.widgets import png
    from fluxnb.image.preview import LivePreview, latent_rgb

    kw = dict(prompt="a lighthouse at dusk", model=a.model, size=a.size, seed=7)
    sink = []
    dflt = max(1, a.steps // 8)
    got = per_step(a.steps, a.runs, {
        "none": lambda: (),
        "every": lambda: (LivePreview(lambda im, s: sink.append(png(im, 768)), every=1),),
        "default": lambda: (LivePreview(lambda im, s: sink.append(png(im, 768)), every=dflt),)}, **kw)
    base, every1, every_d = got["none"], got["every"], got["default"]

    lat = torch.randn(1, 4096, 64)
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        png(latent_rgb(lat, 1024, 1024), 768)
    one = (time.perf_counter() - t0) / n

    print(f"{a.model} model, {a.size}, {a.steps} steps, median of {a.runs} (after a warm-up)\n")
    print(f"{'what':<52} {'s/step':>9} {'vs none':>8}")
    print(f"{'no preview':<52} {base:9.4f} {'1.000':>8}")
    print(f"{'preview every step':<52} {every1:9.4f} {every1 / base:8.3f}")
    print(f"{f'preview every {dflt} steps (the form default)':<52} {every_d:9.4f} {every_d / base:8.3f}")
    print(f"\none preview at 1024x1024 (projection + PNG): {one * 1000:.2f} ms")
    for name, step in (("H100 bf16 step (6.6 s / 28)", 6.6 / 28), ("RTX 4090 step (~0.8 s)", 0.8)):
        print(f"  vs {name:<30} every step {one / step:6.2%}   every 3 steps {one / 3 / step:6.2%}   goal < 5 %")


if __name__ == "__main__":
    main()
