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
    from .tokens import plan, render, use_colour

    p = plan(args.prompt, model=args.model, t5_limit=args.t5_limit)
    if args.json:
        _print_json(p.to_dict())
        return 0
    print(render(p, colour=use_colour()))
    return 0


# ==== enhance (prompts issue) ====

def cmd_enhance(args) -> int:
    from .enhancer import enhance
    from .settings import resolve
    from .tokens import plan, render, use_colour

    s = resolve(**{k: v for k, v in (("seed", args.seed), ("enhance_model", args.model),
                                     ("enhance_fallback", args.fallback)) if v is not None})
    backend = args.backend or (s.enhance if s.enhance != "none" else "claude")
    enh = enhance(args.prompt, backend, model=s.enhance_model, seed=s.seed, use_cache=not args.no_cache,
                  fallback=s.enhance_fallback)
    p = plan(enh.enhanced, model=s.model, t5_limit=s.max_sequence_length)
    if args.json:
        out = enh.to_dict()
        out.update({k: v for k, v in p.to_dict().items() if k != "prompt"})
        _print_json(out)
        return 0
    how = f"{enh.backend} ({enh.model})" if enh.model else enh.backend
    how += f", {enh.elapsed_s:.2f} s" + (", cached" if enh.cached else "")
    if enh.fallback_from:
        how += f", instead of {enh.fallback_from}: {enh.fallback_reason}"
    print(enh.enhanced)
    print(f"\n{how}")
    print(render(p, colour=use_colour()))
    return 0



# ==== sweep and grid (sweeps issue) ====

def sweep_list_dests() -> list:
    """The settings flags that take a list in `fluxnb sweep` (names from add_settings_flags,
    axes from fluxnb.sweeps.AXES)."""
    from .sweeps import AXES

    return [k for k in AXES if k != "prompt"]


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """Every generate flag, the sweepable ones taking lists, plus the sweep's own."""
    add_settings_flags(p)
    dests = sweep_list_dests()
    for action in p._actions:
        if action.dest in dests and action.option_strings and action.nargs is None:
            choices = f"of {', '.join(action.choices)}" if action.choices else ""
            action.choices, action.metavar = None, "LIST"
            action.help = f"{action.help or ''}; a comma list {choices} to sweep".strip("; ")
    a = p.add_argument_group("sweep")
    a.add_argument("--seeds", metavar="LIST", help="1,2,3 | 1-5 | 1-10 (+2) | 1-10 [5] | random:4 (drawn, recorded)")
    a.add_argument("--prompts", metavar="A|B", help="prompts to sweep, separated by |; with {} in PROMPT they fill it")
    a.add_argument("--rows", metavar="AXIS", help="the axis down the rows (default: the first of prompt, enhance, "
                   "seed, guidance, steps, size, ... that varies)")
    a.add_argument("--cols", metavar="AXIS", help="the axis across the columns (default: the next one)")
    a.add_argument("--batch-size", dest="batch_size", type=int, metavar="N",
                   help="cells per pipeline call (default: 4 on the CPU, 1 on a GPU)")
    a.add_argument("--yes", action="store_true", help="make more than 100 cells")
    a.add_argument("--dry-run", action="store_true", help="print the plan; generate nothing")
    a.add_argument("--json", action="store_true", help="print grid, grids, images (row-major), sweep_id, cells")


def cmd_sweep(args) -> int:
    from .sweeps import plan, run

    axes = {k: getattr(args, k) for k in sweep_list_dests() if getattr(args, k, None) is not None}
    base = settings_from_args(argparse.Namespace(**{**vars(args), **{k: None for k in axes}}))
    p = plan(args.prompt, seeds=args.seeds, prompts=args.prompts, rows=args.rows, cols=args.cols, yes=args.yes,
             settings=base, **axes)
    if args.dry_run:
        if args.json:
            _print_json(p.definition())
        else:
            print(p.describe())
            for a in p.axes:
                print(f"  {a.name}: {', '.join(map(str, a.values))}")
            print("  fixed: " + ", ".join(f"{k} {v}" for k, v in p.fixed().items()))
        return 0
    result = run(p, batch_size=args.batch_size, progress=not args.json and sys.stderr.isatty(),
                 **{k: getattr(args, k) for k in ("address", "workers", "gpus_per_worker", "ray_results")},
                 backend=args.backend or "local")
    if args.json:
        _print_json(result.to_dict())
    else:
        for path in result.grids:
            print(path)
    return 0


