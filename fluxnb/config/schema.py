"""The one table of settings: for each, its type, choices, presets, flags and aliases, help,
what a params file expects and the batch notebook's comment.

Everything that lists settings is driven from `TABLE`: the `fluxnb` flags, their choices and
help (generate, config, sweep), the validation in `settings.resolve`, the batch params keys
and their descriptions, the batch notebook's parameters cell, and the widgets' options.
A new setting is one `Setting(...)` here, a field of `settings.Settings` of the same name and
its default under `settings:` in defaults.yaml (tests/test_schema.py checks they agree).

Texts may hold `{placeholders}`, filled from the table and defaults.yaml by `fill`:
`{choices}` (a, b or c), `{choice_list}` (a, b, c), `{range}` (lo-hi), `{lo}`, `{hi}`,
`{default}`, `{presets}` (the preset names), `{preset_values}` (fast (4), ...),
`{preset_flags}` (--fast (4), ...), `{multiple}` (16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import FluxnbError
from .inputs import input_path, pad_spec, strength_value
from .loras import read_loras
from .values import (READERS, backend_name, defaults, folder_text, in_range, model_defaults, model_name, parse_wxh,
                     preset_or, prompt_text, render_size, size_name)

# The --help sections, in order.
GROUPS = ("quality (steps)", "size", "seed", "guidance", "image input", "LoRA adapters", "output",
          "model and memory", "prompt enhancement")


@dataclass(frozen=True)
class Setting:
    """One setting. `name` is its Settings field, params key, widget name, run-log column and
    metadata key; `--name-with-dashes` is usually its flag."""

    name: str
    type: type                      # bool, int, float, str (list: a repeatable flag)
    help: str = ""                  # the flag's help
    flags: tuple = ()               # option strings of the flag that takes a value; () = no such flag
    metavar: str | None = None
    choices: tuple = ()             # the allowed values (validation, argparse choices, widget options)
    spellings: tuple = ()           # (other spelling, choice) pairs also accepted: ("jpeg", "jpg")
    presets: bool = False           # presets of this name in defaults.yaml; each is a flag too (not `default`)
    preset_help: str = "{value}"    # the help of each preset flag
    shortcuts: tuple = ()           # (flag, value, help): flags that set one value (--cpu-offload = model)
    aliases: tuple = ()             # other keyword names in Python and params (format= for image_format)
    group: str = ""                 # the --help section (GROUPS)
    fix: str = ""                   # the fix when a value is out of range
    none_words: tuple = ()          # texts that mean "no value" (None): seed random
    read: Callable | None = None    # a reader of its own, (name, value) -> value, instead of the type's
    param: str = ""                 # what a params file expects, for batch's messages ("": from type and range)
    note: str = ""                  # the batch notebook's comment on the key ("": what is expected, the default)
    batch: bool = True              # a key of batch params files

    @property
    def all_flags(self) -> list[str]:
        """Every flag of the setting, as `fluxnb generate --help` lists them: presets, its own, shortcuts."""
        return [*(f"--{p}" for p, _ in preset_flags(self)), *self.flags, *(s[0] for s in self.shortcuts)]


def switch(flag: str, on_help: str, off_help: str = "") -> tuple:
    """A bool setting's shortcuts: `--flag` (true) and `--no-flag` (false)."""
    return ((flag, True, on_help), ("--no-" + flag[2:], False, off_help))


