"""Seconds per image and peak VRAM for every fluxnb speed/memory setting against plain
diffusers, printed as one table of ratios to the baseline from one run.

The random-weight FLUX.1-dev architecture (`--scale full`: 11.9B transformer, T5-XXL,
CLIP-L, VAE) is built directly on the GPU in bf16 (fluxnb.testmodel, nothing downloaded).
Each setting gets a freshly built pipeline prepared exactly as fluxnb's loader prepares
one (pipeline.pick_offload, then pipeline.configure: precision, memory policy, compile)
and makes its images through the one image path (fluxnb.image.make.make), as `fluxnb generate` does
(prompt embeddings reused between images). The baseline is a plain diffusers FluxPipeline,
bf16, resident, called with the prompt. Rows marked `cap` run under a per-process VRAM cap
(`torch.cuda.set_per_process_memory_fraction`, `--cap-gib`, default 24) like a 24 GB card.

    python benchmarks/bench_gpu.py                        # H100/H200: full, 1024x1024, steps 28,4,20,50
    python benchmarks/bench_gpu.py --configs baseline,default,fp8-fast+compile --steps 28
    python benchmarks/bench_gpu.py --scale small          # the same code on a CPU (256x256, 8 steps)

Goals (issue 8, H100, 1024x1024, 28 steps): fastest <= 2.5 s per image; default within
1.02x of the baseline; under the 24 GB cap at most 1.5x the resident bf16 time and peak
VRAM at most 23 GB.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date

PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic sky"


@dataclass(frozen=True)
class Config:
    name: str
    offload: str = "auto"
    precision: str = "bf16"
    compile: bool = False
    cap: bool = False           # under the --cap-gib VRAM cap
    diffusers: bool = False     # the plain diffusers baseline
    cuda_only: bool = False


CONFIGS = [
    Config("baseline", offload="none", diffusers=True),
    Config("default"),
    Config("compile", offload="none", compile=True),
    Config("fp8", offload="none", precision="fp8"),
    Config("fp8+compile", offload="none", precision="fp8", compile=True),
    Config("fp8-fast", offload="none", precision="fp8-fast", cuda_only=True),
    Config("fp8-fast+compile", offload="none", precision="fp8-fast", compile=True, cuda_only=True),
    Config("cap:auto", cap=True, cuda_only=True),
    Config("cap:encoders+fp8", offload="encoders", precision="fp8", cap=True, cuda_only=True),
    Config("cap:encoders+fp8-fast+compile", offload="encoders", precision="fp8-fast", compile=True, cap=True,
           cuda_only=True),
    Config("cap:none+fp8", offload="none", precision="fp8", cap=True, cuda_only=True),
    Config("cap:encoders", offload="encoders", cap=True, cuda_only=True),
    Config("cap:model+fp8", offload="model", precision="fp8", cap=True, cuda_only=True),
    Config("cap:model", offload="model", cap=True, cuda_only=True),
    Config("cap:group", offload="group", cap=True, cuda_only=True),
    Config("cap:sequential", offload="sequential", cap=True, cuda_only=True),
]
SCALE_DEFAULTS = {"full": {"size": 1024, "steps": "28,4,20,50"}, "small": {"size": 256, "steps": "8"},
                  "tiny": {"size": 64, "steps": "4"}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=list(SCALE_DEFAULTS), default="full")
    p.add_argument("--size", type=int, help="square side (default 1024 for full, 256 for small)")
    p.add_argument("--steps", help="step counts, the first is the one ratios use (default 28,4,20,50 for full)")
    p.add_argument("--runs", type=int, default=3, help="timed images per setting and step count (after a warm-up)")
    p.add_argument("--cap-gib", type=float, default=24.0, help="VRAM cap for the cap: rows")
    p.add_argument("--configs", help="comma-separated names (default: all that can run here): "
                   + ", ".join(c.name for c in CONFIGS))
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                   help="all settings in memory, one image of each in turn (default: on for the CPU, where other "
                        "work disturbs timings; off on a GPU, where one full pipeline at a time fits)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    a = p.parse_args(argv)
    a.size = a.size or SCALE_DEFAULTS[a.scale]["size"]
    try:
        a.steps = [int(x) for x in (a.steps or SCALE_DEFAULTS[a.scale]["steps"]).split(",")]
    except ValueError:
        p.error(f"--steps {a.steps!r}: give step counts separated by commas, e.g. 28,4,20,50")
    if not a.steps or min(a.steps) < 1 or a.size % 16 or a.runs < 1:
        p.error("--steps must be positive, --size a multiple of 16, --runs at least 1")
    known = {c.name: c for c in CONFIGS}
    names = a.configs.split(",") if a.configs else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    a.configs = [known[n] for n in names]
    if "baseline" not in names:
        a.configs.insert(0, known["baseline"])
    return a


# ---------------------------------------------------------------------------------------
# One setting
# ---------------------------------------------------------------------------------------

def build(scale: str, device: str):
    import torch
    from diffusers import FluxPipeline

    from fluxnb.model.testmodel import build_components

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pipe = FluxPipeline(**build_components(scale, device=device, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare(pipe, cfg: Config, device: str):
    """fluxnb's loader, steps 3-4: pick the policy, then precision, offload, compile."""
    from fluxnb.model.pipeline import Loaded, configure, pick_offload
    from fluxnb.config.settings import LoadSettings

    if device == "cuda" and (cfg.cap or cfg.offload != "none"):
        pipe.to("cpu")  # where fluxnb's loader has the components before the policy applies
        _free()
        _apply_cap(cfg)
    offload, precision, note = pick_offload(cfg.offload, device, cfg.precision)
    configure(pipe, offload, precision, cfg.compile, device)
    key = LoadSettings("bench", cfg.offload, cfg.precision, cfg.compile, device)
    return Loaded(pipe=pipe, key=key, model="bench", model_name="bench", path="", device=device, dtype="",
                  offload=offload, precision=precision, test_model=True, load_s=0.0, notes=[note] if note else [])


