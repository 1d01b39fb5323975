"""Batch runs: a params file -> a plan of items -> the batch notebook, run by papermill.

`fluxnb batch PARAMS.yaml` (and `fluxnb.run_batch`) check the params before anything
starts, then run `notebooks/batch.ipynb` with papermill and keep the executed notebook
(report mode) in the output folder: the same as
`papermill notebooks/batch.ipynb OUT.ipynb -f PARAMS.yaml`. The notebook's cells call
`plan`, `execute`, `summarize`, `contact_sheet` and `check` below.

An item is a prompt, a seed and an enhance value with the batch's settings; its identity
(`generation.item_id`) comes from the settings that decide its pixels. A rerun skips
items recorded `ok` whose image exists, so a batch killed at any moment resumes with
exactly the missing items. A failing item is recorded and the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...config.environment import SECRET_NAMES, getenv
from ...config.schema import TABLE, expected, note, or_list, param_types
from ...config.settings import CHOICES, check_output_dir, defaults, resolve
from ...errors import FluxnbError
from ...outputs import runlog

log = logging.getLogger(__name__)

NOTEBOOK = Path(__file__).resolve().parent / "batch.ipynb"  # package data: a plain pip install runs it
BACKENDS = ("local", "ray")  # where items run: this process, or Ray workers (fluxnb.raybackend)
# The batch's own params keys: (allowed types, what is expected, the notebook's comment on it).
# Every setting of the settings table (config/schema.py) with `batch` set is a key too, between
# FIRST and LAST, with its types, expectation and comment from the table.
FIRST = {
    "prompts": ((list,), "a list of prompts (text)", "one row of items per prompt"),
    "seeds": ((list, dict, int), "a list of seeds (0-4294967295), {random: N} or {start: S, count: N}",
              'every prompt with every seed; {"random": N}: N seeds drawn from the batch\'s name; '
              '{"start": S, "count": N}: S, S+1, ...'),
}
LAST = {
    "batch_name": ((str,), "a name of letters, digits, '.', '_' or '-'", "names the batch (run log batch_id, "
                   "report, contact sheet); None: a hash of the prompts and settings"),
    "force": ((bool,), "true or false", "redo items already made"),
    "backend": ((str,), or_list(BACKENDS), "where the items run: local (this kernel), or ray (Ray workers, one per "
                "GPU: pip install 'fluxnb[ray]')"),
    "address": ((str,), "auto, HOST:6379 or ray://HOST:10001 (backend ray; default: a new local Ray)",
                "backend ray: auto (the cluster `ray start` made here), HOST:6379 or ray://HOST:10001; None: a new "
                "local Ray"),
    "workers": ((int,), "a whole number of Ray workers (backend ray; default: one per GPU)",
                "backend ray: how many workers; None: one per GPU (gpus_per_worker each), 1 on a CPU machine"),
    "gpus_per_worker": ((int, float), "GPUs per Ray worker, e.g. 1 or 0.5 (backend ray; default 1)",
                        "backend ray: GPUs per worker (default 1; 0.5: two workers share a GPU)"),
    "ray_results": ((str,), "volume or driver (backend ray: who writes images and records)",
                    "backend ray: volume (workers write to the shared output folder, the default) or driver "
                    "(images come back here)"),
}
COMPARED = ("enhance",)  # settings a params file may give as a list: every item is made with each value
_KEYS = {**FIRST, **{s.name: (param_types(s) + ((list,) if s.name in COMPARED else ()), expected(s), note(s))
                     for s in TABLE if s.batch}, **LAST}
# The params-file keys: (allowed types, what is expected). The notebook's parameters cell
# (`parameters_cell`) names exactly these, with DEFAULTS as its values and NOTES as comments.
PARAMS = {name: (types, expected) for name, (types, expected, _) in _KEYS.items()}
NOTES = {name: note for name, (_, _, note) in _KEYS.items()}
DEFAULTS = {name: None for name in PARAMS} | {
    "prompts": ["a lighthouse on a cliff at dusk, oil painting", "a red fox in fresh snow, watercolor"],
    "seeds": [1, 2], "force": False, "backend": "local"}
SETTING_KEYS = [s.name for s in TABLE if s.batch and s.name not in COMPARED]  # passed to settings.resolve
_SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "passphrase", "credential",
                 "credentials", "auth", "cookie", "private"}
_MAX_SEEDS = 100_000


@dataclass(frozen=True, slots=True)
class Item:
    n: int            # 1-based position in the plan
    id: str           # generation.item_id: settings that decide the pixels + seed
    prompt_no: int    # 1-based prompt number (P1, P2...)
    prompt: str
    enhance: str
    seed: int


@dataclass
class Plan:
    batch_id: str
    settings: object              # the batch's Settings (prompt and enhance set per item)
    prompts: list
    enhances: list
    seeds: list
    items: list
    done: dict                    # {item id: run-log record} of items already made
    force: bool = False
    backend: str = "local"
    params: dict = field(default_factory=dict)
    ray: object = None            # raybackend.RayOptions with backend ray

    @property
    def output_dir(self) -> str:
        return self.settings.output_dir

    @property
    def todo(self) -> list:
        return [i for i in self.items if self.force or i.id not in self.done]

    def __repr__(self) -> str:
        s, n_done = self.settings, sum(1 for i in self.items if i.id in self.done)
        shape = f"{len(self.prompts)} prompt(s) x {len(self.seeds)} seed(s)"
        shape += f" x {len(self.enhances)} enhance ({', '.join(self.enhances)})" if len(self.enhances) > 1 else ""
        todo = len(self.todo)
        return (f"batch {self.batch_id}: {len(self.items)} items = {shape}\n"
                f"  model {s.model}, {size_text(s)}, {s.steps} steps, guidance {s.guidance}, {s.image_format}, "
                f"enhance {'/'.join(self.enhances)}, offload {s.offload} -> {s.output_dir}\n"
                f"  already made: {n_done}; to make: {todo}" + (" (force: redo all)" if self.force else ""))


def size_text(s) -> str:
    """`64x64`, or a preset with its pixels: `square (1024x1024)`."""
    return s.size if "x" in s.size else f"{s.size} ({s.width}x{s.height})"


# ---------------------------------------------------------------------------------------
# Params: read, check, plan
# ---------------------------------------------------------------------------------------

def looks_secret(name: str) -> bool:
    """Whether a parameter name looks like a secret (key, token, password...)."""
    parts = [p for p in re.split(r"[^a-z0-9]+", str(name).lower()) if p]
    return str(name).upper() in SECRET_NAMES or any(
        p in _SECRET_WORDS or p.endswith(("token", "secret", "password", "apikey")) for p in parts)


def load(path: str | os.PathLike) -> dict:
    """A params file read with the strict loader (`settings.load_params`), not yet checked."""
    from ...config.params import load_params

    return load_params(path)


def _kind(v) -> str:
    if isinstance(v, bool):
        return "a boolean (YAML reads true/false unquoted as booleans: quote it)"
    return {int: "a whole number", float: "a number", str: "text", list: "a list", dict: "a mapping"}.get(
        type(v), type(v).__name__)


def _strings(value):
    """Every string in a value (keys too), each shared list or mapping visited once: the
    walk is as long as the value's distinct parts, however often aliases repeat them."""
    seen, stack = set(), [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, (dict, list, tuple)) and id(v) not in seen:
            seen.add(id(v))
            stack.extend([x for kv in v.items() for x in kv] if isinstance(v, dict) else v)