def cmd_grid(args) -> int:
    from pathlib import Path

    from .grids import grid

    g = grid(args.directory, rows=args.rows, cols=args.cols, where=args.where, out=args.out or Path(args.directory),
             yes=args.yes)
    if args.json:
        _print_json({"grid": g.path, "rows": g.rows, "cols": g.cols, "row_values": g.row_values,
                     "col_values": g.col_values, "images": g.images})
    else:
        print(g.path)
    return 0


# ==== batch (batch issue) ====

def cmd_batch(args) -> int:
    from . import batch
    from .settings import parse_yaml

    overrides = {}
    for key, value in args.param or []:
        if key in overrides:
            raise FluxnbError(f"-p {key}: given twice", field=key, fix="give each key once")
        batch.check_names({key: None}, f"-p {key}")
        overrides[key] = parse_yaml(value, f"-p {key}")
    for key in ("backend", "address", "workers", "gpus_per_worker", "ray_results"):  # --backend ray and its options
        if getattr(args, key) is not None:
            if key in overrides:
                raise FluxnbError(f"{key}: given with -p and as a flag", field=key, fix="give it once")
            overrides[key] = getattr(args, key)
    try:
        summary = batch.run(args.params, out=args.out, overrides=overrides, force=args.force)
    except batch.BatchFailed as e:  # the summary on stdout, the failures as the error
        if e.summary is not None:
            _print_batch(e.summary, args.json, failed=True)
        raise
    _print_batch(summary, args.json)
    return 0


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    """--backend and the Ray options (fluxnb batch, fluxnb sweep): the params keys of the same names."""
    g = p.add_argument_group("where the images are made (scale-out: pip install 'fluxnb[ray]')")
    g.add_argument("--backend", choices=["local", "ray"], help="local: this process (default); ray: Ray workers, "
                   "one per GPU (a local Ray unless --address)")
    g.add_argument("--address", "--ray-address", dest="address", metavar="auto|HOST:6379|ray://HOST:10001",
                   help="join a running Ray cluster (auto: the one `ray start` made on this machine)")
    g.add_argument("--workers", type=int, metavar="N", help="Ray workers (default: one per GPU; 1 on a CPU machine)")
    g.add_argument("--gpus-per-worker", dest="gpus_per_worker", type=float, metavar="G",
                   help="GPUs each Ray worker takes (default 1; 0.5 puts two workers on a GPU)")
    g.add_argument("--ray-results", dest="ray_results", choices=["volume", "driver"],
                   help="volume (default): workers write to the shared output folder; driver: images come back here")


def _print_batch(summary, as_json: bool, failed: bool = False) -> None:
    if as_json:
        _print_json(summary.to_dict())
        return
    if not failed:
        print(repr(summary))
    for label, path in (("report", summary.report), ("contact sheet", summary.contact_sheet)):
        if path:
            print(f"{label}: {path}")


# ==== lab, doctor, export (deployment issue) ====

def cmd_lab(args) -> int:
    from . import lab

    if args.stop:
        print("stopped JupyterLab" if lab.stop() else "no JupyterLab started by fluxnb is running")
        return 0
    if args.status:
        st = lab.status()
        if args.json:
            _print_json(st)
        else:
            print(f"JupyterLab running (pid {st['pid']}): {st['url']}/lab" if st["running"] else "JupyterLab is not "
                  "running (start it with: fluxnb lab)")
        return 0 if st["running"] else 1
    info = lab.start(ip=args.ip, port=args.port, open_browser=False if args.no_browser else None,
                     background=args.background, directory=args.notebook_dir)
    if args.background or info.already_running:
        print(info.message())
    return 0


