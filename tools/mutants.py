#!/usr/bin/env python3
"""Mutation check: one-line faults on the path from settings to `FluxPipeline.__call__`.

Each mutant is a single line of fluxnb changed the way a plausible bug would change it
(guidance ignored, steps off by one, the seed shifted, width and height swapped, CLIP and
T5 given each other's text, T5 cut short, the JPEG quality ignored, a LoRA's weight or
img2img's strength lost...). For each one the script copies the checkout into a temporary
folder, applies the fault there, runs the tests that guard it (the fidelity tests against
diffusers itself, and the feature's own tests) with that copy first on PYTHONPATH, and
reports whether the tests caught it (`killed`) or not (`SURVIVED`).

    .venv/bin/python tools/mutants.py            # every mutant (about 10-20 minutes on a CPU)
    .venv/bin/python tools/mutants.py guidance   # only mutants whose name contains "guidance"
    .venv/bin/python tools/mutants.py --list     # the mutants, nothing run

Exit status 0 when every mutant was killed, 1 when one survived, 2 when the unmutated
checkout fails its own tests (the check would mean nothing) or a mutant no longer applies
(the code it names has changed: update the mutant).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIDELITY = "tests/test_fidelity.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str          # relative to the checkout
    find: str          # text that occurs exactly once in the file (on one line)
    replace: str
    tests: tuple       # pytest arguments: files, node ids, -k expressions
    why: str = ""


MUTANTS = (
    # The pipeline call (one place for single images and batched sweep cells).
    Mutant("guidance ignored (always 3.5)", "fluxnb/image/render.py",
           "guidance_scale=s.guidance,", "guidance_scale=3.5,", (FIDELITY,)),
    Mutant("steps off by one", "fluxnb/image/render.py",
           "num_inference_steps=s.steps,", "num_inference_steps=s.steps + 1,", (FIDELITY,)),
    Mutant("seed shifted (single image)", "fluxnb/image/render.py",
           '"generator": torch.Generator("cpu").manual_seed(jobs[0].seed)}',
           '"generator": torch.Generator("cpu").manual_seed(jobs[0].seed + 1)}', (FIDELITY,)),
    Mutant("seed shifted (batched sweep cells)", "fluxnb/image/render.py",
           '[torch.Generator("cpu").manual_seed(j.seed) for j in jobs]',
           '[torch.Generator("cpu").manual_seed(j.seed + 1) for j in jobs]', (FIDELITY,)),
    Mutant("width and height swapped", "fluxnb/image/render.py",
           "width=w, height=h,", "width=h, height=w,", (FIDELITY,)),
    # max_sequence_length acts where the prompts are encoded: the pipeline call is given the
    # embeddings, and diffusers then only checks the value (<= 512), so a fault there is
    # invisible in the pixels (an equivalent mutant). The fault is made where it acts.
    Mutant("max_sequence_length ignored (always 512)", "fluxnb/image/make.py",
           "encode(self.loaded, text.plan.clip_prompt, text.plan.t5_prompt, s.max_sequence_length)",
           "encode(self.loaded, text.plan.clip_prompt, text.plan.t5_prompt, 512)", (FIDELITY,)),
    # The prompt pair: CLIP gets the trimmed text, T5 the whole prompt.
    Mutant("CLIP and T5 prompts swapped", "fluxnb/image/render.py",
           "encode_prompt(prompt=clip_prompt, prompt_2=t5_prompt,",
           "encode_prompt(prompt=t5_prompt, prompt_2=clip_prompt,", (FIDELITY,)),
    Mutant("CLIP given the untrimmed prompt", "fluxnb/image/make.py",
           "encode(self.loaded, text.plan.clip_prompt, text.plan.t5_prompt, s.max_sequence_length)",
           "encode(self.loaded, text.plan.t5_prompt, text.plan.t5_prompt, s.max_sequence_length)", (FIDELITY,)),
    Mutant("T5 cut to 64 tokens", "fluxnb/image/render.py",
           "max_sequence_length=max_sequence_length)",
           "max_sequence_length=min(max_sequence_length, 64))", (FIDELITY,)),
    # LoRA adapters: the weight set on the loaded pipeline.
    Mutant("LoRA weight ignored (always 1.0)", "fluxnb/model/loras.py",
           "pipe.set_adapters(names, adapter_weights=weights)",
           "pipe.set_adapters(names, adapter_weights=[1.0] * len(weights))", (FIDELITY, "tests/test_lora.py")),
    # Image conditioning: img2img's and inpainting's denoising strength.
    Mutant("strength ignored (always 0.6)", "fluxnb/image/conditioning.py",
           'out = {"image": each(p.image), "strength": s.strength}',
           'out = {"image": each(p.image), "strength": 0.6}', (FIDELITY,)),
    # What is written.
    Mutant("JPEG quality ignored", "fluxnb/outputs/metadata.py",
           "quality=jpeg_quality,", "quality=95,", (FIDELITY,)),
    # Settings on their way in.
    Mutant("a guidance preset read as the default", "fluxnb/config/defaults.yaml",
           "    strict: 5.0", "    strict: 3.5", ("tests/test_settings.py", "tests/test_cli.py")),
    Mutant("the seed not read back from an image", "fluxnb/outputs/metadata.py",
           'values["seed"] = meta.get("seed", values.get("seed"))',
           'values["seed"] = None', ("tests/test_generate.py", "-k", "from_image or read_settings or reproduce")),
)


def copy_checkout(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the checkout (not .venv, outputs...)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest / rel)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(m: Mutant, root: Path) -> None:
    path = root / m.file
    text = path.read_text(encoding="utf-8")
    n = text.count(m.find)
    if n != 1:
        raise SystemExit(f"mutant {m.name!r}: {m.find!r} occurs {n} times in {m.file} (expected once): update it")
    path.write_text(text.replace(m.find, m.replace), encoding="utf-8")


def run_tests(root: Path, tests: tuple, timeout: int) -> tuple[bool, float, str]:
    """(passed, seconds, last lines) of pytest on `tests` in the copy at `root`."""
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, "timed out (counted as caught: the tests did not pass)"
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-3:])
    return r.returncode == 0, time.perf_counter() - t0, tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="run the mutants whose name contains one of these words")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test run (default 900)")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not a.only or any(w.lower() in m.name.lower() for w in a.only)]
    if a.list:
        for m in chosen:
            print(f"{m.name:45} {m.file}: {m.find!r} -> {m.replace!r}  [{' '.join(m.tests)}]")
        return 0
    with tempfile.TemporaryDirectory(prefix="fluxnb-mutants-") as tmp:
        base = Path(tmp) / "checkout"
        copy_checkout(base)
        for m in chosen:  # every mutant must still apply before anything runs
            text = (base / m.file).read_text(encoding="utf-8")
            if text.count(m.find) != 1:
                print(f"mutant {m.name!r}: {m.find!r} occurs {text.count(m.find)} times in {m.file}: update it")
                return 2
        # 1. The unmutated checkout must pass the tests the mutants use.
        every = tuple(dict.fromkeys(t for m in chosen for t in m.tests if t.startswith("tests/")))
        ok, secs, tail = run_tests(base, every, a.timeout)
        print(f"baseline (no fault): {'passed' if ok else 'FAILED'} in {secs:.0f} s")
        if not ok:
            print(tail)
            return 2
        # 2. Each fault on a fresh copy.
        survivors = []
        for m in chosen:
            work = Path(tmp) / "mutant"
            if work.exists():
                shutil.rmtree(work)
            shutil.copytree(base, work, symlinks=True)
            apply(m, work)
            passed, secs, tail = run_tests(work, m.tests, a.timeout)
            verdict = "SURVIVED" if passed else "killed"
            print(f"{verdict:8}  {m.name:45} {secs:5.0f} s  ({m.file})")
            if passed:
                survivors.append(m)
        print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutants killed"
              + (f"; survivors: {', '.join(m.name for m in survivors)}" if survivors else ""))
        return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
