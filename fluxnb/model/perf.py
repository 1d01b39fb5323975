"""Speed and memory options applied at load time: fp8 weights and torch.compile.

Precision (`--precision`):
- `bf16`: bfloat16 weights and compute on a GPU (float32 on the CPU).
- `fp8`: the transformer's weights stored in float8 (e4m3), each layer cast up to bf16
  just before it computes (diffusers' layerwise casting). Any GPU, and the CPU. The
  transformer's 11.9B parameters go from 22.2 GiB to 14.1 GiB: the AdaLN modulation
  linears (3.2B parameters, under `norm*`) stay in bf16, as diffusers keeps them.
- `fp8-fast`: float8 weights *and* float8 matmuls (torchao's dynamic per-row float8
  quantization). The fastest setting with `--compile` (published: 2.97 s per image on an
  H100 at 1024x1024, 28 steps); needs torchao and an Ada or Hopper GPU (RTX 40xx, L4,
  L40, H100: compute capability 8.9+). Transformer: ~11.1 GiB.

`--compile`: regional compilation (each repeated transformer block compiled once, not
the whole graph): the same steady speed as a full compile, for a fraction of the compile
time. The first image at each size pays the compilation; `compile_s` in its run-log
record says how much, apart from `denoise_s`. `mode` (COMPILE_MODES) is torch.compile's:
`max-autotune-no-cudagraphs` autotunes the matmuls (a longer first compile) without CUDA
graphs, which regional compilation cannot use across blocks.

The other opt-in levers (fused QKV, attention backend, compiled VAE decode, a persistent
inductor cache) live in perf_levers.
"""

from __future__ import annotations

import logging
import statistics

from ..config.schema import CHOICES
from ..errors import FluxnbError

log = logging.getLogger(__name__)

PRECISIONS = ("bf16", "fp8", "fp8-fast")
FP8_FAST_FIX = ("use --precision fp8 (float8 storage, any GPU) or bf16; fp8-fast needs `pip install torchao` "
                "and an RTX 40xx / L4 / L40 / H100-class GPU")


def apply_precision(pipe, precision: str, device: str, *, resident: bool = True) -> None:
    """Apply `precision` to the transformer; `resident`: it will live on `device` (so
    fp8-fast can quantize it layer by layer straight onto the GPU)."""
    check_precision(precision)
    if precision == "fp8":
        apply_fp8(pipe, device)
    elif precision == "fp8-fast":
        apply_fp8_fast(pipe, device if resident else None)


def check_precision(precision: str) -> None:
    """A FluxnbError when `precision` is unknown or cannot run here (fp8-fast), before anything changes."""
    if precision not in PRECISIONS:
        raise FluxnbError(f"precision {precision!r}: unknown", field="precision", value=precision,
                          fix=f"use one of {', '.join(PRECISIONS)}")
    problem = fp8_fast_problem() if precision == "fp8-fast" else None
    if problem:
        raise FluxnbError(f"precision fp8-fast: {problem}", field="precision", value="fp8-fast", fix=FP8_FAST_FIX)


def apply_fp8(pipe, device: str) -> None:
    """Store the transformer's weights in float8 (e4m3), computing in bf16 (float32 on the CPU)."""
    import torch

    if device == "cpu":
        log.info("precision fp8 on the CPU: weights stored in float8, computed in float32")
    compute = torch.float32 if device == "cpu" else torch.bfloat16
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)


def fp8_fast_problem() -> str | None:
    """Why fp8-fast cannot run here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return "it needs a CUDA GPU (none is visible)"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return f"it needs compute capability 8.9 or newer (this GPU has {major}.{minor})"
    try:
        import torchao.quantization  # noqa: F401
    except ImportError:
        return "torchao is not installed"
    return None


def apply_fp8_fast(pipe, device: str | None) -> None:
    """float8 weights and activations with float8 matmuls (torchao, per-row scales)."""
    check_precision("fp8-fast")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(pipe.transformer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), device=device)


COMPILE_MODES = CHOICES["compile_mode"]  # the compile_mode setting's (config/schema.py)


def compile_kwargs(mode: str | None, *, fullgraph: bool) -> dict:
    """torch.compile's keyword arguments for `mode` (None: default), checked."""
    mode = mode or "default"
    if mode not in COMPILE_MODES:
        raise FluxnbError(f"compile_mode {mode!r}: unknown", field="compile_mode", value=mode,
                          fix=f"use one of {', '.join(COMPILE_MODES)}")
    return {"fullgraph": fullgraph} if mode == "default" else {"fullgraph": fullgraph, "mode": mode}


def apply_compile(pipe, *, fullgraph: bool | None = None, mode: str | None = None) -> int:
    """Regional compilation of the transformer's repeated blocks; returns how many blocks.
    fullgraph unless hooks (fp8 layerwise casting, offloading) wrap the layers inside."""
    transformer = pipe.transformer
    if fullgraph is None:
        fullgraph = can_fullgraph(transformer)
    kwargs = compile_kwargs(mode, fullgraph=fullgraph)
    if hasattr(transformer, "compile_repeated_blocks"):
        transformer.compile_repeated_blocks(**kwargs)
    else:  # older diffusers
        for block in compiled_blocks(transformer, compiled=False):
            block.compile(**kwargs)
    n = len(compiled_blocks(transformer))
    log.info("compile: %d transformer blocks compiled on first use (fullgraph=%s, mode %s); the first image at "
             "each size pays the compilation", n, fullgraph, mode or "default")
    return n


def can_fullgraph(module) -> bool:
    """Whether `module` can be compiled as one graph: no offload or casting hooks inside
    (dynamo would have to break the graph at each)."""
    return not _has_hooks(module)


def compiled_blocks(transformer, *, compiled: bool = True) -> list:
    """The repeated blocks (those already wrapped by torch.compile, unless compiled=False)."""
    names = getattr(transformer, "_repeated_blocks", None) or ("FluxTransformerBlock", "FluxSingleTransformerBlock")
    blocks = [m for m in transformer.modules() if type(m).__name__ in names]
    return [b for b in blocks if getattr(b, "_compiled_call_impl", None) is not None] if compiled else blocks


def _has_hooks(module) -> bool:
    """Offload or casting hooks inside (an empty registry, left by a pipeline call, is none)."""
    return any(getattr(getattr(m, "_diffusers_hook", None), "hooks", None) or hasattr(m, "_hf_hook")
               for m in module.modules())


def compile_seconds(step_s: list[float]) -> float | None:
    """Compilation time hidden in a first image's steps: what the steps took above the
    steady step time (the median; the fastest step with only two). None with one step."""
    if len(step_s) < 2:
        return None
    steady = statistics.median(step_s) if len(step_s) >= 3 else min(step_s)
    return round(sum(max(0.0, t - steady) for t in step_s), 4)
