"""Settings: one dataclass, one resolution order, one `validate`.

Each setting's type, choices, presets, flags and help are in the settings table
(`schema.TABLE`); its values are read by `schema.coerce`.

Precedence, lowest first: `defaults.yaml` < the model's own defaults < `FLUXNB_*`
environment variables (and the ignored `config.env`) < a params file < call arguments.
Every resolved value remembers where it came from (`Settings.sources`), which
`fluxnb config` prints.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FluxnbError
from .environment import config_env_path, on_pod, read_env_file, workspace
from .inputs import condition
from .loras import check_unique, prompt_tags
from .loras import parse as parse_lora
from .schema import ALIASES, CHOICES, coerce  # noqa: F401 - ALIASES, CHOICES: the table's (schema.TABLE)
from .values import (DEFAULTS_FILE, defaults, folder_text, model_defaults, normalize_model, parse_size,  # noqa: F401
                     render_size)


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
    fuse_qkv: bool = False
    attention_backend: str = "default"
    compile_mode: str = "default"      # "default" when nothing is compiled
    compile_vae: bool = False
    compile_cache: bool = False        # False when nothing is compiled


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
    fuse_qkv: bool = False
    attention_backend: str = "default"
    compile_mode: str = "default"
    compile_vae: bool = False
    compile_cache: bool = True
    device: str = "auto"
    max_sequence_length: int = 512
    enhance_model: str = ""
    enhance_cache: bool = True
    enhance_fallback: str = "none"
    vae_tiling: str = "auto"
    init_image: str = ""          # image inputs (config/inputs.py): img2img, inpaint, outpaint, Kontext edit
    strength: float = 0.75
    mask: str = ""
    mask_blur: int = 4
    pad: str = ""
    kontext_resize: str = "preferred"
    loras: list = field(default_factory=list)  # LoRA adapters (config/loras.py): "SOURCE:WEIGHT" specs
    sources: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def load(self) -> LoadSettings:
        """The load settings; the compile mode and cache count only when something is compiled
        (so they do not reload a pipeline that compiles nothing)."""
        compiles = self.compile or self.compile_vae
        return LoadSettings(self.model, self.offload, self.precision, self.compile, self.device, self.fuse_qkv,
                            self.attention_backend, self.compile_mode if compiles else "default", self.compile_vae,
                            self.compile_cache and compiles)

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
CELL_CAP = 100  # sweeps and grids: more cells than this need yes=True (--yes)
CELL_MAX = 10_000  # and more than this are never made, even with yes (a day of images; bounded memory)


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
    for key, val in model_defaults(model).items():
        if key in FIELDS and sources.get(key) == "defaults":
            raw[key], sources[key] = val, f"model:{model}"

    # 3. Coerce and validate.
    values = {name: coerce(name, value, model) for name, value in raw.items()}
    check_unique([parse_lora(x) for x in values.get("loras", ())] + prompt_tags(values.get("prompt", "")))
    condition(values, sources, coerce("size", model_defaults(model).get("size", defaults()["settings"]["size"])))
    values["width"], values["height"] = parse_size(values["size"])[1:]
    if not values.get("enhance_model"):
        values["enhance_model"] = defaults()["settings"]["enhance_model"]
    s = Settings(**values)
    s.sources = {k: sources.get(k, "defaults") for k in FIELDS}
    s.sources["width"] = s.sources["height"] = s.sources["size"]
    return s


def validate(s: Settings) -> Settings:
    """Re-check a Settings built or edited by hand; returns a fresh validated copy."""
    return resolve(base=s)


def check_output_dir(folder: str | os.PathLike, field_name: str = "output_dir") -> Path:
    """Refuse an output folder that cannot be used, before anything loads or is made: an
    empty name, a file where the folder (or one above it) should be, or a folder this user
    may not write in (or create). Creates nothing; returns the folder as a Path."""
    text = str(folder)
    if not text.strip():
        folder_text(field_name, text)  # refuses it, with the fix
    p = Path(os.path.expanduser(text))
    fix = "choose a folder you can write in with --out (output_dir)"
    existing = next((q for q in (p, *p.parents) if os.path.lexists(q)), Path("."))
    if not existing.is_dir():
        where = "is a file" if existing == p else f"cannot be made: {str(existing)!r} is a file"
        raise FluxnbError(f"{field_name} {text!r}: {where}, not a folder", field=field_name, value=text, fix=fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == p else f" (it would be made in {str(existing)!r})"
        raise FluxnbError(f"{field_name} {text!r}: not writable{where}", field=field_name, value=text, fix=fix)
    return p


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
