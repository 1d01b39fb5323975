"""Command-line flags for the settings: the same names as the Settings fields, params keys
and run-log columns, with their presets and aliases."""

from __future__ import annotations

import argparse

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
    from ..config.params import load_params
    from ..config.settings import resolve

    call = {k: getattr(args, k, None) for k in SETTING_DESTS}
    if prompt is not None:
        call["prompt"] = prompt
    if base is not None:
        return base.replace(**{k: v for k, v in call.items() if v is not None})
    params = load_params(args.params) if getattr(args, "params", None) else None
    return resolve(params, params_name=f"params:{args.params}" if params is not None else "params", **call)




def sweep_list_dests() -> list:
    """The settings flags that take a list in `fluxnb sweep` (names from add_settings_flags,
    axes from fluxnb.sweeps.AXES)."""
    from ..runs.sweep.axes import AXES

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