def check_names(params: dict, source: str = "params") -> None:
    """Refuse secret-looking names, unknown names and values that hold a secret."""
    import difflib

    from ...logs import scrub, secret_values

    for key in params:
        if looks_secret(key):
            raise FluxnbError(f"{source}: {key!r} looks like a secret: secrets are never parameters (papermill writes "
                              "every parameter into the executed notebook)", field=str(key),
                              fix="set ANTHROPIC_API_KEY or HF_TOKEN in the environment or in config.env")
        if key not in PARAMS:
            near = difflib.get_close_matches(str(key), PARAMS, n=1)
            raise FluxnbError(f"{source}: unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""),
                              field=str(key), fix=f"valid keys: {', '.join(PARAMS)}")
    secrets = secret_values()
    for key, value in params.items():
        if any(scrub(text, secrets) != text for text in _strings(value)):
            raise FluxnbError(f"{source}: the value of {key!r} holds a secret (from the environment, or shaped like "
                              "an API key or token): secrets are "
                              "never parameters", field=key, fix="remove it; fluxnb reads secrets from the "
                              "environment or config.env")


def _check_type(key: str, value) -> None:
    types, expected = PARAMS[key]
    if value is None and DEFAULTS[key] is None:
        return
    if value is None or (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        got = _kind(value) if value is not None else "nothing"
        raise FluxnbError(f"{key} {value!r}: expected {expected}, got {got}", field=key, value=value)


def _seed_list(value, source_name: str) -> list[int]:
    lo, hi = defaults()["limits"]["seed"]
    fix = "write seeds: [1, 2, 3], seeds: {random: 8} or seeds: {start: 100, count: 8}"

    def count_of(v, what):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _MAX_SEEDS:
            raise FluxnbError(f"seeds {value!r}: {what} must be a whole number 1-{_MAX_SEEDS}", field="seeds",
                              value=value, fix=fix)
        return v

    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, dict):
        if set(value) == {"random"}:
            n = count_of(value["random"], "random: N")
            rng = random.Random(hashlib.sha256(f"fluxnb seeds {source_name}".encode()).digest())
            out, seen = [], set()
            while len(out) < n:
                s = rng.randint(lo, hi)
                if s not in seen:
                    seen.add(s), out.append(s)
            return out
        if set(value) == {"start", "count"}:
            n = count_of(value["count"], "count")
            first = value["start"]
            if isinstance(first, bool) or not isinstance(first, int) or not lo <= first <= hi:
                raise FluxnbError(f"seeds {value!r}: start must be a seed {lo}-{hi}", field="seeds", value=value)
            return [(first + i) % (hi + 1) for i in range(n)]
        raise FluxnbError(f"seeds {value!r}: unknown form", field="seeds", value=value, fix=fix)
    if not value:
        raise FluxnbError("seeds []: no seeds", field="seeds", value=value, fix=fix)
    seen = set()
    for k, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, int) or not lo <= s <= hi:
            raise FluxnbError(f"seeds[{k}] {s!r}: expected a seed, a whole number {lo}-{hi}, got {_kind(s)}",
                              field="seeds", value=s, fix=fix)
        if s in seen:
            raise FluxnbError(f"seeds: {s} is given twice", field="seeds", value=s, fix="give each seed once")
        seen.add(s)
    return list(value)


