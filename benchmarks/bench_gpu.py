"""Seconds per image, peak VRAM and pixels for fluxnb's speed/memory settings against plain
diffusers, one row per setting, printed as one table of ratios to the baseline.

The random-weight FLUX.1-dev architecture (`--scale full`: 11.9B transformer, T5-XXL,
CLIP-L, VAE) is built directly on the GPU in bf16 (fluxnb.testmodel, nothing downloaded;
the same seeds give the same weights in every row). Each row gets a freshly built pipeline
prepared as fluxnb's loader prepares one (pipeline.pick_offload, then pipeline.configure:
levers, precision, memory policy, compile) and makes its images through
the one image path (fluxnb.image.make.make), as `fluxnb generate` does. The baseline is a plain
diffusers FluxPipeline, bf16, resident, called with the prompt. Rows and sets of rows:
bench_gpu_rows.py (`cap:` rows run under a per-process VRAM cap, --cap-gib, default 24).

    python3 benchmarks/bench_gpu.py --json gpu.json       # the core set: 1024x1024, 28 steps, 3 runs (~6-8 min)
    python3 benchmarks/bench_gpu.py --configs levers      # each speed lever as its own row
    python3 benchmarks/bench_gpu.py --configs all --budget-s 540
    python3 benchmarks/bench_gpu.py --scale small         # the same code on a CPU (256x256, 8 steps)

Every row: median and best seconds per image, peak allocated and reserved VRAM, compile
seconds (first image minus the median), the largest pixel difference from the baseline's
image of the same seed and the sha256 of its seed-1 image, and the settings it really ran
with. `--budget-s N` starts no row whose estimate would overrun N seconds (counted from the
start); the JSON (`--json`) is rewritten atomically before and after every row, so a run
killed at a time limit keeps every finished row. Goals (H100/H200, 1024x1024, 28 steps):
fastest <= 2.5 s per image; default within 1.02x of the baseline; under the 24 GB cap at
most 1.5x the resident bf16 time and peak reserved VRAM at most 23 GB.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "benchmarks")):  # runs as `python3 benchmarks/bench_gpu.py`, no PYTHONPATH
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench_gpu_rows import SETS, Calibration, Config, compile_prior, estimate, expand  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic sky"
SCALE_DEFAULTS = {"full": {"size": 1024, "steps": "28"}, "small": {"size": 256, "steps": "8"},
                  "tiny": {"size": 64, "steps": "4"}}
GIB = 2**30


class TimeLimit(BaseException):
    """SIGTERM (the outer `timeout`): stop where we are, keep what was measured."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=list(SCALE_DEFAULTS), default="full")
    p.add_argument("--size", type=int, help="square side (default 1024 for full, 256 for small)")
    p.add_argument("--steps", help="step counts, the first is the one ratios use (default 28 for full)")
    p.add_argument("--runs", type=int, default=3, help="timed images per row and step count (after a warm-up)")
    p.add_argument("--cap-gib", type=float, default=24.0, help="VRAM cap for the cap: rows")
    p.add_argument("--configs", default="core", help="comma-separated rows or sets (default core; sets: "
                   + ", ".join(f"{k}: {', '.join(v)}" for k, v in SETS.items() if k != "all") + "; all)")
    p.add_argument("--budget-s", type=float, help="start no row whose estimate would end past this many seconds")
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                   help="all rows in memory, one image of each in turn (default: on for the CPU without a budget, "
                        "where other work disturbs timings; off on a GPU, where one full pipeline at a time fits, "
                        "and under --budget-s, where a row's figures are final when it ends)")
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE (atomically, after every row)")
    a = p.parse_args(argv)
    a.size = a.size or SCALE_DEFAULTS[a.scale]["size"]
    try:
        a.steps = [int(x) for x in (a.steps or SCALE_DEFAULTS[a.scale]["steps"]).split(",")]
    except ValueError:
        p.error(f"--steps {a.steps!r}: give step counts separated by commas, e.g. 28,4")
    if not a.steps or min(a.steps) < 1 or a.size % 16 or a.runs < 1 or (a.budget_s is not None and a.budget_s <= 0):
        p.error("--steps must be positive, --size a multiple of 16, --runs at least 1, --budget-s positive")
    try:
        a.configs = expand([n for n in a.configs.split(",") if n.strip()])
    except ValueError as e:
        p.error(f"--configs: {e} (rows: baseline or [cap:]PART+PART...; see benchmarks/bench_gpu_rows.py)")
    return a


