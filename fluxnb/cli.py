"""The `fluxnb` command: a thin front end over the same functions the notebooks use.

Every subcommand parses flags into settings names, calls one function, and prints.
A FluxnbError becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__
from .errors import FluxnbError

log = logging.getLogger("fluxnb")


# ---------------------------------------------------------------------------------------
# Shared flags
# ---------------------------------------------------------------------------------------

def add_settings_flags(p: argparse.ArgumentParser) -> None:
    """The per-image and load settings, with their presets and aliases. Every default is
    None so that only flags actually given override the other layers."""
    q = p.add_argument_group("quality (steps)").add_mutually_exclusive_group()
    q.add_argument("--fast", dest="steps", action="store_const", const="fast", help="4 steps")
    q.add_argument("--balanced", dest="steps", action="store_const", const="balanced", help="20 steps (default)")
    q.add_argument("--quality", dest="steps", action="store_const", const="quality", help="50 steps")
    q.add_argument("--steps", dest="steps", metavar="N", help="1-150, or a preset name")

    z = p.add_argument_group("size").add_mutually_exclusive_group()
    for name, wh in (("square", "1024x1024"), ("portrait", "832x1216"), ("landscape", "1216x832"),
                     ("hd", "1920x1080, rendered at 1920x1088 and cropped"), ("4k", "3840x2160")):
        z.add_argument(f"--{name}", dest="size", action="store_const", const=name, help=wh)
    z.add_argument("--size", "--custom", dest="size", metavar="WxH", help="multiples of 16, or a preset name")

    s = p.add_argument_group("seed").add_mutually_exclusive_group()
    s.add_argument("--seed", type=str, metavar="N", help="0 to 4294967295")
    s.add_argument("--random-seed", dest="seed", action="store_const", const="random",
                   help="draw a seed and record it (the default)")

    g = p.add_argument_group("guidance").add_mutually_exclusive_group()
    g.add_argument("--creative", dest="guidance", action="store_const", const="creative", help="1.5")
    g.add_argument("--strict", dest="guidance", action="store_const", const="strict", help="5.0")
    g.add_argument("--guidance", dest="guidance", metavar="X", help="1.0-7.0 (default 3.5), or a preset name")

    o = p.add_argument_group("output")
    o.add_argument("--format", "--image-format", dest="image_format", choices=["jpg", "jpeg", "png"])
    o.add_argument("--jpeg-quality", dest="jpeg_quality", metavar="N", help="1-100 (default 95)")
    o.add_argument("--out", "--output-dir", dest="output_dir", metavar="DIR",
                   help="default outputs/ or $FLUXNB_OUTPUT_DIR (/workspace/outputs on a pod)")
    o.add_argument("-n", "--count", dest="count", metavar="N", help="images (seeds seed, seed+1, ...)")

    m = p.add_argument_group("model and memory")
    m.add_argument("--model", metavar="ID|DIR|tiny",
                   help="hub id (default black-forest-labs/FLUX.1-dev), a local folder, or tiny")
    off = m.add_mutually_exclusive_group()
    off.add_argument("--offload", choices=["auto", "none", "encoders", "model", "group", "sequential"],
                     help="auto (default): the fastest that fits the free VRAM; encoders: text encoders on the CPU")
    off.add_argument("--cpu-offload", dest="offload", action="store_const", const="model", help="= --offload model")
    off.add_argument("--no-cpu-offload", dest="offload", action="store_const", const="none", help="= --offload none")
    m.add_argument("--precision", choices=["bf16", "fp8", "fp8-fast"],
                   help="fp8: transformer weights stored in float8; fp8-fast: float8 matmuls (torchao, RTX 40xx/H100)")
    m.add_argument("--compile", dest="compile", action="store_const", const=True,
                   help="torch.compile the transformer blocks (the first image at each size compiles)")
    m.add_argument("--no-compile", dest="compile", action="store_const", const=False)
    m.add_argument("--device", choices=["auto", "cuda", "cpu", "mps"])
    m.add_argument("--max-sequence-length", dest="max_sequence_length", metavar="N", help="T5 tokens (512 dev)")
    m.add_argument("--vae-tiling", dest="vae_tiling", choices=["auto", "on", "off"])

    e = p.add_argument_group("prompt enhancement").add_mutually_exclusive_group()
    e.add_argument("--enhance", choices=["none", "local", "claude"])
    e.add_argument("--enhance-ai", dest="enhance", action="store_const", const="claude", help="= --enhance claude")
    p.add_argument("--enhance-model", dest="enhance_model", metavar="ID", help="Claude model id")
    p.add_argument("--enhance-fallback", dest="enhance_fallback", choices=["none", "local"],
                   help="on a Claude failure, use the local enhancer (recorded) instead of stopping")
    p.add_argument("--no-enhance-cache", dest="enhance_cache", action="store_const", const=False,
                   help="ask the enhancer again even when the answer is cached")
    p.add_argument("--params", metavar="FILE.yaml", help="a params file (its keys are setting names)")


SETTING_DESTS = ("steps", "size", "seed", "guidance", "image_format", "jpeg_quality", "output_dir", "count", "model",
                 "offload", "precision", "compile", "device", "max_sequence_length", "vae_tiling", "enhance",
                 "enhance_model", "enhance_fallback", "enhance_cache")


def settings_from_args(args, *, prompt: str | None = None, base=None):
    """Settings from parsed flags: defaults < env < --params < flags (or `base` < flags)."""
    from .settings import load_params, resolve

    call = {k: getattr(args, k, None) for k in SETTING_DESTS}
    if prompt is not None:
        call["prompt"] = prompt
    if base is not None:
        return base.replace(**{k: v for k, v in call.items() if v is not None})
    params = load_params(args.params) if getattr(args, "params", None) else None
    return resolve(params, params_name=f"params:{args.params}" if params is not None else "params", **call)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

def cmd_generate(args) -> int:
    from .generation import generate

    if args.from_image:
        from .output import read_settings
        s = settings_from_args(args, prompt=args.prompt, base=read_settings(args.from_image))
        log.info("settings from %s (seed %s)", args.from_image, s.seed)
    else:
        s = settings_from_args(args, prompt=args.prompt)
    results = generate(settings=s, progress=not args.json and sys.stderr.isatty())
    if args.json:
        _print_json({"images": [dict(r.record) for r in results]})
    else:
        for r in results:
            print(r.path)
    return 0


def cmd_config(args) -> int:
    from .settings import config_env_path, describe

    s = settings_from_args(args)
    rows = describe(s)
    if args.json:
        _print_json({"config_env": str(config_env_path() or ""),
                     "settings": {n: {"value": v, "source": src} for n, v, src in rows}})
        return 0
    width = max(len(n) for n, _, _ in rows)
    for name, value, src in rows:
        print(f"{name:<{width}}  {json.dumps(value, default=str):<40}  {src}")
    path = config_env_path()
    print(f"\nconfig.env: {path if path else '(none)'}")
    return 0


def cmd_log(args) -> int:
    from . import runlog

    if args.export:
        path = runlog.export(args.directory, args.export)
        print(path)
        return 0
    if args.json:
        _print_json(runlog.read(args.directory))
        return 0
    print(runlog.summary(args.directory))
    return 0


def cmd_model_build(args) -> int:
    from .testmodel import build

    dtype = None
    if args.dtype != "float32":
        import torch
        dtype = getattr(torch, args.dtype)
    path = build(args.directory, args.scale, device=args.device, dtype=dtype, overwrite=args.overwrite)
    print(path)
    return 0


def cmd_tokens(args) -> int:
    from .tokens import plan

    p = plan(args.prompt, model=args.model, t5_limit=args.t5_limit)
    if args.json:
        _print_json(p.to_dict())
        return 0
    colour = sys.stdout.isatty()
    kept = p.clip_prompt
    dropped = p.clip_dropped
    print(f"CLIP {p.clip_tokens}/{p.clip_limit} tokens" + (f" ({p.clip_tokens - p.clip_limit} over)" if dropped else ""))
    print(f"T5   {p.t5_tokens}/{p.t5_limit} tokens" + ("" if p.t5_exact else " (estimate: the model's T5 tokenizer is"
                                                      " not cached)") + (" (cut)" if p.t5_dropped else ""))
    if dropped:
        tail = f"\033[9;31m{dropped}\033[0m" if colour else f"[[dropped by CLIP: {dropped}]]"
        print(f"\nCLIP sees: {kept} {tail}")
        print("T5 sees the whole prompt." if not p.t5_dropped else f"T5 loses: {p.t5_dropped}")
    return 0


# ==== enhance (prompts issue) ====


# ==== sweep and grid (sweeps issue) ====


# ==== batch (batch issue) ====


# ==== lab, doctor, export (deployment issue) ====


# ==== performance issue ====


# ---------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxnb", description="FLUX.1 images from notebooks and the command line.")
    parser.add_argument("--version", action="version", version=f"fluxnb {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output on the console")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("generate", help="make images", description="Make images with FLUX.1.")
    p.add_argument("prompt", nargs="?", help="the prompt (optional with --from-image)")
    add_settings_flags(p)
    p.add_argument("--from-image", metavar="PATH", help="reproduce an image from its own metadata (flags override)")
    p.add_argument("--json", action="store_true", help="print the run-log records as JSON")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("config", help="print the effective settings and where each came from")
    add_settings_flags(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("log", help="summarise or export a run log")
    p.add_argument("directory", nargs="?", default=None, help="output folder (default: the configured output_dir)")
    p.add_argument("--export", metavar="FILE.csv|FILE.parquet")
    p.add_argument("--json", action="store_true", help="print every record")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("model", help="test models")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    b = msub.add_parser("build", help="write a random-weight FLUX-architecture pipeline")
    b.add_argument("directory")
    b.add_argument("--scale", choices=["tiny", "small", "full"], default="tiny")
    b.add_argument("--device", default="cpu", help="where to make the weights (cuda for full)")
    b.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=cmd_model_build)

    p = sub.add_parser("tokens", help="count CLIP and T5 tokens and show what CLIP drops")
    p.add_argument("prompt")
    p.add_argument("--model", default=None, help="use this model's cached T5 tokenizer (default: the configured model)")
    p.add_argument("--t5-limit", type=int, default=None, help="T5's limit (default: the model's max_sequence_length)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokens)

    # ---- enhance commands (prompts issue) ----
    _ = "enhance"

    # ---- sweep and grid commands (sweeps issue) ----
    _ = "sweep"

    # ---- batch command (batch issue) ----
    _ = "batch"

    # ---- lab, doctor and export commands (deployment issue) ----
    _ = "lab"

    # ---- more model commands (performance issue) ----
    _ = "perf"
    return parser


def main(argv=None) -> int:
    from . import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logs.setup(level)
    try:
        _fill_defaults(args)
        return args.func(args)
    except FluxnbError as e:
        log.error("%s", e)
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def run() -> None:
    """The `fluxnb` console command: main(), then a quick exit. Once torch is loaded,
    Python's own teardown (finalising thousands of modules) takes about a second on a
    CPU; everything fluxnb writes is already on disk (fsynced) by then, so after the exit
    handlers and a flush the process ends at once (benchmarks/bench_generate.py)."""
    import threading

    rc = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if "torch" not in sys.modules or others:  # a thread still working: the ordinary exit waits for it
        sys.exit(rc)
    import atexit
    import os

    atexit._run_exitfuncs()  # logging.shutdown and every library's handlers still run
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc if isinstance(rc, int) else 1)


def _fill_defaults(args) -> None:
    """Arguments whose defaults come from the settings (log DIR, tokens --model/--t5-limit)."""
    if getattr(args, "command", None) == "log" and args.directory is None:
        from .settings import resolve
        args.directory = resolve().output_dir
    if getattr(args, "command", None) == "tokens":
        from .settings import resolve
        s = resolve(**({"model": args.model} if args.model else {}))
        args.model = s.model
        if args.t5_limit is None:
            args.t5_limit = s.max_sequence_length