def make_image(target, cfg: Config, steps: int, size: int, seed: int) -> dict:
    """One image; returns its timings (seconds)."""
    import torch

    t0 = time.perf_counter()
    if cfg.diffusers:
        with torch.inference_mode():
            target(PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=3.5,
                   generator=torch.Generator("cpu").manual_seed(seed), max_sequence_length=512)
        return {"s": time.perf_counter() - t0, "compile_s": 0.0}
    from fluxnb.config.settings import resolve
    from fluxnb.image.make import make
    from fluxnb.image.record import Job

    s = resolve(use_env=False, prompt=PROMPT, steps=steps, size=f"{size}x{size}", guidance=3.5, seed=seed,
                max_sequence_length=512, model="black-forest-labs/FLUX.1-dev")
    [image] = make([Job(s, seed)], loaded=target, save=False, record=False, progress=False)
    return {"s": time.perf_counter() - t0, "compile_s": image.record["compile_s"]}


def new_row(cfg: Config) -> dict:
    return {"name": cfg.name, "offload": cfg.offload, "precision": cfg.precision, "compile": cfg.compile,
            "s": {}, "best_s": {}, "peak_gib": None, "encode_s": None, "compile_s": None, "error": ""}


def setup(cfg: Config, a, device: str, row: dict):
    """Build and prepare one setting, encode the prompt, and make a warm-up image at each
    step count (the first compiles); returns what make_image takes."""
    pipe = build(a.scale, device)
    if cfg.diffusers:
        pipe.to(device)
        target = pipe
    else:
        t0 = time.perf_counter()
        target = prepare(pipe, cfg, device)
        row.update(offload=target.offload, precision=target.precision, prepare_s=round(time.perf_counter() - t0, 2))
        from fluxnb.image.render import encode

        t0 = time.perf_counter()
        encode(target, PROMPT, PROMPT, 512)
        row["encode_s"] = round(time.perf_counter() - t0, 3)
    for n, steps in enumerate(a.steps):
        first = make_image(target, cfg, steps, a.size, seed=0)
        if n == 0:
            row["compile_s"] = first["compile_s"]
    return target


def record(row: dict, steps: int, times: list[float]) -> None:
    row["s"][steps] = round(statistics.median(times), 3)
    row["best_s"][steps] = round(min(times), 3)


def _error(e: Exception) -> str:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return "out of memory"
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def run_config(cfg: Config, a, device: str) -> dict:
    """One setting after another (the GPU way: one pipeline in memory at a time): build,
    prepare, warm up, time each step count; the peak VRAM of the timed images."""
    import torch

    row = new_row(cfg)
    if cfg.cuda_only and device != "cuda":
        row["error"] = "needs CUDA"
        return row
    _apply_cap(None)
    target = None
    try:
        target = setup(cfg, a, device, row)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for n, steps in enumerate(a.steps):
            record(row, steps, [make_image(target, cfg, steps, a.size, seed=i + 1)["s"] for i in range(a.runs)])
            if n == 0 and device == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except Exception as e:  # noqa: BLE001 - a setting that cannot run here is a row, not a crash
        row["error"] = _error(e)
    finally:
        del target
        _free()
        _apply_cap(None)
    return row


