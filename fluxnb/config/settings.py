"""Settings: one dataclass, one resolution order, one `validate`.

Precedence, lowest first: `defaults.yaml` < the model's own defaults < `FLUXNB_*`
environment variables (and the ignored `config.env`) < a params file < call arguments.
Every resolved value remembers where it came from (`Settings.sources`), which
`fluxnb config` prints.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FluxnbError
from .environment import config_env_path, on_pod, read_env_file, workspace

DEFAULTS_FILE = Path(__file__).resolve().parent / "defaults.yaml"


@functools.lru_cache(maxsize=1)
def defaults() -> dict:
    """The parsed defaults file (cached; treat as read-only)."""
    import yaml

    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------------------
# The settings dataclass
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadSettings:
    """What it takes to load a pipeline; the key of the once-per-process pipeline cache."""

    model: str
    offload: str
    precision: str
    compile: bool
    device: str


@dataclass
class Settings:
    """Every setting of one generate call. The same names are CLI flags (with dashes),
    params-file keys, widget names, run-log columns and metadata keys."""

    prompt: str = ""
    enhance: str = "none"
    seed: int | None = None
    count: int = 1
    steps: int = 20
    guidance: float = 3.5
    size: str = "1024x1024"
    width: int = 1024
    height: int = 1024
    image_format: str = "jpg"
    jpeg_quality: int = 95
    output_dir: str = "outputs"
    model: str = "black-forest-labs/FLUX.1-dev"
    offload: str = "auto"
    precision: str = "bf16"
    compile: bool = False
    device: str = "auto"
    max_sequence_length: int = 512
    enhance_model: str = ""
    enhance_cache: bool = True
    enhance_fallback: str = "none"
    vae_tiling: str = "auto"
    sources: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def load(self) -> LoadSettings:
        return LoadSettings(self.model, self.offload, self.precision, self.compile, self.device)

    @property
    def render_size(self) -> tuple[int, int]:
        """The size the model renders at (a multiple of 16), before any crop."""
        return render_size(self.width, self.height)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("sources")
        return d

    def replace(self, **changes) -> "Settings":
        """A copy with `changes` applied (re-validated); sources record them as `call`."""
        return resolve(base=self, **changes)


FIELDS = [f.name for f in dataclasses.fields(Settings) if f.name != "sources"]
# width/height are derived from size; they may be given, but size is the one knob.
INPUT_FIELDS = [f for f in FIELDS if f not in ("width", "height")]
CHOICES = {
    "enhance": ("none", "local", "claude"),
    "image_format": ("jpg", "png"),
    "offload": ("auto", "none", "encoders", "model", "group", "sequential"),
    "precision": ("bf16", "fp8", "fp8-fast"),
    "device": ("auto", "cuda", "cpu", "mps"),
    "enhance_fallback": ("none", "local"),
    "vae_tiling": ("auto", "on", "off"),
}
CELL_CAP = 100  # sweeps and grids: more cells than this need yes=True (--yes)
ALIASES = {"format": "image_format", "out": "output_dir", "quality": "steps", "cfg": "guidance"}
_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


# ---------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------

def _parse_wxh(text: str) -> tuple[int, int] | None:
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
        w, h = _parse_wxh(presets[text])
        return text, w, h
    wh = _parse_wxh(text)
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
            if _parse_wxh(p) == (w, h):
                hint = f", or --{name}, which renders {render_size(w, h)[0]}x{render_size(w, h)[1]} and crops to {w}x{h}"
        raise FluxnbError(f"size {w}x{h}: width and height must be multiples of {m} (nearest: {near}{hint})",
                          field="size", value=value)
    if w < lo or h < lo:
        raise FluxnbError(f"size {w}x{h}: at least {lo} pixels a side", field="size", value=value)
    return f"{w}x{h}", w, h


def _env_layer() -> tuple[dict, dict]:
    values, sources = {}, {}
    file_env = read_env_file(config_env_path())
    for name in INPUT_FIELDS:
        key = "FLUXNB_" + name.upper()
        if key in os.environ:
            values[name], sources[name] = os.environ[key], f"env:{key}"
        elif key in file_env:
            values[name], sources[name] = file_env[key], f"config.env:{key}"
    return values, sources


# ---------------------------------------------------------------------------------------
# Coercion and validation
# ---------------------------------------------------------------------------------------

def _bool(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise FluxnbError(f"{name} {value!r}: expected true or false", field=name, value=value)


def _int(name, value):
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


def _float(name, value):
    if isinstance(value, bool):
        raise FluxnbError(f"{name} {value!r}: expected a number, got a boolean", field=name, value=value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FluxnbError(f"{name} {value!r}: expected a number", field=name, value=value) from None


def _str(name, value):
    if isinstance(value, bool):
        raise FluxnbError(
            f"{name} {value!r}: expected text, got a boolean (YAML reads yes/no/on/off as booleans)",
            field=name, value=value, fix=f"quote it, e.g. {name}: \"none\"")
    if value is None:
        raise FluxnbError(f"{name}: no value given", field=name, value=value)
    return str(value)


def _preset_or(kind: str, name: str, value, conv):
    presets = defaults()["presets"][kind]
    if isinstance(value, str) and value.strip().lower() in presets:
        return conv(name, presets[value.strip().lower()])
    if isinstance(value, str) and not re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*", value):
        raise FluxnbError(f"{name} {value!r}: not a number or a {kind} preset", field=name, value=value,
                          fix=f"use a number or one of {', '.join(presets)}")
    return conv(name, value)


def _in_range(name, value, lo, hi, fix=""):
    if not (lo <= value <= hi):
        raise FluxnbError(f"{name} {value}: must be between {lo} and {hi}", field=name, value=value, fix=fix or None)
    return value


def normalize_model(value: str) -> str:
    aliases = defaults().get("model_aliases", {})
    v = str(value).strip()
    return aliases.get(v.lower(), v)


def _model_defaults(model: str) -> dict:
    models = defaults().get("models", {})
    if model in models:
        return dict(models[model])
    low = model.lower().rstrip("/")
    for key, val in models.items():  # a local snapshot of a known model (…/FLUX.1-schnell)
        if low.endswith(key.lower().split("/")[-1]):
            return dict(val)
    return {}


def _coerce(raw: dict, model: str) -> dict:
    """Turn raw layered values into typed, validated field values."""
    d = defaults()
    lim = d["limits"]
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "size":
            out["size"], out["width"], out["height"] = parse_size(value)
        elif name == "steps":
            out[name] = _in_range(name, _preset_or("steps", name, value, _int), *lim["steps"],
                                  fix="use --fast (4), --balanced (20), --quality (50) or --steps N")
        elif name == "guidance":
            g = _preset_or("guidance", name, value, _float)
            lo, hi = _model_defaults(model).get("guidance_range", lim["guidance"])
            out[name] = _in_range(name, g, lo, hi, fix="use --creative (1.5), the default 3.5, --strict (5.0)"
                                                        f" or --guidance X within {lo}-{hi}")
        elif name == "seed":
            if value is None or (isinstance(value, str) and value.strip().lower() in ("", "random", "none")):
                out[name] = None
            else:
                out[name] = _in_range(name, _int(name, value), *lim["seed"], fix="use --random-seed or 0..4294967295")
        elif name == "jpeg_quality":
            out[name] = _in_range(name, _int(name, value), *lim["jpeg_quality"])
        elif name == "count":
            out[name] = _in_range(name, _int(name, value), *lim["count"])
        elif name == "max_sequence_length":
            out[name] = _in_range(name, _int(name, value), 1, 512)
        elif name in ("compile", "enhance_cache"):
            out[name] = _bool(name, value)
        elif name == "prompt":
            out[name] = "" if value is None else _str(name, value)
        else:
            v = _str(name, value).strip()
            if name in CHOICES:
                v = v.lower()
                if name == "image_format" and v == "jpeg":
                    v = "jpg"
                if v not in CHOICES[name]:
                    raise FluxnbError(f"{name} {value!r}: unknown value", field=name, value=value,
                                      fix=f"use one of {', '.join(CHOICES[name])}")
            if name == "model":
                v = normalize_model(v)
                if not v:
                    raise FluxnbError("model '': no model given", field=name, value=value,
                                      fix="use a hub id, a local folder or tiny")
            out[name] = v
    return out


def resolve(params: dict | None = None, *, params_name: str = "params", base: Settings | None = None,
            use_env: bool = True, **call) -> Settings:
    """Layer defaults < model defaults < env < params < call into a validated Settings.

    `base`: start from an existing Settings (its values count as `call`) instead of the layers.
    Unknown names raise an error listing the valid ones. `None` call values are ignored."""
    # 1. Gather the layers as raw values, remembering where each came from.
    layers: list[tuple[dict, dict]] = []
    if base is None:
        raw_defaults = dict(defaults()["settings"])
        layers.append((raw_defaults, {k: "defaults" for k in raw_defaults}))
        if on_pod():  # on a pod only the volume survives a stop
            layers.append(({"output_dir": str(workspace() / "outputs")}, {"output_dir": "pod"}))
        if use_env:
            layers.append(_env_layer())
    else:
        values = base.to_dict()
        values.pop("width"), values.pop("height")
        layers.append((values, {k: base.sources.get(k, "call") for k in values}))
    for name, layer in ((params_name, params or {}), ("call", call)):
        layer = {ALIASES.get(k, k): v for k, v in layer.items() if not (name == "call" and v is None)}
        unknown = [k for k in layer if k not in FIELDS]
        if unknown:
            raise FluxnbError(f"unknown setting {unknown[0]!r} in {name}", field=unknown[0],
                              fix=f"valid settings: {', '.join(INPUT_FIELDS)}")
        layers.append((layer, {k: name for k in layer}))

    # 2. Merge; width/height fold into size; the model picks the model defaults that
    #    apply beneath the user's values.
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for values, srcs in layers:
        values = dict(values)
        if "width" in values or "height" in values:
            _, w, h = parse_size(values.get("size", raw.get("size", "square")))
            values["size"] = f"{values.pop('width', w)}x{values.pop('height', h)}"
            srcs = {**srcs, "size": srcs.get("width", srcs.get("height", "call"))}
        raw.update(values)
        sources.update({k: srcs.get(k, "call") for k in values})
    model = normalize_model(raw.get("model", ""))
    for key, val in _model_defaults(model).items():
        if key in FIELDS and sources.get(key) == "defaults":
            raw[key], sources[key] = val, f"model:{model}"

    # 3. Coerce and validate.
    values = _coerce(raw, model)
    if not values.get("enhance_model"):
        values["enhance_model"] = defaults()["settings"]["enhance_model"]
    s = Settings(**values)
    s.sources = {k: sources.get(k, "defaults") for k in FIELDS}
    s.sources["width"] = s.sources["height"] = s.sources["size"]
    return s


def validate(s: Settings) -> Settings:
    """Re-check a Settings built or edited by hand; returns a fresh validated copy."""
    return resolve(base=s)


def require_prompt(prompt: str, field_name: str = "prompt") -> str:
    if prompt is None or not str(prompt).strip():
        raise FluxnbError(f"{field_name} {prompt!r}: the prompt is empty", field=field_name, value=prompt,
                          fix='give a prompt, e.g. fluxnb generate "a lighthouse at dusk"')
    return str(prompt)


def draw_seed() -> int:
    return random.SystemRandom().randrange(0, defaults()["limits"]["seed"][1] + 1)



def describe(s: Settings) -> list[tuple[str, Any, str]]:
    """(name, value, source) for every setting, for `fluxnb config`."""
    return [(name, getattr(s, name), s.sources.get(name, "")) for name in FIELDS]
