"""fluxnb: FLUX.1 image generation from Jupyter notebooks and the command line.

    import fluxnb
    images = fluxnb.generate("a lighthouse at dusk", seed=7, steps="fast")
    fluxnb.read_settings(images[0].path)

`import fluxnb` is light: torch, diffusers and transformers load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .settings import apply_hub_env as _apply_hub_env  # noqa: E402

_apply_hub_env()  # before anything imports huggingface_hub (it reads HF_HOME once)

_LAZY = {
    "generate": ("fluxnb.generation", "generate"),
    "GeneratedImage": ("fluxnb.generation", "GeneratedImage"),
    "read_settings": ("fluxnb.output", "read_settings"),
    "read_metadata": ("fluxnb.output", "read_metadata"),
    "Settings": ("fluxnb.settings", "Settings"),
    "resolve": ("fluxnb.settings", "resolve"),
    "load_params": ("fluxnb.settings", "load_params"),
    "FluxnbError": ("fluxnb.errors", "FluxnbError"),
    "get_pipeline": ("fluxnb.pipeline", "get_pipeline"),
    "count_tokens": ("fluxnb.tokens", "plan"),
    "enhance": ("fluxnb.enhancer", "enhance"),
    "sweep": ("fluxnb.sweeps", "sweep"),
    "grid": ("fluxnb.sweeps", "grid"),
    "run_batch": ("fluxnb.batch", "run"),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("runlog", "settings", "pipeline", "output", "testmodel", "tokens", "ui", "lab", "batch"):
        import importlib

        return importlib.import_module(f"fluxnb.{name}")
    raise AttributeError(f"module 'fluxnb' has no attribute {name!r}")
