"""Loading FLUX once per process: resolving a model, dtype, device and memory policy.

`get_pipeline(load_settings)` returns the loaded pipeline, loading it only when the load
settings (model, offload, precision, compile, device and the speed levers: fuse_qkv,
attention_backend, compile_mode, compile_vae, compile_cache) differ from the one in memory;
a notebook pays the load once, not per image.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FluxnbError, RuntimeFailure
from .hub import display_name, resolve_model
from .runtime import dtype_kwarg, quiet_libraries
from ..config.settings import LoadSettings, defaults, normalize_model

log = logging.getLogger(__name__)



@dataclass
class Loaded:
    """A loaded pipeline and how it was loaded."""

    pipe: object
    key: LoadSettings
    model: str            # what the user named (hub id, folder, tiny)
    model_name: str       # short display name: FLUX.1-dev, tiny, the folder's name
    path: str             # the local folder it was loaded from
    device: str
    dtype: str
    offload: str          # the policy in effect (auto resolved)
    precision: str
    test_model: bool
    load_s: float
    notes: list = field(default_factory=list)
    embeds: dict = field(default_factory=dict)  # (clip_prompt, t5_prompt, max_sequence_length) -> tensors
    compiled_sizes: set = field(default_factory=set)  # (w, h): blocks compiled; ("vae", w, h): the VAE decoder
    pipes: dict = field(default_factory=dict)  # img2img / inpaint pipelines made of `pipe`'s components, by class
    loras: dict = field(default_factory=dict)  # LoRA adapters loaded and active (model/loras.py)


_CURRENT: Loaded | None = None
PIPELINE_CLASSES = ("FluxPipeline", "FluxKontextPipeline", "FluxFillPipeline")  # by model_index.json's _class_name


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FluxnbError("device 'cuda': no CUDA GPU is visible", field="device", value=device,
                          fix="use --device auto or cpu")
    return device


def pick_dtype(device: str):
    """bf16 on accelerators (never fp16: FLUX gives black images), float32 on the CPU."""
    import torch

    return torch.float32 if device == "cpu" else torch.bfloat16


def free_vram_gib() -> float | None:
    """Free VRAM in GiB on the current CUDA device, within any per-process cap
    (`torch.cuda.set_per_process_memory_fraction`); None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda: 1.0)()
    if fraction < 1.0:
        free = min(free, fraction * total - torch.cuda.memory_reserved())
    return max(free, 0) / 2**30


def offload_table() -> list[dict]:
    """The `offload_auto` rows of defaults.yaml, fastest first."""
    return sorted(defaults()["offload_auto"], key=lambda row: row["s_per_image"])


def pick_offload(offload: str, device: str, precision: str, free_gib: float | None = None) -> tuple[str, str, str]:
    """(offload, precision, note). `auto` on CUDA takes the fastest row of the measured
    table (defaults.yaml `offload_auto`) whose peak VRAM plus a margin fits the free VRAM.
    With precision bf16 it may choose an fp8 row (the note says so). With fp8 or fp8-fast
    the fp8 rows come first, then the others (fp8 weights need less than their bf16
    figures), keeping the precision asked for. On the CPU every policy is `none`; on MPS
    (unified memory) `auto` is `none`."""
    if device == "cpu":
        note = "" if offload in ("auto", "none") else f"offload {offload} needs a GPU: using none on the CPU"
        return "none", precision, note
    if offload != "auto":
        return offload, precision, ""
    free = free_vram_gib() if free_gib is None else free_gib
    if free is None:  # mps: unified memory, nothing to offload to
        return "none", precision, ""
    margin = defaults().get("offload_auto_margin_gib", 1.0)
    rows = offload_table()
    if precision != "bf16":
        rows = [r for r in rows if r["precision"] == "fp8"] + [r for r in rows if r["precision"] != "fp8"]
    for row in rows:
        if row["peak_gib"] + margin <= free:
            chosen = precision if precision != "bf16" else row["precision"]
            why = " (bf16 does not fit: fp8 weights instead)" if chosen != precision else ""
            return row["offload"], chosen, (f"offload auto: {free:.1f} GiB free VRAM -> offload {row['offload']}, "
                                            f"precision {chosen}{why}")
    return "sequential", precision, (f"offload auto: {free:.1f} GiB free VRAM -> offload sequential (even that may "
                                     "not fit: close other GPU work)")


# ---------------------------------------------------------------------------------------
# Loading once
# ---------------------------------------------------------------------------------------

def current() -> Loaded | None:
    return _CURRENT


def unload() -> None:
    """Drop the loaded pipeline and give its memory back."""
    global _CURRENT
    if _CURRENT is None:
        return
    _CURRENT = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def get_pipeline(key: LoadSettings) -> Loaded:
    """The pipeline for `key`, loaded once per process and reused by every later call."""
    global _CURRENT
    if _CURRENT is not None and _CURRENT.key == key:
        return _CURRENT
    unload()
    _CURRENT = load(key)
    return _CURRENT