TABLE = (
    Setting("prompt", str, read=prompt_text, batch=False),
    Setting("seed", int, "{lo} to {hi}", ("--seed",), "N", group="seed", none_words=("", "random", "none"),
            shortcuts=(("--random-seed", "random", "draw a seed and record it (the default)"),),
            fix="use --random-seed or {lo}..{hi}", batch=False),
    Setting("steps", int, "{range}, or a preset name", ("--steps",), "N", presets=True, preset_help="{value} steps",
            aliases=("quality",), group="quality (steps)", fix="use {preset_flags} or --steps N",
            param="a number of steps ({range}) or {presets}",
            note="{range}, or {preset_values}; None: the model's default"),
    Setting("size", str, "multiples of {multiple}, or a preset name", ("--size", "--custom"), "WxH", presets=True,
            preset_help="{value}{cropped}", group="size", read=size_name,
            param="WxH (multiples of {multiple}) or {presets}",
            note="WxH (multiples of {multiple}), or {presets}; None: the model's default"),
    Setting("guidance", float, "{range} (default {default}), or a preset name", ("--guidance",), "X", presets=True,
            aliases=("cfg",), group="guidance", fix="use {preset_flags} or --guidance X within {range}",
            param="a number ({range}) or {presets}", note="{range}, or {preset_values}"),
    Setting("model", str, "hub id (default {default}), a local folder, or tiny", ("--model",), "ID|DIR|tiny",
            group="model and memory", read=model_name, param="a hub id, a local folder or tiny",
            note="a hub id, a local folder or tiny; None: $FLUXNB_MODEL or config.env, else FLUX.1-dev"),
    Setting("image_format", str, "{choices} (default {default}; jpeg is jpg)", ("--format", "--image-format"),
            choices=("jpg", "png"), spellings=(("jpeg", "jpg"),), aliases=("format",), group="output"),
    Setting("jpeg_quality", int, "{range} (default {default})", ("--jpeg-quality",), "N", group="output",
            note="{range} (default {default})"),
    Setting("enhance", str, "rewrite the prompt first: local (offline) or claude (ANTHROPIC_API_KEY); default "
            "{default}", ("--enhance",), choices=("none", "local", "claude"), group="prompt enhancement",
            shortcuts=(("--enhance-ai", "claude", "= --enhance claude"),),
            param="{choice_list}, or a list of them to compare",
            note="{choice_list}, or a list of them to compare (each prompt with each); default {default}"),
    Setting("offload", str, "auto (default): the fastest that fits the free VRAM; encoders: text encoders on the CPU",
            ("--offload",), choices=("auto", "none", "encoders", "model", "group", "sequential"),
            shortcuts=(("--cpu-offload", "model", "= --offload model"), ("--no-cpu-offload", "none", "= --offload none")),
            group="model and memory", note="{choices} (default auto: by free VRAM)"),
    Setting("output_dir", str, "default outputs/ or $FLUXNB_OUTPUT_DIR (/workspace/outputs on a pod)",
            ("--out", "--output-dir"), "DIR", aliases=("out",), group="output", param="a folder", read=folder_text,
            note="images, runlog.jsonl, the contact sheet and this report; default outputs/ or $FLUXNB_OUTPUT_DIR"),
    Setting("count", int, "{range} images (seeds seed, seed+1, ...)", ("-n", "--count"), "N", group="output",
            batch=False),
    Setting("precision", str, "fp8: transformer weights stored in float8; fp8-fast: float8 matmuls (torchao, "
            "RTX 40xx/H100)", ("--precision",), choices=("bf16", "fp8", "fp8-fast"), group="model and memory"),
    Setting("device", str, "{choices} (default {default}: CUDA, else MPS, else the CPU)", ("--device",),
            choices=("auto", "cuda", "cpu", "mps"), group="model and memory"),
    Setting("compile", bool, group="model and memory",
            shortcuts=(("--compile", True, "torch.compile the transformer blocks (the first image at each size "
                                            "compiles)"), ("--no-compile", False, "")),
            note="torch.compile the transformer (default false)"),
    # The speed levers (model/perf_levers.py): load settings, opt-in, each a row of benchmarks/bench_gpu.py.
    Setting("fuse_qkv", bool, group="model and memory", note="true: one fused q/k/v matmul per attention (default "
            "false; no LoRAs on a fused model)", shortcuts=switch("--fuse-qkv", "fuse each attention's q/k/v "
            "projections into one matmul (before fp8; LoRAs cannot be loaded onto a fused model)")),
    Setting("attention_backend", str, "diffusers' attention backend: default (PyTorch's SDPA), _native_cudnn, "
            "flex, flash (flash-attn), ...; on the CPU only default, native, _native_math or flex",
            ("--attention-backend",), "NAME", group="model and memory", read=backend_name,
            param="default or a diffusers attention backend name",
            note="default, or a diffusers attention backend (_native_cudnn, flex, ...; the CPU: native, _native_math, "
                 "flex)"),
    Setting("compile_mode", str, "torch.compile's mode with --compile / --compile-vae: {choices}",
            ("--compile-mode",), "MODE", choices=("default", "max-autotune-no-cudagraphs", "max-autotune",
                                                  "reduce-overhead"), group="model and memory",
            note="{choice_list} (torch.compile's mode with compile or compile_vae; default: torch's own)"),
    Setting("compile_vae", bool, group="model and memory", note="true: channels-last VAE with its decoder compiled "
            "(default false)", shortcuts=switch("--compile-vae", "channels-last VAE, its decoder compiled (the first "
                                                "image at each size compiles)")),
    Setting("compile_cache", bool, group="model and memory",
            shortcuts=switch("--compile-cache", "keep compiled kernels under fluxnb's cache folder (on a pod: the "
                             "volume) for the next process (the default)",
                             "leave torch's compile cache where torch keeps it (/tmp)"),
            note="true: compiled kernels kept under fluxnb's cache folder, on a pod the volume (default true; with "
                 "compile or compile_vae)"),
    Setting("max_sequence_length", int, "T5 tokens, {range} (512 dev)", ("--max-sequence-length",), "N",
            group="model and memory", note="T5 tokens, {range} (the model's default)"),
    Setting("vae_tiling", str, "{choices} (default {default}: on above 2 MP)", ("--vae-tiling",),
            choices=("auto", "on", "off"), group="model and memory", note="{choices} (default auto: on above 2 MP)"),
    Setting("enhance_model", str, "Claude model id", ("--enhance-model",), "ID", group="prompt enhancement",
            param="a Claude model id", note="the Claude model for enhance claude"),
    Setting("enhance_fallback", str, "on a Claude failure, use the local enhancer (recorded) instead of stopping",
            ("--enhance-fallback",), choices=("none", "local"), group="prompt enhancement",
            note="{choices}: what to do when Claude fails (default none: the item fails)"),
    Setting("enhance_cache", bool, group="prompt enhancement", batch=False,
            shortcuts=(("--no-enhance-cache", False, "ask the enhancer again even when the answer is cached"),)),
    # Image inputs (config/inputs.py): img2img, inpainting, outpainting, Kontext editing.
    Setting("init_image", str, "start from this image (img2img; the image to edit with a Kontext model)",
            ("--init-image",), "PATH", group="image input", read=input_path, param="a path to an image (relative to "
            "the params file)", note="the image to start from (a path relative to the params file); None: none"),
    Setting("strength", float, "how far from the init image: above 0, at most 1 (default {default})", ("--strength",),
            "S", group="image input", read=strength_value, param="a number above 0, at most 1",
            note="img2img and inpaint: above 0, at most 1 (default {default}; 1 repaints everything)"),
    Setting("mask", str, "inpaint: white pixels are repainted (so are an RGBA init image's transparent ones)",
            ("--mask",), "PATH", group="image input", read=input_path, param="a path to a mask image (relative to "
            "the params file)", note="inpaint: white pixels are repainted (a path relative to the params file); None: none"),
    Setting("mask_blur", int, "feather the inpainted edge by N pixels, inside the mask (default {default})",
            ("--mask-blur",), "N", group="image input", note="inpaint: feathering inside the mask, {range} px "
            "(default {default})"),
    Setting("pad", str, "outpaint: grow the canvas by LEFT,TOP,RIGHT,BOTTOM pixels (or N on every side)",
            ("--pad",), "L,T,R,B", group="image input", read=pad_spec,
            param='LEFT,TOP,RIGHT,BOTTOM pixels, quoted (e.g. "0,0,256,0"), or one number for every side',
            note='outpaint: "LEFT,TOP,RIGHT,BOTTOM" pixels added and repainted; None: none'),
    Setting("kontext_resize", str, "Kontext models: the input resized to the nearest of Kontext's trained sizes "
            "(preferred, the default) or kept at the output's size", ("--kontext-resize",),
            choices=("preferred", "keep"), group="image input", note="{choices}: Kontext models only (default "
            "preferred)"),
    # LoRA adapters (config/loras.py, model/loras.py): files, names in the LoRA folder, hub ids; weights.
    Setting("loras", list, "a LoRA: PATH.safetensors, a NAME in the LoRA folder ($FLUXNB_LORA_DIR) or a hub id "
            "owner/repo/file.safetensors, with :WEIGHT (default 1; -2 to 2); repeat for more",
            ("--lora", "--loras"), "SPEC[:WEIGHT]", group="LoRA adapters", read=read_loras, aliases=("lora",),
            param='a list of "PATH[:WEIGHT]" specs or {{path, weight}} maps (paths relative to the params file)',
            note='LoRA adapters: ["style.safetensors:0.8", ...] or [{{path: ..., weight: ...}}]; None: none'),
)
SETTINGS = {s.name: s for s in TABLE}
CHOICES = {s.name: s.choices for s in TABLE if s.choices}
ALIASES = {alias: s.name for s in TABLE for alias in s.aliases}


