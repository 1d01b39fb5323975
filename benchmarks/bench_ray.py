"""Ray backend throughput: the same items on 1 and on N Ray workers, side by side.

Each configuration starts its own local Ray and makes the same items through
`fluxnb.runs.ray.backend.run` (the code `fluxnb batch --backend ray` runs): the workers load the
model once, then take items two at a time. Two figures per configuration:

- steady: images per second once every worker has finished its first image (the pipeline
  loaded and warm), i.e. what a long batch runs at. The speed-up is N workers' steady rate
  over one worker's; the goal is at least 0.9 x N.
- end to end: all items over the whole wall time, Ray start and model loading included.

CPU: the random-weight `small` model (fluxnb.testmodel, built once into the cache), each
worker with the same number of cores (--threads, default 1), so the ratio shows how the
backend scales rather than how torch's threads do. Configurations alternate (1, N, 1, N...)
over --runs; medians. A reference row runs the local backend's loop (`generate`, one process,
all cores) on the same items. Before each pair of runs the machine's own ceiling is measured:
N plain processes each doing the same single-threaded matrix products at once, against one
(on a shared machine other people's work takes cores; the Ray ratio cannot beat this one).

GPU, when there are at least two: the same with one worker per GPU on `--gpu-model`
(default: the `full` architecture with random weights, bf16), 1 worker against all of them.

    .venv/bin/python benchmarks/bench_ray.py                       # CPU, 1 vs 2 workers
    .venv/bin/python benchmarks/bench_ray.py --items 16 --runs 3 --workers 4
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic sky"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=12, help="images per configuration (default 12)")
    p.add_argument("--workers", type=int, default=2, help="N, compared with 1 (default 2: this machine's cores)")
    p.add_argument("--threads", type=int, default=1, help="CPU cores per worker (default 1)")
    p.add_argument("--runs", type=int, default=2, help="runs of each configuration, alternating (default 2)")
    p.add_argument("--size", type=int, default=128, help="CPU image side (default 128)")
    p.add_argument("--steps", type=int, default=4, help="CPU steps (default 4)")
    p.add_argument("--no-local", action="store_true", help="skip the local-backend reference row")
    p.add_argument("--gpu-model", default=None, help="model for the GPU part (default: the full random-weight build)")
    p.add_argument("--gpu-size", type=int, default=1024)
    p.add_argument("--gpu-steps", type=int, default=28)
    a = p.parse_args(argv)
    if a.workers < 2 or a.items < 2 * a.workers or a.runs < 1 or a.threads < 1:
        p.error("need --workers >= 2, --items >= 2 x workers, --runs >= 1, --threads >= 1")
    return a


def tasks_for(settings, n: int) -> list:
    from fluxnb.image.record import item_id
    from fluxnb.runs.ray.backend import Task

    return [Task(item_id(settings, seed), settings, seed, {"benchmark": "ray"}, f"seed {seed}")
            for seed in range(1000, 1000 + n)]


def _spin(_=None) -> float:
    import torch

    torch.set_num_threads(1)
    m = torch.randn(384, 384)
    t0 = time.perf_counter()
    for _ in range(300):
        m @ m
    return time.perf_counter() - t0


def ceiling(n: int) -> float:
    """How much faster n single-threaded processes get the same work done than one, now."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(n) as pool:
        pool.map(_spin, range(n))  # warm-up: imports
        one = pool.apply(_spin)
        many = pool.map(_spin, range(n))
    return n * one / statistics.mean(many)


def one_run(settings, n_workers: int, items: int, init: dict) -> dict:
    """Start a local Ray (`init`), make the items on `n_workers`, return the figures."""
    import ray

    from fluxnb.runs.ray import backend as raybackend

    done_at, first = [], {}

    def on_result(task, out):
        now = time.perf_counter()
        if out["status"] != "ok":
            raise SystemExit(f"an item failed: {out['error']}")
        done_at.append(now)
        first.setdefault(out["worker"], now)

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, logging_level=logging.WARNING, **init)
        try:
            raybackend.run(tasks_for(settings, items), settings.load, out, raybackend.options(workers=n_workers),
                           progress=False, on_result=on_result)
        finally:
            ray.shutdown()
        wall = time.perf_counter() - t0
    warm = max(first.values())
    after = [t for t in done_at if t > warm]
    steady = len(after) / (after[-1] - warm) if len(after) >= 2 else float("nan")
    return {"workers": len(first), "steady": steady, "end_to_end": items / wall, "wall": wall}


