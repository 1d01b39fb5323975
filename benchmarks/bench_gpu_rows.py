"""The rows bench_gpu.py can measure: a name grammar, the named sets, and each row's time
estimate (so that a run under --budget-s starts only the rows that fit).

A row name is `baseline` (plain diffusers) or `[cap:]PART+PART...`, each part one of:
- a memory policy: none (the default), auto (alias: default), encoders, model, group, sequential
- a precision: bf16 (the default), fp8, fp8-fast
- compile: regional torch.compile of the transformer blocks (fullgraph where no hooks)
- a compile mode (max-autotune-no-cudagraphs, max-autotune, reduce-overhead; autotune:
  max-autotune-no-cudagraphs), for what compile / compile-vae compile
- fuse-qkv: fused QKV projections (before quantizing)
- compile-vae (or vae): channels-last VAE with its decoder compiled
- attn-NAME: the attention backend NAME (diffusers' name, or cudnn, flex, flash, fa3, math, efficient)
`cap:` runs the row under a per-process VRAM cap (--cap-gib, default 24) like a 24 GB card.
The parts are fluxnb's settings of the same names (`Config.settings`): each row is what
`fluxnb generate` runs with the flags in `Config.flags` (recorded in the row's JSON).
"""

from __future__ import annotations

from dataclasses import dataclass

from fluxnb.config.schema import SETTINGS, default
from fluxnb.model.perf import COMPILE_MODES
from fluxnb.model.perf_levers import CPU_BACKENDS, DEFAULT_BACKEND

OFFLOADS = ("none", "auto", "encoders", "model", "group", "sequential")
PRECISIONS = ("bf16", "fp8", "fp8-fast")
PARTS = {"default": ("offload", "auto"), "compile": ("compile", True),
         "autotune": ("compile_mode", "max-autotune-no-cudagraphs"), "fuse-qkv": ("fuse_qkv", True),
         "vae": ("compile_vae", True), "compile-vae": ("compile_vae", True),
         **{mode: ("compile_mode", mode) for mode in COMPILE_MODES if mode != "default"}}
ATTENTION = {"cudnn": "_native_cudnn", "flex": "flex", "flash": "flash", "fa3": "_flash_3", "math": "_native_math",
             "efficient": "_native_efficient", "sdpa-flash": "_native_flash"}

FAST = "fp8-fast+fuse-qkv+compile+autotune+vae"
SETS = {
    # The default run: fits 8 minutes on an H100/H200 at 1024x1024, 28 steps, 3 runs.
    "core": ["baseline", "default", "compile", "fp8-fast+compile", "cap:auto", "cap:encoders+fp8-fast+compile"],
    # Each speed lever on its own, then all of them together (the 2.5 s candidate).
    "levers": ["fuse-qkv+compile", "compile+autotune", "attn-cudnn+compile", "attn-flex+compile", "compile+vae",
               FAST, "attn-cudnn+" + FAST, "cap:encoders+" + FAST],
    # Memory policies and fp8 storage.
    "memory": ["fp8", "fp8+compile", "fp8-fast", "cap:encoders+fp8", "cap:none+fp8", "cap:encoders", "cap:model+fp8",
               "cap:model", "cap:group", "cap:sequential"],
}
SETS["all"] = SETS["core"] + SETS["levers"] + SETS["memory"]


@dataclass(frozen=True)
class Config:
    name: str
    offload: str = "none"
    precision: str = "bf16"
    compile: bool = False
    compile_mode: str = "default"
    fuse_qkv: bool = False
    attention_backend: str = "default"
    compile_vae: bool = False
    cap: bool = False            # under the --cap-gib VRAM cap
    diffusers: bool = False      # the plain diffusers baseline

    @property
    def cuda_only(self) -> bool:
        return (self.cap or self.precision == "fp8-fast"
                or self.attention_backend not in (DEFAULT_BACKEND, *CPU_BACKENDS))

    @property
    def compiles(self) -> bool:
        return self.compile or self.compile_vae

    def levers(self) -> dict:
        """pipeline.configure's keyword options for this row (compiled rows share one
        persistent inductor cache, as a pod does)."""
        return {"fuse_qkv": self.fuse_qkv, "attention_backend": self.attention_backend,
                "compile_mode": self.compile_mode, "compile_vae": self.compile_vae,
                "compile_cache": True if self.compiles else None}

    def settings(self) -> dict:
        """The row as fluxnb's load settings (`fluxnb generate` flags, params keys, run-log columns)."""
        return {"offload": self.offload, "precision": self.precision, "compile": self.compile,
                **self.levers(), "compile_cache": self.compiles}

    def flags(self) -> str:
        """The `fluxnb generate` flags that load a pipeline the way this row does (the defaults left out)."""
        out = []
        for name, value in self.settings().items():
            s = SETTINGS[name]
            if name == "compile_cache" and not self.compiles:
                continue  # it changes nothing without compiling
            if s.type is bool and value != s.type(default(s)):
                out.append(next(flag for flag, v, _ in s.shortcuts if v is value))
            elif s.type is str and value != default(s):
                out.append(f"{s.flags[0]} {value}")
        return " ".join(out)


