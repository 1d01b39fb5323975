"""The `fluxnb` subcommands: each parses its flags into settings, calls one function, prints."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys

from .flags import backend_args, settings_from_args, sweep_list_dests

log = logging.getLogger("fluxnb")


def print_json(obj) -> None:
    """What the CLI prints as JSON, scrubbed of secrets (`logs.scrub`)."""
    from ..logs import scrub_data

    print(json.dumps(scrub_data(obj), indent=2, ensure_ascii=False, default=str))


def print_text(text: str) -> None:
    """What the CLI prints as text, scrubbed of secrets."""
    from ..logs import scrub

    print(scrub(text))


def cmd_generate(args) -> int:
    from ..config.settings import check_output_dir
    from ..image.make import generate
    from ..outputs.recover import tidy_and_recover

    if args.from_image:
        from ..outputs.metadata import read_settings
        s = settings_from_args(args, prompt=args.prompt, base=read_settings(args.from_image, model=args.model))
        log.info("settings from %s (seed %s)", args.from_image, s.seed)
    else:
        s = settings_from_args(args, prompt=args.prompt)
    check_output_dir(s.output_dir)  # before the model loads
    tidy_and_recover(s.output_dir)  # a killed run's temp links gone, its unrecorded images recorded
    results = generate(settings=s, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print_json({"images": [dict(r.record) for r in results]})
    else:
        for r in results:
            print(r.path)
    return 0


def cmd_config(args) -> int:
    from ..config.environment import config_env_path
    from ..config.settings import describe

    s = settings_from_args(args)
    rows = describe(s)
    if args.json:
        print_json({"config_env": str(config_env_path() or ""),
                     "settings": {n: {"value": v, "source": src} for n, v, src in rows}})
        return 0
    width = max(len(n) for n, _, _ in rows)
    for name, value, src in rows:
        print_text(f"{name:<{width}}  {json.dumps(value, default=str):<40}  {src}")
    path = config_env_path()
    print(f"\nconfig.env: {path if path else '(none)'}")
    return 0


def cmd_log(args) -> int:
    from ..outputs import runlog

    if args.export:
        path = runlog.export(args.directory, args.export)
        print(path)
        return 0
    if args.json:
        print_json(runlog.read(args.directory))
        return 0
    print_text(runlog.summary(args.directory))
    return 0


def cmd_model_build(args) -> int:
    from ..model.testmodel import build

    dtype = None
    if args.dtype != "float32":
        import torch
        dtype = getattr(torch, args.dtype)
    path = build(args.directory, args.scale, device=args.device, dtype=dtype, overwrite=args.overwrite,
                 variant=args.variant)
    print(path)
    return 0


def cmd_tokens(args) -> int:
    from ..prompt.tokens import count_tokens, render, use_colour

    p = count_tokens(args.prompt, model=args.model, t5_limit=args.t5_limit)
    if args.json:
        print_json(p.to_dict())
        return 0
    print_text(render(p, colour=use_colour()))
    return 0


def cmd_enhance(args) -> int:
    from ..prompt.enhancer import enhance
    from ..config.settings import resolve
    from ..prompt.tokens import count_tokens, render, use_colour

    s = resolve(**{k: v for k, v in (("seed", args.seed), ("enhance_model", args.model),
                                     ("enhance_fallback", args.fallback)) if v is not None})
    backend = args.backend or (s.enhance if s.enhance != "none" else "claude")
    enh = enhance(args.prompt, backend, model=s.enhance_model, seed=s.seed, use_cache=not args.no_cache,
                  fallback=s.enhance_fallback)
    p = count_tokens(enh.enhanced, model=s.model, t5_limit=s.max_sequence_length)
    if args.json:
        out = enh.to_dict()
        out.update({k: v for k, v in p.to_dict().items() if k != "prompt"})
        print_json(out)
        return 0
    how = f"{enh.backend} ({enh.model})" if enh.model else enh.backend
    how += f", {enh.elapsed_s:.2f} s" + (", cached" if enh.cached else "")
    if enh.fallback_from:
        how += f", instead of {enh.fallback_from}: {enh.fallback_reason}"
    print_text(enh.enhanced)
    print_text(f"\n{how}")
    print_text(render(p, colour=use_colour()))
    return 0


def cmd_sweep(args) -> int:
    from ..runs.sweep.layout import plan
    from ..runs.sweep.runner import run

    axes = {k: getattr(args, k) for k in sweep_list_dests() if getattr(args, k, None) is not None}
    base = settings_from_args(argparse.Namespace(**{**vars(args), **{k: None for k in axes}}))
    p = plan(args.prompt, seeds=args.seeds, prompts=args.prompts, rows=args.rows, cols=args.cols, yes=args.yes,
             settings=base, **axes)
    if args.dry_run:
        if args.json:
            print_json(p.definition())
        else:
            print_text(p.describe())
            for a in p.axes:
                print_text(f"  {a.name}: {'; '.join(a.labels) if a.name == 'loras' else ', '.join(map(str, a.values))}")
            print_text("  fixed: " + ", ".join(f"{k} {v}" for k, v in p.fixed().items()))
        return 0
    result = run(p, batch_size=args.batch_size, progress=not args.json and sys.stderr.isatty(),
                 **{**backend_args(args), "backend": args.backend or "local"})
    if args.json:
        print_json(result.to_dict())
    else:
        for path in result.grids:
            print(path)
    return 0


def cmd_grid(args) -> int:
    from pathlib import Path

    from ..outputs.gridlog import grid

    g = grid(args.directory, rows=args.rows, cols=args.cols, where=args.where, out=args.out or Path(args.directory),
             yes=args.yes)
    if args.json:
        print_json({"grid": g.path, "rows": g.rows, "cols": g.cols, "row_values": g.row_values,
                     "col_values": g.col_values, "images": g.images})
    else:
        print(g.path)
    return 0


def cmd_batch(args) -> int:
    from ..runs import batch

    # --json: stdout holds the JSON alone (the items' lines, stdout otherwise, go to stderr).
    lines = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with lines:
            summary = batch.run(args.params, out=args.out, parameters=args.param, force=args.force,
                                **backend_args(args))
    except batch.BatchFailed as e:  # the summary on stdout, the failures as the error
        if e.summary is not None:
            print_batch(e.summary, args.json, failed=True)
        raise
    print_batch(summary, args.json)
    return 0


def print_batch(summary, as_json: bool, failed: bool = False) -> None:
    if as_json:
        print_json(summary.to_dict())
        return
    if not failed:
        print_text(repr(summary))
    for label, path in (("report", summary.report), ("contact sheet", summary.contact_sheet)):
        if path:
            print(f"{label}: {path}")


def cmd_lab(args) -> int:
    from . import lab

    if args.stop:
        print("stopped JupyterLab" if lab.stop() else "no JupyterLab started by fluxnb is running")
        return 0
    if args.status:
        st = lab.status()
        if args.json:
            print_json(st)
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

    checks = doctor.run_checks(hub=args.hub)
    if args.json:
        print_json(doctor.to_json(checks))
    else:
        print(doctor.table(checks, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    return 0 if doctor.ready(checks) else 1


def cmd_export(args) -> int:
    from .export import export_run
    from .labfiles import download_url

    result = export_run(args.directory, since=args.since, out=args.out)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(result.path)
    log.info("%s", result.summary())
    url = download_url(result.path)
    if url:  # where to click in the browser that is logged in to JupyterLab
        log.info("download it in JupyterLab's file browser (right-click, Download) or at %s", url)
    return 0


def cmd_pull(args) -> int:
    from .pull import pull

    result = pull(args.url, remote_dir=args.remote_dir, to=args.to, since=args.since, dry_run=args.dry_run,
                  open_image=args.open, token_file=args.token_file, verify=args.verify,
                  max_file_mb=args.max_file_mb, progress=not args.quiet)
    for path in result.fetched:  # with --dry-run: what it would fetch
        print(path)
    log.info("%s", result.summary())
    return 0


def cmd_model_fetch(args) -> int:
    from ..model.fetch import fetch

    result = fetch(args.model, verify=args.verify)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.path)
    return 0
