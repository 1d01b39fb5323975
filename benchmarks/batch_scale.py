"""Batch scale: planning time for big params files, and memory across items.

    .venv/bin/python benchmarks/batch_scale.py [--items 60] [--size 256x256]

1. Plans 1,000 and 10,000 items (median of 5, after a warm-up), with and without a
   1,000-record run log to read. Target: 1,000 items in under a second.
2. Runs `batch.execute` on the tiny model and samples the process's RSS after every item,
   side by side with a naive loop that keeps every result (PIL image included), as a
   notebook cell `[generate(...) for ...]` would. Target: flat (growth per item ~0).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_time(fn, n=5) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_plan(tmp: Path) -> None:
    from fluxnb import runlog
    from fluxnb.runs.batch import params as batch

    print("planning (median of 5)")
    for prompts, seeds in ((100, 10), (1000, 1), (1000, 10)):
        params = {"model": "tiny", "prompts": [f"prompt number {i}, oil painting" for i in range(prompts)],
                  "seeds": {"start": 0, "count": seeds}, "output_dir": str(tmp / "empty")}
        t = median_time(lambda: batch.plan(params))
        print(f"  {prompts * seeds:>6} items ({prompts} prompts x {seeds} seeds), no run log: {t * 1000:8.1f} ms")
    # A run log with 1,000 ok records whose files exist.
    out = tmp / "logged"
    params = {"model": "tiny", "prompts": [f"p {i}" for i in range(100)], "seeds": {"start": 0, "count": 10},
              "output_dir": str(out)}
    p = batch.plan(params)
    out.mkdir()
    for item in p.items:
        f = out / f"{item.id}.png"
        f.write_bytes(b"x")
        runlog.append(out, {"id": item.id, "status": "ok", "path": str(f)})
    t = median_time(lambda: batch.plan(params))
    print(f"  {len(p.items):>6} items, 1,000 run-log records to read:      {t * 1000:8.1f} ms "
          f"(to make: {len(batch.plan(params).todo)})")


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def bench_memory(tmp: Path, n: int, size: str) -> None:
    from fluxnb.runs.batch import params as batch
    from fluxnb.image.make import generate

    params = {"model": "tiny", "prompts": ["a lighthouse at dusk"], "seeds": {"start": 0, "count": n},
              "steps": 1, "size": size, "image_format": "png"}
    # Warm up: load the model and make one image in each mode so allocators settle.
    generate("warm up", model="tiny", steps=1, size=size, seeds=[0], progress=False, output_dir=str(tmp / "w"))

    samples = []

    class Sampler(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("["):
                samples.append(rss_mib())

    logging.getLogger("fluxnb").addHandler(Sampler())
    batch.execute(batch.plan({**params, "output_dir": str(tmp / "batch")}))
    kept, naive = [], []
    for seed in range(n):
        kept.append(generate("a lighthouse at dusk", model="tiny", steps=1, size=size, seeds=[seed], progress=False,
                             output_dir=str(tmp / "naive"))[0])
        naive.append(rss_mib())

    def growth(xs):
        k = max(1, len(xs) // 10)
        first, last = statistics.median(xs[k:2 * k]), statistics.median(xs[-k:])
        return last - first, (last - first) / (len(xs) - 2 * k) * 1024

    (gb, pb), (gn, pn) = growth(samples), growth(naive)
    print(f"\nmemory across {n} items at {size} (RSS, MiB; growth from the second tenth to the last)")
    print(f"  {'':24}{'batch.execute':>16}{'naive keep-all':>16}")
    print(f"  {'RSS after 10% of items':24}{samples[n // 10]:>16.1f}{naive[n // 10]:>16.1f}")
    print(f"  {'RSS after all items':24}{samples[-1]:>16.1f}{naive[-1]:>16.1f}")
    print(f"  {'growth (MiB)':24}{gb:>16.1f}{gn:>16.1f}")
    print(f"  {'growth per item (KiB)':24}{pb:>16.1f}{pn:>16.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--size", default="256x256")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fluxnb import logs

    logs.setup(logging.WARNING, file=False)
    with tempfile.TemporaryDirectory() as d:
        bench_plan(Path(d))
        bench_memory(Path(d), args.items, args.size)


if __name__ == "__main__":
    main()