# ---------------------------------------------------------------------------------------
# Facts from defaults.yaml: presets, ranges, defaults
# ---------------------------------------------------------------------------------------

def presets(s: Setting) -> dict:
    """{preset name: value} of a setting ({} without presets)."""
    return dict(defaults()["presets"].get(s.name, {})) if s.presets else {}


def preset_flags(s: Setting) -> list[tuple[str, Any]]:
    """(preset name, value) of the presets that are flags (`--fast`); `default` is not one."""
    return [(name, value) for name, value in presets(s).items() if name != "default"]


def limits(s: Setting, model: str = "") -> tuple | None:
    """(lo, hi) of a number setting: a model's own `NAME_range`, else `limits: NAME` in defaults.yaml."""
    own = model_defaults(model).get(f"{s.name}_range") if model else None
    lim = own or defaults()["limits"].get(s.name)
    return tuple(lim) if isinstance(lim, list) and len(lim) == 2 else None


def default(s: Setting):
    """The default in defaults.yaml, a preset name read as its value (balanced -> 20)."""
    value = defaults()["settings"].get(s.name)
    return presets(s).get(value, value) if isinstance(value, str) else value


def or_list(values) -> str:
    """`a, b or c`."""
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def fill(s: Setting, text: str, model: str = "", **more) -> str:
    """`text` with its {placeholders} filled in for setting `s` (see the module's notes)."""
    lo, hi = limits(s, model) or (None, None)
    ps = presets(s)
    flags = [f"--{n} ({v})" if n != "default" else f"the default {v}" for n, v in ps.items()]
    facts = {"choices": or_list(s.choices) if s.choices else "", "choice_list": ", ".join(s.choices),
             "range": f"{lo}-{hi}", "lo": lo, "hi": hi, "default": default(s), "presets": ", ".join(ps),
             "preset_values": ", ".join(f"{n} ({v})" for n, v in ps.items()), "preset_flags": ", ".join(flags),
             "multiple": defaults()["limits"]["multiple"], **more}
    return text.format(**facts)


