"""Reading one setting's value: the defaults file, sizes, numbers, booleans, text, presets,
ranges and model names. Each reader names the setting, the value and the fix when it refuses.

The settings table (`schema`) says which reader each setting uses.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from ..errors import FluxnbError

DEFAULTS_FILE = Path(__file__).resolve().parent / "defaults.yaml"


@functools.lru_cache(maxsize=1)
def defaults() -> dict:
    """The parsed defaults file (cached; treat as read-only)."""
    import yaml

    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------

def parse_wxh(text: str) -> tuple[int, int] | None:
    """`1024x768` (or `1024 X 768`, `1024,768`) -> (1024, 768); None when it is not WxH."""
    m = re.fullmatch(r"\s*(-?\d+)\s*[xX×*,]\s*(-?\d+)\s*", str(text))
    return (int(m.group(1)), int(m.group(2))) if m else None


def render_size(width: int, height: int) -> tuple[int, int]:
    """Round a preset's size up to the next multiple of 16 (hd: 1920x1080 -> 1920x1088)."""
    m = defaults()["limits"]["multiple"]
    return (-(-width // m) * m, -(-height // m) * m)


def _nearest(n: int, m: int) -> tuple[int, int]:
    lo = max(m, n // m * m)
    return lo, lo + m


def parse_size(value: Any) -> tuple[str, int, int]:
    """A size preset name or `WxH` -> (size, width, height). Custom sizes must be
    multiples of 16; presets (hd) may crop."""
    d = defaults()
    presets = d["presets"]["size"]
    text = str(value).strip().lower()
    if text in presets:
        w, h = parse_wxh(presets[text])
        return text, w, h
    wh = parse_wxh(text)
    if wh is None:
        raise FluxnbError(
            f"size {value!r}: not a size preset or WxH", field="size", value=value,
            fix=f"use one of {', '.join(presets)} or WxH such as 1024x768")
    w, h = wh
    lo, hi = d["limits"]["side"]
    m = d["limits"]["multiple"]
    if w <= 0 or h <= 0:
        raise FluxnbError(f"size {w}x{h}: width and height must be positive", field="size", value=value,
                          fix=f"use WxH with each side between {lo} and {hi}, multiples of {m}")
    if w > hi or h > hi:
        raise FluxnbError(f"size {w}x{h}: at most {hi} pixels a side", field="size", value=value,
                          fix=f"use a smaller size, e.g. --4k ({presets['4k']})")
    if w % m or h % m:
        wl, wh_ = _nearest(w, m) if w % m else (w, w)
        hl, hh = _nearest(h, m) if h % m else (h, h)
        near = f"{wl}x{hl}" if (wl, hl) == (wh_, hh) else f"{wl}x{hl} or {wh_}x{hh}"
        hint = ""
        for name, p in presets.items():
            if parse_wxh(p) == (w, h):
                hint = f", or --{name}, which renders {render_size(w, h)[0]}x{render_size(w, h)[1]} and crops to {w}x{h}"
        raise FluxnbError(f"size {w}x{h}: width and height must be multiples of {m} (nearest: {near}{hint})",
                          field="size", value=value)
    if w < lo or h < lo:
        raise FluxnbError(f"size {w}x{h}: at least {lo} pixels a side", field="size", value=value)
    return f"{w}x{h}", w, h


def size_name(name: str, value: Any) -> str:
    """The size setting's reader: a preset name or a checked `WxH`."""
    return parse_size(value)[0]


# ---------------------------------------------------------------------------------------
# Numbers, booleans, text, presets, ranges
# ---------------------------------------------------------------------------------------

def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise FluxnbError(f"{name} {value!r}: expected true or false", field=name, value=value)


def as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise FluxnbError(f"{name} {value!r}: expected a whole number, got a boolean", field=name, value=value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise FluxnbError(f"{name} {value!r}: expected a whole number", field=name, value=value) from None


def as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise FluxnbError(f"{name} {value!r}: expected a number, got a boolean", field=name, value=value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FluxnbError(f"{name} {value!r}: expected a number", field=name, value=value) from None


def as_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        raise FluxnbError(
            f"{name} {value!r}: expected text, got a boolean (YAML reads yes/no/on/off as booleans)",
            field=name, value=value, fix=f"quote it, e.g. {name}: \"none\"")
    if value is None:
        raise FluxnbError(f"{name}: no value given", field=name, value=value)
    return str(value)


READERS = {bool: as_bool, int: as_int, float: as_float, str: as_text}


def preset_or(kind: str, name: str, value: Any, conv):
    """A preset of `kind` (its value read by `conv`) or a number read by `conv`."""
    presets = defaults()["presets"][kind]
    if isinstance(value, str) and value.strip().lower() in presets:
        return conv(name, presets[value.strip().lower()])
    if isinstance(value, str) and not re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*", value):
        raise FluxnbError(f"{name} {value!r}: not a number or a {kind} preset", field=name, value=value,
                          fix=f"use a number or one of {', '.join(presets)}")
    return conv(name, value)


def in_range(name: str, value, lo, hi, fix: str = ""):
    if not (lo <= value <= hi):
        raise FluxnbError(f"{name} {value}: must be between {lo} and {hi}", field=name, value=value, fix=fix or None)
    return value


# ---------------------------------------------------------------------------------------
# Models and prompts
# ---------------------------------------------------------------------------------------

def normalize_model(value: str) -> str:
    aliases = defaults().get("model_aliases", {})
    v = str(value).strip()
    return aliases.get(v.lower(), v)


def model_defaults(model: str) -> dict:
    """The `models:` entry of defaults.yaml for `model` (also a local snapshot of a known model)."""
    models = defaults().get("models", {})
    if model in models:
        return dict(models[model])
    low = model.lower().rstrip("/")
    for key, val in models.items():  # a local snapshot of a known model (…/FLUX.1-schnell)
        if low.endswith(key.lower().split("/")[-1]):
            return dict(val)
    return {}


def known_models() -> list[str]:
    """The FLUX models fluxnb knows by name (`models:` and `model_aliases:` in defaults.yaml):
    the ones an image's metadata may choose without the user naming it (`--from-image`)."""
    d = defaults()
    names = list(d.get("models", {})) + list(d.get("model_aliases", {}).values())
    return list(dict.fromkeys(names))


def model_name(name: str, value: Any) -> str:
    """The model setting's reader: a hub id (or its short name), a local folder or tiny."""
    v = normalize_model(as_text(name, value).strip())
    if not v:
        raise FluxnbError("model '': no model given", field=name, value=value,
                          fix="use a hub id, a local folder or tiny")
    return v


def backend_name(name: str, value: Any) -> str:
    """The attention backend's reader: a name as diffusers spells it (lower case); empty is
    `default`. Which names this diffusers knows, and which run on the device, is checked when
    the model loads (model/perf_levers.py)."""
    v = as_text(name, value).strip().lower()
    if not v:
        return "default"
    if not re.fullmatch(r"[a-z0-9_]+", v):
        raise FluxnbError(f"{name} {value!r}: not an attention backend name", field=name, value=value,
                          fix="use default, or a diffusers backend name such as _native_cudnn or flex")
    return v


MAX_PROMPT = 32768   # characters: 16 times what T5 reads (512 tokens); keeps metadata readable


def prompt_text(name: str, value: Any) -> str:
    """The prompt's reader: the text as given (not stripped); None is the empty prompt.
    Longer than MAX_PROMPT characters is refused (without echoing it)."""
    text = "" if value is None else as_text(name, value)
    if len(text) > MAX_PROMPT:
        raise FluxnbError(f"{name}: {len(text)} characters, more than {MAX_PROMPT}", field=name,
                          value=f"({len(text)} characters)",
                          fix=f"shorten it: T5 reads the first {defaults()['limits']['max_sequence_length'][1]} "
                              "tokens (about 2,000 characters) and CLIP the first 77")
    return text


def folder_text(name: str, value: Any) -> str:
    """A folder setting's reader (output_dir): text that is not empty or blank ("" would mean
    the current folder without saying so)."""
    text = as_text(name, value).strip()
    if not text:
        raise FluxnbError(f"{name} {value!r}: an empty folder name", field=name, value=value,
                          fix="name a folder, e.g. --out outputs (--out . for the current folder)")
    return text