# ---------------------------------------------------------------------------------------
# One row
# ---------------------------------------------------------------------------------------

def new_row(cfg: Config) -> dict:
    return {"name": cfg.name, "status": "pending", "error": "", "settings": {}, "s": {}, "best_s": {}, "runs_s": {},
            "first_image_s": {}, "compile_s": None, "build_s": None, "prepare_s": None, "encode_s": None,
            "peak_alloc_gib": None, "peak_reserved_gib": None, "setup_peak_reserved_gib": None,
            "max_px_diff": None, "px_compared": 0, "sha256": None, "estimate_s": None, "wall_s": None,
            "cache_files_before": None}


def build(scale: str, device: str):
    import torch
    from diffusers import FluxPipeline

    from fluxnb.model.testmodel import build_components

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pipe = FluxPipeline(**build_components(scale, device=device, dtype=dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare(pipe, cfg: Config, device: str):
    """fluxnb's loader, steps 3-4: pick the policy, then levers, precision, offload, compile."""
    from fluxnb.model.pipeline import Loaded, configure, pick_offload
    from fluxnb.config.settings import LoadSettings

    if device == "cuda" and (cfg.cap or cfg.offload != "none"):
        pipe.to("cpu")  # where fluxnb's loader has the components before the policy applies
        free_memory()
    offload, precision, note = pick_offload(cfg.offload, device, cfg.precision)
    configure(pipe, offload, precision, cfg.compile, device, **cfg.levers())
    key = LoadSettings("bench", cfg.offload, cfg.precision, cfg.compile, device)
    return Loaded(pipe=pipe, key=key, model="bench", model_name="bench", path="", device=device, dtype="",
                  offload=offload, precision=precision, test_model=True, load_s=0.0, notes=[note] if note else [])


def make_image(target, cfg: Config, steps: int, size: int, seed: int):
    """One image; returns (seconds, PIL image). diffusers' process-wide attention backend
    is put back first: a row that set one must not change the rows that did not."""
    import torch

    from fluxnb.model.perf_levers import reset_attention_backend

    reset_attention_backend()
    t0 = time.perf_counter()
    if cfg.diffusers:
        with torch.inference_mode():
            image = target(PROMPT, width=size, height=size, num_inference_steps=steps, guidance_scale=3.5,
                           generator=torch.Generator("cpu").manual_seed(seed), max_sequence_length=512).images[0]
        return time.perf_counter() - t0, image
    from fluxnb.config.settings import resolve
    from fluxnb.image.make import make
    from fluxnb.image.record import Job

    s = resolve(use_env=False, prompt=PROMPT, steps=steps, size=f"{size}x{size}", guidance=3.5, seed=seed,
                max_sequence_length=512, model="black-forest-labs/FLUX.1-dev")
    [made] = make([Job(s, seed)], loaded=target, save=False, record=False, progress=False)
    return time.perf_counter() - t0, made.image


def settings_of(target, cfg: Config, a, device: str) -> dict:
    """What the row really ran with: read from the prepared pipeline, not from the row's name."""
    common = {"size": f"{a.size}x{a.size}", "steps": a.steps, "runs": a.runs, "device": device,
              "cap_gib": a.cap_gib if cfg.cap and device == "cuda" else None}
    pipe = target if cfg.diffusers else target.pipe
    dtype = str(getattr(pipe.transformer, "dtype", "")).replace("torch.", "")
    if cfg.diffusers:
        return {"pipeline": "plain diffusers", "offload": "none", "precision": "bf16", "dtype": dtype, **common}
    from fluxnb.model.perf_levers import levers_in_effect

    return {"pipeline": "fluxnb", "offload": target.offload, "precision": target.precision, "dtype": dtype,
            "compile": cfg.compile, "compile_mode": cfg.compile_mode, **levers_in_effect(pipe),
            "notes": target.notes, **common}


def setup(cfg: Config, a, device: str, row: dict, images: dict):
    """Build and prepare one row, encode the prompt, and make a warm-up image (seed 0) at
    each step count (the first compiles); returns what make_image takes."""
    t0 = time.perf_counter()
    pipe = build(a.scale, device)
    row["build_s"] = round(time.perf_counter() - t0, 2)
    if cfg.diffusers:
        pipe.to(device)
        target = pipe
    else:
        t0 = time.perf_counter()
        target = prepare(pipe, cfg, device)
        row["prepare_s"] = round(time.perf_counter() - t0, 2)
        if cfg.compiles:  # the cache folder the row compiles into (compiling starts at the first image)
            row["cache_files_before"] = cache_files()
        from fluxnb.image.render import encode

        t0 = time.perf_counter()
        encode(target, PROMPT, PROMPT, 512)
        row["encode_s"] = round(time.perf_counter() - t0, 3)
    for steps in a.steps:
        seconds, image = make_image(target, cfg, steps, a.size, seed=0)
        row["first_image_s"][steps] = round(seconds, 3)
        images[(steps, 0)] = image
    row["settings"] = settings_of(target, cfg, a, device)
    return target


def timed_image(target, cfg: Config, a, steps: int, seed: int, images: dict) -> float:
    seconds, image = make_image(target, cfg, steps, a.size, seed)
    images[(steps, seed)] = image
    return seconds


def record(row: dict, steps: int, times: list[float], compiles: bool, main: int) -> None:
    row["runs_s"][steps] = [round(t, 3) for t in times]
    row["s"][steps] = round(statistics.median(times), 3)
    row["best_s"][steps] = round(min(times), 3)
    if compiles and steps == main and steps in row["first_image_s"]:
        row["compile_s"] = round(max(0.0, row["first_image_s"][steps] - row["s"][steps]), 2)


def compare(row: dict, images: dict, baseline: dict, main: int) -> None:
    """Largest pixel difference (0-255) from the baseline's image of the same seed and step
    count, and the sha256 of the row's seed-1 image at the main step count (RGB pixels)."""
    import numpy as np

    diffs = [int(np.abs(np.asarray(img, dtype=np.int16) - np.asarray(baseline[k], dtype=np.int16)).max())
             for k, img in images.items() if k in baseline]
    row["max_px_diff"] = max(diffs) if diffs else None
    row["px_compared"] = len(diffs)
    first = images.get((main, 1))
    if first is not None:
        row["sha256"] = hashlib.sha256(np.asarray(first.convert("RGB")).tobytes()).hexdigest()


def error_text(e: BaseException) -> str:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return "out of memory"
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


@contextmanager
def memory_cap(cfg: Config, gib: float, device: str):
    """A cap: row's per-process VRAM cap, put back as it was afterwards."""
    import torch

    if device != "cuda" or not cfg.cap:
        yield
        return
    get = getattr(torch.cuda, "get_per_process_memory_fraction", lambda *_: 1.0)
    before = get()
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * GIB / torch.cuda.get_device_properties(0).total_memory))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(before)


