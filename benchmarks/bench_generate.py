"""Whole-process CPU benchmark: `fluxnb generate` against a plain diffusers script, plus
start-up figures (`import fluxnb`, `fluxnb tokens`), printed side by side from one run.

Both sides load the same random-weight `small` model (fluxnb.testmodel, built once into
the cache), make the same 256x256, 8-step image with the same seed and save a JPEG. Runs
are interleaved (fluxnb, diffusers, diffusers, fluxnb, ...) after a warm-up round; the
median of N is reported. Goals: generate <= 1.10x plain diffusers, `import
fluxnb` < 0.5 s, `fluxnb tokens` < 1 s.

    .venv/bin/python benchmarks/bench_generate.py            # 5 runs each
    .venv/bin/python benchmarks/bench_generate.py --runs 9 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic sky"
IMPORT_TIMER = "import time; t = time.perf_counter(); import fluxnb; print('seconds', time.perf_counter() - t)"
GOALS = {"generate": 1.10, "import": 0.5, "tokens": 1.0, "help": 0.5}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs of each command (after one warm-up round)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model-dir", help="a built small model (default: build it once into the fluxnb cache)")
    p.add_argument("--with-teardown", action="store_true",
                   help="also time fluxnb generate through main() with Python's full teardown (no quick exit)")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error(f"--runs {a.runs}: must be at least 1")
    if a.size % 16:
        p.error(f"--size {a.size}: must be a multiple of 16")
    return a


def small_model(model_dir: str | None) -> Path:
    from fluxnb.model.testmodel import build
    from fluxnb.config.environment import cache_dir

    return build(model_dir or cache_dir() / "models" / "small-v1", "small")


def commands(a: argparse.Namespace, model: Path, out: Path) -> dict[str, list[str]]:
    """The commands compared, by name. `generate`/`diffusers` make the same JPEG."""
    py = sys.executable
    return {
        "generate": [str(BIN / "fluxnb"), "-q", "generate", PROMPT, *_flags(a, model, out)],
        "diffusers": [py, str(HERE / "plain_diffusers.py"), str(model), str(out / "diffusers.jpg"), PROMPT,
                      "--size", str(a.size), "--steps", str(a.steps), "--seed", str(a.seed)],
        "generate-teardown": [py, "-c", "import sys; from fluxnb.front.cli import main; sys.exit(main())",
                              *[x for x in ("-q", "generate", PROMPT) + tuple(_flags(a, model, out))]],
        "import": [py, "-c", IMPORT_TIMER],
        "tokens": [str(BIN / "fluxnb"), "tokens", PROMPT],
        "help": [str(BIN / "fluxnb"), "--help"],
    }


def _flags(a: argparse.Namespace, model: Path, out: Path) -> list[str]:
    return ["--model", str(model), "--size", f"{a.size}x{a.size}", "--steps", str(a.steps), "--seed", str(a.seed),
            "--guidance", "3.5", "--format", "jpg", "--out", str(out / "fluxnb")]


def bench_env(tmp: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", FLUXNB_CONFIG_ENV=str(tmp / "no-config.env"),
               FLUXNB_LOG_DIR=str(tmp / "logs"), TOKENIZERS_PARALLELISM="false")
    return env


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one whole process."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    if r.stdout.startswith("seconds "):  # a command that times itself (the import)
        return float(r.stdout.split()[1]), cpu
    return dt, cpu


def run_rounds(cmds: dict[str, list[str]], names: list[str], runs: int, env: dict) -> dict[str, list[float]]:
    """One warm-up round, then `runs` interleaved rounds (order reversed every other round).
    Wall seconds under each name, CPU seconds under NAME:cpu."""
    times = {k: [] for n in names for k in (n, f"{n}:cpu")}
    for r in range(runs + 1):
        order = names if r % 2 else list(reversed(names))
        for n in order:
            wall, cpu = timed(cmds[n], env)
            if r:
                times[n].append(wall)
                times[f"{n}:cpu"].append(cpu)
    return times


def summarize(times: dict[str, list[float]]) -> dict:
    """Medians, the generate ratio and the start-up figures, checked against the goals."""
    med = {n: statistics.median(v) for n, v in times.items()}
    ratio = med["generate"] / med["diffusers"]
    best = {n: min(v) for n, v in times.items()}
    r = best["generate"] / best["diffusers"]
    extra = [("  same, best of the runs (least disturbed by other work)", best["generate"], best["diffusers"], r,
              f"<= {GOALS['generate']:.2f}x", r <= GOALS["generate"])]
    if "generate:cpu" in med:
        r = med["generate:cpu"] / med["diffusers:cpu"]
        extra.append(("  same, CPU seconds (user+sys; steadier on a busy machine)", med["generate:cpu"],
                      med["diffusers:cpu"], r, f"<= {GOALS['generate']:.2f}x", r <= GOALS["generate"]))
    if "generate-teardown" in med:
        r = med["generate-teardown"] / med["diffusers"]
        extra.append(("  same, with Python's full teardown (before the quick exit)", med["generate-teardown"],
                      med["diffusers"], r, f"<= {GOALS['generate']:.2f}x", r <= GOALS["generate"]))
        r = best["generate-teardown"] / best["diffusers"]
        extra.append(("  same, with the full teardown, best of the runs", best["generate-teardown"],
                      best["diffusers"], r, f"<= {GOALS['generate']:.2f}x", r <= GOALS["generate"]))
    return {
        "median_s": {n: round(v, 3) for n, v in med.items()},
        "runs": {n: [round(x, 3) for x in v] for n, v in times.items()},
        "rows": [
            ("fluxnb generate vs plain diffusers (whole process)", med["generate"], med["diffusers"], ratio,
             f"<= {GOALS['generate']:.2f}x", ratio <= GOALS["generate"]),
            *extra,
            ("import fluxnb (in a fresh process)", med["import"], None, None, f"< {GOALS['import']} s",
             med["import"] < GOALS["import"]),
            ("fluxnb tokens PROMPT (whole process)", med["tokens"], None, None, f"< {GOALS['tokens']} s",
             med["tokens"] < GOALS["tokens"]),
            ("fluxnb --help (whole process)", med["help"], None, None, f"< {GOALS['help']} s",
             med["help"] < GOALS["help"]),
        ],
    }


def format_table(rows) -> str:
    """rows: (what, seconds, baseline seconds or None, ratio or None, goal, met)."""
    head = ("what", "fluxnb", "baseline", "ratio", "goal", "met")
    body = [(w, f"{s:.3f} s", "-" if b is None else f"{b:.3f} s", "-" if r is None else f"{r:.3f}", g,
             "yes" if ok else "NO") for w, s, b, r, g, ok in rows]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def main(argv=None) -> int:
    a = parse_args(argv)
    model = small_model(a.model_dir)
    with tempfile.TemporaryDirectory(prefix="fluxnb-bench-") as tmp:
        tmp = Path(tmp)
        env = bench_env(tmp)
        cmds = commands(a, model, tmp)
        names = ["generate", "diffusers"] + (["generate-teardown"] if a.with_teardown else [])
        times = run_rounds(cmds, names, a.runs, env)
        times.update(run_rounds(cmds, ["import", "tokens", "help"], a.runs, env))
    res = summarize(times)
    print(f"{date.today()}  {platform.node()}  {platform.processor() or platform.machine()}  "
          f"{os.cpu_count()} CPUs  python {platform.python_version()}")
    print(f"small model, {a.size}x{a.size}, {a.steps} steps, seed {a.seed}, median of {a.runs} "
          f"(after a warm-up round)\n")
    print(format_table(res["rows"]))
    if a.json:
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=2))
    return 0 if all(r[-1] for r in res["rows"] if not r[0].startswith("  ")) else 1


if __name__ == "__main__":
    sys.exit(main())
