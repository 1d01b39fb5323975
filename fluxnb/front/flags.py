"""Command-line flags for the settings, built from the settings table (config/schema.py):
the same names as the Settings fields, params keys and run-log columns, with their presets,
shortcuts and aliases."""

from __future__ import annotations

import argparse

from ..config.schema import GROUPS, TABLE, Setting, fill, preset_flags, preset_help

# The settings that have flags: the Settings fields argparse fills (None: not given).
SETTING_DESTS = tuple(s.name for s in TABLE if s.flags or s.shortcuts or preset_flags(s))
# --backend and the Ray options (add_backend_flags): the params keys of the same names.
BACKEND_DESTS = ("backend", "address", "workers", "gpus_per_worker", "ray_results")


def add_settings_flags(p: argparse.ArgumentParser, *, lists=()) -> None:
    """Every setting's flags, built from the settings table: its own flag, its presets (--fast)
    and shortcuts (--cpu-offload), mutually exclusive, in the table's --help sections. Settings
    named in `lists` take a comma list (fluxnb sweep). Every default is None so that only
    flags actually given override the other layers."""
    for title in GROUPS:
        group = p.add_argument_group(title)
        for s in TABLE:
            if s.group == title and s.name in SETTING_DESTS:
                add_setting_flags(group, s, as_list=s.name in lists)
    for s in TABLE:
        if s.group not in GROUPS and s.name in SETTING_DESTS:
            add_setting_flags(p, s, as_list=s.name in lists)
    p.add_argument("--params", metavar="FILE.yaml", help="a params file (its keys are setting names)")


def add_setting_flags(group, s: Setting, *, as_list: bool = False) -> None:
    """One setting's flags: its presets, then the flag that takes a value, then its shortcuts."""
    presets = preset_flags(s)
    if len(presets) + bool(s.flags) + len(s.shortcuts) > 1:
        group = group.add_mutually_exclusive_group()
    for name, value in presets:
        group.add_argument(f"--{name}", dest=s.name, action="store_const", const=name,
                           help=preset_help(s, name, value))
    if s.flags:
        group.add_argument(*s.flags, dest=s.name, **value_flag(s, as_list))
    for flag, value, text in s.shortcuts:
        group.add_argument(flag, dest=s.name, action="store_const", const=value, help=text or None)


def value_flag(s: Setting, as_list: bool = False) -> dict:
    """add_argument's keywords for a setting's own flag (`as_list`: a comma list to sweep)."""
    kw = {"metavar": s.metavar, "help": fill(s, s.help) or None}
    if s.choices:
        kw["choices"] = [*s.choices, *(spelling for spelling, _ in s.spellings)]
    if s.type is list:
        kw["action"] = "append"
    if as_list:
        of = f"of {', '.join(s.choices)} " if s.choices else ""
        kw.update(choices=None, metavar="LIST", help=f"{kw['help'] or ''}; a comma list {of}to sweep".strip("; "))
    return kw


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
    """The settings flags that take a list in `fluxnb sweep` (the axes of fluxnb.sweeps.AXES)."""
    from ..runs.sweep.axes import AXES

    return [k for k in AXES if k != "prompt"]


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """Every generate flag, the sweepable ones taking lists, plus the sweep's own."""
    add_settings_flags(p, lists=sweep_list_dests())
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
    from ..runs.batch.params import BACKENDS

    g = p.add_argument_group("where the images are made (scale-out: pip install 'fluxnb[ray]')")
    g.add_argument("--backend", choices=BACKENDS, help="local: this process (default); ray: Ray workers, "
                   "one per GPU (a local Ray unless --address)")
    g.add_argument("--address", "--ray-address", dest="address", metavar="auto|HOST:6379|ray://HOST:10001",
                   help="join a running Ray cluster (auto: the one `ray start` made on this machine)")
    g.add_argument("--workers", type=int, metavar="N", help="Ray workers (default: one per GPU; 1 on a CPU machine)")
    g.add_argument("--gpus-per-worker", dest="gpus_per_worker", type=float, metavar="G",
                   help="GPUs each Ray worker takes (default 1; 0.5 puts two workers on a GPU)")
    g.add_argument("--ray-results", dest="ray_results", choices=["volume", "driver"],
                   help="volume (default): workers write to the shared output folder; driver: images come back here")


def backend_args(args) -> dict:
    """--backend and the Ray options as given (None where not given)."""
    return {k: getattr(args, k, None) for k in BACKEND_DESTS}