def _prompt_list(value) -> list[str]:
    if not value:
        raise FluxnbError("prompts []: no prompts", field="prompts", value=value,
                          fix='give a list, e.g. prompts: ["a lighthouse at dusk"]')
    seen = {}
    for k, p in enumerate(value):
        if not isinstance(p, str):
            raise FluxnbError(f"prompts[{k}] {p!r}: expected text, got {_kind(p)}", field="prompts", value=p,
                              fix="quote it")
        if not p.strip():
            raise FluxnbError(f"prompts[{k}] {p!r}: the prompt is empty", field="prompts", value=p)
        if p in seen:
            raise FluxnbError(f"prompts[{k}] {p[:60]!r}: the same as prompts[{seen[p]}]", field="prompts", value=p,
                              fix="give each prompt once")
        seen[p] = k
    return list(value)


def _enhance_list(value, default: str) -> list[str]:
    values = value if isinstance(value, list) else [default if value is None else value]
    out = []
    for v in values:
        if not isinstance(v, str) or v.strip().lower() not in CHOICES["enhance"]:
            raise FluxnbError(f"enhance {v!r}: expected {PARAMS['enhance'][1]}", field="enhance", value=v)
        if v.strip().lower() in out:
            raise FluxnbError(f"enhance: {v!r} is given twice", field="enhance", value=v)
        out.append(v.strip().lower())
    if not out:
        raise FluxnbError("enhance []: no values", field="enhance", value=value,
                          fix=f"use {or_list(CHOICES['enhance'])}")
    return out


