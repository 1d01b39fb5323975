"""Whole-process CPU benchmark: `fluxnb generate` against a plain diffusers script, plus
start-up figures (`import fluxnb`, `fluxnb tokens`), printed side by side from one run.

Both sides load the same random-weight `small` model (fluxnb.testmodel, built once into
the cache), make the same 256x256, 8-step image with the same seed and save a JPEG. Runs
are interleaved (fluxnb, diffusers, diffusers, fluxnb, ...) after a warm-up round; the
median of N is reported. Goals (issue 8): generate <= 1.10x plain diffusers, `import
fluxnb` < 0.5 s, `fluxnb tokens` < 1 s.

    .venv/bin/python benchmarks/bench_generate.py            # 5 runs each
    .venv/bin/python benchmarks/bench_generate.py --runs 9 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
GOALS = {"generate": 1.10, "import": 0.5, "tokens": 1.0, "help": 0.5}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs of each command (after one warm-up round)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model-dir", help="a built small model (default: build it once into the fluxnb cache)")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error(f"--runs {a.runs}: must be at least 1")
    if a.size % 16:
        p.error(f"--size {a.size}: must be a multiple of 16")
    return a


def small_model(model_dir: str | None) -> Path:
    from fluxnb.testmodel import build, cache_dir

    return build(model_dir or cache_dir() / "models" / "small-v1", "small")


def commands(a: argparse.Namespace, model: Path, out: Path) -> dict[str, list[str]]:
    """The commands compared, by name. `generate`/`diffusers` make the same JPEG."""
    py = sys.executable
    return {
        "generate": [str(BIN / "fluxnb"), "-q", "generate", PROMPT, "--model", str(model), "--size",
                     f"{a.size}x{a.size}", "--steps", str(a.steps), "--seed", str(a.seed), "--guidance", "3.5",
                     "--format", "jpg", "--out", str(out / "fluxnb")],
        "diffusers": [py, str(HERE / "plain_diffusers.py"), str(model), str(out / "diffusers.jpg"), PROMPT,
                      "--size", str(a.size), "--steps", str(a.steps), "--seed", str(a.seed)],
        "import": [py, "-c", "import fluxnb"],
        "python": [py, "-c", "pass"],
        "tokens": [str(BIN / "fluxnb"), "tokens", PROMPT],
        "help": [str(BIN / "fluxnb"), "--help"],
    }


def bench_env(tmp: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", FLUXNB_CONFIG_ENV=str(tmp / "no-config.env"),
               FLUXNB_LOG_DIR=str(tmp / "logs"), TOKENIZERS_PARALLELISM="false")
    return env


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return dt


def run_rounds(cmds: dict[str, list[str]], names: list[str], runs: int, env: dict) -> dict[str, list[float]]:
    """One warm-up round, then `runs` interleaved rounds (order reversed every other round)."""
    times = {n: [] for n in names}
    for r in range(runs + 1):
        order = names if r % 2 else list(reversed(names))
        for n in order:
            dt = timed(cmds[n], env)
            if r:
                times[n].append(dt)
    return times


def summarize(times: dict[str, list[float]]) -> dict:
    """Medians, the generate ratio and the start-up figures, checked against the goals."""
    med = {n: statistics.median(v) for n, v in times.items()}
    ratio = med["generate"] / med["diffusers"]
    return {
        "median_s": {n: round(v, 3) for n, v in med.items()},
        "runs": {n: [round(x, 3) for x in v] for n, v in times.items()},
        "rows": [
            ("fluxnb generate vs plain diffusers (whole process)", med["generate"], med["diffusers"], ratio,
             f"<= {GOALS['generate']:.2f}x", ratio <= GOALS["generate"]),
            ("import fluxnb (process minus bare python)", med["import"] - med["python"], None, None,
             f"< {GOALS['import']} s", med["import"] - med["python"] < GOALS["import"]),
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
        times = run_rounds(cmds, ["generate", "diffusers"], a.runs, env)
        times.update(run_rounds(cmds, ["import", "python", "tokens", "help"], a.runs, env))
    res = summarize(times)
    print(f"{date.today()}  {platform.node()}  {platform.processor() or platform.machine()}  "
          f"{os.cpu_count()} CPUs  python {platform.python_version()}")
    print(f"small model, {a.size}x{a.size}, {a.steps} steps, seed {a.seed}, median of {a.runs} "
          f"(after a warm-up round)\n")
    print(format_table(res["rows"]))
    if a.json:
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=2))
    return 0 if all(r[-1] for r in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
