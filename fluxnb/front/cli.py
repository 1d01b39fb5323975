"""The `fluxnb` command: a thin front end over the same functions the notebooks use.

Every subcommand parses flags into settings names, calls one function, and prints.
A FluxnbError becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..config.environment import note_seed_keys_once
from ..config.schema import CHOICES
from ..errors import FluxnbError
from .commands import (cmd_batch, cmd_config, cmd_doctor, cmd_enhance, cmd_export, cmd_generate, cmd_grid, cmd_lab, cmd_log,
                       cmd_model_build, cmd_model_fetch, cmd_pull, cmd_sweep, cmd_tokens)
from .flags import add_backend_flags, add_settings_flags, add_sweep_flags

log = logging.getLogger("fluxnb")


def add_deploy_commands(sub) -> None:
    """`fluxnb lab`, `fluxnb doctor` and `fluxnb export`."""
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
    p.add_argument("--hub", action="store_true", help="also ask the Hugging Face hub: the token valid and the "
                                                       "model's licence accepted (downloads nothing)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("export", help="zip a run's images, run log and grids for download",
                       description="Zip the images, run log and grids of an output folder (atomically).")
    p.add_argument("directory", nargs="?", default=None, help="output folder (default: the configured output_dir)")
    p.add_argument("--since", metavar="WHEN", help="only what was made since: 2026-11-24, 2026-11-24T18:00, "
                                                    "today, yesterday, or 30m / 12h / 7d ago")
    p.add_argument("--out", metavar="FILE.zip", help="default: DIR/exports/fluxnb_<folder>_<time>.zip")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)


def add_model_commands(sub) -> None:
    """`fluxnb model build` (random-weight test models) and `fluxnb model fetch` (a hub model, once)."""
    p = sub.add_parser("model", help="test models")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    b = msub.add_parser("build", help="write a random-weight FLUX-architecture pipeline")
    b.add_argument("directory")
    b.add_argument("--scale", choices=["tiny", "small", "full"], default="tiny")
    b.add_argument("--device", default="cpu", help="where to make the weights (cuda for full)")
    b.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    b.add_argument("--variant", choices=["kontext", "fill"], default="",
                   help="a FLUX.1 Kontext (editing) or Fill (inpainting) pipeline instead of text to image")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=cmd_model_build)

    f = msub.add_parser("fetch", help="download a hub model once, with checks (token, licence, disk, checksums)",
                        description="Download MODEL's diffusers folders (as `hf download MODEL --include ...`), after "
                                    "checking the token, the licence and the free space; verify every file.")
    f.add_argument("model", nargs="?", default="black-forest-labs/FLUX.1-dev",
                   help="hub id (default black-forest-labs/FLUX.1-dev), tiny, or a local folder")
    f.add_argument("--verify", choices=["sha256", "size"], default="sha256",
                   help="check the finished files by checksum (default) or by size only")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_model_fetch)


def add_pull_command(sub) -> None:
    """`fluxnb pull URL`: the pod's new images, grids and run log, home (fluxnb.front.pull)."""
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

    add_model_commands(sub)

    p = sub.add_parser("tokens", help="count CLIP and T5 tokens and show what CLIP drops")
    p.add_argument("prompt")
    p.add_argument("--model", default=None, help="use this model's cached T5 tokenizer (default: the configured model)")
    p.add_argument("--t5-limit", type=int, default=None, help="T5's limit (default: the model's max_sequence_length)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser("enhance", help="enhance a prompt (Claude or the offline enhancer) and count its tokens",
                       description="Enhance a prompt with Claude (ANTHROPIC_API_KEY) or the offline enhancer; "
                                   "prints the enhanced prompt and its CLIP/T5 token counts.")
    p.add_argument("prompt")
    p.add_argument("--backend", "--enhance", dest="backend", choices=[c for c in CHOICES["enhance"] if c != "none"],
                   help="default: the configured enhance setting, else claude")
    p.add_argument("--model", metavar="ID", help="Claude model id (default: enhance_model, claude-sonnet-5-5)")
    p.add_argument("--seed", metavar="N", help="the local enhancer's seed (default: the configured seed, else 0)")
    p.add_argument("--fallback", choices=CHOICES["enhance_fallback"],
                   help="local: on a Claude failure use the offline enhancer (recorded) instead of stopping")
    p.add_argument("--no-cache", action="store_true", help="ask Claude again even when the answer is cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_enhance)

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

    from ..runs.batch.params import PARAMS as BATCH_PARAMS
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

    add_deploy_commands(sub)
    add_pull_command(sub)
    for name, p in sub.choices.items():  # `fluxnb generate ... -v` as well as `fluxnb -v generate ...`
        add_verbosity_flags(p, name)

    return parser


def add_verbosity_flags(p, command: str) -> None:
    """-v / -q after the subcommand too; unset (SUPPRESS) they leave the global flags' values."""
    verbose = {"enhance": "show the request to Claude and its raw answer: model, max_tokens, system prompt and its "
                          "sha256, user message, stop reason, token usage, timings, retries (never the key)",
               "generate": "debug output on the console, with the request to Claude and its raw answer"}
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help=verbose.get(command, "debug output on the console"))
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="warnings and errors only" + (": the image paths alone" if command == "generate" else ""))


def main(argv=None) -> int:
    from .. import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logs.setup(level)
    try:
        note_seed_keys_once(show=not args.quiet)
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