def cmd_doctor(args) -> int:
    import os

    from . import doctor

    checks = doctor.run_checks()
    if args.json:
        _print_json(doctor.to_json(checks))
    else:
        print(doctor.table(checks, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    return 0 if doctor.ready(checks) else 1


def cmd_export(args) -> int:
    from .export import export_run

    result = export_run(args.directory, since=args.since, out=args.out)
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(result.path)
    log.info("%s", result.summary())
    from pathlib import Path

    from .lab import status
    st = status()
    if st["running"]:  # where to click in the browser that is logged in to JupyterLab
        try:
            rel = Path(result.path).resolve().relative_to(Path(st["root_dir"]).resolve()).as_posix()
            log.info("download it in JupyterLab's file browser (right-click, Download) or at %s/files/%s",
                     st["url"], rel)
        except ValueError:
            pass
    return 0


def cmd_model_fetch(args) -> int:
    from .fetch import fetch

    result = fetch(args.model, verify=args.verify)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.path)
    return 0


def add_deploy_commands(sub) -> None:
    """`fluxnb lab`, `fluxnb doctor`, `fluxnb export` and `fluxnb model fetch`."""
    p = sub.add_parser("lab", help="start JupyterLab in notebooks/, always behind a token",
                       description="Start JupyterLab in the notebooks folder with token authentication. The token "
                                   "comes from JUPYTER_TOKEN, JUPYTER_PASSWORD, or is generated and kept in a 0600 "
                                   "file; it never appears on a command line.")
    p.add_argument("--ip", default=None, help="address to listen on (default 0.0.0.0 on a pod, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=8888, help="port (default 8888, the one to expose on RunPod)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser (never opened on a pod)")
    p.add_argument("--background", action="store_true", help="start it detached, print the URL and return")
    p.add_argument("--notebook-dir", default=None, metavar="DIR", help="default: the checkout's notebooks/")
    p.add_argument("--stop", action="store_true", help="stop the JupyterLab fluxnb lab started")
    p.add_argument("--status", action="store_true", help="say whether it is running (exit 1 if not)")
    p.add_argument("--json", action="store_true", help="with --status: JSON")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("doctor", help="is this machine ready? GPU, versions, token, model, disk, keys, JupyterLab")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("export", help="zip a run's images, run log and grids for download",
                       description="Zip the images, run log and grids of an output folder (atomically).")
    p.add_argument("directory", nargs="?", default=None, help="output folder (default: the configured output_dir)")
    p.add_argument("--since", metavar="WHEN", help="only what was made since: 2026-11-24, 2026-11-24T18:00, "
                                                    "today, yesterday, or 30m / 12h / 7d ago")
    p.add_argument("--out", metavar="FILE.zip", help="default: DIR/exports/fluxnb_<folder>_<time>.zip")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    model = next(a for a in sub.choices["model"]._actions if isinstance(a, argparse._SubParsersAction))
    f = model.add_parser("fetch", help="download a hub model once, with checks (token, licence, disk, checksums)",
                         description="Download MODEL's diffusers folders (as `hf download MODEL --include ...`), after "
                                     "checking the token, the licence and the free space; verify every file.")
    f.add_argument("model", nargs="?", default="black-forest-labs/FLUX.1-dev",
                   help="hub id (default black-forest-labs/FLUX.1-dev), tiny, or a local folder")
    f.add_argument("--verify", choices=["sha256", "size"], default="sha256",
                   help="check the finished files by checksum (default) or by size only")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_model_fetch)


def add_pull_command(sub) -> None:
    """`fluxnb pull URL`: the pod's new images, grids and run log, home (fluxnb.pull)."""
    def cmd_pull(args) -> int:
        from .pull import pull

        result = pull(args.url, remote_dir=args.remote_dir, to=args.to, since=args.since, dry_run=args.dry_run,
                      open_image=args.open, token_file=args.token_file, verify=args.verify,
                      max_file_mb=args.max_file_mb, progress=not args.quiet)
        for path in result.fetched:  # with --dry-run: what it would fetch
            print(path)
        log.info("%s", result.summary())
        return 0

    p = sub.add_parser("pull", help="bring a pod's new images, grids and run log home (through its JupyterLab)",
                       description="Copy what is new in the pod's output folder home through JupyterLab's API, and "
                                   "merge its run log into the local one. The token comes from JUPYTER_TOKEN, "
                                   "--token-file or a prompt; never from the command line.")
    p.add_argument("url", help="the lab's address, e.g. https://POD-8888.proxy.runpod.net (no token in it)")
    p.add_argument("--remote-dir", default="outputs", metavar="DIR",
                   help="the folder on the pod, relative to the lab's root (default outputs: /workspace/outputs)")
    p.add_argument("--to", default="outputs", metavar="DIR", help="the folder here (default outputs/)")
    p.add_argument("--token-file", metavar="FILE", help="a file holding the lab's token")
    p.add_argument("--since", metavar="WHEN", help="only what was made since: 2026-11-24, today, 30m / 12h / 7d ago")
    p.add_argument("--dry-run", action="store_true", help="say what would be fetched and merged; write nothing")
    p.add_argument("--open", action="store_true", help="open the newest image in the system's viewer")
    p.add_argument("--verify", action="store_true", help="compare sha256 too (the lab computes it), not only sizes")
    p.add_argument("--max-file-mb", type=float, default=512, metavar="MB", help="skip larger files (default 512)")
    p.set_defaults(func=cmd_pull)


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
    p = sub.add_parser("enhance", help="enhance a prompt (Claude or the offline enhancer) and count its tokens",
                       description="Enhance a prompt with Claude (ANTHROPIC_API_KEY) or the offline enhancer; "
                                   "prints the enhanced prompt and its CLIP/T5 token counts.")
    p.add_argument("prompt")
    p.add_argument("--backend", "--enhance", dest="backend", choices=["claude", "local"],
                   help="default: the configured enhance setting, else claude")
    p.add_argument("--model", metavar="ID", help="Claude model id (default: enhance_model, claude-sonnet-5-5)")
    p.add_argument("--seed", metavar="N", help="the local enhancer's seed (default: the configured seed, else 0)")
    p.add_argument("--fallback", choices=["none", "local"],
                   help="local: on a Claude failure use the offline enhancer (recorded) instead of stopping")
    p.add_argument("--no-cache", action="store_true", help="ask Claude again even when the answer is cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_enhance)

    # ---- sweep and grid commands (sweeps issue) ----
    p = sub.add_parser("sweep", help="a comparison grid over seeds, guidance, steps, sizes, prompts...",
                       description="Make every combination of the axes and a labelled grid. Values: comma lists, "
                                   "A1111 ranges 1-5, 1-10 (+2), 1-10 [5]; seeds also random:N.")
    p.add_argument("prompt", nargs="?", help="the prompt (optional with --prompts; {} marks where they go)")
    add_sweep_flags(p)
    add_backend_flags(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("grid", help="a labelled grid of images already made, from the run log")
    p.add_argument("directory", help="output folder holding runlog.jsonl")
    p.add_argument("--rows", metavar="COLUMN", help="run-log column down the rows (seed, guidance, steps, ...)")
    p.add_argument("--cols", metavar="COLUMN", help="run-log column across the columns")
    p.add_argument("--where", metavar="QUERY", help='a pandas query, e.g. "steps == 20 and guidance > 2"')
    p.add_argument("--out", metavar="FILE.png", help="where to save it (default: DIR/grid_ROWS_by_COLS.png)")
    p.add_argument("--yes", action="store_true", help="allow more than 100 cells")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_grid)

    # ---- batch command (batch issue) ----
    from .batch import PARAMS as BATCH_PARAMS
    p = sub.add_parser("batch", help="run a params file through the batch notebook (papermill)",
                       description="Run notebooks/batch.ipynb on a params file with papermill and keep the executed "
                                   "notebook (report mode) in the output folder. Same as: papermill "
                                   "notebooks/batch.ipynb OUT.ipynb -f PARAMS.yaml. A rerun skips items already made.",
                       epilog=f"params keys: {', '.join(BATCH_PARAMS)}. Examples in params/. "
                              "Exit 1 when any item failed (they are listed); run again to retry them.")
    p.add_argument("params", metavar="PARAMS.yaml", help="the params file")
    p.add_argument("--out", "--output-dir", dest="out", metavar="DIR", help="output folder (overrides output_dir)")
    p.add_argument("-p", "--parameter", dest="param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override one key; VALUE is YAML, e.g. -p steps 8 -p seeds '[1, 2, 3]'")
    p.add_argument("--force", action="store_true", help="redo items already made")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_backend_flags(p)
    p.set_defaults(func=cmd_batch)

    # ---- lab, doctor and export commands (deployment issue) ----
    add_deploy_commands(sub)
    add_pull_command(sub)

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
    except BrokenPipeError:  # `fluxnb log --json | head`: the reader left; not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


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