def load(key: LoadSettings) -> Loaded:
    """Load a pipeline (no caching: use get_pipeline)."""
    # 1. Resolve the device and check the options for it (before a download or reading the
    #    weights), then the model, dtype and memory policy.
    t0 = time.perf_counter()
    quiet_libraries()
    import torch

    device = pick_device(key.device)
    check_options(key.precision, device, key.attention_backend, key.compile_mode)
    path = resolve_model(key.model)

    from .testmodel import is_test_model

    dtype = pick_dtype(device)
    offload, precision, note = pick_offload(key.offload, device, key.precision)
    notes = [note] if note else []
    test_model = is_test_model(path)
    if test_model:
        notes.append(f"model {display_name(normalize_model(key.model))}: a random-weight test model; its images are noise")

    # 2. Load the components.
    log.info("loading %s (%s, %s, offload %s)", normalize_model(key.model), device, str(dtype).replace("torch.", ""),
             offload)
    try:
        pipe = pipeline_class(path).from_pretrained(path, **dtype_kwarg(dtype))
    except (OSError, ValueError) as e:
        raise FluxnbError(f"model {key.model!r}: could not load the pipeline from {path}: {e}", field="model",
                          value=key.model, fix="rebuild or re-download the model folder") from None
    pipe.set_progress_bar_config(disable=True)

    # 3. Precision, memory policy and compilation.
    try:
        configure(pipe, offload, precision, key.compile, device, fuse_qkv=key.fuse_qkv,
                  attention_backend=key.attention_backend, compile_mode=key.compile_mode,
                  compile_vae=key.compile_vae, compile_cache=key.compile_cache)
    except torch.OutOfMemoryError:
        raise oom_error(key, offload) from None
    for n in notes:
        log.info(n)
    load_s = time.perf_counter() - t0
    log.info("loaded in %.1f s", load_s)
    return Loaded(pipe=pipe, key=key, model=normalize_model(key.model), model_name=display_name(normalize_model(key.model)),
                  path=path, device=device, dtype=str(dtype).replace("torch.", ""), offload=offload,
                  precision=precision, test_model=test_model, load_s=load_s, notes=notes)


def pipeline_class(path: str):
    """The diffusers class a model folder's model_index.json names, among FLUX's text-to-image,
    Kontext (editing) and Fill (inpainting) pipelines; FluxPipeline for any other."""
    import json

    import diffusers

    try:
        name = json.loads((Path(path) / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        name = None
    return getattr(diffusers, name if name in PIPELINE_CLASSES else "FluxPipeline")


def configure(pipe, offload: str, precision: str, compile: bool, device: str, *, fuse_qkv: bool = False,
              attention_backend: str = "default", compile_mode: str = "default", compile_vae: bool = False,
              compile_cache=None) -> None:
    """Precision first (fp8 weights then move to the GPU at their smaller size), then the
    memory policy, then compilation (which must see the final modules). load() and
    benchmarks/bench_gpu.py both go through here. The keyword options are perf_levers'
    opt-in speed levers (the settings of the same names): fused QKV and the attention
    backend come before precision (the fused projection is what gets quantized),
    channels-last VAE weights before the memory policy, the compile cache folder and the
    VAE decoder's compile with the transformer's. Every option is checked first: a refused
    one leaves the pipeline as it was. `compile_cache`: True, fluxnb's folder; False,
    torch's own; None, as it is."""
    from . import perf_levers as levers
    from .perf import apply_compile, apply_precision

    check_options(precision, device, attention_backend, compile_mode)
    if fuse_qkv:
        levers.fuse_qkv(pipe)
    levers.apply_attention_backend(pipe, attention_backend, device)
    if compile_vae:
        levers.channels_last_vae(pipe)
    apply_precision(pipe, precision, device, resident=offload in ("none", "encoders"))
    apply_offload(pipe, offload, device)
    if compile or compile_vae:
        levers.use_compile_cache(compile_cache)
    if compile:
        apply_compile(pipe, mode=compile_mode)
    if compile_vae:
        levers.apply_compile_vae(pipe, mode=compile_mode)


def check_options(precision: str, device: str, attention_backend: str = "default",
                  compile_mode: str = "default") -> None:
    """A FluxnbError for a precision, attention backend or compile mode that cannot run on
    `device` (fp8-fast without torchao or an Ada/Hopper GPU, a backend this diffusers does
    not know, a GPU-only one on the CPU, one whose package is missing, an unknown mode)."""
    from .perf import check_precision, compile_kwargs
    from .perf_levers import check_attention_backend

    compile_kwargs(compile_mode, fullgraph=False)
    check_attention_backend(attention_backend, device)
    check_precision(precision)


def apply_offload(pipe, offload: str, device: str) -> None:
    """Put the pipeline's components where `offload` says:
    none: all on the device. encoders: the transformer and VAE on the device, the text
    encoders streamed from the CPU layer by layer when a new prompt is encoded (diffusers'
    group offloading, so the transformer never moves). model: each component moves to the
    device while it runs. group: layers streamed during every step. sequential: one layer
    at a time (slowest, least memory)."""
    import torch

    stream = str(device).startswith("cuda")
    if offload == "none":
        pipe.to(device)
    elif offload == "encoders":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=stream,
                                  exclude_modules=["transformer", "vae"])
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=stream)
    else:
        raise FluxnbError(f"offload {offload!r}: unknown", field="offload", value=offload,
                          fix="use auto, none, encoders, model, group or sequential")


def oom_error(key: LoadSettings, offload: str) -> RuntimeFailure:
    """CUDA out of memory, with the offload setting that would fit."""
    order = ["none", "encoders", "model", "group", "sequential"]
    nxt = order[min(order.index(offload) + 1, len(order) - 1)] if offload in order else "model"
    free = free_vram_gib()
    where = f" ({free:.1f} GiB free now)" if free is not None else ""
    return RuntimeFailure(f"CUDA out of memory with offload {offload}{where}", field="offload", value=offload,
                          fix=f"use --offload {nxt} (or --offload auto), a smaller size, or close other GPU work",
                          status="oom")