def run_interleaved(configs: list[Config], a, device: str) -> list[dict]:
    """Every setting in memory at once, one image of each in turn per round, so that
    other work on a shared machine slows them all alike (the CPU way; no VRAM figures)."""
    rows, targets = [], {}
    for cfg in configs:
        row = new_row(cfg)
        rows.append(row)
        if cfg.cuda_only and device != "cuda":
            row["error"] = "needs CUDA"
            continue
        try:
            targets[cfg.name] = setup(cfg, a, device, row)
        except Exception as e:  # noqa: BLE001
            row["error"] = _error(e)
    live = [(cfg, row) for cfg, row in zip(configs, rows) if cfg.name in targets]
    for steps in a.steps:
        times = {cfg.name: [] for cfg, _ in live}
        for i in range(a.runs):
            order = live if i % 2 == 0 else live[::-1]
            for cfg, _row in order:
                times[cfg.name].append(make_image(targets[cfg.name], cfg, steps, a.size, seed=i + 1)["s"])
        for cfg, row in live:
            record(row, steps, times[cfg.name])
    targets.clear()
    _free()
    return rows


_CAP = {"gib": 24.0}


def _apply_cap(cfg: Config | None) -> None:
    """The per-process VRAM cap for a `cap` row (None or an uncapped row: no cap)."""
    import torch

    if not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(0).total_memory
    frac = min(1.0, _CAP["gib"] * 2**30 / total) if cfg is not None and cfg.cap else 1.0
    torch.cuda.set_per_process_memory_fraction(frac)


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

def format_table(rows: list[dict], steps: list[int], cap_gib: float) -> str:
    """One line per setting: median seconds per image at each step count, the ratio to
    the baseline at the first step count (of medians, and of the best runs: steadier on a
    shared CPU), peak VRAM, first-image compile and encode times."""
    main = steps[0]
    base = next((r["s"].get(main) for r in rows if r["name"] == "baseline"), None)
    base_best = next((r.get("best_s", {}).get(main) for r in rows if r["name"] == "baseline"), None)
    head = ["setting", "policy", *[f"s/img@{n}" for n in steps], f"x baseline@{main}", "best-of x", "peak GiB",
            "compile s",
            "encode s", "note"]
    body = []
    for r in rows:
        s_main = r["s"].get(main)
        ratio = f"{s_main / base:.2f}x" if s_main and base else "-"
        policy = "plain diffusers" if r["name"] == "baseline" else \
            f"{r['offload']}/{r['precision']}" + ("+compile" if r["compile"] else "")
        note = r["error"] or (f"cap {cap_gib:g} GiB" if r["name"].startswith("cap:") else "")
        best = r.get("best_s", {}).get(main)
        best_ratio = f"{best / base_best:.2f}x" if best and base_best else "-"
        body.append([r["name"], policy, *[f"{r['s'][n]:.3f}" if n in r["s"] else "-" for n in steps], ratio,
                     best_ratio,
                     "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}",
                     "-" if not r["compile_s"] else f"{r['compile_s']:.1f}",
                     "-" if r["encode_s"] is None else f"{r['encode_s']:.3f}", note])
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    return f"CPU {platform.processor() or platform.machine()}"


def main(argv=None) -> int:
    a = parse_args(argv)
    _CAP["gib"] = a.cap_gib
    import diffusers
    import torch

    from fluxnb.model.runtime import quiet_libraries

    quiet_libraries()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.scale == "full" and device != "cuda":
        print("--scale full needs a CUDA GPU (about 34 GiB); use --scale small on a CPU", file=sys.stderr)
        return 2
    print(f"{date.today()}  {device_name()}  torch {torch.__version__}  diffusers {diffusers.__version__}")
    interleave = a.interleave if a.interleave is not None else device != "cuda"
    print(f"scale {a.scale}, {a.size}x{a.size}, steps {','.join(map(str, a.steps))}, median of {a.runs} after a "
          f"warm-up image{', interleaved' if interleave else ''}\n", flush=True)
    if interleave:
        rows = run_interleaved(a.configs, a, device)
    else:
        rows = []
        for cfg in a.configs:
            t0 = time.perf_counter()
            rows.append(run_config(cfg, a, device))
            print(f"  {cfg.name}: {rows[-1]['s'] or rows[-1]['error']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    print(format_table(rows, a.steps, a.cap_gib))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"date": str(date.today()), "device": device_name(), "argv": sys.argv[1:], "rows": rows}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