def free_memory() -> None:
    """Compiled graphs first (they hold the modules' tensors), then Python's and CUDA's caches."""
    import torch

    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cache_files() -> int:
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return sum(len(f) for _, _, f in os.walk(folder)) if folder and os.path.isdir(folder) else 0


# ---------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------

class Run:
    """The rows, the time budget, the calibration and the JSON, rewritten after every row."""

    def __init__(self, a, device: str, header: dict):
        self.a, self.device, self.header = a, device, header
        self.t0 = time.monotonic()
        self.rows = [new_row(c) for c in a.configs]
        self.cal = Calibration()
        self.baseline: dict = {}
        self.status = "running"

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def fits(self, row: dict, seconds: float) -> bool:
        row["estimate_s"] = seconds
        left = None if self.a.budget_s is None else self.a.budget_s - self.elapsed()
        if left is None or seconds <= left:
            return True
        row.update(status="not run", error=f"budget: needs ~{seconds:.0f} s, {max(left, 0):.0f} s left")
        return False

    def estimate(self, cfg: Config, **kw) -> float:
        return estimate(cfg, scale=self.a.scale, steps=self.a.steps, runs=self.a.runs, device=self.device,
                        cal=self.cal, **kw)

    def learn(self, cfg: Config, row: dict) -> None:
        """Correct later estimates with what this row measured."""
        if cfg.diffusers and row["s"]:
            self.cal.build_s, self.cal.image_s = row["build_s"], dict(row["s"])
        prior = compile_prior(cfg, self.a.scale)
        if row["compile_s"] and prior:
            self.cal.compile_ratio = min(5.0, max(0.1, row["compile_s"] / prior))

    def write(self) -> None:
        if not self.a.json:
            return
        state = {**self.header, "status": self.status, "budget_s": self.a.budget_s,
                 "elapsed_s": round(self.elapsed(), 1), "rows": self.rows,
                 "not_run": [r["name"] for r in self.rows if r["status"] in ("not run", "pending")]}
        target = Path(self.a.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2, default=str))
        os.replace(tmp, target)

    def sequential(self) -> None:
        """One row after another (the GPU way: one pipeline in memory at a time)."""
        for cfg, row in zip(self.a.configs, self.rows):
            if cfg.cuda_only and self.device != "cuda":
                row["status"] = "needs CUDA"
                continue
            if not self.fits(row, self.estimate(cfg)):
                print(f"  {cfg.name}: not run ({row['error']})", flush=True)
                continue
            row["status"] = "running"
            self.write()
            self.run_row(cfg, row)
            self.learn(cfg, row)
            self.write()
            print(f"  {cfg.name}: {row['s'] or row['error']} ({row['wall_s']:.0f} s, estimated "
                  f"{row['estimate_s']:.0f} s)", flush=True)

    def run_row(self, cfg: Config, row: dict) -> None:
        import torch

        cuda = self.device == "cuda"
        images: dict = {}
        t0, target = time.monotonic(), None
        try:
            with memory_cap(cfg, self.a.cap_gib, self.device):
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                target = setup(cfg, self.a, self.device, row, images)
                if cuda:
                    row["setup_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
                    torch.cuda.reset_peak_memory_stats()
                for steps in self.a.steps:
                    times = [timed_image(target, cfg, self.a, steps, i + 1, images) for i in range(self.a.runs)]
                    record(row, steps, times, cfg.compiles, self.a.steps[0])
                if cuda:
                    row["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
                    row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
            row["status"] = "ok"
        except TimeLimit:
            row.update(status="killed", error="killed at the time limit")
            raise
        except Exception as e:  # noqa: BLE001 - a setting that cannot run here is a row, not a crash
            row.update(status="error", error=error_text(e))
        finally:
            row["wall_s"] = round(time.monotonic() - t0, 1)
            if cfg.diffusers:
                self.baseline = images
            compare(row, images, self.baseline, self.a.steps[0])
            target = images = None
            free_memory()

    def interleaved(self) -> None:
        """Every row in memory at once, one image of each in turn per round, so that other
        work on a shared machine slows them all alike (the CPU way; no VRAM figures)."""
        live, images = [], {}
        for cfg, row in zip(self.a.configs, self.rows):
            if cfg.cuda_only and self.device != "cuda":
                row["status"] = "needs CUDA"
                continue
            rounds = sum(self.estimate(c, setup=False) for c, _r, _t in live)
            if not self.fits(row, self.estimate(cfg) + rounds):
                continue
            row["status"], images[cfg.name] = "running", {}
            self.write()
            try:
                with memory_cap(cfg, self.a.cap_gib, self.device):
                    live.append((cfg, row, setup(cfg, self.a, self.device, row, images[cfg.name])))
                if cfg.diffusers:  # the warm-up images stand in for the timed ones (an overestimate)
                    self.cal.build_s, self.cal.image_s = row["build_s"], dict(row["first_image_s"])
            except TimeLimit:
                row.update(status="killed", error="killed at the time limit")
                raise
            except Exception as e:  # noqa: BLE001
                row.update(status="error", error=error_text(e))
        done = 0
        try:
            for steps in self.a.steps:
                times = {cfg.name: [] for cfg, _r, _t in live}
                for i in range(self.a.runs):
                    for cfg, _row, target in (live if i % 2 == 0 else live[::-1]):
                        with memory_cap(cfg, self.a.cap_gib, self.device):
                            times[cfg.name].append(timed_image(target, cfg, self.a, steps, i + 1, images[cfg.name]))
                    for cfg, row, _t in live:  # after every round: a time limit keeps the rounds made
                        record(row, steps, times[cfg.name], cfg.compiles, self.a.steps[0])
                    done += 1
        finally:
            self.baseline = images.get("baseline", {})
            total = self.a.runs * len(self.a.steps)
            for cfg, row, _t in live:
                row["status"] = "ok" if row["s"] else "killed"
                if done < total:
                    row["error"] = f"stopped at the time limit after {done} of {total} rounds"
                compare(row, images[cfg.name], self.baseline, self.a.steps[0])
            live.clear()
            free_memory()


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

def format_table(rows: list[dict], steps: list[int]) -> str:
    """One line per row: median seconds per image at each step count, the ratio to the
    baseline at the first (of medians, and of the best runs: steadier on a shared CPU),
    peak allocated / reserved VRAM, compile seconds, the largest pixel difference from the
    baseline, the estimate against the time taken, and why a row has no figures."""
    main = steps[0]
    base = next((r for r in rows if r["name"] == "baseline"), {})
    base_s, base_best = base.get("s", {}).get(main), base.get("best_s", {}).get(main)
    head = ["setting", "policy", *[f"s/img@{n}" for n in steps], f"x baseline@{main}", "best-of x", "alloc GiB",
            "reserved GiB", "compile s", "px diff", "est/wall s", "note"]
    body = []
    for r in rows:
        st = r.get("settings") or {}
        s_main, best = r["s"].get(main), r.get("best_s", {}).get(main)
        policy = "plain diffusers" if r["name"] == "baseline" else (
            f"{st['offload']}/{st['precision']}" + ("+compile" if st.get("compile") else "") if st else "-")
        note = r["error"] or ("" if r["status"] in ("ok", "pending") else r["status"])
        if st.get("cap_gib"):
            note = (note + "; " if note else "") + f"cap {st['cap_gib']:g} GiB"
        body.append([
            r["name"], policy, *[f"{r['s'][n]:.3f}" if n in r["s"] else "-" for n in steps],
            f"{s_main / base_s:.2f}x" if s_main and base_s else "-",
            f"{best / base_best:.2f}x" if best and base_best else "-",
            *["-" if r.get(k) is None else f"{r[k]:.2f}" for k in ("peak_alloc_gib", "peak_reserved_gib")],
            "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}",
            "-" if r.get("max_px_diff") is None else str(r["max_px_diff"]),
            "-" if r.get("wall_s") is None else f"{r.get('estimate_s') or 0:.0f}/{r['wall_s']:.0f}", note])
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / GIB:.0f} GiB)"
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def main(argv=None) -> int:
    # 1. Arguments, the clock, and SIGTERM (an outer timeout) as an exception.
    a = parse_args(argv)
    t_start = time.monotonic()

    def on_term(signum, frame):
        raise TimeLimit()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        # 2. Where we are.
        import diffusers
        import torch

        from fluxnb.model.runtime import quiet_libraries

        quiet_libraries()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if a.scale == "full" and device != "cuda":
            print("--scale full needs a CUDA GPU (about 34 GiB); use --scale small on a CPU", file=sys.stderr)
            return 2
        header = {"date": str(date.today()), "device": device_name(), "torch": torch.__version__,
                  "diffusers": diffusers.__version__, "python": platform.python_version(),
                  "argv": sys.argv[1:] if argv is None else list(argv),
                  "scale": a.scale, "size": a.size, "steps": a.steps, "runs": a.runs}
        interleave = a.interleave if a.interleave is not None else device != "cuda" and a.budget_s is None
        print(f"{header['date']}  {header['device']}  torch {torch.__version__}  diffusers {diffusers.__version__}")
        print(f"scale {a.scale}, {a.size}x{a.size}, steps {','.join(map(str, a.steps))}, median of {a.runs} after a "
              f"warm-up image{', interleaved' if interleave else ''}"
              + (f", budget {a.budget_s:.0f} s" if a.budget_s else "") + "\n", flush=True)

        # 3. The rows, the JSON after each; a SIGTERM keeps what was measured.
        run = Run(a, device, header)
        run.t0 = t_start
        run.write()
        rc = 0
        try:
            run.interleaved() if interleave else run.sequential()
            run.status = "done"
        except TimeLimit:
            run.status, rc = "killed at the time limit", 124
            for row in run.rows:
                if row["status"] == "running":
                    row.update(status="killed", error="killed at the time limit")
                elif row["status"] == "pending":
                    row.update(status="not run", error="killed before it started")
        run.write()
        print()
        print(format_table(run.rows, a.steps))
        print(f"\n{run.status}: {run.elapsed():.0f} s" + (f" of a {a.budget_s:.0f} s budget" if a.budget_s else ""))
        return rc
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