def preset_help(s: Setting, name: str, value) -> str:
    """The help of a preset flag: `20 steps (default)`, `1920x1080, rendered at 1920x1088 and cropped`."""
    wh = parse_wxh(value) if isinstance(value, str) else None
    cropped = ""
    if wh and render_size(*wh) != wh:
        cropped = ", rendered at {}x{} and cropped".format(*render_size(*wh))
    text = fill(s, s.preset_help, value=value, cropped=cropped)
    return text + (" (default)" if defaults()["settings"].get(s.name) == name else "")


def expected(s: Setting) -> str:
    """What a params file expects for `s`: its `param`, else said from its choices, type and range."""
    if s.param:
        return fill(s, s.param)
    if s.choices:
        return or_list(s.choices)
    if s.type is bool:
        return "true or false"
    kind = {int: "a whole number", float: "a number", str: "text", list: "a list"}[s.type]
    return f"{kind} {fill(s, '{range}')}" if limits(s) else kind


def note(s: Setting) -> str:
    """The batch notebook's comment on `s`: its `note`, else what is expected and the default."""
    if s.note:
        return fill(s, s.note)
    return expected(s) + (f" (default {default(s)})" if default(s) not in (None, "") else "")


def param_types(s: Setting) -> tuple:
    """The YAML types a params file may give for `s` (a preset name is text)."""
    types = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list, str)}[s.type]
    return types + (str,) if s.presets and str not in types else types


# ---------------------------------------------------------------------------------------
# Reading a value
# ---------------------------------------------------------------------------------------

def coerce(name: str, value, model: str = ""):
    """One setting's value read and checked by its table entry: its own reader, or its type
    (with presets, choices and spellings), then its range (the model's own range first)."""
    s = SETTINGS[name]
    if s.read is not None:
        return s.read(name, value)
    if s.none_words and (value is None or (isinstance(value, str) and value.strip().lower() in s.none_words)):
        return None
    conv = READERS[s.type]
    v = preset_or(name, name, value, conv) if s.presets else conv(name, value)
    if s.type is str:
        v = v.strip()
    if s.choices:
        v = dict(s.spellings).get(v.lower(), v.lower())
        if v not in s.choices:
            raise FluxnbError(f"{name} {value!r}: unknown value", field=name, value=value,
                              fix=f"use one of {', '.join(s.choices)}")
    lim = limits(s, model)
    if lim is not None:
        v = in_range(name, v, *lim, fix=fill(s, s.fix, model) if s.fix else "")
    return v