def plan(params: dict | None = None, *, source: str = "params") -> Plan:
    """Check params (names, types, values) and plan the batch's items; nothing is written."""
    from dataclasses import replace

    from ...image.record import item_id

    # 1. Names, then types, then values (the settings' own checks name field, value and fix).
    params = dict(params or {})
    check_names(params, source)
    p = {**DEFAULTS, **params}
    for key, value in p.items():
        _check_type(key, value)
    if p["backend"] not in BACKENDS:
        raise FluxnbError(f"backend {p['backend']!r}: unknown", field="backend", value=p["backend"],
                          fix=f"use {' or '.join(BACKENDS)}")
    from ..ray.backend import OPTIONS, for_backend
    ray = for_backend(p["backend"], **{k: p[k] for k in OPTIONS})  # checked now; refused without backend ray
    if p["batch_name"] is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", p["batch_name"]):
        raise FluxnbError(f"batch_name {p['batch_name']!r}: expected {PARAMS['batch_name'][1]}", field="batch_name",
                          value=p["batch_name"], fix="e.g. batch_name: overnight-2026-05")
    base = resolve({k: p[k] for k in SETTING_KEYS if p[k] is not None}, params_name=source)
    base.output_dir = os.path.abspath(os.path.expanduser(base.output_dir))  # a rerun from elsewhere finds its items
    prompts = _prompt_list(p["prompts"])
    enhances = _enhance_list(p["enhance"], base.enhance)

    # 2. The batch's identity: its name, else a hash of what its items share (not the seeds).
    shared = ("steps", "guidance", "size", "model", "image_format", "jpeg_quality")
    shared += ("init_image", "mask", "strength") if base.init_image else ()  # only when set: older ids stay
    shared += ("loras",) if base.loras else ()
    key = json.dumps({"prompts": prompts, "enhance": enhances, "settings": {k: getattr(base, k) for k in shared}},
                     sort_keys=True, default=str)
    batch_id = p["batch_name"] or "batch-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    seeds = _seed_list(p["seeds"], p["batch_name"] or batch_id)

    # 3. Items: every prompt with every enhance value and every seed.
    items, n = [], 0
    for pn, prompt in enumerate(prompts, 1):
        for enh in enhances:
            s = replace(base, prompt=prompt, enhance=enh, seed=None, count=1)
            for seed in seeds:
                n += 1
                items.append(Item(n, item_id(s, seed), pn, prompt, enh, seed))
    done = runlog.ok_paths(base.output_dir)
    done = {i.id: done[i.id] for i in items if i.id in done}
    return Plan(batch_id, base, prompts, enhances, seeds, items, done, force=bool(p["force"]), backend=p["backend"],
                params=params, ray=ray)


def collect(namespace: dict) -> dict:
    """The batch parameters from a notebook's namespace (refusing secret-looking names there)."""
    for name, value in namespace.items():
        if not name.startswith("_") and isinstance(value, str) and name not in PARAMS and looks_secret(name):
            raise FluxnbError(f"parameter {name!r} looks like a secret: secrets are never parameters", field=name,
                              fix="set it in the environment or config.env, never with papermill -p")
    return {name: namespace[name] for name in PARAMS if name in namespace}


def preflight(p: Plan) -> None:
    """Checks that would otherwise fail every item: an output folder that cannot be used,
    an enhancer without its key."""
    s = p.settings
    check_output_dir(s.output_dir)
    if p.todo and "claude" in p.enhances and s.enhance_fallback == "none" and not getenv("ANTHROPIC_API_KEY"):
        raise FluxnbError("enhance claude: ANTHROPIC_API_KEY is not set", field="enhance", value="claude",
                          fix="export ANTHROPIC_API_KEY or put it in config.env (never in a params file), "
                              "or set enhance_fallback: local")


# ---------------------------------------------------------------------------------------
# The notebook's parameters cell
# ---------------------------------------------------------------------------------------

def parameters_cell() -> str:
    """The batch notebook's parameters cell as PARAMS, DEFAULTS and NOTES say it is: one
    annotated line per key, its default and its comment (tests/test_schema.py compares)."""
    def annotation(types, default) -> str:
        names = [t.__name__ for t in types if not (t is int and float in types)]
        if default is not None:
            return names[0] if len(names) == 1 else f"Union[{', '.join(names)}]"
        return f"Optional[{names[0]}]" if len(names) == 1 else f"Union[{', '.join(names)}, None]"

    def literal(value) -> str:
        return json.dumps(value, ensure_ascii=False) if isinstance(value, (str, list, dict)) else repr(value)

    lines = [f"{name}: {annotation(types, DEFAULTS[name])} = {literal(DEFAULTS[name])}  # {NOTES[name]}"
             for name, (types, _) in PARAMS.items()]
    return "\n".join(["from typing import Optional, Union", "", *lines])


def write_parameters_cell(path: str | os.PathLike = NOTEBOOK) -> Path:
    """Rewrite the notebook's parameters cell from the table (after adding a setting or a key)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = parameters_cell()
    nbformat.write(nb, path)
    return Path(path)