def parse_config(name: str) -> Config:
    """A Config from a row name (see the module's docstring); ValueError names the bad part."""
    name = name.strip()
    if name == "baseline":
        return Config("baseline", diffusers=True)
    cap = name.startswith("cap:")
    fields: dict = {"cap": cap}
    for part in (name[4:] if cap else name).split("+"):
        if part in OFFLOADS:
            fields["offload"] = part
        elif part in PRECISIONS:
            fields["precision"] = part
        elif part in PARTS:
            key, value = PARTS[part]
            fields[key] = value
        elif part.startswith("attn-") and len(part) > 5:
            fields["attention_backend"] = ATTENTION.get(part[5:], part[5:])
        else:
            raise ValueError(f"{name!r}: unknown part {part!r}")
    cfg = Config(name, **fields)
    if cfg.compile_mode != "default" and not cfg.compiles:
        raise ValueError(f"{name!r}: autotune compiles nothing on its own; add compile or vae")
    if cfg.attention_backend != "default":
        from fluxnb.model.perf_levers import attention_backends

        known = attention_backends()
        if len(known) > 1 and cfg.attention_backend not in known:
            raise ValueError(f"{name!r}: attention backend {cfg.attention_backend!r} unknown to this diffusers")
    return cfg


def expand(names: list[str]) -> list[Config]:
    """Row names and set names (core, levers, memory, all) as Configs, baseline first, once each."""
    out: list[str] = []
    for n in names:
        for row in SETS.get(n, [n]):
            if row not in out:
                out.append(row)
    if "baseline" in out:
        out.remove("baseline")
    return [parse_config(n) for n in ["baseline", *out]]


# ---------------------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------------------

# Seconds before anything is measured in this run. full: H100 published figures (6.6 s per
# 1024x1024 28-step image) and guesses for building and compiling; small/tiny: this
# project's CPU runs (RESULTS.md). Scaled by the measured baseline once it ran.
PRIORS = {
    "full": dict(build=20, step=0.22, decode=0.4, encode=2, compile=45, autotune=240, vae=40, move=20, quantize=15),
    "small": dict(build=3, step=0.25, decode=0.25, encode=0.5, compile=90, autotune=300, vae=60, move=0, quantize=0),
    "tiny": dict(build=1, step=0.01, decode=0.02, encode=0.1, compile=60, autotune=120, vae=30, move=0, quantize=0),
}
# Seconds per image relative to the resident bf16 baseline (published H100 figures).
GPU_FACTORS = {"fp8": 1.06, "fp8-fast": 0.7, "compile": 0.64, "autotune": 0.95, "fuse-qkv": 0.98,
               "model": 3.3, "group": 7.2, "sequential": 10.3}
CPU_FACTORS = {"fp8": 1.2}
MARGIN = 1.15


@dataclass
class Calibration:
    """What this run has measured so far, to correct the priors."""

    build_s: float | None = None
    image_s: dict | None = None         # steps -> baseline median seconds per image
    compile_ratio: float = 1.0          # measured / prior compile seconds, from the last compiling row

    def image(self, scale: str, steps: int) -> float:
        p = PRIORS[scale]
        prior = p["step"] * steps + p["decode"]
        if self.image_s and steps in self.image_s:
            return self.image_s[steps]
        if self.image_s:  # another step count measured: the same ratio to the prior
            s, t = next(iter(self.image_s.items()))
            return prior * t / (p["step"] * s + p["decode"])
        return prior


def compile_prior(cfg: Config, scale: str) -> float:
    p = PRIORS[scale]
    total = (p["compile"] if cfg.compile else 0) + (p["vae"] if cfg.compile_vae else 0)
    if cfg.compile_mode != "default":
        total += p["autotune"]
    return total


def speed_factor(cfg: Config, device: str) -> float:
    """Seconds per image relative to the baseline."""
    table = GPU_FACTORS if device == "cuda" else CPU_FACTORS
    f = table.get(cfg.precision, 1.0) * table.get(cfg.offload, 1.0)
    for on, key in ((cfg.compile, "compile"), (cfg.compile_mode != "default", "autotune"),
                    (cfg.fuse_qkv, "fuse-qkv")):
        if on:
            f *= table.get(key, 1.0)
    return f


def estimate(cfg: Config, *, scale: str, steps: list[int], runs: int, device: str, cal: Calibration,
             images: bool = True, setup: bool = True) -> float:
    """Seconds the row will take: build, prepare, compile, the warm-up and timed images."""
    p = PRIORS[scale]
    total = 0.0
    if setup:
        total += cal.build_s if cal.build_s is not None else p["build"]
        if not cfg.diffusers:
            total += p["encode"]
            if device == "cuda" and (cfg.cap or cfg.offload != "none"):
                total += p["move"]
            if cfg.precision == "fp8-fast":
                total += p["quantize"]
            total += compile_prior(cfg, scale) * cal.compile_ratio
        total += sum(cal.image(scale, n) for n in steps) * speed_factor(cfg, device)  # the warm-ups
    if images:
        total += runs * sum(cal.image(scale, n) for n in steps) * speed_factor(cfg, device)
    return round(total * MARGIN, 1)
