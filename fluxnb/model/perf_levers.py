"""Opt-in speed levers applied at load time, each measured as its own row by
benchmarks/bench_gpu.py (the ones flux-fast reached 2.97 s per FLUX.1-dev image on an H100 with).
Each is a load setting of the same name (config/schema.py: `--fuse-qkv`, `--attention-backend`,
`--compile-mode`, `--compile-vae`, `--compile-cache`), passed by pipeline.load to configure:

- `fuse_qkv`: each attention's query, key and value projections as one Linear (one matmul
  instead of three), the transformer's and the VAE's. Applied before quantizing, so the
  fused Linear is what fp8 / fp8-fast store. The separate projections are dropped from the
  transformer (FLUX.1-dev: ~2.2B parameters, ~4 GiB in bf16, would otherwise stay twice).
  Refused once LoRA adapters are loaded (their deltas sit on the separate projections).
- `attention_backend`: diffusers' attention dispatcher (`set_attention_backend`): `default`
  (PyTorch's SDPA choosing its kernel), `_native_cudnn` (cuDNN's fused attention on the GPU),
  `flex` (FlexAttention; fast only when compiled), `flash` / `_flash_3` (needs flash-attn) ...
- `compile_vae`: the VAE's weights in channels-last layout and its decoder compiled (the
  decode at 1024x1024 is a few hundred ms of convolutions).
- `compile_cache`: a persistent inductor (and Triton) cache folder, by default under
  fluxnb's cache folder (on a pod /workspace/.cache/fluxnb/inductor, on the volume), so a
  pod compiles once and a restarted kernel reuses the compiled kernels.

fp8 layerwise casting (`precision fp8`) stays a memory option: its hooks around every
Linear keep the compiled blocks from being one graph. torchao's float8 (`fp8-fast`) is the
fast path.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ..config.environment import cache_dir
from ..errors import FluxnbError
from .perf import can_fullgraph, compile_kwargs, compiled_blocks

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "default"
# Backends that also run on the CPU (every other one needs a CUDA GPU).
CPU_BACKENDS = ("native", "_native_math", "flex")
# The projections fusing replaces, by the fused Linear that holds their weights.
FUSED = {"to_qkv": ("to_q", "to_k", "to_v"), "to_added_qkv": ("add_q_proj", "add_k_proj", "add_v_proj")}


# ---------------------------------------------------------------------------------------
# Fused QKV projections
# ---------------------------------------------------------------------------------------

def fuse_qkv(pipe) -> int:
    """Fuse the q/k/v projections of the transformer's and the VAE's attention layers;
    returns how many transformer attention layers were fused. Call before quantizing."""
    import torch

    # 1. Refuse over LoRA adapters: their low-rank deltas wrap the separate projections.
    transformer = pipe.transformer
    if any(hasattr(m, "base_layer") for m in transformer.modules()):
        raise FluxnbError("fuse_qkv: LoRA adapters are loaded on the transformer", field="fuse_qkv", value=True,
                          fix="fuse the QKV projections without LoRAs, or turn fuse_qkv off")
    if not hasattr(transformer, "fuse_qkv_projections"):
        raise FluxnbError("fuse_qkv: this diffusers cannot fuse FLUX's projections", field="fuse_qkv", value=True,
                          fix="upgrade diffusers (0.35 or newer) or turn fuse_qkv off")

    # 2. Fuse (diffusers copies the weights into one Linear per attention).
    with torch.no_grad():
        transformer.fuse_qkv_projections()
        if hasattr(pipe.vae, "fuse_qkv_projections"):
            pipe.vae.fuse_qkv_projections()

    # 3. Drop the separate projections the fused ones replace.
    fused = 0
    for module in transformer.modules():
        if not getattr(module, "fused_projections", False):
            continue
        fused += 1
        for whole, parts in FUSED.items():
            if getattr(module, whole, None) is not None:
                for name in parts:
                    if hasattr(module, name):
                        delattr(module, name)
    log.info("fuse_qkv: %d transformer attention layers fused (and the VAE's)", fused)
    return fused


def is_fused(pipe) -> bool:
    return any(getattr(m, "fused_projections", False) for m in pipe.transformer.modules())


# ---------------------------------------------------------------------------------------
# Attention backend
# ---------------------------------------------------------------------------------------

def attention_backends() -> list[str]:
    """The backend names this diffusers knows (installed or not), `default` first."""
    try:
        from diffusers.models.attention_dispatch import AttentionBackendName
    except ImportError:
        return [DEFAULT_BACKEND]
    return [DEFAULT_BACKEND, *sorted(b.value for b in AttentionBackendName)]


def check_attention_backend(backend: str | None, device: str) -> str:
    """`backend` if this diffusers knows it and it can run on `device`, else a FluxnbError."""
    backend = (backend or DEFAULT_BACKEND).lower()
    known = attention_backends()
    if backend not in known:
        fix = (f"use {DEFAULT_BACKEND} or one of {', '.join(known[1:])}" if len(known) > 1
               else "upgrade diffusers (0.35 or newer has the attention dispatcher) or use default")
        raise FluxnbError(f"attention_backend {backend!r}: unknown", field="attention_backend", value=backend,
                          fix=fix)
    if backend != DEFAULT_BACKEND and not str(device).startswith("cuda") and backend not in CPU_BACKENDS:
        raise FluxnbError(f"attention_backend {backend!r}: needs a CUDA GPU (device is {device})",
                          field="attention_backend", value=backend,
                          fix=f"use {DEFAULT_BACKEND} or one of {', '.join(CPU_BACKENDS)} here")
    missing = backend_missing(backend) if backend != DEFAULT_BACKEND else None
    if missing:
        raise FluxnbError(f"attention_backend {backend!r}: not usable here: {missing}", field="attention_backend",
                          value=backend, fix=f"install what it names, or use {DEFAULT_BACKEND}")
    return backend


def backend_missing(backend: str) -> str | None:
    """What a known backend lacks here (flash-attn, sageattention, kernels, ...), as diffusers
    says it when the backend is set; None when nothing is missing."""
    try:
        from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements
    except ImportError:  # diffusers without the dispatcher (attention_backends() knew only default)
        return None
    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except (RuntimeError, ImportError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def apply_attention_backend(pipe, backend: str | None, device: str) -> str:
    """Route the transformer's attention through `backend` (diffusers' dispatcher);
    `default` changes nothing. Returns the backend in effect."""
    backend = check_attention_backend(backend, device)
    if backend == DEFAULT_BACKEND:
        reset_attention_backend()
        return backend
    try:
        pipe.transformer.set_attention_backend(backend)
    except (RuntimeError, ValueError, ImportError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FluxnbError(f"attention_backend {backend!r}: not usable here: {reason}", field="attention_backend",
                          value=backend, fix=f"install what it names, or use {DEFAULT_BACKEND}") from None
    log.info("attention backend: %s", backend)
    return backend


def attention_backend_in_use(pipe) -> str:
    """The backend the transformer's attention runs through: its processors' own, else
    diffusers' process-wide one (`default` while that is diffusers' default)."""
    for module in pipe.transformer.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            return getattr(backend, "value", str(backend))
    active, default = _global_backends()
    return DEFAULT_BACKEND if active == default else active


def reset_attention_backend() -> None:
    """Put diffusers' process-wide attention backend back to its default. set_attention_backend
    also sets that global, and every pipeline whose layers were given no backend of their
    own follows it (its compiled blocks recompile when it changes)."""
    active, default = _global_backends()
    if active != default:
        from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

        _AttentionBackendRegistry.set_active_backend(AttentionBackendName(default))


def _global_backends() -> tuple:
    """(the active process-wide backend, diffusers' default: DIFFUSERS_ATTN_BACKEND or native)."""
    try:
        from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
        from diffusers.utils.constants import DIFFUSERS_ATTN_BACKEND
    except ImportError:  # diffusers without the dispatcher
        return None, None
    active = _AttentionBackendRegistry.get_active_backend()[0]
    return getattr(active, "value", active), AttentionBackendName(DIFFUSERS_ATTN_BACKEND).value


# ---------------------------------------------------------------------------------------
# Compiled, channels-last VAE decode
# ---------------------------------------------------------------------------------------

def channels_last_vae(pipe) -> None:
    """The VAE's convolution weights in channels-last layout (before any offload hooks)."""
    import torch

    pipe.vae.to(memory_format=torch.channels_last)


def apply_compile_vae(pipe, *, mode: str | None = None) -> bool:
    """Compile the VAE's decoder (on first use), as one graph unless offload hooks sit
    inside it; channels-last first when not done yet. Returns fullgraph."""
    decoder = pipe.vae.decoder
    if not _channels_last(pipe.vae):
        channels_last_vae(pipe)
    fullgraph = can_fullgraph(decoder)
    decoder.compile(**compile_kwargs(mode, fullgraph=fullgraph))
    log.info("compile: the VAE decoder compiled on first use (channels-last, fullgraph=%s, mode %s)", fullgraph,
             mode or "default")
    return fullgraph


def _channels_last(vae) -> bool:
    import torch

    convs = [m.weight for m in vae.modules() if isinstance(m, torch.nn.Conv2d)]
    return bool(convs) and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


# ---------------------------------------------------------------------------------------
# Persistent inductor cache
# ---------------------------------------------------------------------------------------

def default_compile_cache() -> Path:
    """<fluxnb cache>/inductor: on a pod /workspace/.cache/fluxnb/inductor (the volume)."""

    return cache_dir() / "inductor"


def use_compile_cache(folder: bool | str | os.PathLike | None = True) -> str | None:
    """Keep torch.compile's inductor and Triton caches in `folder` (True: the default
    folder; False: torch's own, under /tmp, lost with the machine: what an earlier call
    changed is put back; None: left as it is). A TORCHINDUCTOR_CACHE_DIR set by the user
    wins over the default folder. Returns the folder fluxnb chose (None: none)."""
    if folder is False:
        _put_back_cache_env()
    if not folder:
        return None
    # 1. Which folder: an explicit one, the user's own variable, or fluxnb's default.
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    torch_default = _torch_default_cache()
    if folder is True and current and os.path.abspath(current) != torch_default:
        return current
    target = (default_compile_cache() if folder is True else Path(folder).expanduser()).resolve()
    target.mkdir(parents=True, exist_ok=True)
    if current and os.path.abspath(current) == str(target):
        return str(target)

    # 2. Point inductor there; Triton follows unless the user placed it elsewhere.
    if "set" not in _SAVED_ENV or current != _SAVED_ENV["set"]:  # what compile_cache off puts back
        _SAVED_ENV["env"] = {"TORCHINDUCTOR_CACHE_DIR": current}
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(target)
    triton = os.environ.get("TRITON_CACHE_DIR")
    old_roots = {p for p in (current and os.path.abspath(current), torch_default) if p}
    if triton and any(os.path.abspath(triton).startswith(root + os.sep) for root in old_roots):
        _SAVED_ENV["env"].setdefault("TRITON_CACHE_DIR", triton)
        del os.environ["TRITON_CACHE_DIR"]

    # 3. Forget paths inductor already memoized in this process.
    _forget_cache_paths()
    _SAVED_ENV["set"] = str(target)
    log.info("compile cache: %s", target)
    return str(target)


_SAVED_ENV: dict = {}   # "env": the cache variables fluxnb changed, as they were; "set": the folder it chose


def _put_back_cache_env() -> None:
    """compile_cache off after a load that had it on: the variables as they were, unless
    something else changed them since."""
    before, chosen = _SAVED_ENV.get("env"), _SAVED_ENV.get("set")
    if before is None or os.environ.get("TORCHINDUCTOR_CACHE_DIR") != chosen:
        return
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _SAVED_ENV.clear()
    _forget_cache_paths()
    log.info("compile cache: torch's own")


def _forget_cache_paths() -> None:
    utils = sys.modules.get("torch._inductor.utils")
    if utils is not None and hasattr(utils, "clear_caches"):
        utils.clear_caches()


def _torch_default_cache() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # older torch
        return ""
    return os.path.abspath(default_cache_dir())


def levers_in_effect(pipe) -> dict:
    """What the loaded pipeline really runs with (read from its modules, not from settings)."""
    blocks = len(compiled_blocks(pipe.transformer))
    vae = getattr(pipe.vae.decoder, "_compiled_call_impl", None) is not None
    return {"fuse_qkv": is_fused(pipe), "attention_backend": attention_backend_in_use(pipe),
            "compiled_blocks": blocks, "compile_vae": vae, "channels_last_vae": _channels_last(pipe.vae),
            "compile_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR") if blocks or vae else None}