def local_loop(settings, items: int) -> float:
    """The local backend's way: one process, all cores, generate per item (after a warm-up)."""
    from fluxnb.image.make import generate

    s = settings.replace(output_dir=tempfile.mkdtemp())
    generate(settings=s, seeds=[999], progress=False, save=False, record=False)
    t0 = time.perf_counter()
    for seed in range(1000, 1000 + items):
        generate(settings=s, seeds=[seed], progress=False)
    return items / (time.perf_counter() - t0)


def compare(label: str, settings, a, init_for) -> list:
    """Alternate 1 and N workers over the runs; one row per configuration (medians)."""
    results, ceilings = {1: [], a.workers: []}, []
    for r in range(a.runs):
        ceilings.append(ceiling(a.workers) if init_for(1).get("num_gpus", 0) == 0 else float(a.workers))
        print(f"  run {r + 1}: the machine's ceiling now, {a.workers} processes vs 1: {ceilings[-1]:.2f}x", flush=True)
        for n in (1, a.workers):
            fig = one_run(settings, n, a.items, init_for(n))
            print(f"  run {r + 1}, {n} worker(s): steady {fig['steady']:.3f} img/s, end to end "
                  f"{fig['end_to_end']:.3f} img/s ({fig['wall']:.1f} s)", flush=True)
            results[n].append(fig)
    rows = []
    base = statistics.median(f["steady"] for f in results[1])
    for n, figs in results.items():
        steady = statistics.median(f["steady"] for f in figs)
        rows.append({"label": label, "workers": n, "steady": steady, "runs": [round(f["steady"] / base, 2) for f in
                     figs] if n > 1 else [], "end_to_end": statistics.median(f["end_to_end"] for f in figs),
                     "speedup": steady / base, "goal": 0.9 * n,
                     "ceiling": statistics.median(ceilings) if n > 1 else 1.0})
    return rows


def print_table(rows: list, local: float | None) -> None:
    print("\n| configuration | workers | steady img/s | speed-up | goal (0.9 x N) | machine ceiling | "
          "end to end img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        runs = f" (runs: {', '.join(f'{x:.2f}x' for x in r['runs'])})" if r["runs"] else ""
        met = "" if r["workers"] == 1 else (" met" if r["speedup"] >= r["goal"] else " not met")
        print(f"| {r['label']} | {r['workers']} | {r['steady']:.3f} | **{r['speedup']:.2f}x**{runs} | "
              f"{r['goal']:.1f}x{met} | {r['ceiling']:.2f}x | {r['end_to_end']:.3f} |")
    if local is not None:
        print(f"| local backend, one process, all {os.cpu_count()} cores | - | {local:.3f} | "
              f"{local / rows[0]['steady']:.2f}x | - | - | - |")


def main(argv=None) -> None:
    a = parse_args(argv)
    import torch

    from fluxnb.config.settings import resolve
    from fluxnb.model.testmodel import build
    from fluxnb.config.environment import cache_dir

    print(f"{date.today()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    # 1. CPU: the small model, each worker with the same cores.
    model = cache_dir() / "models" / "small-v1"
    if not (model / "model_index.json").is_file():
        build(model, "small")
    s = resolve(model=str(model), size=f"{a.size}x{a.size}", steps=a.steps, image_format="png", prompt=PROMPT,
                device="cpu", use_env=False)
    print(f"CPU: small model, {a.size}x{a.size}, {a.steps} steps, {a.items} items, {a.threads} core(s) per worker")
    rows = compare(f"CPU `small`, {a.size}x{a.size}, {a.steps} steps", s, a,
                   lambda n: {"num_cpus": n * a.threads, "num_gpus": 0})
    local = None if a.no_local else local_loop(s, a.items)
    print_table(rows, local)

    # 2. GPUs: one worker per GPU, when there are two or more.
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        print(f"\nGPU: not run: {gpus} GPU(s) here; the GPU comparison needs two or more")
        return
    if a.gpu_model:
        gmodel = a.gpu_model
    else:
        gmodel = cache_dir() / "models" / "full-bf16-v1"
        if not (gmodel / "model_index.json").is_file():
            build(gmodel, "full", device="cuda", dtype=torch.bfloat16)
    g = resolve(model=str(gmodel), size=f"{a.gpu_size}x{a.gpu_size}", steps=a.gpu_steps, image_format="png",
                prompt=PROMPT, offload="none", use_env=False)
    a.workers, a.items = gpus, max(a.items, 4 * gpus)
    print(f"\nGPU: {gmodel}, {a.gpu_size}x{a.gpu_size}, {a.gpu_steps} steps, {a.items} items, 1 vs {gpus} GPUs")
    print_table(compare(f"{gpus} x {torch.cuda.get_device_name(0)}", g, a,
                        lambda n: {"num_cpus": os.cpu_count(), "num_gpus": n}), None)


if __name__ == "__main__":
    main()
